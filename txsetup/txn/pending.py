"""An unfinished transaction as its journal describes it, and why one ended as it did."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from txsetup.errors import RecoveryFailed
from txsetup.txn.changeset import Change
from txsetup.txn.journal import FINISHED_STATES, Journal, Record, TxnState, repair_journal
from txsetup.txn.layout import Layout

__all__ = ["PendingTxn", "failure_cause", "load_pending", "new_txid", "utc_now"]


def utc_now() -> str:
    """RFC 3339 UTC timestamp for journal records."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_txid() -> str:
    """A sortable, unique transaction id."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


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


@dataclass
class PendingTxn:
    """An unfinished transaction as its journal describes it.

    A live run builds one at its commit point (``details`` are what its
    ``prepared`` record keeps); recovery rebuilds one from the journal.
    """

    txid: str
    records: list[Record]
    changes: list[Change] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)
    target_dirs: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def states(self) -> set[str]:
        """Every state the journal reached."""
        return {r.state for r in self.records}

    @property
    def prepared(self) -> bool:
        """Whether the commit point was reached."""
        return TxnState.PREPARED in self.states

    @property
    def hold(self) -> dict[str, Any] | None:
        """Who prepared it to be held (``--prepare``): it waits for a decision."""
        hold = self.details.get("hold")
        return hold if isinstance(hold, dict) else None

    @property
    def decision(self) -> str | None:
        """``commit`` or ``abort``, once a held transaction was decided."""
        decided = [r for r in self.records if r.state == TxnState.DECIDED]
        return str(decided[-1].data.get("decision")) if decided else None

    @property
    def held(self) -> bool:
        """Prepared to be held and not decided: only ``txsetup commit`` or ``abort`` end it."""
        return self.hold is not None and self.decision is None

    @property
    def rolling_back(self) -> bool:
        """Whether an undo had begun (it must then be finished, never reversed)."""
        return TxnState.ROLLING_BACK in self.states

    def journal_prepared(self, journal: Journal, data: Mapping[str, Any]) -> None:
        """Append the ``prepared`` record durably: the commit point.

        When the write or its fdatasync fails the record may be on disk all
        the same: it is taken back durably, or else counted as written, so that
        the undo journals ``rolling_back`` first (a resume would otherwise roll
        forward over removed copies).
        """
        before = journal.size()
        try:
            journal.append(TxnState.PREPARED, data, durable=True)
        except OSError:
            if not journal.cut(before):
                self.records = [Record(self.txid, TxnState.PREPARED, {})]
            raise
        self.records = [Record(self.txid, TxnState.PREPARED, {})]

    @classmethod
    def from_records(cls, records: list[Record]) -> PendingTxn:
        """Rebuild the transaction from its (repaired) records."""
        txn = cls(records[0].txid, records)
        for record in records:
            data = dict(record.data)
            txn.created_dirs = data.pop("created_dirs", txn.created_dirs)
            txn.target_dirs = data.pop("target_dirs", txn.target_dirs)
            if record.state == TxnState.PREPARED:
                txn.changes = [Change.from_json(c) for c in data.pop("changes")]
            txn.details.update(data)
        return txn


def load_pending(layout: Layout) -> PendingTxn | None:
    """The unfinished transaction in the state directory, if any."""
    records = repair_journal(layout.journal)
    if not records or records[-1].state in FINISHED_STATES:
        return None
    txid = records[0].txid
    if records[0].state != TxnState.BEGUN or any(r.txid != txid for r in records):
        raise RecoveryFailed(f"journal {layout.journal} is inconsistent; inspect it by hand")
    return PendingTxn.from_records(records)
