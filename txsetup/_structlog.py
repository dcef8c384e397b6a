"""structlog, imported once without the optional packages it probes for.

``import structlog`` imports ``structlog.dev``, ``structlog.tracebacks`` and
``structlog.threadlocal``, which each try to import an optional package and
use it when it is there: ``rich`` (with ``rich.console``, ``rich.traceback``
and ``rich.pretty``: about 0.13 s here), ``colorama``, ``better_exceptions``,
``greenlet``, and, from the package itself, ``twisted``. txsetup uses none of
them through structlog: its console view is :mod:`txsetup.console`, its
exceptions are rendered by ``format_exc_info``. A master candidate has
``rich`` installed for ``txsetup push``'s live view, and a node run must not
pay for it.

So the package imports this module first, and this module imports structlog
with each of those names that is not imported yet set to ``None`` in
``sys.modules``: Python's import system then raises ``ModuleNotFoundError``
for it, which is exactly what structlog's ``try: import …`` / ``except
ImportError`` expects when the package is absent. The entries are removed
right after, so any later ``import rich`` (the push view's) imports the real
package. What this changes for a program that embeds txsetup: structlog's
own ``ConsoleRenderer`` renders tracebacks without rich or better_exceptions
when structlog was first imported by txsetup; import structlog before
txsetup to keep them. A structlog already imported is left as it is.
"""

from __future__ import annotations

import sys

__all__ = ["OPTIONAL"]

# What structlog probes for with try/except ImportError (structlog 22.3 to 26.1).
OPTIONAL = ("rich", "colorama", "better_exceptions", "greenlet", "twisted")


def _import_structlog() -> None:
    if "structlog" in sys.modules:
        return
    hidden = [name for name in OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, ()) is None:
                del sys.modules[name]


_import_structlog()
