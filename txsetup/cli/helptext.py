"""What ``--help`` and ``--version`` print beyond argparse's own: examples, the version.

An operator reaches for ``--help`` before the manual, so each command's help
closes with the handful of invocations that cover its use: the run, the dry
run, the recovery. The same invocations appear in each man page's
EXAMPLES (``docs/man/``; ``tests/test_cli_docs.py`` holds them to it).
``{prog}`` in an example is the name the command was run under, so
``node-daemon-setup --help`` shows ``node-daemon-setup ...`` and ``txsetup
node-daemon-setup --help`` shows ``txsetup node-daemon-setup ...``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping
from typing import Final

from txsetup import __version__

__all__ = ["EXAMPLES", "ExamplesFormatter", "add_version", "epilog"]

_HEADER: Final = "examples:"

# command -> lines; a "# " comment says what the invocations below it do.
EXAMPLES: Final[Mapping[str, tuple[str, ...]]] = {
    "txsetup": (
        "# install a node's ssconf files and certificate from a document",
        "{prog} node-daemon-setup < payload.json",
        "# verify the document and print the plan; touch nothing",
        "{prog} node-daemon-setup --dry-run < payload.json",
        "# after an interruption: finish the unfinished transaction (or --abort it)",
        "{prog} node-daemon-setup --resume",
        "# install SSH host keys, root's key pair and authorized_keys",
        "{prog} ssh-setup < ssh.json",
        "# what the last or unfinished transaction did",
        "{prog} status",
        "# from the master: set up two nodes over ssh",
        "{prog} push node1 root@node2:2222 > results.json",
    ),
    "node-daemon-setup": (
        "# install the document's files as one transaction",
        "{prog} < payload.json",
        "# verify the document and print the plan; touch nothing",
        "{prog} --dry-run < payload.json",
        "# after an interruption: finish the unfinished transaction, or undo it",
        "{prog} --resume",
        "{prog} --resume --abort",
        "# under a test root, with its own configuration",
        "{prog} --root /tmp/node1 --config /tmp/node1.toml < payload.json",
    ),
    "ssh-setup": (
        "# install the SSH keys of a document as one transaction",
        "{prog} < ssh.json",
        "# verify the document and print the plan; touch nothing",
        "{prog} --dry-run < ssh.json",
        "# after an interruption: finish the unfinished transaction, or undo it",
        "{prog} --resume",
        "{prog} --resume --abort",
    ),
    "status": (
        "# the last or unfinished transaction, as one JSON object",
        "{prog}",
        "# the files an unfinished transaction replaces or creates",
        "{prog} --root /tmp/node1 | jq .files",
    ),
    "commit": (
        "# a node held by --prepare: put its files in place, restart, check",
        "{prog} 20261205T120000Z-5f0bc85a",
        "# the same, by the id its coordinator gave, to be confirmed within 5 minutes",
        "{prog} --coordinator push-42 --confirm-within 300 --root /tmp/node1",
    ),
    "abort": (
        "# a node held by --prepare: discard it, the files stay as they are",
        "{prog} 20261205T120000Z-5f0bc85a",
        "# by the coordinator's id, also before its prepare arrived",
        "{prog} --coordinator push-42 --root /tmp/node1",
    ),
    "confirm": (
        "# keep a commit made with --confirm-within (no revert at its deadline)",
        "{prog} 20261205T120000Z-5f0bc85a",
        "# the same on a node root",
        "{prog} 20261205T120000Z-5f0bc85a --root /tmp/node1",
    ),
    "revert": (
        "# put back the files the last commit replaced, and the daemon as it was",
        "{prog} 20261205T120000Z-5f0bc85a",
        "# the same on a node root (txsetup status names the commit that can be)",
        "{prog} 20261205T120000Z-5f0bc85a --root /tmp/node1",
    ),
    "push": (
        "# two nodes, one result line each",
        "{prog} node1 root@node2:2222 > results.json",
        "# many nodes, 32 at a time",
        "{prog} --nodes-file nodes.txt --parallel 32 > results.json",
        "# again, to the nodes that did not succeed",
        "{prog} --retry-from results.json > retry.json",
        "# nodes verify and plan only",
        "{prog} --dry-run node1",
        "# finish (or undo) what an interrupted push left on its nodes",
        "{prog} --resume --retry-from results.json",
        "# all nodes new or all old: prepare, decide, commit, check, confirm",
        "{prog} --atomic --confirm-within 300 --nodes-file nodes.txt > results.json",
        "# finish the atomic push an interrupted master left",
        "{prog} --resume",
    ),
}


def epilog(command: str, prog: str) -> str:
    """The examples block of ``command``'s help, each example naming ``prog``."""
    return "\n".join([_HEADER, *("  " + line.format(prog=prog) for line in EXAMPLES[command])])


class ExamplesFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that examples keep their lines and names their hyphens.

    Descriptions are still wrapped to the terminal, but never inside a
    hyphenated word: ``ssh-setup`` split over two lines is not a command
    anyone can copy. Text that starts with the examples header is printed as
    written (what ``RawDescriptionHelpFormatter`` would do to every
    description).
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(_HEADER):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return "\n".join(indent + line for line in self._split_lines(text, width - len(indent)))

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version`` on a command or alias: every name answers it the same way."""
    parser.add_argument("--version", action="version", version=f"txsetup {__version__}")
