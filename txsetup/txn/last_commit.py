"""``txsetup confirm TXID`` and ``txsetup revert TXID``: the verbs on the last commit.

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
from datetime import UTC, datetime

from structlog.typing import FilteringBoundLogger

from txsetup.errors import DecisionRefused, RecoveryFailed, os_error_words
from txsetup.txn.decide import Decided
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import TxnState, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.lock import acquire_lock
from txsetup.txn.pending import PendingTxn
from txsetup.txn.recovery import recover_pending
from txsetup.txn.revert import revert_kept
from txsetup.txn.revertable import Revertable, confirm_kept, read_revertable

__all__ = ["confirm", "revert"]


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
