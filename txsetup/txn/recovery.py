"""Recovery: finish or undo, under the lock, whatever transaction a crash left unfinished.

State is rebuilt from the journal alone (:func:`~txsetup.txn.pending.load_pending`),
the rules of :mod:`txsetup.txn.rules` decide the direction, and
:mod:`txsetup.txn.finish` does it, with every program's :class:`Hooks` (its
service, its commit lock), so one recovery serves every program. The next run
of any program does this in its ``lock`` step, ``--resume`` on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.errors import Held, RecoveryFailed, os_error_words
from txsetup.txn.changeset import changed_in_place, discard_copies, txid_of_copy
from txsetup.txn.decisions import record_decision
from txsetup.txn.finish import ForwardFailed, finish_forward, finish_undo
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import Journal, TxnState, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn, failure_cause, load_pending, utc_now
from txsetup.txn.revert import revert_kept
from txsetup.txn.revertable import Revertable, read_revertable
from txsetup.txn.revertable import sweep as sweep_kept
from txsetup.txn.rules import RecoveryAction, decide, decide_waiting

__all__ = ["Recovered", "held_words", "recover_pending", "unconfirmed_words"]


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
    spare: str | None = None,
) -> Recovered | None:
    """Finish (prepared) or undo (not prepared, or ``abort``) an unfinished transaction;
    then revert a commit whose confirmation deadline passed.

    The caller holds the transaction lock. Finishing includes applying the
    services (``hooks``); if one raises :class:`ForwardFailed`, the
    transaction is undone instead, which also leaves the node consistent.

    ``by`` names who recovers (``--resume``, ``--resume --abort``, ``run
    <txid>``): the end record keeps it, with the journal state the
    transaction had stopped in, as the ``cause`` ``status`` reports.

    ``spare`` names a commit waiting for its confirmation that the caller
    (``txsetup confirm`` or ``revert``) decides itself.

    Returns:
        What was done, or None when nothing was unfinished.

    Raises:
        Held: a prepared transaction, or a commit before its confirmation
            deadline, holds the node (exit 5).
        RecoveryFailed: an I/O error on the way (exit 8): the node may be half
            way, and the journal, kept as it is, is what a later ``--resume``
            finishes it from.
    """
    with _io_errors_need_help():
        txn = load_pending(layout)
        if txn is None:
            # Copies a crash left before any journal record named them, or
            # that reappeared after their removal (it is not fsynced).
            removed = discard_copies(layout, None, hooks.sweep_dirs)
            note = _leftovers(log, removed + sweep_kept(layout, hooks.sweep_dirs))
            if note:
                _note_in_journal(layout, note)
            found = None
        else:
            found = _finish_pending(
                layout, log, txn, hooks=hooks, abort=abort, lock_timeout=lock_timeout, by=by
            )
        expired = _revert_unconfirmed(
            layout, log, hooks=hooks, abort=abort, lock_timeout=lock_timeout, by=by, spare=spare
        )
        return expired or found


def _finish_pending(
    layout: Layout,
    log: FilteringBoundLogger,
    txn: PendingTxn,
    *,
    hooks: Hooks,
    abort: bool,
    lock_timeout: float,
    by: str,
) -> Recovered:
    """Finish or undo the unfinished ``txn`` (a held one only by ``--resume --abort``).

    A transaction waiting for a decision goes by :data:`~txsetup.txn.rules.WAITING_RULES`,
    any other by the state rules.
    """
    waiting = "held" if txn.held else f"decided: {txn.decision}" if txn.decision else None
    if waiting is None:
        direction = decide(txn.states, abort=abort)
    elif (found := decide_waiting(waiting, abort=abort)) is None:
        raise Held(held_words(txn))
    else:
        direction = found
    if txn.held or (abort and txn.decision == "commit"):
        log.warning("txn.override", held_txid=txn.txid, by=by, hold=txn.hold)
    if txn.held:  # kept as aborted: its coordinator's abort is acknowledged, a late prepare refused
        coordinator = (txn.hold or {}).get("coordinator")
        who = coordinator if isinstance(coordinator, str) else None
        record_decision(layout, "abort", txid=txn.txid, coordinator=who)
    abort = abort or txn.decision == "abort"
    # Any other transaction's copies go first: this one's are still needed.
    sweep = (*hooks.sweep_dirs, *txn.target_dirs)
    note = _leftovers(log, discard_copies(layout, None, sweep, keep=txn.txid))
    in_place = {c.path for c in changed_in_place(layout, txn.changes)}
    finishing = _Finishing(layout, txn, log, hooks, lock_timeout, note, by)
    if direction is RecoveryAction.ROLLED_BACK:
        action = finishing.undo_after_stop(aborted=abort)
    else:
        action = finishing.forward()
    log.warning("txn.recovered", recovered_txid=txn.txid, action=str(action))
    if action is RecoveryAction.ROLLED_FORWARD:
        changed = [c.path for c in txn.changes if c.path not in in_place]
    else:
        changed = [c.path for c in txn.changes if c.path in in_place]
    return Recovered(txn.txid, action, changed)


def _revert_unconfirmed(
    layout: Layout,
    log: FilteringBoundLogger,
    *,
    hooks: Hooks,
    abort: bool,
    lock_timeout: float,
    by: str,
    spare: str | None,
) -> Recovered | None:
    """Revert a commit whose confirmation deadline passed; refuse to run while one waits.

    ``spare`` is the commit a ``txsetup confirm`` or ``revert`` names: that
    command decides it itself. ``--resume --abort`` reverts a waiting one at
    once, as the operator's override.

    Raises:
        Held: a commit waits for its confirmation (exit 5).
        DecisionRefused: its revert is refused, a file changed since (exit 4).
    """
    kept = read_revertable(layout)
    if kept is None or kept.unconfirmed is None or kept.txid == spare:
        return None
    waiting = "not confirmed" if kept.deadline_passed() else "unconfirmed"
    if decide_waiting(waiting, abort=abort) is None:
        raise Held(unconfirmed_words(kept))
    if abort:
        log.warning("txn.override", held_txid=kept.txid, by=by, unconfirmed=kept.unconfirmed)
    reason = by if abort else "not confirmed"
    reverted = revert_kept(layout, log, kept, hooks=hooks, lock_timeout=lock_timeout, reason=reason)
    log.warning("txn.recovered", recovered_txid=kept.txid, action=str(RecoveryAction.REVERTED))
    return Recovered(kept.txid, RecoveryAction.REVERTED, reverted.changed)


def unconfirmed_words(kept: Revertable) -> str:
    """Why a run is refused while a commit waits for its confirmation, and what ends it."""
    deadline = (kept.unconfirmed or {}).get("deadline")
    return (
        f"the node waits for the confirmation of transaction {kept.txid} (until {deadline}, "
        f"then it reverts by itself): `txsetup confirm {kept.txid}` keeps it, "
        f"`txsetup revert {kept.txid}` undoes it now"
    )


@dataclass(frozen=True)
class _Finishing:
    """One unfinished transaction being finished, with what its end records say."""

    layout: Layout
    txn: PendingTxn
    log: FilteringBoundLogger
    hooks: Hooks
    lock_timeout: float
    note: dict[str, Any]  # the leftovers this recovery removed
    by: str

    @property
    def stopped(self) -> dict[str, str]:
        """Where the run stopped, and who finishes it: ``status`` words it."""
        return {"state": str(self.txn.records[-1].state), "by": self.by}

    def undo(self, reason: str, cause: Mapping[str, str]) -> RecoveryAction:
        """Undo it; an undo that had begun keeps its own cause."""
        earlier = self.txn.details.get("cause")
        finish_undo(
            self.layout,
            self.txn,
            Journal(self.layout.journal, self.txn.txid),
            lock_timeout=self.lock_timeout,
            reason=reason,
            cause=earlier if isinstance(earlier, dict) and self.txn.rolling_back else cause,
            hooks=self.hooks,
            end=self.note,
        )
        return RecoveryAction.ROLLED_BACK

    def undo_after_stop(self, *, aborted: bool) -> RecoveryAction:
        """Undo it as the rules say (before the commit point, or by ``--abort``)."""
        code = "aborted" if aborted else "interrupted"
        reason = "aborted" if aborted else "recovered after interruption"
        return self.undo(reason, {"error_code": code, **self.stopped})

    def forward(self) -> RecoveryAction:
        """Roll it forward; undo it instead when its service does not come back."""
        try:
            finish_forward(
                self.layout,
                self.txn,
                Journal(self.layout.journal, self.txn.txid),
                lock_timeout=self.lock_timeout,
                hooks=self.hooks,
                end={**self.note, "cause": {"error_code": "interrupted", **self.stopped}},
            )
        except ForwardFailed as exc:
            self.log.error("step.failed", step=exc.step, error_code=exc.error_code, error=str(exc))
            failed = failure_cause(step=exc.step, error_code=exc.error_code, error=str(exc))
            return self.undo(f"{exc.step} did not finish", {**failed, **self.stopped})
        return RecoveryAction.ROLLED_FORWARD


def held_words(txn: PendingTxn) -> str:
    """Why a run is refused on a held node, and the two commands that end the hold."""
    hold = txn.hold or {}
    coordinator = hold.get("coordinator")
    by = f" by {hold.get('by')}" if hold.get("by") else ""
    of = f" for coordinator {coordinator}" if coordinator else ""
    return (
        f"the node is held by transaction {txn.txid}, prepared{by}{of}: decide it with "
        f"`txsetup commit {txn.txid}` or `txsetup abort {txn.txid}`"
    )


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
