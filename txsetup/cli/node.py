"""``node-daemon-setup`` and ``--resume`` (of either command): the run, and its result.

Failures become a :class:`Result` with the exit code their error carries;
nothing here prints or exits: :mod:`txsetup.cli` does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog

from txsetup.errors import (
    EnvironmentProblem,
    ExitCode,
    InternalError,
    RecoveryFailed,
    RolledBack,
    TxsetupError,
)
from txsetup.log import get_logger
from txsetup.node.config import Config
from txsetup.node.config_file import load_config
from txsetup.txn.plan import Layout

if TYPE_CHECKING:
    from txsetup.node.preflight import Preflight, Table
    from txsetup.node.restart import DaemonControl
    from txsetup.txn.engine import Step
    from txsetup.txn.recovery import Hooks
    from txsetup.txn.run import TableRun

__all__ = ["Result", "all_recovery_hooks", "run_node_daemon_setup", "run_resume"]


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
        """The result object."""
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


def all_recovery_hooks(config: Config, layout: Layout) -> Hooks:
    """Recovery for a transaction of any step table: whichever command runs next
    (or ``--resume``) must finish what another one began."""
    from txsetup.node.restart import recovery_hooks
    from txsetup.node.sshd import SshdControl, sshd_recovery_hooks
    from txsetup.txn.recovery import combine_hooks

    return combine_hooks(
        recovery_hooks(daemon_control(config, layout)),
        sshd_recovery_hooks(SshdControl(config.sshd, get_logger())),
    )


def checked_before_lock(
    args: argparse.Namespace, config: Config, layout: Layout, *, own: Table | None = None
) -> Preflight:
    """Refuse before anything is written when a program the run will start is missing.

    Checks what is known before the document is read: the programs the
    configuration file sets for the ``own`` table, and those recovering an
    unfinished transaction will start. Returns the check, for the verify steps
    to finish once the document says what else the run needs.

    Raises:
        MissingProgram: a program is missing (exit 4); nothing was written.
    """
    from txsetup.node.preflight import Preflight

    preflight = Preflight.for_run(config, root=args.root, config_arg=args.config)
    preflight.before_lock(layout, own=own)
    return preflight


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
        resolve_owners,
    )

    layout = Layout(args.root)
    txid = new_txid()
    structlog.contextvars.bind_contextvars(txid=txid)
    log = get_logger()
    log.info("txn.begin", command="node-daemon-setup", root=str(args.root), dry_run=args.dry_run)
    config = load_config(args.config, root=args.root)
    preflight = checked_before_lock(args, config, layout, own="daemon")
    ctx = Setup(
        layout,
        txid,
        _stdin(),
        log,
        daemon_control(config, layout),
        owners=resolve_owners(config.files),
        client_profile=config.files.client_pem_profile,
        lock_timeout=args.lock_timeout,
        hooks=all_recovery_hooks(config, layout),
        preflight=preflight,
    )
    table = DRY_RUN_STEPS if args.dry_run else NODE_DAEMON_SETUP_STEPS
    return run_table(
        ctx, table, NODE_DAEMON_SETUP_STEPS, dry_run=args.dry_run, command="node-daemon-setup"
    )


def run_table(
    ctx: TableRun,
    table: Sequence[Step[Any]],
    full: Sequence[Step[Any]],
    *,
    dry_run: bool,
    command: str,
) -> Result:
    """Run a step table (or its dry-run table) and turn what happened into the result.

    Shared by every command that runs a step table: ``steps`` lists each step
    of the ``full`` table, ``skipped`` where a dry run or a failure never got
    there; a dry run reports its plan, a real run what it changed.
    """
    from txsetup.txn.engine import StepReport, StepState, run_steps, signals_raise
    from txsetup.txn.recovery import failure_cause, utc_now
    from txsetup.txn.run import finish, release_lock

    log, layout = ctx.log, ctx.layout
    result = Result(ctx.txid, "dry_run" if dry_run else "committed")
    reports: list[StepReport] = []
    started_at = utc_now()

    def failed(step: str, error: TxsetupError) -> None:
        ctx.failure = failure_cause(step=step, error_code=error.error_code, error=str(error))

    with signals_raise() as hush:
        try:
            run_steps(table, ctx, log=log, hush=hush, reports=reports, on_failure=failed)
            if not dry_run:
                finish(ctx, command=command, started_at=started_at)
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
    result.steps = [done.get(s.name, StepReport(s.name, StepState.SKIPPED)).to_json() for s in full]
    if ctx.recovered:
        result.extra["recovered"] = ctx.recovered
    if dry_run and result.exit_code == ExitCode.OK:
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
    """``--resume [--abort]``: finish or undo the unfinished transaction.

    Every result it gives, failures included, carries ``last_transaction``:
    what the node's last transaction ended with, read back from the journal,
    so a master that lost a run's own result (a push that timed out) learns
    it here.

    Raises:
        EnvironmentProblem: the lock may not be taken here (not root, a
            read-only file system); the journal was not even read (exit 7).
    """
    from txsetup.node.status import read_last_transaction

    result = _resume(args)
    with contextlib.suppress(OSError):  # an unreadable journal: the error already says so
        result.extra["last_transaction"] = read_last_transaction(Layout(args.root))
    return result


def _resume(args: argparse.Namespace) -> Result:
    from txsetup.txn.recovery import recover_pending
    from txsetup.txn.run import acquire_lock

    layout = Layout(args.root)
    structlog.contextvars.bind_contextvars(txid=None)
    log = get_logger()
    log.info("txn.begin", command=args.command, resume=True, abort=args.abort)
    config = load_config(args.config, root=args.root)
    checked_before_lock(args, config, layout)
    try:
        lock = acquire_lock(layout, args.lock_timeout)
        try:
            found = recover_pending(
                layout,
                log,
                hooks=all_recovery_hooks(config, layout),
                abort=args.abort,
                lock_timeout=args.lock_timeout,
                by="--resume --abort" if args.abort else "--resume",
            )
        finally:
            lock.release()
    except EnvironmentProblem:
        raise  # this user or this mount may not take the lock: nothing was touched
    except (OSError, InternalError) as exc:
        # The node may still be mid-transaction (an unreadable lock file or state
        # directory says nothing about the journal): only the journal can finish it.
        error = RecoveryFailed(f"resume: {exc}")
        return Result(None, "failed", error.exit_code, extra=_failure(error, layout))
    except TxsetupError as error:
        return Result(None, "failed", error.exit_code, extra=_failure(error, layout))
    if found is None:
        return Result(None, "nothing_to_resume")
    structlog.contextvars.bind_contextvars(txid=found.txid)
    outcome = "resumed" if found.action == "rolled_forward" else "rolled_back"
    return Result(
        found.txid, outcome, changed=found.changed, extra={"recovered": [found.to_json()]}
    )
