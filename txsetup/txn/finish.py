"""Finishing a transaction forward or undoing it, for a live run and for recovery alike.

State comes from the transaction as the journal describes it
(:class:`~txsetup.txn.pending.PendingTxn`), never from memory, so a live run's
compensation and ``--resume`` after a crash take the same path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.errors import RecoveryFailed, RolledBack, os_error_words
from txsetup.txn.changeset import (
    changed_in_place,
    commit_changes,
    discard_copies,
    remove_created_dirs,
    undo_changes,
)
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import Journal, Record, TxnState
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn, failure_cause, utc_now
from txsetup.txn.revertable import keep, settle
from txsetup.txn.service import ForwardFailed

__all__ = [
    "ForwardFailed",
    "finish_forward",
    "finish_undo",
    "forward_or_roll_back",
    "settle_commit",
]

_NO_HOOKS = Hooks()


def finish_forward(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    lock_timeout: float,
    hooks: Hooks = _NO_HOOKS,
    end: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Roll a prepared transaction forward: commit what is left, then apply its services.

    ``end`` adds to the ``done`` record (what recovery removed besides).
    Returns what :func:`settle_commit` returns: a commit to be confirmed's
    deadline and timer.
    """
    with (
        _or_recovery_failed(layout, txn, "rolling forward"),
        hooks.commit_lock(layout, txn.changes, lock_timeout),
    ):
        commit_changes(layout, txn.changes)
    hooks.after_commit(txn, journal)
    command = str(txn.details.get("command", ""))
    return settle_commit(layout, txn, journal, hooks=hooks, command=command, end=end or {})


def forward_or_roll_back(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    log: FilteringBoundLogger,
    *,
    lock_timeout: float,
    hooks: Hooks,
    end: Mapping[str, Any],
    doing: str,
) -> dict[str, Any] | None:
    """:func:`finish_forward`, and when a service does not come back, :func:`finish_undo`.

    For a decision taken now (``txsetup commit``, ``txsetup revert``): the
    failure is logged as its step's, and reported as :class:`RolledBack`
    (exit 6) once the node is back as it was. ``doing`` names it in the error.
    """
    try:
        return finish_forward(layout, txn, journal, lock_timeout=lock_timeout, hooks=hooks, end=end)
    except ForwardFailed as exc:
        log.error("step.failed", step=exc.step, error_code=exc.error_code, error=str(exc))
        cause = failure_cause(step=exc.step, error_code=exc.error_code, error=str(exc))
        finish_undo(
            layout,
            txn,
            journal,
            lock_timeout=lock_timeout,
            reason=f"{exc.step} did not finish",
            cause=cause,
            hooks=hooks,
        )
        raise RolledBack(f"{doing} rolled back: {exc}") from exc


def settle_commit(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    hooks: Hooks,
    command: str,
    end: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Past the services: keep the earlier files (a revert's are consumed), then record the end.

    A commit to be confirmed (``confirm_within`` in its details) keeps them
    durably with its deadline, and only then is its timer armed
    (``hooks.arm_timer``); otherwise keeping is best effort, like removing
    copies: a failure only makes a later revert refuse. Returns the
    unconfirmed commit's deadline and timer, or None.
    """
    within = txn.details.get("confirm_within")
    unconfirmed: dict[str, Any] | None = None
    if isinstance(within, int | float) and "reverts" not in txn.details:
        with _or_recovery_failed(layout, txn, "keeping the earlier files of"):
            kept = keep(layout, txn, command=command, confirm_within=float(within))
        deadline = str((kept.unconfirmed or {}).get("deadline"))
        timer = hooks.arm_timer(layout, txn.txid, deadline) if hooks.arm_timer else None
        unconfirmed = {"deadline": deadline, "timer": timer}
    else:
        with contextlib.suppress(OSError):
            settle(layout, txn, command=command)
    # A revert that recovery rolls forward still ends as a revert (``status`` says so).
    base: dict[str, Any] = {"outcome": "resumed"}
    if "reverts" in txn.details:
        base = {"outcome": "reverted", "reverts": txn.details["reverts"]}
        base["reason"] = txn.details.get("reason")
    data = {"ended_at": utc_now(), **base, **end}
    if unconfirmed is not None:
        data["unconfirmed"] = unconfirmed
    _record_end(journal, TxnState.DONE, data)
    return unconfirmed


def finish_undo(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    lock_timeout: float,
    reason: str,
    cause: Mapping[str, str] | None = None,
    hooks: Hooks = _NO_HOOKS,
    end: Mapping[str, Any] | None = None,
) -> None:
    """Undo a transaction at any point: old files back, services back, copies and new dirs gone.

    ``reason`` (a few words) and ``cause`` (:func:`~txsetup.txn.pending.failure_cause`:
    the step that failed, its error code and text) go into ``rolling_back`` and
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
        # A commit lock only when one of its files really changes back: an undo
        # after commit failed to take that lock must not wait for it again.
        with hooks.commit_lock(layout, changed_in_place(layout, txn.changes), lock_timeout):
            undo_changes(layout, txn.changes)
    # The services go back to their earlier state before the undo is recorded as done.
    hooks.after_undo(txn)
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
