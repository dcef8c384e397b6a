"""The master's record of an atomic push: one JSON line per step, each durable before it acts.

``<from-root>/var/lib/txsetup/push/<push-id>.json`` holds, in order:

* ``push``: the id, the nodes, the document's digest and the options (written
  before the first node is contacted);
* ``decision``: ``commit`` with every node's txid, or ``abort`` (written
  before any node hears it);
* ``ack``: one node's answer to a decision (``phase`` commit, abort,
  confirm or revert, and the node's ``outcome``): a resume does not ask that
  node again;
* ``confirmation``: ``confirm`` or ``revert`` (written before the first
  confirm or revert is sent; ``confirm`` may later give way to ``revert``,
  never the other way round);
* ``end``: the fleet's outcome; a push without it is unfinished.

Each record is one ``writev`` then ``fdatasync`` (the file's first record
also fsyncs its directory), the node journal's protocol: a record that is
on disk stays, whatever dies next; a torn last line is ignored on reading.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from txsetup.errors import InternalError
from txsetup.txn.atomic import fsync_dir

__all__ = [
    "TRANSITIONS",
    "FleetLog",
    "Transition",
    "new_push_id",
    "push_dir",
    "unfinished_pushes",
]

_READ_LIMIT: Final = 64 << 20


@dataclass(frozen=True)
class Transition:
    """One move of an atomic push from one recorded stage to the next, and when it is made."""

    before: str
    after: str
    when: str


#: Every move the protocol makes. A stage is what the last decision, confirmation or end
#: record says (``recorded``: the push record alone). :meth:`FleetLog.append` refuses any
#: other move, so this table (drawn in docs/fleet.md) is the protocol the code runs.
TRANSITIONS: Final = (
    Transition("recorded", "commit", "every node prepared"),
    Transition("recorded", "abort", "a node did not prepare, or a resume found no decision"),
    Transition("abort", "aborted", "every node that may hold a prepare aborted"),
    Transition("commit", "committed", "every node committed (no confirmation window)"),
    Transition("commit", "confirm", "every node committed and passed its check"),
    Transition("commit", "revert", "a node rolled its commit back or failed its check"),
    Transition("confirm", "committed", "every node confirmed"),
    Transition("confirm", "revert", "a node had reverted by itself: its window ended"),
    Transition("revert", "reverted", "every node that committed reverted"),
)
_MOVES: Final = frozenset((t.before, t.after) for t in TRANSITIONS)
_STAGE_FIELD: Final = {"decision": "decision", "confirmation": "decision", "end": "outcome"}


def push_dir(from_root: Path) -> Path:
    """Where the master keeps its atomic pushes."""
    return from_root / "var/lib/txsetup/push"


def new_push_id() -> str:
    """``push-<UTC time>-<random>``: sortable, and a valid coordinator id on the nodes."""
    return f"push-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


@dataclass
class FleetLog:
    """One atomic push's record file and the records read from it or appended so far."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> FleetLog:
        """The records on disk (whatever follows the last newline is torn and ignored)."""
        with open(path, "rb") as stream:
            raw = stream.read(_READ_LIMIT)
        records = []
        for line in raw.split(b"\n")[:-1]:
            try:
                obj = json.loads(line)
            except ValueError:
                break
            if not isinstance(obj, dict) or not isinstance(obj.get("record"), str):
                break
            records.append(obj)
        return cls(path, records)

    @property
    def push_id(self) -> str:
        """The push's id (its file's name)."""
        return self.path.name.removesuffix(".json")

    @property
    def stage(self) -> str:
        """Where the push stands: the last decision, confirmation or outcome recorded."""
        for entry in reversed(self.records):
            if entry["record"] in _STAGE_FIELD:
                return str(entry[_STAGE_FIELD[entry["record"]]])
        return "recorded"

    def append(self, record: str, **fields: Any) -> dict[str, Any]:
        """Make one record durable, then remember it.

        Raises:
            InternalError: the record would move the push along no transition of
                :data:`TRANSITIONS`.
        """
        if record in _STAGE_FIELD:
            move = (self.stage, str(fields[_STAGE_FIELD[record]]))
            if move not in _MOVES:
                raise InternalError(f"atomic push {self.push_id}: no move {move[0]} -> {move[1]}")
        entry = {"record": record, "time": round(time.time(), 3), **fields}
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        created = not self.path.exists()
        new_directory = created and not self.path.parent.is_dir()
        if new_directory:
            self.path.parent.mkdir(mode=0o700, parents=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            if os.writev(fd, [line]) != len(line):
                raise OSError(f"short write to {self.path}")
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        if new_directory:
            fsync_dir(self.path.parent.parent)
        self.records.append(entry)
        return entry

    def first(self, record: str) -> dict[str, Any] | None:
        """The first record of a kind, or None."""
        return next((r for r in self.records if r["record"] == record), None)

    def last(self, record: str) -> dict[str, Any] | None:
        """The last record of a kind, or None."""
        return next((r for r in reversed(self.records) if r["record"] == record), None)

    def acks(self, phase: str) -> dict[str, str]:
        """Each node's recorded answer in ``phase``: node → outcome."""
        return {
            r["node"]: r["outcome"]
            for r in self.records
            if r["record"] == "ack" and r.get("phase") == phase
        }

    @property
    def finished(self) -> bool:
        """The push has its end record."""
        return self.last("end") is not None


def unfinished_pushes(from_root: Path) -> Iterator[FleetLog]:
    """The atomic pushes under ``from_root`` without an end record, oldest first."""
    directory = push_dir(from_root)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("push-*.json")):
        log = FleetLog.read(path)
        if log.first("push") is not None and not log.finished:
            yield log
