"""``txsetup push``: its arguments, and the exit code a push ends with.

stdout carries one JSON result line per node as it finishes; stderr the
view (:mod:`txsetup.master.progress`). Exit 0 when every node succeeded, 10
when any did not, 2 usage, 3 an unusable ``--from-root``, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from txsetup.cli.helptext import ExamplesFormatter, add_version, epilog
from txsetup.errors import ExitCode, TxsetupError, UsageError
from txsetup.log import default_log_format, get_logger

if TYPE_CHECKING:
    from txsetup.master import Node, Payload, PushOptions, PushReport
    from txsetup.master.nextstep import Rerun
    from txsetup.master.push import OnEvent

DEFAULT_REMOTE_TXSETUP: Final = "txsetup"
GANETI_DAEMON_PORT: Final = 1811
DEFAULT_PARALLEL: Final = 8

__all__ = ["PUSH_EXIT_CODES", "add_push_parser", "run_push"]

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
        help="master side: run node-daemon-setup on nodes over ssh, one connection each",
        description="Build the node-daemon-setup document from this master's files, check it, "
        "and run it on every NODE over one ssh connection each, at most --parallel at once. "
        "stdout: one JSON result line per node as it finishes. Exit 0 when every node "
        "succeeded, 10 when any did not, 2 usage, 3 unusable --from-root, 130 interrupted.",
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
        f"{GANETI_DAEMON_PORT}); NODE=PORT gives one node's own (repeatable)",
    )


def _daemon_ports(values: list[str]) -> tuple[int, dict[str, int]]:
    """``--daemon-port``: the default port, and each node's own."""
    default, ports = GANETI_DAEMON_PORT, {}
    for value in values:
        node, _, port = value.rpartition("=")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--daemon-port: {value!r} is not PORT or NODE=PORT")
        if node:
            ports[node] = int(port)
        else:
            default = int(port)
    return default, ports


def _push_nodes(args: argparse.Namespace) -> list[Node]:
    """NODE arguments, then --nodes-file, then --retry-from's failed nodes; once each."""
    from txsetup.master import nodes_to_retry, parse_node

    texts = list(args.nodes)
    if args.nodes_file is not None:
        try:
            lines = args.nodes_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--nodes-file: cannot read {args.nodes_file}: {exc}") from exc
        texts += [t for line in lines if (t := line.split("#", 1)[0].strip())]
    retry = nodes_to_retry(args.retry_from) if args.retry_from is not None else []
    texts += retry
    if not texts and args.retry_from is None:
        raise UsageError("push: no NODE given (arguments, --nodes-file or --retry-from)")
    try:
        nodes = [parse_node(t) for t in dict.fromkeys(texts)]
    except ValueError as exc:
        raise UsageError(f"push: {exc}") from exc
    return nodes


def run_push(args: argparse.Namespace) -> int:
    """``txsetup push``: results on stdout, the view on stderr, the exit code here."""
    from txsetup.master import PushOptions, push
    from txsetup.master.progress import make_view

    log = get_logger()
    if args.remote_command is None:
        args.remote_command = f"{args.remote_txsetup} {args.program}"
    try:
        _check_usage(args)
        if args.resume and not _nodes_given(args):
            return _resume_atomic(args)
        nodes = _push_nodes(args)
        payload = None if args.resume else _payload(args)
    except TxsetupError as error:
        log.error("push.error", error=str(error), error_code=error.error_code)
        return error.exit_code
    options = PushOptions(
        ssh=args.ssh,
        ssh_options=tuple(args.ssh_option),
        remote_command=args.remote_command,
        parallel=args.parallel,
        timeout=args.timeout,
        dry_run=args.dry_run,
        resume=args.resume,
        abort=args.abort,
        canary=args.canary,
        max_failures=args.max_failures,
    )
    view = make_view(default_log_format(args.log_format, sys.stderr), sys.stderr, _rerun(args))
    view.begin(len(nodes))
    if args.atomic and payload is not None:
        try:
            report = _start_atomic(args, nodes, payload, options, view.on_event)
        except TxsetupError as error:
            log.error("push.error", error=str(error), error_code=error.error_code)
            return error.exit_code
        _print_report(report)
    else:
        report = push(
            nodes,
            payload,
            options,
            on_event=view.on_event,
            on_result=lambda r: _print_line(r.to_json()),
        )
    view.end(report)
    if report.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if report.ok else ExitCode.NODES_FAILED


def _payload(args: argparse.Namespace) -> Payload:
    """The document: built from --from-root, or read from --document."""
    from txsetup.master.payload import build_payload, load_document

    if args.program == "node-daemon-setup":
        return build_payload(args.from_root, start_node_daemon=args.start_node_daemon)
    return load_document(args.document, args.program)


def _check_usage(args: argparse.Namespace) -> None:
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
    _daemon_ports(args.daemon_port)


def _nodes_given(args: argparse.Namespace) -> bool:
    return bool(args.nodes or args.nodes_file or args.retry_from)


def _start_atomic(
    args: argparse.Namespace,
    nodes: list[Node],
    payload: Payload,
    options: PushOptions,
    on_event: OnEvent,
) -> PushReport:
    from txsetup.master.atomic import start_atomic
    from txsetup.master.fleet import FleetOptions, master_client_cert

    port, ports = _daemon_ports(args.daemon_port)
    fleet = FleetOptions(
        remote_txsetup=args.remote_txsetup,
        confirm_within=args.confirm_within,
        daemon_port=port,
        daemon_ports=ports,
        client_cert=master_client_cert(args.from_root),
    )
    return start_atomic(args.from_root, nodes, payload, options, fleet, on_event=on_event)


def _resume_atomic(args: argparse.Namespace) -> int:
    """``push --resume`` with no NODE: finish the master's unfinished atomic push."""
    from txsetup.master.atomic import resume_atomic, unfinished_push
    from txsetup.master.progress import make_view

    pending = unfinished_push(args.from_root)
    if pending is None:
        get_logger().info("push.nothing_to_resume", from_root=str(args.from_root))
        return ExitCode.OK
    view = make_view(default_log_format(args.log_format, sys.stderr), sys.stderr, _rerun(args))
    view.begin(len(pending.records[0]["nodes"]))
    report = resume_atomic(args.from_root, on_event=view.on_event)
    if report is None:  # finished by another resume in between
        return ExitCode.OK
    _print_report(report)
    view.end(report)
    if report.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if report.ok else ExitCode.NODES_FAILED


def _print_report(report: PushReport) -> None:
    """An atomic push's stdout: each node's line, then the fleet's."""
    for result in report.results:
        _print_line(result.to_json())
    if report.fleet is not None:
        _print_line(report.fleet)


def _rerun(args: argparse.Namespace) -> Rerun:
    """What a next push needs of this one's options, and where its results go."""
    from txsetup.master.nextstep import Rerun, results_file_of

    reach = [*(["--ssh", args.ssh] if args.ssh != "ssh" else [])]
    reach += [arg for option in args.ssh_option for arg in ("--ssh-option", option)]
    if args.remote_txsetup != DEFAULT_REMOTE_TXSETUP:
        reach += ["--remote-txsetup", args.remote_txsetup]
    if args.remote_command != f"{args.remote_txsetup} node-daemon-setup":
        reach += ["--remote-command", args.remote_command]
    if args.parallel != DEFAULT_PARALLEL:
        reach += ["--parallel", str(args.parallel)]
    if args.timeout is not None:
        reach += ["--timeout", f"{args.timeout:g}"]
    if args.resume:
        again = ["--resume", *(["--abort"] if args.abort else [])]
    else:
        again = [*(["--from-root", str(args.from_root)] if str(args.from_root) != "/" else [])]
        again += [*([] if args.start_node_daemon else ["--no-start-node-daemon"])]
        again += [*(["--dry-run"] if args.dry_run else [])]
        again += _atomic_again(args)
        if args.program != "node-daemon-setup":
            again += ["--program", args.program, "--document", str(args.document)]
    return Rerun(tuple(reach), tuple(again), args.abort, results_file_of(sys.stdout))


def _atomic_again(args: argparse.Namespace) -> list[str]:
    """An atomic push's own options, for the next push of the whole fleet."""
    if not args.atomic:
        return []
    again = ["--atomic"]
    if args.confirm_within is not None:
        again += ["--confirm-within", f"{args.confirm_within:g}"]
    return again + [arg for port in args.daemon_port for arg in ("--daemon-port", port)]


def _print_line(line: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
