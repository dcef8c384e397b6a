"""Recovery of an unfinished transaction, daemon included (``--resume``, or a new run).

The rules (``docs/journal.md``): not prepared → undo; prepared → roll
forward, including the daemon restart the transaction asked for, and undo
instead if the daemon does not come back healthy; ``--abort`` or an undo
already begun → undo. Everything is read from the journal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from structlog.typing import FilteringBoundLogger

from txsetup.errors import RecoveryFailed
from txsetup.node.restart import (
    DaemonControl,
    DaemonUnhealthy,
    restart_journaled,
    restore_if_touched,
)
from txsetup.txn import recovery
from txsetup.txn.changeset import discard_copies
from txsetup.txn.journal import Journal
from txsetup.txn.plan import GANETI_DIR, Layout

__all__ = ["recover_pending"]


def recover_pending(
    layout: Layout,
    log: FilteringBoundLogger,
    *,
    daemon: DaemonControl,
    abort: bool,
    lock_timeout: float,
) -> dict[str, str] | None:
    """Finish (prepared) or undo (not prepared, or ``abort``) an unfinished transaction.

    Finishing includes the daemon restart the transaction asked for; if that
    fails, the transaction is undone instead, which also leaves the node
    consistent.
    """
    with _io_errors_need_help():
        txn = recovery.load_pending(layout)
        if txn is None:
            # Copies a crash left before any journal record named them.
            discard_copies(layout, None, (GANETI_DIR,))
            return None
        journal = Journal(layout.journal, txn.txid)

        def undo(reason: str) -> None:
            recovery.finish_undo(
                layout,
                txn,
                journal,
                lock_timeout=lock_timeout,
                reason=reason,
                after_undo=lambda t: restore_if_touched(daemon, t.records),
            )

        def restart(t: recovery.PendingTxn) -> None:
            if t.details.get("start_node_daemon"):
                old, new = t.details.get("old_fingerprint"), t.details.get("fingerprint")
                restart_journaled(
                    daemon,
                    journal,
                    t.records,
                    old_fingerprint=old if isinstance(old, str) else None,
                    new_fingerprint=new if isinstance(new, str) else None,
                )

        action = recovery.RecoveryAction.ROLLED_BACK
        if abort or not txn.prepared or txn.rolling_back:
            undo("aborted" if abort else "recovered after interruption")
        else:
            try:
                recovery.finish_forward(
                    layout, txn, journal, lock_timeout=lock_timeout, after_commit=restart
                )
                action = recovery.RecoveryAction.ROLLED_FORWARD
            except DaemonUnhealthy as exc:
                log.error(
                    "step.failed", step="restart_daemon", error_code=exc.error_code, error=str(exc)
                )
                undo(f"daemon did not come back healthy: {exc}")
        log.warning("txn.recovered", recovered_txid=txn.txid, action=str(action))
        return {"txid": txn.txid, "action": str(action)}


@contextlib.contextmanager
def _io_errors_need_help() -> Iterator[None]:
    """An I/O error mid-recovery is exit 8: the node may be half way, and the
    journal, kept as it is, is what a later ``--resume`` finishes it from."""
    try:
        yield
    except OSError as exc:
        raise RecoveryFailed(f"recovery: {exc}") from exc
