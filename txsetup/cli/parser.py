"""The command line's parsers: ``txsetup`` with its commands, and the drop-in aliases."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

from txsetup.cli.helptext import ExamplesFormatter, add_version, epilog
from txsetup.cli.push_args import add_push_parser
from txsetup.errors import UsageError

__all__ = ["ALIASES", "build_alias_parser", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a typed error (exit 2) with a JSON result."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    add_version(parser)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("TXSETUP_ROOT", "/")),
        metavar="DIR",
        help="prefix for every path (default: $TXSETUP_ROOT or /)",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="stderr log format (default: console on a terminal, else json)",
    )
    # Both are Ganeti's (its master passes them): there --verbose adds info messages and
    # --debug every message. txsetup always logs at info, so both mean debug here.
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log debug events too (Ganeti's option: every message)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="the same as --debug: Ganeti's option for info messages, which txsetup always logs",
    )


# The two commands that run a step table, by their names under ``txsetup``: help, description.
_RUN_COMMANDS: dict[str, tuple[str, str]] = {
    "node-daemon-setup": (
        "install ssconf files and the node daemon certificate from stdin",
        "Read a JSON document on stdin; verify it; install the ssconf files and "
        "the node daemon certificate as one transaction; restart the node daemon if asked.",
    ),
    "ssh-setup": (
        "install SSH host keys, root's key pair and authorized_keys from stdin",
        "Read a JSON document on stdin (as Ganeti's prepare-node-join does); "
        "verify it; install the SSH host keys, root's key pair and authorized_keys as one "
        "transaction; reload sshd when a host key changed.",
    ),
}
# The verbs on one transaction: help.
_DECISIONS: dict[str, str] = {
    "commit": "commit a transaction prepared with --prepare: commit, restart or reload, check",
    "abort": "discard a transaction prepared with --prepare: the node's files stay as they are",
    "confirm": "keep a commit made with --confirm-within: it is not reverted at its deadline",
    "revert": "put back the files the last commit replaced; restart or reload, check",
}
# What each verb repeated, or after the other one, does.
_DECISION_RULES: dict[str, str] = {
    "commit": "Idempotent: the same decision again reports the same outcome (exit 0); "
    "after an abort it is refused (exit 4).",
    "abort": "Idempotent: the same decision again reports the same outcome (exit 0); "
    "after a commit it is refused (exit 4).",
    "confirm": "Repeating it reports `confirmed` again (exit 0); after the revert it is "
    "refused (exit 4).",
    "revert": "Only the last commit, and only while every file it wrote is as it wrote it "
    "(otherwise exit 4, nothing touched); if the service does not come back, the revert "
    "is undone (exit 6). Repeating it reports `reverted` again (exit 0).",
}
# The drop-in names a Ganeti master runs, and the command each one is.
ALIASES: dict[str, str] = {
    "node-daemon-setup": "node-daemon-setup",
    "prepare-node-join": "ssh-setup",
}


def coordinator_id(text: str) -> str:
    """A coordinator id as ``--coordinator`` takes it (:data:`COORDINATOR_ID`)."""
    from txsetup.txn.decisions import COORDINATOR_ID

    if not COORDINATOR_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r}: a coordinator id is a letter or digit, then up to 127 of "
            "A-Z a-z 0-9 . _ : @ + -"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``txsetup`` parser with its subcommands."""
    parser = _Parser(
        prog="txsetup",
        description="Add a cluster node safely, as a transaction. stdout carries one JSON "
        "result, stderr the log. Each command has its own --help.",
        epilog=epilog("txsetup", "txsetup"),
        formatter_class=ExamplesFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for name, (summary, description) in _RUN_COMMANDS.items():
        _run_options(
            sub.add_parser(
                name,
                help=summary,
                description=description,
                epilog=epilog(name, f"txsetup {name}"),
                formatter_class=ExamplesFormatter,
            )
        )
    status = sub.add_parser(
        "status",
        help="describe the last or unfinished transaction",
        description="Print one JSON object describing the last or the unfinished "
        "transaction, from the journal alone. Takes no lock and writes nothing.",
        epilog=epilog("status", "txsetup status"),
        formatter_class=ExamplesFormatter,
    )
    _common(status)
    for verb, summary in _DECISIONS.items():
        _decision_parser(sub, verb, summary)
    add_push_parser(sub)
    return parser


def _decision_parser(sub: Any, verb: str, summary: str) -> None:
    """One verb on one transaction: ``txsetup commit|abort|confirm|revert TXID``."""
    parser = sub.add_parser(
        verb,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. {_DECISION_RULES[verb]}",
        epilog=epilog(verb, f"txsetup {verb}"),
        formatter_class=ExamplesFormatter,
    )
    by_coordinator = verb in ("commit", "abort")
    parser.add_argument(
        "txid",
        metavar="TXID",
        nargs="?" if verb != "confirm" else None,
        help="the transaction's id"
        + (
            "; with --if-unconfirmed it may be left out: the commit waiting, if any"
            if verb == "revert"
            else ""
        ),
    )
    if by_coordinator:
        parser.add_argument(
            "--coordinator",
            metavar="ID",
            type=coordinator_id,
            default=None,
            help="instead of TXID: the id its coordinator gave with --prepare "
            "(an abort is kept, and a later prepare with that id refused)",
        )
    if verb == "commit":
        _confirm_within(parser)
    if verb == "revert":
        parser.add_argument(
            "--if-unconfirmed",
            action="store_true",
            help="the confirmation timer's own call (and the boot-time unit's): wait for "
            "TXID's deadline, then revert only if it is still unconfirmed",
        )
    _common(parser)
    _lock_and_config(parser)


def _confirm_within(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--confirm-within",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="commit confirmed: unless `txsetup confirm TXID` comes within SECONDS, "
        "the node reverts the commit by itself",
    )


def _seconds(text: str) -> float:
    """A positive number of seconds, at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
    if not 0 < value <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: seconds between 0 and one week")
    return value


def build_alias_parser(alias: str) -> argparse.ArgumentParser:
    """The parser of a drop-in alias: the command's options, under the alias's own name."""
    command = ALIASES[alias]
    description = _RUN_COMMANDS[command][1]
    parser = _Parser(
        prog=alias,
        description=f"{description} The same as txsetup {command}.",
        epilog=epilog(command, alias),
        formatter_class=ExamplesFormatter,
    )
    _run_options(parser)
    parser.set_defaults(command=command)
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The options node-daemon-setup and ssh-setup share."""
    _common(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="decode, verify and print the plan; touch nothing"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="read no stdin; finish or undo the unfinished transaction",
    )
    parser.add_argument(
        "--abort",
        action="store_true",
        help="with --resume: undo the unfinished transaction instead",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="verify and stage, then hold the node until `txsetup commit` or `abort` decides",
    )
    parser.add_argument(
        "--coordinator",
        metavar="ID",
        type=coordinator_id,
        default=None,
        help="with --prepare: the coordinator's own id for this transaction",
    )
    _confirm_within(parser)
    _lock_and_config(parser)


def _lock_and_config(parser: argparse.ArgumentParser) -> None:
    """The lock's patience and the configuration file: every command that takes the lock."""
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the lock (default 60)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML configuration (default: <root>/etc/txsetup/config.toml when it exists)",
    )
