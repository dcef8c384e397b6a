"""``txsetup push``: a push run from its arguments (:mod:`push_args`), and its exit code.

stdout carries one JSON result line per node as it finishes; stderr the
view (:mod:`txsetup.master.progress`). Exit 0 when every node succeeded, 10
when any did not, 2 usage, 3 an unusable ``--from-root`` or ``--document``, 5
another atomic push unfinished or running, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from txsetup.cli.push_args import (
    DEFAULT_PARALLEL,
    DEFAULT_REMOTE_TXSETUP,
    PUSH_EXIT_CODES,
    add_push_parser,
    check_usage,
    daemon_ports,
)
from txsetup.errors import ExitCode, TxsetupError, UsageError
from txsetup.log import default_log_format, get_logger

if TYPE_CHECKING:
    from txsetup.master import Node, Payload, PushOptions, PushReport
    from txsetup.master.nextstep import Rerun
    from txsetup.master.push import OnEvent

__all__ = ["PUSH_EXIT_CODES", "add_push_parser", "run_push"]


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
        check_usage(args)
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

    port, ports = daemon_ports(args.daemon_port)
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
