"""A service a program restarts or reloads after its commit, journaled.

One runner serves every service (the node daemon, sshd): before acting it
journals, durably and once, whether the service ran and what it served (the
state its :class:`ServiceKind` declares), then applies the new files; an undo
reads that record back and restores. A live run and a roll-forward after a
crash take the same path, so ``--resume`` after a kill at any point does what
the live run would have done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from txsetup.errors import RecoveryFailed, TxsetupError
from txsetup.txn.journal import SERVICE_STATE, Journal, find_record, record_once
from txsetup.txn.pending import PendingTxn

__all__ = [
    "ForwardFailed",
    "Service",
    "ServiceControl",
    "ServiceKind",
    "apply_service",
    "restore_service",
    "revert_service",
]

Details = Mapping[str, Any]


class ForwardFailed(TxsetupError):
    """What follows the commit could not be done (a daemon did not come back):
    the transaction is undone instead of finished."""

    step: str = "commit"


class ServiceControl(Protocol):
    """How to act on one service; what it needs comes from the journal."""

    def is_running(self) -> bool:
        """Whether the service runs now."""
        ...

    def is_current(self, details: Details) -> bool:
        """Whether it already serves what ``details`` (the prepared record) want."""
        ...

    def apply(self, details: Details) -> None:
        """Make it serve the new files; raise a ``ForwardFailed`` when it does not."""
        ...

    def restore(self, earlier: Details) -> None:
        """Bring it back to ``earlier`` (a journaled record) once those files are back;
        raise a ``ForwardFailed`` when it does not come back so."""
        ...


def _nothing_earlier(_details: Details) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, kw_only=True)
class ServiceKind:
    """What a program declares about its service: names, and what the journal keeps.

    Attributes:
        step: the step that applies it (``restart_daemon``).
        description: that step's description.
        state: the journal state announcing it (``restarting_daemon``).
        noun: how messages name it (``the node daemon``).
        wanted: from the prepared record's details, whether the transaction applies it.
        earlier: from the same details, what its restore needs besides ``was_running``:
            what it served before the transaction.
        serving: from the same details, what it serves once the transaction's
            files are in place, in ``earlier``'s form (a revert restores to it
            when the revert itself is undone).
    """

    step: str
    description: str
    state: str
    noun: str
    wanted: Callable[[Details], bool]
    earlier: Callable[[Details], dict[str, Any]] = field(default=_nothing_earlier)
    serving: Callable[[Details], dict[str, Any]] = field(default=_nothing_earlier)

    def __post_init__(self) -> None:
        if not SERVICE_STATE.fullmatch(self.state):
            raise ValueError(f"a service's journal state names what is done to it: {self.state}")


@dataclass(frozen=True, kw_only=True)
class Service:
    """A service kind with its control, as this node's configuration sets it."""

    kind: ServiceKind
    control: ServiceControl


def apply_service(service: Service, journal: Journal, txn: PendingTxn) -> None:
    """Journal the service's earlier state (once, durably), then apply the new files.

    The same for a live run and a roll-forward: a roll-forward that finds the
    record written keeps it, for it says what the node was like before the
    transaction touched the service.
    """
    control = service.control
    record_once(
        journal,
        txn.records,
        service.kind.state,
        lambda: {"was_running": control.is_running(), **service.kind.earlier(txn.details)},
    )
    control.apply(txn.details)


def restore_service(service: Service, txn: PendingTxn) -> None:
    """Undo: bring the service back, only if this transaction had touched it.

    Raises:
        RecoveryFailed: it did not come back (exit 8): the undo has no undo.
    """
    record = find_record(txn.records, service.kind.state)
    if record is not None:
        try:
            service.control.restore(record.data)
        except ForwardFailed as exc:
            raise RecoveryFailed(f"restoring {service.kind.noun} failed: {exc}") from exc


def revert_service(service: Service, journal: Journal, txn: PendingTxn) -> None:
    """A revert's service step: back to what it was before the reverted commit.

    ``txn.details["restores"]`` holds the reverted commit's own record of the
    service (what it ran and served before); the revert journals first, like
    any apply, what the service serves now (``serving``), for its own undo.
    Only a service the reverted commit touched is acted on.

    Raises:
        ForwardFailed: it did not come back as it was: the revert is undone.
    """
    restores = txn.details.get("restores") or {}
    earlier = restores.get(service.kind.state)
    if not isinstance(earlier, dict):
        return
    serving = (txn.details.get("serving") or {}).get(service.kind.state) or {}
    control = service.control
    record_once(
        journal,
        txn.records,
        service.kind.state,
        lambda: {"was_running": control.is_running(), **serving},
    )
    control.restore(earlier)
