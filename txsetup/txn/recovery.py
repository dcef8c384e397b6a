"""Finishing or undoing a transaction from its journal alone.

The same functions serve a live run (its commit and its compensation) and
recovery after a crash (``--resume``, or the next run): state is rebuilt
from the journal, never from memory. Rules (``docs/journal.md``):

* no ``prepared`` record → undo (remove copies and created directories);
* ``prepared`` and not ``rolling_back`` → roll forward (unless ``--abort``);
* ``rolling_back`` → finish the undo;
* last record ``done`` or ``rolled_back`` → nothing to do.

:func:`recover_pending` applies these rules under the lock; what a program
does besides moving files (restart a daemon after commit, bring it back after
an undo) comes in as :class:`Hooks`, so one recovery serves every step table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from structlog.typing import FilteringBoundLogger

from txsetup.errors import Busy, RecoveryFailed, TxsetupError, os_error_words
from txsetup.txn.changeset import (
    Change,
    changed_in_place,
    commit_changes,
    discard_copies,
    remove_created_dirs,
    txid_of_copy,
    undo_changes,
)
from txsetup.txn.journal import (
    FINISHED_STATES,
    Journal,
    Record,
    TxnState,
    read_journal,
    repair_journal,
)
from txsetup.txn.layout import Layout

__all__ = [
    "RECOVERY_RULES",
    "ForwardFailed",
    "Hooks",
    "PendingTxn",
    "Recovered",
    "RecoveryAction",
    "RecoveryRule",
    "combine_hooks",
    "decide",
    "failure_cause",
    "finish_forward",
    "finish_undo",
    "load_pending",
    "recover_pending",
    "ssconf_locked",
    "touches_ssconf",
    "utc_now",
]


def utc_now() -> str:
    """RFC 3339 UTC timestamp for journal records."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The longest error text a journal record keeps (a daemon's output can be kilobytes).
_CAUSE_LIMIT = 4096


def failure_cause(*, error_code: str, step: str | None = None, error: str = "") -> dict[str, str]:
    """Why a transaction did not simply commit, as its end records keep it (``cause``).

    The error text is the one the log's ``step.failed`` line carries, cut to
    a bounded length and refused if it holds key material: the journal never
    does.
    """
    from txsetup.log import without_key_material

    text = without_key_material(error)
    if len(text) > _CAUSE_LIMIT:
        text = text[: _CAUSE_LIMIT - 3] + "..."
    cause = {"error_code": error_code, "error": text}
    return {"step": step, **cause} if step else cause


class RecoveryAction(StrEnum):
    """What recovery did (``txn.recovered``'s ``action``)."""

    ROLLED_FORWARD = "rolled_forward"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class RecoveryRule:
    """What recovery does with an unfinished transaction that reached ``state``.

    Attributes:
        state: the journal state that decides (the first rule whose state the
            journal reached applies).
        resume: the action of ``--resume`` and of the recovery at the start of a run.
        abort: the action of ``--resume --abort``.
        why: the reason, as the documentation states it.
    """

    state: TxnState
    resume: RecoveryAction
    abort: RecoveryAction
    why: str


# The rules of the module docstring as data: :func:`decide` applies them, and
# the documentation's transaction page is generated from them.
RECOVERY_RULES: tuple[RecoveryRule, ...] = (
    RecoveryRule(
        TxnState.ROLLING_BACK,
        resume=RecoveryAction.ROLLED_BACK,
        abort=RecoveryAction.ROLLED_BACK,
        why="an undo had begun and may have removed staged copies: it is finished, never reversed",
    ),
    RecoveryRule(
        TxnState.PREPARED,
        resume=RecoveryAction.ROLLED_FORWARD,
        abort=RecoveryAction.ROLLED_BACK,
        why="the commit point was reached: every new file is staged durably",
    ),
    RecoveryRule(
        TxnState.BEGUN,
        resume=RecoveryAction.ROLLED_BACK,
        abort=RecoveryAction.ROLLED_BACK,
        why="before the commit point no target was touched: copies and new directories go",
    ),
)


def decide(states: Set[TxnState], *, abort: bool) -> RecoveryAction:
    """Roll an unfinished transaction forward or back, from the states its journal reached.

    A roll-forward can still turn into an undo when what follows the commit
    fails (:class:`ForwardFailed`); that is the caller's part.
    """
    rule = next((r for r in RECOVERY_RULES if r.state in states), RECOVERY_RULES[-1])
    return rule.abort if abort else rule.resume


class ForwardFailed(TxsetupError):
    """What follows the commit could not be done (a daemon did not come back):
    recovery undoes the transaction instead of finishing it."""

    step: str = "commit"


@dataclass
class PendingTxn:
    """An unfinished transaction as its journal describes it."""

    txid: str
    records: list[Record]
    changes: list[Change] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)
    target_dirs: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def states(self) -> set[TxnState]:
        """Every state the journal reached."""
        return {r.state for r in self.records}

    @property
    def prepared(self) -> bool:
        """Whether the commit point was reached."""
        return TxnState.PREPARED in self.states

    @property
    def rolling_back(self) -> bool:
        """Whether an undo had begun (it must then be finished, never reversed)."""
        return TxnState.ROLLING_BACK in self.states

    @classmethod
    def from_records(cls, records: list[Record]) -> PendingTxn:
        """Rebuild the transaction from its (repaired) records."""
        txn = cls(records[0].txid, records)
        for record in records:
            data = dict(record.data)
            txn.created_dirs = data.pop("created_dirs", txn.created_dirs)
            txn.target_dirs = data.pop("target_dirs", txn.target_dirs)
            if record.state is TxnState.PREPARED:
                txn.changes = [Change.from_json(c) for c in data.pop("changes")]
            txn.details.update(data)
        return txn


def load_pending(layout: Layout) -> PendingTxn | None:
    """The unfinished transaction in the state directory, if any."""
    records = repair_journal(layout.journal)
    if not records or records[-1].state in FINISHED_STATES:
        return None
    txid = records[0].txid
    if records[0].state is not TxnState.BEGUN or any(r.txid != txid for r in records):
        raise RecoveryFailed(f"journal {layout.journal} is inconsistent; inspect it by hand")
    return PendingTxn.from_records(records)


@contextlib.contextmanager
def ssconf_locked(layout: Layout, needed: bool, timeout: float) -> Iterator[None]:
    """Hold Ganeti's ssconf lock while ssconf files change (when ``needed``)."""
    if not needed:
        yield
        return
    try:
        with FileLock(layout.ssconf_lock, timeout=timeout):
            yield
    except Timeout as exc:
        raise Busy(
            f"could not take {layout.relative(layout.ssconf_lock)} within {timeout:g}s"
        ) from exc


def touches_ssconf(changes: Sequence[Change]) -> bool:
    """Whether any of ``changes`` is an ssconf file (Ganeti's ssconf lock is then taken)."""
    return any(Path(c.path).name.startswith("ssconf_") for c in changes)


def finish_forward(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    lock_timeout: float,
    after_commit: Callable[[PendingTxn], None] = lambda _: None,
    end: Mapping[str, Any] | None = None,
) -> None:
    """Roll a prepared transaction forward: commit what is left, then ``after_commit``.

    ``end`` adds to the ``done`` record (what recovery removed besides).
    """
    with (
        _or_recovery_failed(layout, txn, "rolling forward"),
        ssconf_locked(layout, touches_ssconf(txn.changes), lock_timeout),
    ):
        commit_changes(layout, txn.changes)
    after_commit(txn)
    discard_copies(layout, txn.txid, txn.target_dirs)
    _record_end(
        journal, TxnState.DONE, {"ended_at": utc_now(), "outcome": "resumed", **(end or {})}
    )


def finish_undo(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    lock_timeout: float,
    reason: str,
    cause: Mapping[str, str] | None = None,
    after_undo: Callable[[PendingTxn], None] = lambda _: None,
    end: Mapping[str, Any] | None = None,
) -> None:
    """Undo a transaction at any point: old files back, copies and new dirs gone.

    ``reason`` (a few words) and ``cause`` (:func:`failure_cause`: the step
    that failed, its error code and text) go into ``rolling_back`` and
    ``rolled_back``, for ``txsetup status``; ``end`` adds to the
    ``rolled_back`` record (what recovery removed besides).

    Once prepared, ``rolling_back`` is journaled durably first, so a crash
    during the undo can never be mistaken for a transaction to roll forward.
    """
    with _or_recovery_failed(layout, txn, "undoing"):
        why: dict[str, Any] = {"reason": reason, **({"cause": dict(cause)} if cause else {})}
        if txn.prepared and not txn.rolling_back:
            journal.append(TxnState.ROLLING_BACK, why, durable=True)
            txn.records.append(Record(txn.txid, TxnState.ROLLING_BACK, why))
        # Ganeti's ssconf lock only when an ssconf file really changes back: an
        # undo after commit failed to take that lock must not wait for it again.
        needed = touches_ssconf(changed_in_place(layout, txn.changes))
        with ssconf_locked(layout, needed, lock_timeout):
            undo_changes(layout, txn.changes)
    # The daemon goes back to its earlier state before the undo is recorded as done.
    after_undo(txn)
    discard_copies(layout, txn.txid, txn.target_dirs)
    remove_created_dirs(layout, txn.created_dirs)
    _record_end(journal, TxnState.ROLLED_BACK, {"ended_at": utc_now(), **why, **(end or {})})


@contextlib.contextmanager
def _or_recovery_failed(layout: Layout, txn: PendingTxn, doing: str) -> Iterator[None]:
    """Turn an I/O error while files move into :class:`RecoveryFailed` (exit 8).

    The node may then be half way, and only the journal (left as it is, with
    the staged and hold copies it names) can finish the job: a later
    ``--resume`` retries it.
    """
    try:
        yield
    except OSError as exc:
        raise RecoveryFailed(
            f"{doing} transaction {txn.txid} failed: {os_error_words(exc)}; "
            f"the journal {layout.relative(layout.journal)} still describes it"
        ) from exc


def _record_end(journal: Journal, state: TxnState, data: dict[str, Any]) -> None:
    """Append the final record, best effort.

    It is not durable by design: when it is lost (a crash, or an I/O error
    here) the journal still shows the transaction unfinished, and the next
    run or ``--resume`` repeats the finish, which finds everything in place.
    The node is consistent already, so this must not turn into a failure.
    """
    with contextlib.suppress(OSError):
        journal.append(state, data, durable=False)


def _nothing_after_commit(_txn: PendingTxn, _journal: Journal) -> None:
    return None


def _nothing_after_undo(_txn: PendingTxn) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """What a program does besides moving files, when finishing or undoing.

    Attributes:
        after_commit: runs once the files are in place (roll-forward); raises
            :class:`ForwardFailed` when the transaction must be undone instead.
        after_undo: runs once the old files are back, before the undo is recorded.
        sweep_dirs: root-relative directories where staged and hold copies may
            be left by a crash before any journal record named them.
    """

    after_commit: Callable[[PendingTxn, Journal], None] = _nothing_after_commit
    after_undo: Callable[[PendingTxn], None] = _nothing_after_undo
    sweep_dirs: tuple[str, ...] = ()


def combine_hooks(*hooks: Hooks) -> Hooks:
    """Hooks that do what each of ``hooks`` does, in order, and sweep all their directories.

    A node runs more than one step table, and whichever run comes next must
    finish or undo whatever transaction is pending, so recovery gets every
    table's hooks at once. Each hook acts only on its own journal records
    (a daemon restart, an sshd reload), so running them all is safe.
    """

    def after_commit(txn: PendingTxn, journal: Journal) -> None:
        for each in hooks:
            each.after_commit(txn, journal)

    def after_undo(txn: PendingTxn) -> None:
        for each in hooks:
            each.after_undo(txn)

    sweep = tuple(dict.fromkeys(d for each in hooks for d in each.sweep_dirs))
    return Hooks(after_commit=after_commit, after_undo=after_undo, sweep_dirs=sweep)


@dataclass(frozen=True)
class Recovered:
    """What recovery did to an unfinished transaction.

    Attributes:
        txid: the transaction's id.
        action: rolled forward or back.
        changed: root-relative paths this recovery changed: the files it put
            in place (rolled forward), or put back or removed (rolled back).
    """

    txid: str
    action: RecoveryAction
    changed: list[str]

    def to_json(self) -> dict[str, str]:
        """The ``recovered`` entry of a result (and ``txn.recovered``'s fields)."""
        return {"txid": self.txid, "action": str(self.action)}


def recover_pending(
    layout: Layout,
    log: FilteringBoundLogger,
    *,
    hooks: Hooks,
    abort: bool,
    lock_timeout: float,
    by: str,
) -> Recovered | None:
    """Finish (prepared) or undo (not prepared, or ``abort``) an unfinished transaction.

    The caller holds the transaction lock. Finishing includes
    ``hooks.after_commit``; if that raises :class:`ForwardFailed`, the
    transaction is undone instead, which also leaves the node consistent.

    ``by`` names who recovers (``--resume``, ``--resume --abort``, ``run
    <txid>``): the end record keeps it, with the journal state the
    transaction had stopped in, as the ``cause`` ``status`` reports.

    Returns:
        What was done, or None when nothing was unfinished.

    Raises:
        RecoveryFailed: an I/O error on the way (exit 8): the node may be half
            way, and the journal, kept as it is, is what a later ``--resume``
            finishes it from.
    """
    with _io_errors_need_help():
        txn = load_pending(layout)
        if txn is None:
            # Copies a crash left before any journal record named them, or
            # that reappeared after their removal (it is not fsynced).
            note = _leftovers(log, discard_copies(layout, None, hooks.sweep_dirs))
            if note:
                _note_in_journal(layout, note)
            return None
        journal = Journal(layout.journal, txn.txid)
        # Any other transaction's copies go first: this one's are still needed.
        sweep = (*hooks.sweep_dirs, *txn.target_dirs)
        note = _leftovers(log, discard_copies(layout, None, sweep, keep=txn.txid))
        in_place = {c.path for c in changed_in_place(layout, txn.changes)}
        # Where the run stopped, and who finishes it: ``status`` words it.
        stopped = {"state": str(txn.records[-1].state), "by": by}
        earlier = txn.details.get("cause")  # an undo that had begun keeps its own cause

        def undo(reason: str, cause: Mapping[str, str]) -> None:
            finish_undo(
                layout,
                txn,
                journal,
                lock_timeout=lock_timeout,
                reason=reason,
                cause=earlier if isinstance(earlier, dict) and txn.rolling_back else cause,
                after_undo=hooks.after_undo,
                end=note,
            )

        action = RecoveryAction.ROLLED_BACK
        if decide(txn.states, abort=abort) is RecoveryAction.ROLLED_BACK:
            code = "aborted" if abort else "interrupted"
            reason = "aborted" if abort else "recovered after interruption"
            undo(reason, {"error_code": code, **stopped})
        else:
            try:
                finish_forward(
                    layout,
                    txn,
                    journal,
                    lock_timeout=lock_timeout,
                    after_commit=lambda t: hooks.after_commit(t, journal),
                    end={**note, "cause": {"error_code": "interrupted", **stopped}},
                )
                action = RecoveryAction.ROLLED_FORWARD
            except ForwardFailed as exc:
                log.error("step.failed", step=exc.step, error_code=exc.error_code, error=str(exc))
                failed = failure_cause(step=exc.step, error_code=exc.error_code, error=str(exc))
                undo(f"{exc.step} did not finish", {**failed, **stopped})
        log.warning("txn.recovered", recovered_txid=txn.txid, action=str(action))
        if action is RecoveryAction.ROLLED_FORWARD:
            changed = [c.path for c in txn.changes if c.path not in in_place]
        else:
            changed = [c.path for c in txn.changes if c.path in in_place]
        return Recovered(txn.txid, action, changed)


def _leftovers(log: FilteringBoundLogger, removed: Sequence[str]) -> dict[str, Any]:
    """What the journal and ``status`` say about copies recovery removed (empty for none)."""
    if not removed:
        return {}
    txids = sorted({txid_of_copy(path) for path in removed})
    log.warning("txn.leftovers_removed", count=len(removed), txids=txids)
    return {"leftovers_removed": len(removed), "leftovers_of": txids}


def _note_in_journal(layout: Layout, note: Mapping[str, Any]) -> None:
    """Record removed leftovers when no unfinished transaction was there to carry them.

    A finished journal gets one more record in its final state. An empty one
    (a power loss took even the ``begun`` record of the transaction whose
    copies these were) gets that transaction, rolled back. Best effort and
    not durable, like every end record.
    """
    records = read_journal(layout.journal)
    with contextlib.suppress(OSError):
        if records:
            last = records[-1]
            Journal(layout.journal, last.txid).append(last.state, note, durable=False)
            return
        journal = Journal(layout.journal, note["leftovers_of"][-1])
        journal.begin({"command": None, "started_at": None, "records_lost": True})
        reason = "its journal records were lost in a crash before the commit point"
        journal.append(
            TxnState.ROLLED_BACK,
            {"ended_at": utc_now(), "reason": reason, **note},
            durable=False,
        )


@contextlib.contextmanager
def _io_errors_need_help() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise RecoveryFailed(f"recovery: {os_error_words(exc)}") from exc
