"""What the programs add to the generic transaction: services, commit locks, their directories.

Whichever run comes next must finish or undo whatever transaction is pending,
of any program, so recovery gets every program's hooks at once. Each acts
only on its own: a service on its own journal record, a commit lock only
when its files change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from txsetup.txn.changeset import Change
from txsetup.txn.journal import Journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn
from txsetup.txn.service import Service, apply_service, restore_service, revert_service

__all__ = ["CommitLock", "ConfirmTimer", "Hooks"]

ConfirmTimer = Callable[[Layout, str, str], "str | None"]
"""Arms the timer that reverts an unconfirmed commit: given the layout, its txid and its
deadline (RFC 3339); returns what kind of timer it armed, or None when it could not."""

CommitLock = Callable[[Layout, Sequence[Change], float], AbstractContextManager[None]]
"""A lock a program holds while some of ``changes`` are renamed into place (or back):
given the layout, the changes and the lock timeout; a no-op when none is its own."""


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Every program's part in finishing or undoing a transaction.

    Attributes:
        services: each service; one applies after a roll-forward when the
            transaction's details want it, and restores after an undo when
            its journal record says the transaction touched it.
        commit_locks: held, all of them, while files are renamed.
        sweep_dirs: root-relative directories where staged and hold copies may
            be left by a crash before any journal record named them.
        arm_timer: arms the revert of an unconfirmed commit at its deadline
            (none: only the next run enforces the deadline).
    """

    services: tuple[Service, ...] = ()
    commit_locks: tuple[CommitLock, ...] = ()
    sweep_dirs: tuple[str, ...] = ()
    arm_timer: ConfirmTimer | None = None

    def after_commit(self, txn: PendingTxn, journal: Journal) -> None:
        """Apply each service the transaction wants (its files are in place).

        A revert instead brings back each service the reverted commit touched.
        """
        for service in self.services:
            if "reverts" in txn.details:
                revert_service(service, journal, txn)
            elif service.kind.wanted(txn.details):
                apply_service(service, journal, txn)

    def after_undo(self, txn: PendingTxn) -> None:
        """Restore each service the transaction touched (its old files are back)."""
        for service in self.services:
            restore_service(service, txn)

    @contextlib.contextmanager
    def commit_lock(
        self, layout: Layout, changes: Sequence[Change], timeout: float
    ) -> Iterator[None]:
        """Hold every program's commit lock that ``changes`` need."""
        with contextlib.ExitStack() as held:
            for lock in self.commit_locks:
                held.enter_context(lock(layout, changes, timeout))
            yield
