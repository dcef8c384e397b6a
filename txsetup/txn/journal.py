"""The journal: a durable, append-only record of one transaction.

One file, ``<root>/var/lib/txsetup/journal``, holds the records of the
current (or last) transaction, one per line::

    <crc32 of the JSON, 8 hex digits> <JSON object>\\n

A record whose checksum does not match, or a last line without its newline
(a torn write), is treated as never written, and so is everything after it.
Records carry paths, modes, sizes, owners and inode numbers, never file
content, so no key material can reach the journal.

A record is made durable (``fsync``) before the action it announces when,
and only when, recovery depends on it: see ``docs/journal.md``.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "FINISHED_STATES",
    "SERVICE_STATE",
    "Journal",
    "Record",
    "TxnState",
    "find_record",
    "read_journal",
    "record_once",
    "repair_journal",
]


class TxnState(StrEnum):
    """The states every transaction moves through, in journal order.

    A service a program restarts or reloads adds a state of its own between
    ``committed`` and the end (``restarting_daemon``, ``reloading_sshd``):
    each declares it (:class:`txsetup.txn.service.ServiceKind`), named as
    :data:`SERVICE_STATE` says, and a record in it keeps its name as a string.
    """

    BEGUN = "begun"
    PREPARED = "prepared"
    DECIDED = "decided"  # a held transaction's decision (commit or abort), before it acts
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    DONE = "done"


FINISHED_STATES = frozenset({TxnState.ROLLED_BACK, TxnState.DONE})


SERVICE_STATE = re.compile(r"[a-z]+ing_[a-z][a-z_]*")
"""How a service's own state is named: what is being done to it (``restarting_daemon``)."""


def _state_of(name: str) -> str | None:
    """A state read from the journal: a :class:`TxnState`, a service's state, or None."""
    try:
        return TxnState(name)
    except ValueError:
        return name if SERVICE_STATE.fullmatch(name) else None


@dataclass(frozen=True)
class Record:
    """One journal record: the state entered and what undo or redo needs.

    ``state`` is a :class:`TxnState` or the state a service declares.
    """

    txid: str
    state: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The record as one checksummed line."""
        body = json.dumps(
            {"txid": self.txid, "state": str(self.state), **self.data},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @classmethod
    def decode(cls, line: bytes) -> Record | None:
        """The record of a complete line, or None when it is torn or corrupt."""
        if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
            return None
        body = line[9:-1]
        # Compared as the exact bytes written: int(..., 16) would also take a
        # checksum with a flipped case or space bit (" 0abc123", "0ABC1234").
        if line[:8] != b"%08x" % zlib.crc32(body):
            return None
        try:
            obj = json.loads(body)
            name = obj.pop("state")
            txid = obj.pop("txid")
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        state = _state_of(name) if isinstance(name, str) else None
        if not isinstance(txid, str) or state is None:
            return None
        return cls(txid=txid, state=state, data=obj)


def _valid_prefix(path: Path) -> tuple[list[Record], int, int]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    records: list[Record] = []
    valid = 0
    for line in raw.splitlines(keepends=True):
        record = Record.decode(line)
        if record is None:
            break
        records.append(record)
        valid += len(line)
    return records, valid, len(raw)


def read_journal(path: Path) -> list[Record]:
    """Every valid record of the journal at ``path``, up to the first bad one."""
    return _valid_prefix(path)[0]


def repair_journal(path: Path) -> list[Record]:
    """Like :func:`read_journal`, and cut a torn or corrupt tail off, durably.

    Recovery appends to the journal; a record appended after a torn one would
    be invisible to the next reader, so the tail goes first.
    """
    records, valid, size = _valid_prefix(path)
    if valid < size:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, valid)
            os.fsync(fd)
        finally:
            os.close(fd)
    return records


class Journal:
    """Appends records for one transaction; each append says whether it must be durable."""

    def __init__(self, path: Path, txid: str) -> None:
        self.path = path
        self.txid = txid

    def begin(self, data: Mapping[str, Any]) -> bool:
        """Start this transaction's records, replacing the last transaction's; not durable.

        The ``begun`` record only names what undo needs before the commit
        point; a crash of the process leaves it in the page cache, and a power
        loss that drops it drops nothing else that matters (see
        ``docs/journal.md``). The file is truncated in place, so its directory
        entry stays what it was.

        Returns whether the journal's directory entries (the journal in the
        state directory, the state directory in its parent) may not be
        durable yet: when this run created the journal, or when no earlier
        transaction in it ever reached ``prepared`` (whose writer made them
        durable). The caller then fsyncs both before its ``prepared`` record.
        """
        fd, unsynced = self._replace()
        try:
            self._write(fd, [(TxnState.BEGUN, data)], durable=False)
        finally:
            os.close(fd)
        return unsynced

    def record_unchanged(self, begun: Mapping[str, Any], end: Mapping[str, Any]) -> None:
        """Replace the last transaction's records with this one's, which changed nothing.

        A converged run writes no managed file, yet its txid must be findable
        on the node (``txsetup status``, ``--resume``): its ``begun`` and
        ``done`` records go in one write, not durable. A power loss may undo
        them and leave the earlier transaction's records; nothing depends on
        them. The ``begun`` record says ``entries_synced`` when the replaced
        journal's directory entries were durable, so the next transaction
        need not fsync them again (see :meth:`begin`).
        """
        fd, unsynced = self._replace()
        try:
            first = {**begun, **({} if unsynced else {"entries_synced": True})}
            self._write(fd, [(TxnState.BEGUN, first), (TxnState.DONE, end)], durable=False)
        finally:
            os.close(fd)

    def _replace(self) -> tuple[int, bool]:
        """Open the journal for a new transaction's records, truncated in place.

        Returns the descriptor and whether the journal's directory entries may
        not be durable yet: this run created the journal, or no earlier record
        in it is ``prepared`` (whose writer fsynced them) or says
        ``entries_synced`` (a converged run's, carrying that on).
        """
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
        except FileExistsError:
            earlier = read_journal(self.path)
            unsynced = not any(
                r.state is TxnState.PREPARED or r.data.get("entries_synced") is True
                for r in earlier
            )
            return os.open(self.path, flags | os.O_TRUNC), unsynced

    def append(self, state: str, data: Mapping[str, Any] | None = None, *, durable: bool) -> None:
        """Append one record; with ``durable`` it is on disk when this returns."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            self._write(fd, [(state, data or {})], durable=durable)
        finally:
            os.close(fd)

    def size(self) -> int:
        """The journal's length now: where :meth:`cut` takes it back to."""
        return os.stat(self.path).st_size

    def cut(self, size: int) -> bool:
        """Take the journal back to ``size`` bytes, durably: whether that worked.

        For a durable append that failed: its record may have reached the
        disk all the same, and a record recovery would act on must not be
        left to chance. Shrinking needs no free space.
        """
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        return True

    def _write(
        self, fd: int, records: list[tuple[str, Mapping[str, Any]]], *, durable: bool
    ) -> None:
        """Write ``records`` with one ``write(2)`` (more only if the kernel writes short)."""
        line = b"".join(Record(self.txid, state, data).encode() for state, data in records)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fdatasync(fd)


def find_record(records: list[Record], state: str) -> Record | None:
    """The first of ``records`` in ``state``, if any."""
    return next((r for r in records if r.state == state), None)


def record_once(
    journal: Journal,
    records: list[Record],
    state: str,
    data: Callable[[], Mapping[str, Any]],
) -> Mapping[str, Any]:
    """Journal ``state`` durably unless ``records`` hold it already; its data either way.

    For a record that announces an action undo must reverse (a daemon
    restart, an sshd reload): a live run writes it before acting, and a
    roll-forward that finds it written keeps the first one, which says what
    the node was like before the transaction touched it.
    """
    found = find_record(records, state)
    if found is not None:
        return found.data
    made = data()
    journal.append(state, made, durable=True)
    records.append(Record(journal.txid, state, made))
    return made
