"""What a push reports: one result per node, and the nodes worth trying again.

Each node's result is printed as one JSON line the moment the node finishes,
so a results file is valid at every instant, also after the master was
interrupted; ``--retry-from`` reads such a file back.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txsetup.errors import UsageError

__all__ = [
    "INTERRUPTED",
    "NOT_STARTED",
    "TIMED_OUT",
    "UNREACHABLE",
    "NodeResult",
    "PushReport",
    "nodes_to_retry",
    "reported_txid",
]

# Outcomes a push gives a node that returned no result object of its own.
UNREACHABLE = "unreachable"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
NOT_STARTED = "not_started"


@dataclass(frozen=True)
class NodeResult:
    """One node's outcome: the node's own result under ``result``."""

    node: str
    exit_code: int | None
    outcome: str
    txid: str | None
    duration_ms: int
    error: str | None
    result: dict[str, Any] | None = None
    phase: str | None = None  # an atomic push's: the last phase the node took part in

    @property
    def ok(self) -> bool:
        """The node ran txsetup to a successful end (exit 0)."""
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        """The result line printed on stdout (``phase`` only in an atomic push's)."""
        line = {
            "node": self.node,
            "exit_code": self.exit_code,
            "outcome": self.outcome,
            "txid": self.txid,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "result": self.result,
        }
        if self.phase is not None:
            line["phase"] = self.phase
        return line


@dataclass
class PushReport:
    """Every node's result, in the order the nodes finished."""

    results: list[NodeResult] = field(default_factory=list)
    interrupted: bool = False
    fleet: dict[str, Any] | None = None  # an atomic push's last line: push_id, outcome...

    @property
    def ok(self) -> bool:
        """Every node succeeded and the push ran to its end (an atomic one: committed)."""
        if self.fleet is not None:
            return not self.interrupted and self.fleet.get("outcome") == "committed"
        return not self.interrupted and all(r.ok for r in self.results)

    @property
    def failed(self) -> list[NodeResult]:
        """The nodes that did not succeed."""
        return [r for r in self.results if not r.ok]

    def counts(self) -> dict[str, int]:
        """How many nodes ended with each outcome."""
        return dict(Counter(r.outcome for r in self.results))


def reported_txid(found: dict[str, Any]) -> str | None:
    """The txid a node's result line names: its own, else its last transaction's.

    ``--resume`` with nothing to resume has no transaction of its own; it
    reports the node's last one (``last_transaction``), so after a push that
    timed out, ``push --resume`` shows which transaction each node ended with.
    """
    txid = found.get("txid")
    last = found.get("last_transaction")
    if txid is None and isinstance(last, dict):
        txid = last.get("txid")
    return txid if isinstance(txid, str) else None


def nodes_to_retry(path: Path) -> list[str]:
    """The nodes of a results file (``push`` stdout) that did not succeed.

    A node that appears more than once counts by its last line; after an
    atomic push that did not commit (its fleet line), every node. Lines that
    are not results (blank, or not JSON) are refused: a retry must never
    silently skip a node.

    Raises:
        UsageError: the file cannot be read or is not a results file (exit 2).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--retry-from: cannot read {path}: {exc}") from exc
    last: dict[str, bool] = {}
    fleet_committed = True
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "push_id" in entry and "node" not in entry:
            # An atomic push's fleet line: unless it committed, every node is to push again.
            fleet_committed = entry.get("outcome") == "committed"
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("node"), str):
            raise UsageError(f"--retry-from: {path} line {number} is not a push result")
        last[entry["node"]] = entry.get("exit_code") == 0
    return [node for node, ok in last.items() if not (ok and fleet_committed)]
