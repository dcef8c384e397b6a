"""The master side of ``gnt-node add`` as Ganeti 3.0 runs it.

Run by ``tests/test_ganeti_master.py`` with the system Python and
``PYTHONPATH=/usr/share/ganeti/3.0`` (Ganeti's code is never imported into the
test's own interpreter), inside the test's private mount namespace, where
``/var/lib/ganeti`` is the test's master directory and root's home holds the
key the node accepts. So Ganeti reads its inputs where it always does and
builds the document and the ssh command line itself.

Two parts of ``gnt-node add`` (``client/gnt_node.py``, ``AddNode``):

* by default ``bootstrap.SetupNodeDaemon`` (``node-daemon-setup``). Ganeti is
  patched in one place only, after the ssh command has run:
  ``_WaitForNodeDaemon`` asks a Ganeti node daemon for its version over RPC,
  and the node runs txsetup's demo daemon, which serves TLS and no RPC; it is
  replaced by a recorder, so the test sees that Ganeti got that far.
  ``_WaitForSshDaemon`` runs as it is.
* with ``--prepare-node-join DIR``, ``gnt_node._SetupSSH`` (``prepare-node-join``,
  then a second ssh connection that reads root's new public key back, and
  ``ssh.AddPublicKey`` that records it in ``/var/lib/ganeti/ganeti_pub_keys``).
  Two inputs are set up: the luxi client, which asks a master daemon that
  does not run here, is a stand-in answering the two queries ``_SetupSSH``
  makes (the master candidates' UUIDs; ``ssh_key_type`` and
  ``ssh_key_bits``); and ``constants.SSH_DAEMON_KEYFILES``, the master's
  ``/etc/ssh`` host key paths, points at DIR instead, so the machine's own
  host keys are never read. A path change only: ``_SetupSSH`` reads the
  files and sends them as it always does.

Ganeti runs ssh with ``interactive=True``: the node's output (txsetup's
result and log lines) passes straight through to this process's stdout and
stderr, as it reaches an operator's terminal, and the error Ganeti raises
carries only ssh's exit status. What Ganeti itself did goes to REPORT as
JSON (``raised``: the error's type and message or null; ``waited_for``: the
nodes whose daemon it went on to wait for) and its log, at debug level, to LOG.

Usage: ``ganeti_master_driver.py REPORT LOG NODE PORT [--debug] [--verbose]
[--prepare-node-join DIR --candidate UUID --ssh-key-type KIND --ssh-key-bits N]``
"""

from __future__ import annotations

import argparse
import json
import logging
from types import SimpleNamespace

from ganeti import bootstrap, constants, errors, ssconf
from ganeti.client import gnt_node


class Luxi:
    """What ``_SetupSSH`` asks the master daemon, answered as a one-master cluster would.

    The method names are luxi's (``ganeti.luxi.Client``).
    """

    def __init__(self, candidate: str, ssh_key_type: str, ssh_key_bits: int) -> None:
        self.candidate = candidate
        self.config: dict[str, object] = {
            "ssh_key_type": ssh_key_type,
            "ssh_key_bits": ssh_key_bits,
        }

    def Query(self, what: str, fields: list[str], qfilter: object) -> SimpleNamespace:  # noqa: N802
        """The master and master candidates' UUIDs (one row per node, one field)."""
        assert (what, fields) == (constants.QR_NODE, ["uuid"]), (what, fields)
        return SimpleNamespace(data=[[(constants.RS_NORMAL, self.candidate)]])

    def QueryConfigValues(self, names: list[str]) -> list[object]:  # noqa: N802
        """The cluster configuration values asked for."""
        return [self.config[name] for name in names]


def main() -> None:
    """Run NODE's part of ``gnt-node add`` as Ganeti does once its checks have passed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report")
    parser.add_argument("log")
    parser.add_argument("node")
    parser.add_argument("port", type=int)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--prepare-node-join", metavar="DIR")
    parser.add_argument("--candidate")
    parser.add_argument("--ssh-key-type")
    parser.add_argument("--ssh-key-bits", type=int)
    args = parser.parse_args()
    logging.basicConfig(filename=args.log, level=logging.DEBUG, format="%(levelname)s %(message)s")

    waited_for: list[str] = []
    bootstrap._WaitForNodeDaemon = waited_for.append
    # The options of gnt-node add that Ganeti reads; ssh_key_check is on by
    # default (--no-ssh-key-check turns it off): the node's host key must be
    # known.
    opts = SimpleNamespace(
        debug=int(args.debug), verbose=args.verbose, ssh_key_check=True, force_join=False
    )
    # gnt-node add asks the master daemon for the cluster name; ssconf holds the same.
    cluster_name = ssconf.SimpleStore().GetClusterName()
    raised = None
    try:
        if args.prepare_node_join:
            constants.SSH_DAEMON_KEYFILES = {
                kind: (
                    f"{args.prepare_node_join}/ssh_host_{kind}_key",
                    f"{args.prepare_node_join}/ssh_host_{kind}_key.pub",
                )
                for kind in constants.SSH_DAEMON_KEYFILES
            }
            luxi = Luxi(args.candidate, args.ssh_key_type, args.ssh_key_bits)
            gnt_node._SetupSSH(opts, cluster_name, args.node, args.port, luxi)
        else:
            bootstrap.SetupNodeDaemon(opts, cluster_name, args.node, args.port)
    except errors.GenericError as error:
        raised = {"type": type(error).__name__, "message": str(error)}
    with open(args.report, "w", encoding="utf-8") as report:
        json.dump({"raised": raised, "waited_for": waited_for}, report)


if __name__ == "__main__":
    main()
