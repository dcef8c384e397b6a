"""``python -m txsetup`` runs the ``txsetup`` command."""

from txsetup.cli import console_main

console_main()
