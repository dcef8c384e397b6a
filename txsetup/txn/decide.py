"""``txsetup commit TXID`` and ``txsetup abort TXID``: decide a held transaction.

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

(``confirm`` and ``revert``, the verbs on the last commit, are
:mod:`txsetup.txn.last_commit`.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
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
from txsetup.txn.recovery import held_words

__all__ = ["Decided", "Decision", "decide"]

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
