"""The master side of ``gnt-node add`` as Ganeti 3.0 runs it: ``bootstrap.SetupNodeDaemon``.

Run by ``tests/test_ganeti_master.py`` with the system Python and
``PYTHONPATH=/usr/share/ganeti/3.0`` (Ganeti's code is never imported into the
test's own interpreter), inside the test's private mount namespace, where
``/var/lib/ganeti`` is the test's master directory and root's home holds the
key the node accepts. So ``SetupNodeDaemon`` reads its inputs where it always
does and builds the document and the ssh command line itself.

Ganeti is patched in one place only, after the ssh command has run:
``_WaitForNodeDaemon`` asks a Ganeti node daemon for its version over RPC,
and the node runs txsetup's demo daemon, which serves TLS and no RPC; it is
replaced by a recorder, so the test sees that Ganeti got that far.
``_WaitForSshDaemon`` runs as it is.

Ganeti runs ssh with ``interactive=True``: the node's output (txsetup's
result and log lines) passes straight through to this process's stdout and
stderr, as it reaches an operator's terminal, and the error Ganeti raises
carries only ssh's exit status. What Ganeti itself did goes to REPORT as
JSON (``raised``: the error's type and message or null; ``waited_for``: the
nodes whose daemon it went on to wait for) and its log, at debug level, to LOG.

Usage: ``ganeti_master_driver.py REPORT LOG NODE PORT [--debug] [--verbose]``
"""

from __future__ import annotations

import argparse
import json
import logging
from types import SimpleNamespace

from ganeti import bootstrap, errors, ssconf


def main() -> None:
    """Add NODE the way ``gnt-node add`` does once its checks have passed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report")
    parser.add_argument("log")
    parser.add_argument("node")
    parser.add_argument("port", type=int)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(filename=args.log, level=logging.DEBUG, format="%(levelname)s %(message)s")

    waited_for: list[str] = []
    bootstrap._WaitForNodeDaemon = waited_for.append
    # The options of gnt-node add that SetupNodeDaemon reads; ssh_key_check is
    # on by default (--no-ssh-key-check turns it off): the node's host key must
    # be the one known under the cluster's name.
    opts = SimpleNamespace(debug=int(args.debug), verbose=args.verbose, ssh_key_check=True)
    # gnt-node add asks the master daemon for the cluster name; ssconf holds the same.
    cluster_name = ssconf.SimpleStore().GetClusterName()
    raised = None
    try:
        bootstrap.SetupNodeDaemon(opts, cluster_name, args.node, args.port)
    except errors.GenericError as error:
        raised = {"type": type(error).__name__, "message": str(error)}
    with open(args.report, "w", encoding="utf-8") as report:
        json.dump({"raised": raised, "waited_for": waited_for}, report)


if __name__ == "__main__":
    main()
