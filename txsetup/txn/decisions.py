"""Every decision this node took on a held transaction, kept past its journal.

A coordinator may send a decision again at any time (its own resume after a
crash), also after later runs replaced the journal that recorded it; and it
may decide by its own id when it never received the txid, even before the
prepare arrives. So each decision is also appended to
``var/lib/txsetup/decisions``, one JSON object per line::

    {"decision": "commit", "txid": "...", "coordinator": "push-42"}
    {"decision": "commit", "txid": "...", "coordinator": "push-42", "outcome": "committed"}
    {"decision": "abort", "txid": null, "coordinator": "push-43"}

The first line of a decision is fdatasync'd before the ``decided`` record
(and so before it acts); the line with its ``outcome`` is not (when a power
loss drops it, the decision alone is reported). A line with a coordinator
id and no txid is a *tombstone*: an abort by coordinator id that no prepare
had reached; a later ``--prepare --coordinator ID`` is refused once any
abort of its id is here. A torn last line (no newline) was never written.
Ids are short, from a narrow alphabet (:data:`COORDINATOR_ID`).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from txsetup.errors import DecisionRefused
from txsetup.txn.atomic import fsync_dir
from txsetup.txn.layout import Layout

__all__ = [
    "COORDINATOR_ID",
    "decided",
    "last_of_coordinator",
    "record_decision",
    "refuse_if_aborted",
]

COORDINATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
"""What a coordinator id may be: a letter or digit, then up to 127 of ``A-Za-z0-9._:@+-``."""

_READ_LIMIT = 16 << 20


def _lines(layout: Layout) -> list[dict[str, Any]]:
    """Every whole line, oldest first (a line that is not a JSON object is skipped)."""
    try:
        with open(layout.decisions, "rb") as stream:
            raw = stream.read(_READ_LIMIT)
    except FileNotFoundError:
        return []
    found = []
    for line in raw.split(b"\n")[:-1]:  # whatever follows the last newline is torn
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("decision") in ("commit", "abort"):
            found.append(obj)
    return found


def record_decision(
    layout: Layout,
    decision: str,
    *,
    txid: str | None,
    coordinator: str | None,
    outcome: str | None = None,
    durable: bool = True,
) -> None:
    """Append one line; with ``durable`` it is on disk when this returns."""
    entry: dict[str, Any] = {"decision": decision, "txid": txid, "coordinator": coordinator}
    if outcome is not None:
        entry["outcome"] = outcome
    line = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    path = layout.decisions
    created = not os.path.lexists(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to {layout.relative(path)}")
        if durable:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    if created and durable:
        fsync_dir(layout.state_dir)


def decided(layout: Layout, txid: str) -> dict[str, Any] | None:
    """The last decision on ``txid`` (with its ``outcome`` when that was kept), or None."""
    found: dict[str, Any] | None = None
    for entry in _lines(layout):
        if entry.get("txid") == txid:
            found = {**(found or {}), **entry}
    return found


def last_of_coordinator(layout: Layout, coordinator: str) -> dict[str, Any] | None:
    """The last decision taken for ``coordinator`` (a tombstone has ``txid`` None), or None."""
    found = [e for e in _lines(layout) if e.get("coordinator") == coordinator]
    return found[-1] if found else None


def refuse_if_aborted(layout: Layout, coordinator: str | None) -> None:
    """Refuse a prepare for a coordinator id that was aborted here.

    Raises:
        DecisionRefused: the coordinator aborted it already (exit 4); nothing was touched.
    """
    if coordinator is None:
        return
    if any(
        e.get("coordinator") == coordinator and e["decision"] == "abort" for e in _lines(layout)
    ):
        raise DecisionRefused(
            f"coordinator {coordinator} was aborted on this node: a prepare for it is refused"
        )
