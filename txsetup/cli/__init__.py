"""Command line: the run of each command, and the result and exit code it ends with.

``txsetup node-daemon-setup`` (alias ``node-daemon-setup``) and ``txsetup
ssh-setup`` (alias ``prepare-node-join``) read a document on stdin and run
that program's transaction (:mod:`txsetup.cli.transaction`); ``txsetup
status`` describes the last transaction; ``txsetup push`` runs a program on
nodes over ssh (:mod:`txsetup.cli.push`). stderr carries JSON log lines,
stdout JSON results; exit codes are chosen in :mod:`txsetup.cli.result`
(and, for push, :mod:`txsetup.cli.push`), nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from txsetup.cli.invocation import check_root, check_stdin
from txsetup.cli.parser import ALIASES, build_alias_parser, build_parser
from txsetup.cli.push import run_push
from txsetup.errors import (
    ExitCode,
    InternalError,
    TxsetupError,
    UsageError,
    environment_problem,
)
from txsetup.log import configure_logging, default_log_format, get_logger

if TYPE_CHECKING:
    from txsetup.cli.result import Result

__all__ = [
    "ALIASES",
    "build_alias_parser",
    "build_parser",
    "main",
    "node_daemon_setup_main",
    "prepare_node_join_main",
]


def main(argv: Sequence[str] | None = None, *, alias: str | None = None) -> int:
    """Entry point of ``txsetup`` (or of the drop-in ``alias``); returns the process exit code.

    ``--help`` and ``--version`` return 0 having printed only that: no log
    line and no JSON result, which a person reading help does not want.
    """
    started = time.monotonic()
    parser = build_parser() if alias is None else build_alias_parser(alias)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # only --help and --version exit; errors raise UsageError
        return ExitCode.OK if done.code in (None, 0) else ExitCode.USAGE
    except UsageError as error:
        configure_logging(fmt="console" if sys.stderr.isatty() else "json", stream=sys.stderr)
        from txsetup.cli.result import refused

        return _emit(refused(error))
    level = logging.DEBUG if args.debug or args.verbose else logging.INFO
    configure_logging(
        fmt=default_log_format(args.log_format, sys.stderr), level=level, stream=sys.stderr
    )
    if args.command == "push":
        try:
            return run_push(args)
        except Exception as error:  # the last line of defence: no traceback
            get_logger().error(
                "push.error", error=f"internal error: {error!r}", error_code="internal"
            )
            return ExitCode.INTERNAL
    if args.command == "status":
        return _status(args.root)
    # A dropped ssh session with a terminal sends SIGHUP: the run goes on to its
    # end instead of dying half way (no terminal, no SIGHUP: the same outcome).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    result = _run(args, alias or f"txsetup {args.command}")
    get_logger().info(
        "txn.end",
        outcome=result.outcome,
        exit_code=int(result.exit_code),
        duration_ms=int((time.monotonic() - started) * 1000),
        **_why(result, args, alias),
    )
    return _emit(result)


def _why(result: Result, args: argparse.Namespace, alias: str | None) -> dict[str, str]:
    """``txn.end``'s ``error`` and ``error_code`` on a failure, and on exit 8 the
    ``resume_command`` to run next: the console's summary says both."""
    why: dict[str, str] = {
        k: str(result.extra[k]) for k in ("error", "error_code") if k in result.extra
    }
    if result.exit_code == ExitCode.RECOVERY_FAILED:
        why["resume_command"] = resume_command(args, alias)
    return why


def resume_command(args: argparse.Namespace, alias: str | None) -> str:
    """The ``--resume`` command line for the command that ran, as it was invoked.

    The drop-in alias when that ran (``prepare-node-join --resume``), else
    ``txsetup <command> --resume``; with the same ``--root`` and ``--config``,
    which say where the journal is and how to control the daemon.
    """
    words = [alias] if alias is not None else ["txsetup", args.command]
    if args.root != Path("/"):
        words += ["--root", str(args.root)]
    if args.config is not None:
        words += ["--config", str(args.config)]
    return shlex.join([*words, "--resume"])


def _run(args: argparse.Namespace, prog: str) -> Result:
    """node-daemon-setup, ssh-setup or ``--resume``: the invocation checked, then the run.

    The node's modules are imported here, not at the top: ``push`` does not need them.
    """
    from txsetup.cli.result import internal_error, refused
    from txsetup.cli.transaction import run_decision, run_program, run_resume

    try:
        if args.command in ("commit", "abort", "confirm", "revert"):
            if args.command in ("commit", "abort") and (args.txid is None) == (
                args.coordinator is None
            ):
                raise UsageError(f"{args.command} takes a TXID or --coordinator ID, one of them")
            if args.command == "revert" and args.txid is None and not args.if_unconfirmed:
                raise UsageError("revert takes a TXID (without one only with --if-unconfirmed)")
            check_root(args.root)
            return run_decision(args)
        if args.abort and not args.resume:
            raise UsageError("--abort goes with --resume")
        if args.resume and args.dry_run:
            raise UsageError("--resume and --dry-run exclude each other")
        if args.prepare and (args.resume or args.dry_run):
            raise UsageError("--prepare goes with neither --resume nor --dry-run")
        if args.coordinator is not None and not args.prepare:
            raise UsageError("--coordinator goes with --prepare")
        if args.confirm_within is not None and (args.prepare or args.resume or args.dry_run):
            raise UsageError(
                "--confirm-within goes with a run (or `txsetup commit`), "
                "not with --prepare, --resume or --dry-run"
            )
        check_root(args.root)
        if args.resume:
            return run_resume(args)
        check_stdin(prog)  # before the lock; --dry-run reads the document too
        return run_program(args)
    except TxsetupError as error:  # before any step: usage, environment or configuration
        return refused(error)
    except Exception as error:  # the last line of defence: no traceback
        return internal_error(error)


def _status(root: Path) -> int:
    """``txsetup status``: the journal described, or why it cannot be read (exit 7 or 1)."""
    from txsetup.cli.result import refused
    from txsetup.node.status import describe_last_transaction
    from txsetup.txn.layout import Layout

    try:
        check_root(root)
    except TxsetupError as error:
        return _emit(refused(error))
    layout = Layout(root)
    try:
        described = describe_last_transaction(layout)
    except OSError as exc:
        failure = environment_problem(exc, doing="status") or InternalError(
            f"status: cannot read {layout.relative(layout.journal)}: {exc.strerror or exc}"
        )
        get_logger().error("status.error", error=str(failure), error_code=failure.error_code)
        described = {
            "txid": None,
            "state": "unknown",
            "exit_code": int(failure.exit_code),
            "error": str(failure),
            "error_code": failure.error_code,
        }
        print(json.dumps(described))
        return failure.exit_code
    print(json.dumps(described))
    return ExitCode.OK


def _emit(result: Result) -> ExitCode:
    """Print the result; a closed stdout (dropped SSH) must not change the exit code.

    Returns the result's exit code.
    """
    try:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        sys.stdout.flush()
    except OSError:
        # Python would complain again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return result.exit_code


def node_daemon_setup_main() -> NoReturn:
    """Entry point of the ``node-daemon-setup`` alias (Ganeti's master runs it)."""
    sys.exit(main(sys.argv[1:], alias="node-daemon-setup"))


def prepare_node_join_main() -> NoReturn:
    """Entry point of the ``prepare-node-join`` alias of ``ssh-setup`` (Ganeti's name)."""
    sys.exit(main(sys.argv[1:], alias="prepare-node-join"))


def console_main() -> NoReturn:
    """Entry point of ``txsetup``."""
    sys.exit(main())
