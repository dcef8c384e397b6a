"""Finishing a transaction forward or undoing it, for a live run and for recovery alike.

State comes from the transaction as the journal describes it
(:class:`~txsetup.txn.pending.PendingTxn`), never from memory, so a live run's
compensation and ``--resume`` after a crash take the same path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from txsetup.errors import RecoveryFailed, TxsetupError, os_error_words
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
from txsetup.txn.pending import PendingTxn, utc_now

__all__ = ["ForwardFailed", "finish_forward", "finish_undo"]

_NO_HOOKS = Hooks()


class ForwardFailed(TxsetupError):
    """What follows the commit could not be done (a daemon did not come back):
    recovery undoes the transaction instead of finishing it."""

    step: str = "commit"


def finish_forward(
    layout: Layout,
    txn: PendingTxn,
    journal: Journal,
    *,
    lock_timeout: float,
    hooks: Hooks = _NO_HOOKS,
    end: Mapping[str, Any] | None = None,
) -> None:
    """Roll a prepared transaction forward: commit what is left, then apply its services.

    ``end`` adds to the ``done`` record (what recovery removed besides).
    """
    with (
        _or_recovery_failed(layout, txn, "rolling forward"),
        hooks.commit_lock(layout, txn.changes, lock_timeout),
    ):
        commit_changes(layout, txn.changes)
    hooks.after_commit(txn, journal)
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
