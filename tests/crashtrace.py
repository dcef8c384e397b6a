"""Traces and journals for the crash matrices (:mod:`tests.crashmatrix`): the reading side.

What strace recorded of a run (each call with its ordinal among calls of its
name, which ``inject=...:when=N`` counts), how the points of a matrix are
sampled at each ``TXSETUP_CRASH`` depth, and what the journal a crashed run
left says, read by its documented format (``docs/journal.md``), not by the
code under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import CRASH_DEPTH

# Logical groups of syscalls; each concrete name is counted and injected on its own.
GROUPS: dict[str, tuple[str, ...]] = {
    "write": ("write", "pwrite64", "writev"),
    "fsync": ("fsync",),
    "fdatasync": ("fdatasync",),
    "rename": ("rename", "renameat", "renameat2"),
    "link": ("link", "linkat"),
    "unlink": ("unlink", "unlinkat"),
    "openat": ("openat", "open"),
}
NUMEROUS = frozenset({"write", "openat"})
ALL_NAMES = tuple(name for names in GROUPS.values() for name in names)
STRIDE = 1 if CRASH_DEPTH == "full" else max(1, int(os.environ.get("TXSETUP_CRASH_STRIDE", "3")))
QUICK_POINTS = 3
JOURNAL = "var/lib/txsetup/journal"
_LINE = re.compile(r"^(?:(?P<pid>\d+)\s+)?(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<ret>.*)$")
_STATE_MARKERS = ("var/lock/txsetup.lock", "var/lib/txsetup")


@dataclass(frozen=True)
class Call:
    """One traced syscall: its name, its 1-based ordinal among its process's calls of that name.

    strace counts ``when=N`` per process: a child (a daemon or sshd command)
    has its own counts, and only the main process's calls are points.
    """

    name: str
    ordinal: int
    text: str
    seq: int = field(default=0, compare=False)  # its place among every traced call
    main: bool = field(default=True, compare=False)  # made by the process strace started

    @property
    def fd(self) -> int | None:
        """The first argument when it is a file descriptor (``write(2, ...)``)."""
        head = self.text[len(self.name) + 1 :].split(",", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def to_stream(self) -> bool:
        """Whether it writes to stdout or stderr (the result or a log line)."""
        return self.fd in (1, 2)


def parse_trace(text: str) -> tuple[list[Call], int]:
    """Every complete call of an strace output, and the index of the first state-dir call."""
    calls: list[Call] = []
    counts: dict[tuple[str | None, str], int] = {}
    start: int | None = None
    first: str | None = None
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        name, pid = match["name"], match["pid"]
        first = pid if not calls else first
        counts[pid, name] = counts.get((pid, name), 0) + 1
        if start is None and any(marker in match["args"] for marker in _STATE_MARKERS):
            start = len(calls)
        text = f"{name}({match['args']}) = {match['ret']}"
        calls.append(Call(name, counts[pid, name], text, seq=len(calls), main=pid == first))
    assert start is not None, "the traced run never touched its state directory"
    return calls, start


def sample(calls: Sequence[Call], stride: int, *, quick: int = QUICK_POINTS) -> list[Call]:
    """Every ``stride``-th call and the last; at ``quick``, ``quick`` calls spread evenly.

    One call at ``quick`` is the middle one; more include the first and the last.
    """
    if not calls:
        return []
    if CRASH_DEPTH == "quick":
        last = len(calls) - 1
        if quick == 1:
            return [calls[last // 2]]
        spread = sorted({round(i * last / (quick - 1)) for i in range(quick)})
        return [calls[index] for index in spread]
    picked = list(calls[::stride])
    if picked[-1] is not calls[-1]:
        picked.append(calls[-1])
    return picked


@dataclass(frozen=True)
class Traced:
    """A run under strace: exit status, outputs, and strace's own record of the calls."""

    returncode: int
    stdout: str
    stderr: str
    trace: str

    @property
    def killed(self) -> bool:
        """Whether the process died of SIGKILL."""
        return self.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)

    @property
    def hit(self) -> str:
        """The call the injection hit (an error it returned, or the kill it met), or ''."""
        return next(
            (
                re.sub(r"^\d+\s+", "", line.strip())
                for line in self.trace.splitlines()
                if "(INJECTED)" in line or line.rstrip().endswith("= ?")
            ),
            "",
        )


# --- the journal, read by its documented format ------------------------------------------


def journal_records(root: Path) -> list[dict[str, object]]:
    """Every valid record of ``root``'s journal, up to the first bad one.

    Read independently of the code under test: ``<crc32 hex> <json>\\n`` per
    record, a JSON object with at least ``txid`` and ``state``; a torn or
    corrupt line and everything after it count as unwritten.
    """
    try:
        raw = (root / JOURNAL).read_bytes()
    except FileNotFoundError:
        return []
    records: list[dict[str, object]] = []
    for line in raw.splitlines(keepends=True):
        body = line[9:-1]
        if not line.endswith(b"\n") or line[8:9] != b" " or line[:8] != b"%08x" % zlib.crc32(body):
            break
        try:
            record = json.loads(body)
            record["txid"], record["state"] = str(record["txid"]), str(record["state"])
        except (ValueError, KeyError, TypeError):
            break
        records.append(record)
    return records


def journal_states(root: Path) -> list[tuple[str, str]]:
    """``(txid, state)`` of every valid record of ``root``'s journal (:func:`journal_records`)."""
    return [(str(r["txid"]), str(r["state"])) for r in journal_records(root)]


@dataclass(frozen=True)
class Pending:
    """What the journal says of the transaction a killed run left."""

    states: tuple[str, ...]  # this transaction's states, in order; () when it left none
    txid: str | None = None
    held: bool = False  # its ``prepared`` record keeps a ``hold`` (``--prepare``)
    decision: str | None = None  # the last ``decided`` record's ``decision``

    @property
    def unfinished(self) -> bool:
        """Whether ``--resume`` has a transaction to finish or undo."""
        return bool(self.states) and self.states[-1] not in ("done", "rolled_back")

    @property
    def side(self) -> str:
        """The side the node must be on once resumed, or ``held``.

        A finished transaction is where it ended (``done``: new, ``rolled_back``:
        old). An unfinished one that is ``rolling_back`` is undone (old); one
        ``decided`` goes the decision's way (``commit``: new, ``abort``: old);
        one ``prepared`` with a hold and no decision is ``held``: files old,
        and only ``txsetup commit`` or ``abort`` may decide it; one
        ``prepared`` without a hold is rolled forward (new); any other undone.
        """
        if self.states and not self.unfinished:
            return "new" if self.states[-1] == "done" else "old"
        if "rolling_back" in self.states:
            return "old"
        if self.decision is not None:
            return {"commit": "new", "abort": "old"}.get(self.decision, f"?{self.decision}")
        if "prepared" in self.states:
            return "held" if self.held else "new"
        return "old"


def pending(root: Path, old_txids: frozenset[str]) -> Pending:
    """The journal state of the run that crashed in ``root`` (records of earlier runs ignored)."""
    records = [r for r in journal_records(root) if r["txid"] not in old_txids]
    decided = [r for r in records if r["state"] == "decided"]
    return Pending(
        tuple(str(r["state"]) for r in records),
        txid=str(records[0]["txid"]) if records else None,
        held=any(r["state"] == "prepared" and isinstance(r.get("hold"), dict) for r in records),
        decision=str(decided[-1].get("decision")) if decided else None,
    )
