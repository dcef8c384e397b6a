"""The node's verbs on a transaction: ``commit``, ``abort``, ``confirm`` and ``revert``.

``commit TXID`` and ``abort TXID`` decide a held transaction.

A transaction prepared with ``--prepare`` holds the node until it is decided.
The decision is journaled durably (``decided``) before it acts, so a crash
while it acts is finished in the same direction by repeating the command or
by ``--resume``. A commit then goes the way recovery rolls forward (the
renames, the service, its health check); an abort the way it undoes.

Decisions are idempotent: the same one again, once it took effect, reports
the same outcome (exit 0); the opposite one afterwards is refused (exit 4).

Every decision is also kept in ``var/lib/txsetup/decisions``
(:mod:`txsetup.txn.decisions`), durably before it acts, so that it can be
repeated after later runs replaced the journal. A coordinator may decide by
its own id (``--coordinator ID``) when it never learnt the txid; an abort
by coordinator id is kept also when no prepare of that id has arrived (a
tombstone), so that a late one is refused.

``confirm TXID`` keeps a commit made with ``--confirm-within``; ``revert
TXID`` puts back the earlier files of the last commit
(:mod:`txsetup.txn.revert`), also as the timer of an unconfirmed commit
(``--if-unconfirmed``: only once its deadline passed, only if still
unconfirmed). A confirm after the revert, or a revert after a later
commit, is refused (exit 4); either one repeated reports its outcome again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from structlog.typing import FilteringBoundLogger

from txsetup.errors import DecisionRefused, Held, RecoveryFailed, RolledBack, os_error_words
from txsetup.txn.decisions import decided as decided_before
from txsetup.txn.decisions import last_of_coordinator, record_decision
from txsetup.txn.finish import finish_undo, forward_or_roll_back
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import FINISHED_STATES, Journal, Record, TxnState, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.lock import acquire_lock
from txsetup.txn.pending import PendingTxn, load_pending, utc_now
from txsetup.txn.recovery import held_words, recover_pending
from txsetup.txn.revert import revert_kept
from txsetup.txn.revertable import Revertable, confirm_kept, read_revertable

__all__ = ["Decided", "Decision", "confirm", "decide", "revert"]

Decision = Literal["commit", "abort"]
_OUTCOME: dict[str, str] = {"commit": "committed", "abort": "aborted"}


@dataclass(frozen=True)
class Decided:
    """What a decision did: the transaction's outcome and the files it changed."""

    txid: str | None  # None: an abort by coordinator id that no prepare had reached yet
    outcome: str
    changed: list[str] = field(default_factory=list)
    again: bool = False  # the decision had already taken effect
    coordinator: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the result adds


def decide(
    layout: Layout,
    log: FilteringBoundLogger,
    *,
    txid: str | None,
    decision: Decision,
    hooks: Hooks,
    lock_timeout: float,
    coordinator: str | None = None,
    confirm_within: float | None = None,
) -> Decided:
    """Commit or abort the held transaction ``txid`` (or ``coordinator``'s), under the lock.

    By coordinator id with no transaction of that id on the node, an abort
    keeps the tombstone and reports ``aborted``; a commit is refused.

    Raises:
        DecisionRefused: no such prepared transaction here, or it was decided
            the other way (exit 4); nothing was touched.
        Held: another transaction holds the node (exit 5).
        RolledBack: the commit's service did not come back; the commit was
            undone (exit 6).
        RecoveryFailed: an I/O error while files moved (exit 8).
    """
    lock = acquire_lock(layout, lock_timeout)
    try:
        try:
            txn = load_pending(layout)
        except OSError as exc:
            raise RecoveryFailed(f"{decision}: {os_error_words(exc)}") from exc
        if txid is None and coordinator is not None:
            txid = _txid_of(layout, txn, coordinator)
            if txid is None:
                return _tombstone_only(layout, log, coordinator, decision)
        if txid is None:
            raise DecisionRefused(f"{decision}: name a transaction id or --coordinator")
        if txn is None or txn.txid != txid:
            return _decided_before(layout, txn, txid, decision)
        if txn.hold is None:
            raise DecisionRefused(
                f"transaction {txid} was not prepared with --prepare: "
                "finish or undo it with --resume"
            )
        if txn.decision not in (None, decision):
            raise DecisionRefused(f"transaction {txid} was already decided: {txn.decision}")
        if confirm_within is not None and decision == "commit":
            txn.details["confirm_within"] = confirm_within
        return _act(layout, log, txn, decision, hooks=hooks, lock_timeout=lock_timeout)
    finally:
        lock.release()


def _act(
    layout: Layout,
    log: FilteringBoundLogger,
    txn: PendingTxn,
    decision: Decision,
    *,
    hooks: Hooks,
    lock_timeout: float,
) -> Decided:
    """Journal the decision durably (once), then commit or undo."""
    journal = Journal(layout.journal, txn.txid)
    coordinator = (txn.hold or {}).get("coordinator")
    coordinator = coordinator if isinstance(coordinator, str) else None
    if txn.decision is None:
        _journal_decision(layout, journal, txn, decision, coordinator)
    by_id = {"coordinator": coordinator} if coordinator is not None else {}
    log.info("txn.decided", decided_txid=txn.txid, decision=decision, **by_id)
    paths = [c.path for c in txn.changes]
    if decision == "abort":
        cause = {"error_code": "aborted", "by": f"txsetup abort {txn.txid}"}
        finish_undo(
            layout,
            txn,
            journal,
            lock_timeout=lock_timeout,
            reason="aborted",
            cause=cause,
            hooks=hooks,
        )
        _keep_outcome(layout, txn.txid, decision, coordinator, "aborted")
        return Decided(txn.txid, "aborted", coordinator=coordinator)
    try:
        unconfirmed = forward_or_roll_back(
            layout,
            txn,
            journal,
            log,
            lock_timeout=lock_timeout,
            hooks=hooks,
            end={"outcome": "committed"},
            doing=f"commit {txn.txid}",
        )
    except RolledBack:
        _keep_outcome(layout, txn.txid, decision, coordinator, "rolled_back")
        raise
    _keep_outcome(layout, txn.txid, decision, coordinator, "committed")
    extra = {"unconfirmed": unconfirmed} if unconfirmed else {}
    return Decided(txn.txid, "committed", paths, coordinator=coordinator, extra=extra)


def _journal_decision(
    layout: Layout, journal: Journal, txn: PendingTxn, decision: Decision, coordinator: str | None
) -> None:
    """The decision kept durably, then the ``decided`` record, durably: it acts next."""
    data: dict[str, Any] = {"decision": decision, "decided_at": utc_now()}
    if "confirm_within" in txn.details:
        data["confirm_within"] = txn.details["confirm_within"]
    try:
        record_decision(layout, decision, txid=txn.txid, coordinator=coordinator)
        journal.append(TxnState.DECIDED, data, durable=True)
    except OSError as exc:
        raise RecoveryFailed(f"{decision} {txn.txid}: {os_error_words(exc)}") from exc
    txn.records.append(Record(txn.txid, TxnState.DECIDED, data))


def _keep_outcome(
    layout: Layout, txid: str, decision: Decision, coordinator: str | None, outcome: str
) -> None:
    """What the decision ended with, next to it; best effort and not durable."""
    with contextlib.suppress(OSError):
        record_decision(
            layout, decision, txid=txid, coordinator=coordinator, outcome=outcome, durable=False
        )


def _txid_of(layout: Layout, pending: PendingTxn | None, coordinator: str) -> str | None:
    """The transaction prepared for ``coordinator``: the held one, or one decided here."""
    if pending is not None:
        return pending.txid if (pending.hold or {}).get("coordinator") == coordinator else None
    records = read_journal(layout.journal)
    if records:
        last = PendingTxn.from_records(records)
        if (last.hold or {}).get("coordinator") == coordinator:
            return last.txid
    kept = last_of_coordinator(layout, coordinator)
    txid = kept.get("txid") if kept else None
    return txid if isinstance(txid, str) else None


def _tombstone_only(
    layout: Layout, log: FilteringBoundLogger, coordinator: str, decision: Decision
) -> Decided:
    """No transaction of ``coordinator`` here: an abort keeps its tombstone, a commit is refused."""
    if decision == "commit":
        raise DecisionRefused(f"no transaction prepared for coordinator {coordinator} on this node")
    try:
        if last_of_coordinator(layout, coordinator) is None:
            record_decision(layout, "abort", txid=None, coordinator=coordinator)
    except OSError as exc:
        raise RecoveryFailed(f"abort {coordinator}: {os_error_words(exc)}") from exc
    log.info("txn.decided", decision=decision, coordinator=coordinator)
    return Decided(None, "aborted", again=False, coordinator=coordinator)


def _decided_before(
    layout: Layout, pending: PendingTxn | None, txid: str, decision: Decision
) -> Decided:
    """``txid`` is not the unfinished transaction: decided already, or not here at all."""
    if pending is not None and pending.held:
        raise Held(held_words(pending))
    if pending is not None:
        raise DecisionRefused(
            f"transaction {txid} is not the unfinished one here ({pending.txid}): "
            "finish or undo that one with --resume"
        )
    records = read_journal(layout.journal)
    if not records or records[0].txid != txid or records[-1].state not in FINISHED_STATES:
        return _kept_decision(layout, txid, decision)
    last = PendingTxn.from_records(records)
    if last.hold is None:
        raise DecisionRefused(f"transaction {txid} was not prepared with --prepare")
    taken = last.decision or "abort"  # no decision: --resume --abort overrode the hold
    if taken != decision:
        raise DecisionRefused(
            f"transaction {txid} was decided the other way ({taken}): it cannot be "
            f"{_OUTCOME[decision]}"
        )
    ended = "rolled_back" if taken == "commit" and records[-1].state is not TxnState.DONE else None
    coordinator = (last.hold or {}).get("coordinator")
    return Decided(
        txid,
        ended or _OUTCOME[decision],
        again=True,
        coordinator=coordinator if isinstance(coordinator, str) else None,
    )


def _kept_decision(layout: Layout, txid: str, decision: Decision) -> Decided:
    """A decision on ``txid`` that later runs took out of the journal: reported again, or not."""
    kept = decided_before(layout, txid)
    if kept is None:
        raise DecisionRefused(f"no prepared transaction {txid} on this node")
    if kept["decision"] != decision:
        raise DecisionRefused(
            f"transaction {txid} was decided the other way ({kept['decision']}): it cannot be "
            f"{_OUTCOME[decision]}"
        )
    coordinator = kept.get("coordinator")
    return Decided(
        txid,
        str(kept.get("outcome") or _OUTCOME[decision]),
        again=True,
        coordinator=coordinator if isinstance(coordinator, str) else None,
    )


def confirm(
    layout: Layout, log: FilteringBoundLogger, *, txid: str, hooks: Hooks, lock_timeout: float
) -> Decided:
    """Keep the commit ``txid`` made with ``--confirm-within``: no revert at its deadline.

    A confirmation counts until the revert has happened, even past the
    deadline (the first of the two to take the lock decides).

    Raises:
        DecisionRefused: it was reverted, or is no commit waiting here (exit 4).
        Held: another transaction holds the node (exit 5).
    """
    with _kept_after_recovery(
        layout, log, txid, hooks=hooks, lock_timeout=lock_timeout, verb="confirm"
    ) as kept:
        if kept is not None and kept.txid == txid:
            if kept.unconfirmed is None:
                return Decided(txid, "confirmed", again=True)
            try:
                confirm_kept(layout, kept)
            except OSError as exc:
                raise RecoveryFailed(f"confirm {txid}: {os_error_words(exc)}") from exc
            log.info("txn.confirmed", confirmed_txid=txid, deadline=kept.unconfirmed["deadline"])
            return Decided(txid, "confirmed")
        revert = _last_revert_of(layout, txid)
        if revert is not None:
            raise DecisionRefused(
                f"transaction {txid} was reverted ({revert.details.get('reason')}): "
                "it cannot be confirmed"
            )
        raise DecisionRefused(f"no commit {txid} waits for its confirmation on this node")


def revert(
    layout: Layout,
    log: FilteringBoundLogger,
    *,
    txid: str | None,
    hooks: Hooks,
    lock_timeout: float,
    if_unconfirmed: bool = False,
) -> Decided:
    """Put back the earlier files of ``txid``, the last commit, and its services' state.

    With ``if_unconfirmed`` (the timer of a commit to be confirmed) it first
    waits, without the lock, for the deadline, then reverts only if the
    commit is still unconfirmed; otherwise it reports what became of it.
    Without ``txid`` (the boot-time unit) it takes the commit waiting, if any
    (``nothing_to_revert`` when none waits).

    Raises:
        DecisionRefused: ``txid`` is not the last commit, or a file changed
            since it (exit 4); nothing was touched.
        RolledBack: a service did not come back as it was; the revert was undone (exit 6).
    """
    if txid is None:
        waiting = read_revertable(layout)
        if waiting is None or waiting.unconfirmed is None:
            return Decided(None, "nothing_to_revert")
        txid = waiting.txid
    if if_unconfirmed:
        _sleep_until_deadline(layout, txid)
    with _kept_after_recovery(
        layout, log, txid, hooks=hooks, lock_timeout=lock_timeout, verb="revert"
    ) as kept:
        if kept is not None and kept.txid == txid:
            if if_unconfirmed and kept.unconfirmed is None:
                return Decided(txid, "confirmed", again=True)
            reason = "not confirmed" if if_unconfirmed else f"txsetup revert {txid}"
            done = revert_kept(
                layout, log, kept, hooks=hooks, lock_timeout=lock_timeout, reason=reason
            )
            return Decided(done.txid, "reverted", done.changed, extra=done.to_json())
        return _reverted_before(layout, txid, kept, if_unconfirmed=if_unconfirmed)


def _reverted_before(
    layout: Layout, txid: str, kept: Revertable | None, *, if_unconfirmed: bool
) -> Decided:
    """``txid`` has no kept set: reverted already, confirmed and replaced, or not revertable."""
    earlier = _last_revert_of(layout, txid)
    if earlier is not None:
        reason = str(earlier.details.get("reason"))
        extra = {"reverted": txid, "reason": reason}
        return Decided(earlier.txid, "reverted", again=True, extra=extra)
    if if_unconfirmed:  # confirmed, and replaced by a later commit since
        return Decided(txid, "confirmed", again=True)
    if kept is None:
        raise DecisionRefused(
            f"nothing to revert on this node: no earlier files are kept for {txid}"
        )
    raise DecisionRefused(
        f"transaction {txid} is not the last commit here ({kept.txid} is): "
        "only the last commit can be reverted"
    )


@contextlib.contextmanager
def _kept_after_recovery(
    layout: Layout,
    log: FilteringBoundLogger,
    txid: str,
    *,
    hooks: Hooks,
    lock_timeout: float,
    verb: str,
) -> Iterator[Revertable | None]:
    """Under the lock, once any other unfinished or expired transaction is dealt with:
    the kept set (``txid``'s own waiting commit is left to ``verb``).

    An I/O error reading the node's state is exit 8.
    """
    lock = acquire_lock(layout, lock_timeout)
    try:
        by = f"{verb} {txid}"
        recover_pending(
            layout, log, hooks=hooks, abort=False, lock_timeout=lock_timeout, by=by, spare=txid
        )
        yield read_revertable(layout)
    except OSError as exc:
        raise RecoveryFailed(f"{verb}: {os_error_words(exc)}") from exc
    finally:
        lock.release()


def _last_revert_of(layout: Layout, txid: str) -> PendingTxn | None:
    """The journal's last transaction when it is a finished revert of ``txid``."""
    records = read_journal(layout.journal)
    if not records or records[-1].state is not TxnState.DONE:
        return None
    last = PendingTxn.from_records(records)
    return last if last.details.get("reverts") == txid else None


def _sleep_until_deadline(layout: Layout, txid: str) -> None:
    """Wait, holding no lock, until the deadline of ``txid`` if it waits for its confirmation.

    The deadline is read again after each wait: a confirmation ends it.
    """
    while True:
        kept = read_revertable(layout)
        deadline = kept.deadline if kept is not None and kept.txid == txid else None
        if deadline is None:
            return
        left = (deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return
        time.sleep(min(left + 0.05, 60.0))
