"""Command line: arguments, the run, and the only place exit codes are chosen.

``txsetup node-daemon-setup`` (alias ``node-daemon-setup``) reads a document
on stdin and runs the step table; ``txsetup status`` describes the last
transaction. stderr carries JSON log lines, stdout one JSON result object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import structlog

from txsetup import __version__
from txsetup.errors import ExitCode, RecoveryFailed, RolledBack, TxsetupError, UsageError
from txsetup.log import LogFormat, configure_logging, get_logger
from txsetup.node.config import Config, load_config
from txsetup.txn.plan import Layout

if TYPE_CHECKING:
    from txsetup.master import Node
    from txsetup.node.restart import DaemonControl

__all__ = ["main", "node_daemon_setup_main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a typed error (exit 2) with a JSON result."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("TXSETUP_ROOT", "/")),
        help="prefix for every path (default: $TXSETUP_ROOT or /)",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="stderr log format (default: console on a terminal, else json)",
    )
    parser.add_argument("--debug", action="store_true", help="log at debug level (Ganeti)")
    parser.add_argument("--verbose", action="store_true", help="log at debug level (Ganeti)")


def build_parser() -> argparse.ArgumentParser:
    """The ``txsetup`` parser with its subcommands."""
    parser = _Parser(prog="txsetup", description="Add a cluster node safely, as a transaction.")
    parser.add_argument("--version", action="version", version=f"txsetup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    nds = sub.add_parser(
        "node-daemon-setup",
        help="install ssconf files and the node daemon certificate from stdin",
        description="Read a JSON document on stdin; verify it; install the ssconf files and "
        "the node daemon certificate as one transaction; restart the node daemon if asked.",
    )
    _common(nds)
    nds.add_argument(
        "--dry-run", action="store_true", help="decode, verify and print the plan; touch nothing"
    )
    nds.add_argument(
        "--resume",
        action="store_true",
        help="read no stdin; finish or undo the unfinished transaction",
    )
    nds.add_argument(
        "--abort",
        action="store_true",
        help="with --resume: undo the unfinished transaction instead",
    )
    nds.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the lock (default 60)",
    )
    nds.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML configuration (default: <root>/etc/txsetup/config.toml when it exists)",
    )
    status = sub.add_parser("status", help="describe the last or unfinished transaction")
    _common(status)
    _push_parser(sub)
    return parser


def _push_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    push = sub.add_parser(
        "push",
        help="master side: run node-daemon-setup on nodes over ssh, one connection each",
        description="Build the node-daemon-setup document from this master's files, check it, "
        "and run it on every NODE over one ssh connection each, at most --parallel at once. "
        "stdout: one JSON result line per node as it finishes. Exit 0 when every node "
        "succeeded, 10 when any did not, 2 usage, 3 unusable --from-root, 130 interrupted.",
        epilog="examples:\n"
        "  txsetup push node1 root@node2:2222 > results.json\n"
        "  txsetup push --nodes-file nodes.txt --parallel 32 > results.json\n"
        "  txsetup push --retry-from results.json > retry.json\n"
        "  txsetup push --resume node1 node2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        "--from-root",
        type=Path,
        default=Path(os.environ.get("TXSETUP_ROOT", "/")),
        metavar="DIR",
        help="the master's root: var/lib/ganeti/ssconf_*, server.pem, hmac.key "
        "(default: $TXSETUP_ROOT or /)",
    )
    push.add_argument("--ssh", default="ssh", metavar="PROGRAM", help="ssh client (default ssh)")
    push.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="passed to ssh as -o OPT (repeatable)",
    )
    push.add_argument(
        "--remote-command",
        default="txsetup node-daemon-setup",
        metavar="CMD",
        help="what runs on the node (default: txsetup node-daemon-setup)",
    )
    push.add_argument(
        "--parallel", type=int, default=8, metavar="N", help="nodes at once (default 8)"
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
    push.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="stderr: live view (console, the default on a terminal) or JSON lines",
    )
    push.set_defaults(debug=False, verbose=False)


@dataclass
class Result:
    """The one JSON object printed on stdout."""

    txid: str | None
    outcome: str
    exit_code: ExitCode = ExitCode.OK
    changed: list[str] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result object (SPEC §7)."""
        return {
            "txid": self.txid,
            "outcome": self.outcome,
            "exit_code": int(self.exit_code),
            "changed": self.changed,
            "steps": self.steps,
            **self.extra,
        }


def daemon_control(config: Config, layout: Layout) -> DaemonControl:
    """The node daemon's control as configured, presenting the installed server.pem."""
    from txsetup.node.restart import DaemonControl

    return DaemonControl(config.daemon, get_logger(), layout.path("var/lib/ganeti/server.pem"))


def new_txid() -> str:
    """A sortable, unique transaction id."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _failure(error: TxsetupError, layout: Layout) -> dict[str, Any]:
    message = str(error)
    if isinstance(error, RecoveryFailed):
        message += f" (journal and backups kept in {layout.state_dir})"
    return {"error": message, "error_code": error.error_code}


def _stdin() -> BinaryIO:
    """stdin as bytes; a closed descriptor 0 reads as an empty document (exit 3)."""
    return sys.stdin.buffer if sys.stdin is not None else io.BytesIO()


def run_node_daemon_setup(args: argparse.Namespace) -> Result:
    """Run (or dry-run) the transaction; failures become a result, never a traceback."""
    from txsetup.node.steps import (
        DRY_RUN_STEPS,
        NODE_DAEMON_SETUP_STEPS,
        Setup,
        finish,
        release_lock,
        resolve_owners,
    )
    from txsetup.txn.engine import StepReport, StepState, run_steps, signals_raise

    layout = Layout(args.root)
    txid = new_txid()
    structlog.contextvars.bind_contextvars(txid=txid)
    log = get_logger()
    log.info("txn.begin", command="node-daemon-setup", root=str(args.root), dry_run=args.dry_run)
    config = load_config(args.config, root=args.root)
    ctx = Setup(
        layout,
        txid,
        _stdin(),
        log,
        daemon_control(config, layout),
        owners=resolve_owners(config.files),
        lock_timeout=args.lock_timeout,
    )
    table = DRY_RUN_STEPS if args.dry_run else NODE_DAEMON_SETUP_STEPS
    names = [s.name for s in NODE_DAEMON_SETUP_STEPS]
    result = Result(txid, "dry_run" if args.dry_run else "committed")
    reports: list[StepReport] = []
    with signals_raise() as hush:
        try:
            run_steps(table, ctx, log=log, hush=hush, reports=reports)
            if not args.dry_run:
                finish(ctx)
        except TxsetupError as error:
            hush()
            result.outcome = "rolled_back" if isinstance(error, RolledBack) else "failed"
            result.exit_code = error.exit_code
            result.extra.update(_failure(error, layout))
            if isinstance(error, RolledBack):
                log.warning("txn.rolled_back", reason=str(error))
        finally:
            release_lock(ctx)
    done = {r.name: r for r in reports}
    result.steps = [done.get(n, StepReport(n, StepState.SKIPPED)).to_json() for n in names]
    if ctx.recovered:
        result.extra["recovered"] = ctx.recovered
    if args.dry_run and result.exit_code == ExitCode.OK:
        result.extra["plan"] = [p.describe() for p in ctx.plan]
        pending = unfinished_txid(layout)
        if pending is not None:
            # The real run would first finish or undo it; say so, touch nothing.
            result.extra["pending_recovery"] = pending
    elif result.exit_code == ExitCode.OK:
        result.changed = ctx.changed_paths
        if ctx.txn is None:
            result.outcome = "converged"
            log.info("txn.converged")
        else:
            log.info("txn.committed", changed=result.changed)
    return result


def unfinished_txid(layout: Layout) -> str | None:
    """The id of an unfinished transaction in the journal, read without writing."""
    from txsetup.txn.journal import FINISHED_STATES, read_journal

    records = read_journal(layout.journal)
    return records[-1].txid if records and records[-1].state not in FINISHED_STATES else None


def run_resume(args: argparse.Namespace) -> Result:
    """``--resume [--abort]``: finish or undo the unfinished transaction."""
    from filelock import FileLock, Timeout

    from txsetup.node.restart import recovery_hooks
    from txsetup.txn.recovery import recover_pending

    layout = Layout(args.root)
    structlog.contextvars.bind_contextvars(txid=None)
    log = get_logger()
    log.info("txn.begin", command="node-daemon-setup", resume=True, abort=args.abort)
    config = load_config(args.config, root=args.root)
    try:
        layout.make_state_dir()
        with FileLock(layout.lock_file, timeout=args.lock_timeout):
            found = recover_pending(
                layout,
                log,
                hooks=recovery_hooks(daemon_control(config, layout)),
                abort=args.abort,
                lock_timeout=args.lock_timeout,
            )
    except Timeout:
        return Result(
            None,
            "failed",
            ExitCode.BUSY,
            extra={
                "error": f"lock: {layout.relative(layout.lock_file)} is held by another run",
                "error_code": "busy",
            },
        )
    except OSError as exc:
        # The node may still be mid-transaction: only the journal can finish it.
        error = RecoveryFailed(f"resume: {exc}")
        return Result(None, "failed", error.exit_code, extra=_failure(error, layout))
    except TxsetupError as error:
        return Result(None, "failed", error.exit_code, extra=_failure(error, layout))
    if found is None:
        return Result(None, "nothing_to_resume")
    structlog.contextvars.bind_contextvars(txid=found["txid"])
    outcome = "resumed" if found["action"] == "rolled_forward" else "rolled_back"
    return Result(found["txid"], outcome, extra={"recovered": [found]})


def _log_format(args: argparse.Namespace) -> LogFormat:
    if args.log_format is not None:
        return args.log_format  # type: ignore[no-any-return]
    return "console" if sys.stderr.isatty() else "json"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``txsetup``; returns the process exit code."""
    started = time.monotonic()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        configure_logging(fmt="console" if sys.stderr.isatty() else "json", stream=sys.stderr)
        get_logger().error("usage.error", error=str(error))
        _emit(
            Result(
                None,
                "failed",
                ExitCode.USAGE,
                extra={"error": str(error), "error_code": error.error_code},
            )
        )
        return ExitCode.USAGE
    level = logging.DEBUG if args.debug or args.verbose else logging.INFO
    configure_logging(fmt=_log_format(args), level=level, stream=sys.stderr)
    if args.command == "push":
        try:
            return run_push(args)
        except Exception as error:  # the last line of defence: no traceback
            get_logger().error(
                "push.error", error=f"internal error: {error!r}", error_code="internal"
            )
            return ExitCode.INTERNAL
    if args.command == "status":
        from txsetup.node.status import describe_last_transaction

        print(json.dumps(describe_last_transaction(Layout(args.root))))
        return ExitCode.OK
    try:
        if args.abort and not args.resume:
            raise UsageError("--abort goes with --resume")
        if args.resume and args.dry_run:
            raise UsageError("--resume and --dry-run exclude each other")
        result = run_resume(args) if args.resume else run_node_daemon_setup(args)
    except TxsetupError as error:  # before any step: usage or configuration
        get_logger().error("config.error", error=str(error), error_code=error.error_code)
        result = Result(
            None,
            "failed",
            error.exit_code,
            extra={"error": str(error), "error_code": error.error_code},
        )
    except Exception as error:  # the last line of defence: no traceback
        result = Result(
            None,
            "failed",
            ExitCode.INTERNAL,
            extra={
                "error": f"internal error: {type(error).__name__}: {error}",
                "error_code": "internal",
            },
        )
    get_logger().info(
        "txn.end",
        outcome=result.outcome,
        exit_code=int(result.exit_code),
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    _emit(result)
    return result.exit_code


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
    from txsetup.master import PushOptions, build_payload, push
    from txsetup.master.progress import make_view

    log = get_logger()
    try:
        if args.abort and not args.resume:
            raise UsageError("--abort goes with --resume")
        if args.resume and args.dry_run:
            raise UsageError("--resume and --dry-run exclude each other")
        if args.parallel < 1 or (args.timeout is not None and args.timeout <= 0):
            raise UsageError("--parallel and --timeout must be positive")
        nodes = _push_nodes(args)
        payload = (
            None
            if args.resume
            else build_payload(args.from_root, start_node_daemon=args.start_node_daemon)
        )
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
    )
    view = make_view(_log_format(args), sys.stderr)
    view.begin(len(nodes))
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


def _print_line(line: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def _emit(result: Result) -> None:
    """Print the result; a closed stdout (dropped SSH) must not change the exit code."""
    try:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        sys.stdout.flush()
    except OSError:
        # Python would complain again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def node_daemon_setup_main() -> NoReturn:
    """Entry point of the ``node-daemon-setup`` alias (Ganeti's master runs it)."""
    sys.exit(main(["node-daemon-setup", *sys.argv[1:]]))


def console_main() -> NoReturn:
    """Entry point of ``txsetup``."""
    sys.exit(main())
