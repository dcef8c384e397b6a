"""Command line: arguments, the run, and the only place exit codes are chosen.

``txsetup node-daemon-setup`` (alias ``node-daemon-setup``) reads a document
on stdin and runs the step table (:mod:`txsetup.cli.node`); ``txsetup
ssh-setup`` (alias ``prepare-node-join``) does the same for SSH keys
(:mod:`txsetup.cli.ssh`); ``txsetup
status`` describes the last transaction; ``txsetup push`` runs it on nodes
over ssh (:mod:`txsetup.cli.push`). stderr carries JSON log lines, stdout
JSON results.
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
from typing import NoReturn

from txsetup.cli.helptext import ExamplesFormatter, add_version, epilog
from txsetup.cli.invocation import check_root, check_stdin
from txsetup.cli.node import Result, run_node_daemon_setup, run_resume
from txsetup.cli.push import add_push_parser, run_push
from txsetup.cli.ssh import run_ssh_setup
from txsetup.errors import (
    ExitCode,
    InternalError,
    TxsetupError,
    UsageError,
    environment_problem,
)
from txsetup.log import configure_logging, default_log_format, get_logger
from txsetup.txn.layout import Layout

__all__ = [
    "ALIASES",
    "build_alias_parser",
    "build_parser",
    "main",
    "node_daemon_setup_main",
    "prepare_node_join_main",
]


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
# The drop-in names a Ganeti master runs, and the command each one is.
ALIASES: dict[str, str] = {
    "node-daemon-setup": "node-daemon-setup",
    "prepare-node-join": "ssh-setup",
}


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
    add_push_parser(sub)
    return parser


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
        return _emit(_refused(error))
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
    """node-daemon-setup, ssh-setup or ``--resume``: the invocation checked, then the run."""
    try:
        if args.abort and not args.resume:
            raise UsageError("--abort goes with --resume")
        if args.resume and args.dry_run:
            raise UsageError("--resume and --dry-run exclude each other")
        check_root(args.root)
        if args.resume:
            return run_resume(args)
        check_stdin(prog)  # before the lock; --dry-run reads the document too
        if args.command == "ssh-setup":
            return run_ssh_setup(args)
        return run_node_daemon_setup(args)
    except TxsetupError as error:  # before any step: usage, environment or configuration
        return _refused(error)
    except Exception as error:  # the last line of defence: no traceback
        return Result(
            None,
            "failed",
            ExitCode.INTERNAL,
            extra={
                "error": f"internal error: {type(error).__name__}: {error}",
                "error_code": "internal",
            },
        )


def _refused(error: TxsetupError) -> Result:
    """A run refused before any step: its log line, and the result to print.

    The event says whose the fault is: the command line (``usage.error``),
    the node's environment (``environment.error``) or the configuration.
    """
    event = _REFUSED_EVENTS.get(error.error_code, "config.error")
    get_logger().error(event, error=str(error), error_code=error.error_code)
    extra = {"error": str(error), "error_code": error.error_code}
    return Result(None, "failed", error.exit_code, extra=extra)


_REFUSED_EVENTS = {"usage": "usage.error", "environment": "environment.error"}


def _status(root: Path) -> int:
    """``txsetup status``: the journal described, or why it cannot be read (exit 7 or 1)."""
    from txsetup.node.status import describe_last_transaction

    try:
        check_root(root)
    except TxsetupError as error:
        return _emit(_refused(error))
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
