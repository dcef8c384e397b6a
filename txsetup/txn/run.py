"""What every transaction run shares, whatever its step table: the lock step and the end.

``node-daemon-setup`` and ``ssh-setup`` have different steps but the same
first and last moves: take the lock and finish (or undo) whatever a crash left
unfinished, then, past every step, drop the copies and record the end. Their
contexts satisfy :class:`TxnRun`, so these few functions serve both tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout
from structlog.typing import FilteringBoundLogger

from txsetup.errors import (
    Busy,
    InternalError,
    RefusedByVerification,
    environment_problem,
)
from txsetup.txn import recovery
from txsetup.txn.changeset import (
    commit_changes,
    discard_copies,
    make_dirs,
    missing_dirs,
    stage_changes,
)
from txsetup.txn.journal import Journal, Record, TxnState
from txsetup.txn.layout import Layout
from txsetup.txn.plan import KIND_WORDS, FileMeta, PlannedFile

__all__ = [
    "TableRun",
    "TxnRun",
    "acquire_lock",
    "commit",
    "finish",
    "prepare",
    "release_lock",
    "take_lock",
    "undo",
]


class TxnRun(Protocol):
    """The part of a step table's context that the lock step and the end use."""

    layout: Layout
    txid: str
    log: FilteringBoundLogger
    lock_timeout: float
    lock: FileLock | None
    recovered: list[dict[str, str]]
    txn: recovery.PendingTxn | None
    # Why the run is being undone (:func:`recovery.failure_cause`), set before compensation.
    failure: dict[str, str] | None

    @property
    def journal(self) -> Journal:
        """This transaction's journal writer."""
        ...

    def hooks_for_recovery(self) -> recovery.Hooks:
        """How to finish or undo an unfinished transaction of any table."""
        ...


class TableRun(TxnRun, Protocol):
    """A step table's context, as the command line reads it to make the result."""

    plan: list[PlannedFile]

    @property
    def changed_paths(self) -> list[str]:
        """Root-relative paths the transaction changes."""
        ...


def acquire_lock(layout: Layout, timeout: float) -> FileLock:
    """Take ``var/lock/txsetup.lock``, refusing a lock file that is not a regular file.

    Raises:
        RefusedByVerification: a symlink, directory or FIFO is at the lock's path (exit 4).
        Busy: another run holds it for longer than ``timeout`` seconds (exit 5).
        EnvironmentProblem: the lock or state directory may not be created or
            opened here: not root, or a read-only file system (exit 7).
        InternalError: the lock file cannot be opened for another reason (exit 1).
    """
    where = layout.relative(layout.lock_file)
    found = FileMeta.of(layout.lock_file)
    if found is not None and found.kind != "file":
        # Opening it would follow a symlink out of the root, or block on a FIFO.
        raise RefusedByVerification(
            f"lock: {where} is {KIND_WORDS.get(found.kind, 'a file')}, not a regular file; "
            "move it away, then run again"
        )
    lock = FileLock(layout.lock_file, timeout=timeout)
    try:
        layout.make_state_dir()
        lock.acquire()
    except Timeout as exc:
        raise Busy(f"lock: {where} is held by another run (waited {timeout:g}s)") from exc
    except OSError as exc:
        raise environment_problem(exc, doing="lock", where=layout.lock_file) or InternalError(
            f"lock: cannot open {where}: {exc.strerror or exc}"
        ) from exc
    return lock


def take_lock(ctx: TxnRun) -> bool:
    """Take the transaction lock, then recover whatever a crash left behind."""
    lock = acquire_lock(ctx.layout, ctx.lock_timeout)
    ctx.lock = lock
    pending = recovery.recover_pending(
        ctx.layout,
        ctx.log,
        hooks=ctx.hooks_for_recovery(),
        abort=False,
        lock_timeout=ctx.lock_timeout,
        by=f"run {ctx.txid}",
    )
    if pending:
        ctx.recovered.append(pending.to_json())
    return pending is not None


def prepare(
    ctx: TxnRun,
    planned: Sequence[PlannedFile],
    *,
    command: str,
    details: Mapping[str, Any],
    dir_modes: Mapping[str, int] | None = None,
) -> recovery.PendingTxn:
    """Stage ``planned`` and journal it durably: the commit point of either table.

    In order: the ``begun`` record (not durable; it names the directories
    about to be created, for an undo after a crash of the process), the
    missing target directories, the staged copies and hold links; then one
    fsync of each directory whose new entries the commit point depends on
    (the staging directories, the parents of created directories, and the
    journal's own entries the first time); then ``prepared`` with
    ``details``, fdatasync'd. A fresh node costs files + 4 fsyncs in all, a
    re-add files + 3 (``docs/journal.md``).
    """
    layout = ctx.layout
    dirs = missing_dirs(layout, planned)
    target_dirs = sorted({Path(p.desired.relpath).parent.as_posix() for p in planned})
    unsynced = ctx.journal.begin(
        {
            "command": command,
            "started_at": recovery.utc_now(),
            "created_dirs": dirs,
            "target_dirs": target_dirs,
        }
    )
    ctx.txn = txn = recovery.PendingTxn(ctx.txid, [], created_dirs=dirs, target_dirs=target_dirs)
    make_dirs(layout, dirs, modes=dir_modes)
    entries = {layout.path(d).parent for d in dirs}
    if unsynced:
        entries.update((layout.state_dir, layout.state_dir.parent))
    txn.changes = stage_changes(layout, ctx.txid, planned, entries=entries)
    ctx.journal.append(
        TxnState.PREPARED,
        {"changes": [c.to_json() for c in txn.changes], **details},
        durable=True,
    )
    txn.records = [Record(ctx.txid, TxnState.PREPARED, {})]
    return txn


def commit(ctx: TxnRun) -> bool:
    """Rename the staged files into place, under Ganeti's ssconf lock when ssconf files change."""
    if ctx.txn is None or not ctx.txn.changes:
        return False
    changes = ctx.txn.changes
    with recovery.ssconf_locked(ctx.layout, recovery.touches_ssconf(changes), ctx.lock_timeout):
        commit_changes(ctx.layout, changes)
    ctx.journal.append(TxnState.COMMITTED, durable=False)
    return True


def undo(ctx: TxnRun, after_undo: Callable[[recovery.PendingTxn], None]) -> None:
    """Undo stage and whatever followed it: old files back, copies gone, then ``after_undo``.

    Whatever happens, this runs once: every writing step of a table shares it
    as its compensation, and after a failure the durable ``rolling_back``
    record leaves the rest to ``--resume``.
    """
    if ctx.txn is None:
        return
    txn, ctx.txn = ctx.txn, None
    step = ctx.failure.get("step") if ctx.failure else None
    recovery.finish_undo(
        ctx.layout,
        txn,
        ctx.journal,
        lock_timeout=ctx.lock_timeout,
        reason=f"step {step} failed" if step else "step failed",
        cause=ctx.failure,
        after_undo=after_undo,
    )


def release_lock(ctx: TxnRun) -> None:
    """Release the transaction lock (idempotent)."""
    if ctx.lock is not None:
        ctx.lock.release(force=True)
        ctx.lock = None


def finish(ctx: TxnRun, *, command: str, started_at: str) -> None:
    """Past every step: drop the copies and record the end.

    No fsync: if the ``done`` record or a removal is lost, the journal still
    says prepared, and the next run rolls forward, which finds every file in
    place. For the same reason a failure here (a full disk, an I/O error)
    does not change the outcome, which was decided at commit.

    A run that changed nothing (converged) began no transaction; its summary
    replaces the last transaction's records all the same, so that its txid
    is findable on the node: one write, no fsync (:meth:`Journal.record_unchanged`).
    """
    if ctx.txn is None:
        begun = {
            "command": command,
            "started_at": started_at,
            "created_dirs": [],
            "target_dirs": [],
        }
        end = {"ended_at": recovery.utc_now(), "outcome": "converged"}
        with contextlib.suppress(OSError):  # only the summary is lost, not the outcome
            ctx.journal.record_unchanged(begun, end)
        return
    try:
        discard_copies(ctx.layout, ctx.txid, ctx.txn.target_dirs)
        ctx.journal.append(
            TxnState.DONE, {"ended_at": recovery.utc_now(), "outcome": "committed"}, durable=False
        )
    except OSError as exc:
        ctx.log.warning("txn.cleanup_deferred", error=str(exc))
