"""Coordinator ids aborted on this node (tombstones): a later prepare for one is refused.

A coordinator that never received a node's answer to its prepare still
decides by its own id (``txsetup abort --coordinator ID``); the prepare may
not have arrived yet, or may arrive again. So an abort by coordinator id is
kept in ``var/lib/txsetup/aborted-coordinators``, one id per line, appended
and fdatasync'd before the abort is reported, and ``--prepare --coordinator
ID`` is refused once its id is there. Ids are short and from a narrow
alphabet (:data:`COORDINATOR_ID`), so a line is always one whole id.
"""

from __future__ import annotations

import os
import re

from txsetup.errors import DecisionRefused
from txsetup.txn.atomic import fsync_dir
from txsetup.txn.layout import Layout

__all__ = ["COORDINATOR_ID", "aborted_coordinators", "record_aborted", "refuse_if_aborted"]

COORDINATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
"""What a coordinator id may be: a letter or digit, then up to 127 of ``A-Za-z0-9._:@+-``."""


def aborted_coordinators(layout: Layout) -> set[str]:
    """Every coordinator id aborted on this node (a torn last line is not an id)."""
    try:
        raw = layout.aborted_coordinators.read_bytes()
    except FileNotFoundError:
        return set()
    lines = raw.split(b"\n")[:-1]  # whatever follows the last newline was never complete
    return {line.decode("ascii", "replace") for line in lines}


def record_aborted(layout: Layout, coordinator: str) -> None:
    """Keep ``coordinator`` as aborted, durably (once: an id already kept is not appended)."""
    if coordinator in aborted_coordinators(layout):
        return
    path = layout.aborted_coordinators
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    created = not os.path.lexists(path)
    fd = os.open(path, flags, 0o600)
    try:
        line = coordinator.encode("ascii") + b"\n"
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to {layout.relative(path)}")
        os.fdatasync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(layout.state_dir)


def refuse_if_aborted(layout: Layout, coordinator: str | None) -> None:
    """Refuse a prepare for a coordinator id that was aborted here.

    Raises:
        DecisionRefused: the coordinator aborted it already (exit 4); nothing was touched.
    """
    if coordinator is not None and coordinator in aborted_coordinators(layout):
        raise DecisionRefused(
            f"coordinator {coordinator} was aborted on this node: a prepare for it is refused"
        )
