"""A whole transaction, read top to bottom: lock, steps, finish, release; and ``--resume``.

:func:`run_transaction` is the one place a run of any program can be read in
order. It returns an :class:`Outcome`; :mod:`txsetup.cli` turns that into the
JSON result and the exit code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.errors import (
    EnvironmentProblem,
    Held,
    InternalError,
    RecoveryFailed,
    RolledBack,
    TxsetupError,
)
from txsetup.txn.engine import StepReport, StepState, run_steps, signals_raise
from txsetup.txn.finish import settle_commit
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import FINISHED_STATES, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.lock import acquire_lock
from txsetup.txn.pending import PendingTxn, failure_cause, utc_now
from txsetup.txn.program import TxnContext
from txsetup.txn.recovery import Recovered, held_words, recover_pending, unconfirmed_words
from txsetup.txn.revertable import read_revertable
from txsetup.txn.steps import dry_run_table, prepare_table, release_lock, step_table

__all__ = ["Outcome", "resume", "run_transaction"]


@dataclass
class Outcome:
    """What became of one run of a program, for the command line to report.

    Attributes:
        txid: the run's transaction id.
        outcome: ``committed``, ``converged``, ``dry_run``, ``prepared``, ``rolled_back``
            or ``failed``.
        error: why it did not commit (its type says the exit code).
        steps: every step of the program's table, ``skipped`` where the run never got.
        changed: root-relative paths it changed (committed).
        recovered: what its lock step recovered.
        plan: the dry run's plan lines.
        pending_recovery: a dry run's note: the unfinished transaction a real run would recover.
        extra: what the program adds to a successful result.
    """

    txid: str
    outcome: str
    error: TxsetupError | None = None
    steps: list[dict[str, object]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    recovered: list[dict[str, str]] = field(default_factory=list)
    plan: list[dict[str, Any]] | None = None
    pending_recovery: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_transaction(ctx: TxnContext[Any, Any], *, dry_run: bool, prepare: bool = False) -> Outcome:
    """Run the program's steps (or its dry run) and finish: the whole run, in order.

    With ``prepare`` (``ctx.hold`` set) it stops at the commit point and the
    node stays held until ``txsetup commit`` or ``abort`` decides. A held node
    refuses every other run, its dry run too (exit 5).

    SIGINT and SIGTERM become an undo until every step is done; the lock is
    released whatever happens; errors become the outcome, never escape.
    """
    full = step_table(ctx.program)
    table = dry_run_table(ctx.program) if dry_run else full
    table = prepare_table(ctx.program) if prepare else table
    reports: list[StepReport] = []
    started_at = utc_now()
    error: TxsetupError | None = None

    def failed(step: str, error: TxsetupError) -> None:
        ctx.failure = failure_cause(step=step, error_code=error.error_code, error=str(error))

    with signals_raise() as hush:
        try:
            if dry_run:
                refuse_if_held(ctx.layout)
            run_steps(table, ctx, log=ctx.log, hush=hush, reports=reports, on_failure=failed)
            if not dry_run and not prepare:
                finish(ctx, started_at=started_at)
        except TxsetupError as raised:
            hush()
            error = raised
        finally:
            release_lock(ctx)
    done = {r.name: r for r in reports}
    outcome = Outcome(
        ctx.txid,
        _outcome_of(ctx, error, dry_run=dry_run),
        error,
        steps=[done.get(s.name, StepReport(s.name, StepState.SKIPPED)).to_json() for s in full],
        recovered=ctx.recovered,
    )
    if error is None:
        _describe_success(ctx, outcome)
    return outcome


def _outcome_of(ctx: TxnContext[Any, Any], error: TxsetupError | None, *, dry_run: bool) -> str:
    """The result's ``outcome`` word, logged as its event where it has one."""
    if isinstance(error, RolledBack):
        ctx.log.warning("txn.rolled_back", reason=str(error))
        return "rolled_back"
    if error is not None:
        return "failed"
    if dry_run:
        return "dry_run"
    if ctx.txn is not None and ctx.hold is not None:
        ctx.log.info("txn.prepared", changed=ctx.changed_paths, hold=dict(ctx.hold))
        return "prepared"
    if ctx.txn is None:
        ctx.log.info("txn.converged")
        return "converged"
    ctx.log.info("txn.committed", changed=ctx.changed_paths)
    return "committed"


def _describe_success(ctx: TxnContext[Any, Any], outcome: Outcome) -> None:
    """A dry run reports its plan (and what a real run would recover first); a run what changed."""
    outcome.extra = ctx.program.result(ctx)
    if outcome.outcome == "dry_run":
        outcome.plan = [p.describe() for p in ctx.plan]
        # The real run would first finish or undo it; say so, touch nothing.
        outcome.pending_recovery = unfinished_txid(ctx.layout)
        return
    outcome.changed = ctx.changed_paths
    if ctx.unconfirmed is not None:
        outcome.extra["unconfirmed"] = ctx.unconfirmed


def refuse_if_held(layout: Layout) -> None:
    """Refuse a run that takes no lock (a dry run) on a held node; reads, never writes.

    Raises:
        Held: a prepared transaction waits for its decision, or a commit for
            its confirmation (exit 5).
    """
    records = read_journal(layout.journal)
    if records and records[-1].state not in FINISHED_STATES:
        txn = PendingTxn.from_records(records)
        if txn.held:
            raise Held(held_words(txn))
    kept = read_revertable(layout)
    if kept is not None and kept.unconfirmed is not None and not kept.deadline_passed():
        raise Held(unconfirmed_words(kept))


def unfinished_txid(layout: Layout) -> str | None:
    """The id of an unfinished transaction in the journal, read without writing."""
    records = read_journal(layout.journal)
    return records[-1].txid if records and records[-1].state not in FINISHED_STATES else None


def resume(
    layout: Layout, log: FilteringBoundLogger, *, hooks: Hooks, abort: bool, lock_timeout: float
) -> Recovered | None:
    """``--resume [--abort]``: under the lock, finish or undo the unfinished transaction.

    Raises:
        EnvironmentProblem: the lock may not be taken here (not root, a
            read-only file system); the journal was not even read (exit 7).
        RecoveryFailed: anything else on the way (exit 8): an unreadable lock
            file or state directory says nothing about the journal, which
            only a later ``--resume`` can finish.
        TxsetupError: the lock is held (exit 5) or is not a regular file (exit 4).
    """
    try:
        lock = acquire_lock(layout, lock_timeout)
        try:
            return recover_pending(
                layout,
                log,
                hooks=hooks,
                abort=abort,
                lock_timeout=lock_timeout,
                by="--resume --abort" if abort else "--resume",
            )
        finally:
            lock.release()
    except EnvironmentProblem:
        raise  # this user or this mount may not take the lock: nothing was touched
    except (OSError, InternalError) as exc:
        raise RecoveryFailed(f"resume: {exc}") from exc


def finish(ctx: TxnContext[Any, Any], *, started_at: str) -> None:
    """Past every step: drop the copies and record the end.

    The earlier files are kept for ``txsetup revert``
    (:func:`txsetup.txn.finish.settle_commit`). No fsync: if the ``done``
    record or a rename is lost, the journal still says prepared, and the next
    run rolls forward, which finds every file in place. For the same reason a
    failure here (a full disk, an I/O error) does not change the outcome,
    which was decided at commit; only a commit to be confirmed keeps its
    earlier files durably, and fails (exit 8) when it cannot.

    A run that changed nothing (converged) began no transaction; its summary
    replaces the last transaction's records all the same, so that its txid
    is findable on the node: one write, no fsync (:meth:`Journal.record_unchanged`).
    """
    if ctx.txn is None:
        begun = {
            "command": ctx.program.command,
            "started_at": started_at,
            "created_dirs": [],
            "target_dirs": [],
        }
        end = {"ended_at": utc_now(), "outcome": "converged"}
        with contextlib.suppress(OSError):  # only the summary is lost, not the outcome
            ctx.journal.record_unchanged(begun, end)
        return
    ctx.unconfirmed = settle_commit(
        ctx.layout,
        ctx.txn,
        ctx.journal,
        hooks=ctx.recovery,
        command=ctx.program.command,
        end={"outcome": "committed"},
    )
