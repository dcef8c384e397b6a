"""``txsetup push``'s arguments: the options, their defaults, and which go together.

:mod:`txsetup.cli.push` runs a push from what these parse. Imported on every
command's path (the parser is built whole), so it imports nothing of the
master's side.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Final

from txsetup.cli.helptext import ExamplesFormatter, add_version, epilog
from txsetup.errors import ExitCode, UsageError
from txsetup.node.config import NODED_PORT

__all__ = [
    "DEFAULT_PARALLEL",
    "DEFAULT_REMOTE_TXSETUP",
    "PUSH_EXIT_CODES",
    "add_push_parser",
    "check_usage",
    "daemon_ports",
]

DEFAULT_REMOTE_TXSETUP: Final = "txsetup"
DEFAULT_PARALLEL: Final = 8

PUSH_EXIT_CODES: Final = (
    ExitCode.OK,
    ExitCode.INTERNAL,  # chosen by txsetup.cli.main, the last line of defence
    ExitCode.USAGE,
    ExitCode.INVALID_INPUT,
    ExitCode.BUSY,  # --atomic: an earlier atomic push is unfinished, or one runs
    ExitCode.NODES_FAILED,
    ExitCode.INTERRUPTED,
)
"""Every code a push can end with; its help and reference list each one."""


def add_push_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """The ``push`` subcommand and its options."""
    push = sub.add_parser(
        "push",
        help="master side: run node-daemon-setup or ssh-setup on nodes over ssh",
        description="Build the node-daemon-setup document from this master's files (or take "
        "ssh-setup's from --document), check it, and run it on every NODE over one ssh "
        "connection each, at most --parallel at once. With --atomic the nodes prepare first "
        "and all commit or none does; --resume with no NODE finishes one the master did not. "
        "stdout: one JSON result line per node as it finishes. Exit 0 when every node "
        "succeeded, 10 when any did not, 2 usage, 3 unusable --from-root or document, "
        "5 another atomic push unfinished or running, 130 interrupted.",
        epilog=epilog("push", "txsetup push"),
        formatter_class=ExamplesFormatter,
    )
    add_version(push)
    _where_options(push)
    _run_options(push)
    push.set_defaults(debug=False, verbose=False)


def _where_options(push: argparse.ArgumentParser) -> None:
    """Which nodes, and what to push them from."""
    push.add_argument("nodes", nargs="*", metavar="NODE", help="[user@]host[:port]")
    push.add_argument(
        "--nodes-file", type=Path, metavar="FILE", help="one NODE per line, # comments"
    )
    push.add_argument(
        "--retry-from",
        type=Path,
        metavar="FILE",
        help="push again to the nodes of a results file that did not succeed",
    )
    push.add_argument(
        "--program",
        choices=("node-daemon-setup", "ssh-setup"),
        default="node-daemon-setup",
        help="what the nodes run (default node-daemon-setup, its document built from "
        "--from-root; ssh-setup takes its document from --document)",
    )
    push.add_argument(
        "--document",
        type=Path,
        metavar="FILE",
        help="with --program ssh-setup: the document every node is sent",
    )
    push.add_argument(
        "--from-root",
        type=Path,
        default=Path(os.environ.get("TXSETUP_ROOT", "/")),
        metavar="DIR",
        help="the master's root: var/lib/ganeti/ssconf_*, server.pem, hmac.key "
        "(default: $TXSETUP_ROOT or /)",
    )


def _run_options(push: argparse.ArgumentParser) -> None:
    """How to reach the nodes and what to run there."""
    push.add_argument("--ssh", default="ssh", metavar="PROGRAM", help="ssh client (default ssh)")
    push.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="passed to ssh as -o OPT (repeatable)",
    )
    push.add_argument(
        "--remote-txsetup",
        default=DEFAULT_REMOTE_TXSETUP,
        metavar="CMD",
        help="txsetup on the nodes, for an atomic push's commit, abort, confirm and revert "
        "(default: txsetup)",
    )
    push.add_argument(
        "--remote-command",
        default=None,
        metavar="CMD",
        help="what runs on the node (default: <remote txsetup> node-daemon-setup)",
    )
    push.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"nodes at once (default {DEFAULT_PARALLEL})",
    )
    push.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS", help="per node (default none)"
    )
    push.add_argument(
        "--start-node-daemon",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(re)start the node daemon after commit (default: start)",
    )
    push.add_argument("--dry-run", action="store_true", help="nodes verify and plan only")
    push.add_argument(
        "--resume", action="store_true", help="finish or undo each node's unfinished transaction"
    )
    push.add_argument("--abort", action="store_true", help="with --resume: undo instead")
    _rollout_options(push)
    _atomic_options(push)
    push.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="stderr: live view (console, the default on a terminal) or JSON lines",
    )


def _rollout_options(push: argparse.ArgumentParser) -> None:
    """Which nodes start when: every push, atomic or not."""
    push.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="N",
        help="the first N nodes alone first; the rest only if all of them succeeded",
    )
    push.add_argument(
        "--max-failures",
        type=int,
        default=None,
        metavar="K",
        help="start no further node after K failures (the rest: not_started)",
    )


def _atomic_options(push: argparse.ArgumentParser) -> None:
    """The fleet transaction: every node new or every node old."""
    push.add_argument(
        "--atomic",
        action="store_true",
        help="all or nothing: prepare every node, record the decision, then commit or "
        "abort everywhere (`push --resume` with no NODE finishes an interrupted one)",
    )
    push.add_argument(
        "--confirm-within",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --atomic: commit confirmed; the master checks each node's daemon over "
        "TLS and confirms, or reverts every node; an unreachable node reverts by itself",
    )
    push.add_argument(
        "--daemon-port",
        action="append",
        default=[],
        metavar="PORT",
        help=f"with --confirm-within: the node daemon's port for the check (default "
        f"{NODED_PORT}); NODE=PORT gives one node's own (repeatable)",
    )


def daemon_ports(values: list[str]) -> tuple[int, dict[str, int]]:
    """``--daemon-port``: the default port, and each node's own."""
    default, ports = NODED_PORT, {}
    for value in values:
        node, _, port = value.rpartition("=")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--daemon-port: {value!r} is not PORT or NODE=PORT")
        if node:
            ports[node] = int(port)
        else:
            default = int(port)
    return default, ports


def check_usage(args: argparse.Namespace) -> None:
    """Options that exclude or need each other (exit 2)."""
    if args.abort and not args.resume:
        raise UsageError("--abort goes with --resume")
    if args.resume and (args.dry_run or args.atomic):
        raise UsageError("--resume excludes --dry-run and --atomic")
    if args.atomic and args.dry_run:
        raise UsageError("--atomic and --dry-run exclude each other")
    if args.parallel < 1 or (args.timeout is not None and args.timeout <= 0):
        raise UsageError("--parallel and --timeout must be positive")
    if args.canary < 0 or (args.max_failures is not None and args.max_failures < 1):
        raise UsageError("--canary must be 0 or more, --max-failures 1 or more")
    if not args.atomic and (args.confirm_within is not None or args.daemon_port):
        raise UsageError("--confirm-within and --daemon-port go with --atomic")
    if (args.program == "ssh-setup") != (args.document is not None) and not args.resume:
        raise UsageError("--document goes with --program ssh-setup, and ssh-setup needs it")
    if args.program == "ssh-setup" and args.daemon_port:
        raise UsageError("--daemon-port checks a node daemon: not with --program ssh-setup")
    if args.confirm_within is not None and not 0 < args.confirm_within <= 7 * 24 * 3600:
        raise UsageError("--confirm-within: seconds between 0 and one week")
    daemon_ports(args.daemon_port)
