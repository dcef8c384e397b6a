"""What a transaction wants in files under ``--root``, and the plan.

Planning only reads: it compares each wanted file with what is on disk
(bytes, mode, owner; a symlink or anything but a regular file is never read
and always counts as different) and says create, replace or unchanged.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from txsetup.errors import RefusedByVerification
from txsetup.txn.atomic import read_regular
from txsetup.txn.layout import Layout

__all__ = [
    "KIND_WORDS",
    "Action",
    "DesiredFile",
    "FileMeta",
    "PlannedFile",
    "plan_files",
    "refuse_unsafe_targets",
]


@dataclass(frozen=True, repr=False)
class DesiredFile:
    """A file the payload wants: its place, bytes, mode and (optional) owner.

    Two owners, because an existing file keeps its owner unless one is
    configured while a new file still needs one: ``uid``/``gid``
    apply always (-1: keep an existing file's), ``new_uid``/``new_gid`` only
    to a file that is created, or replaces something that is not a regular
    file (-1: the process's own, normally root).
    """

    relpath: str
    content: bytes
    mode: int
    uid: int = -1
    gid: int = -1
    new_uid: int = -1
    new_gid: int = -1

    def __repr__(self) -> str:
        return f"DesiredFile({self.relpath!r}, {len(self.content)} bytes, {self.mode:#o})"


class Action(StrEnum):
    """What applying the plan does to one file."""

    CREATE = "create"
    REPLACE = "replace"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FileMeta:
    """What a file on disk was: enough to describe it and to recognise it again."""

    kind: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, path: Path) -> FileMeta | None:
        """The metadata of ``path`` itself (a symlink is not followed), or None."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        kind = (
            "file"
            if stat.S_ISREG(st.st_mode)
            else "symlink"
            if stat.S_ISLNK(st.st_mode)
            else "directory"
            if stat.S_ISDIR(st.st_mode)
            else "other"
        )
        return cls(
            kind,
            st.st_size,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_ino,
        )

    def to_json(self) -> dict[str, Any]:
        """A journal- and result-friendly form (mode as an octal string)."""
        return {
            "kind": self.kind,
            "size": self.size,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "ino": self.ino,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FileMeta:
        """Inverse of :meth:`to_json`."""
        return cls(
            obj["kind"],
            obj["size"],
            int(obj["mode"], 8),
            obj["uid"],
            obj["gid"],
            obj["mtime_ns"],
            obj["ino"],
        )


@dataclass(frozen=True)
class PlannedFile:
    """One wanted file compared with what is there now."""

    desired: DesiredFile
    action: Action
    old: FileMeta | None

    def describe(self) -> dict[str, Any]:
        """The plan line for results and logs: never the content."""
        return {
            "path": self.desired.relpath,
            "action": str(self.action),
            "old_size": self.old.size if self.old else None,
            "old_mode": f"{self.old.mode:04o}" if self.old else None,
            "new_size": len(self.desired.content),
            "new_mode": f"{self.desired.mode:04o}",
        }


def _is_unchanged(desired: DesiredFile, old: FileMeta, path: Path) -> bool:
    if old.kind != "file" or old.mode != desired.mode or old.size != len(desired.content):
        return False
    if desired.uid not in (-1, old.uid) or desired.gid not in (-1, old.gid):
        return False
    return read_regular(path, len(desired.content)) == desired.content


def plan_files(layout: Layout, desired: Iterable[DesiredFile]) -> list[PlannedFile]:
    """Compare every wanted file with the disk; reads, never writes."""
    plan = []
    for want in desired:
        path = layout.path(want.relpath)
        old = FileMeta.of(path)
        if old is None:
            action = Action.CREATE
        elif _is_unchanged(want, old, path):
            action = Action.UNCHANGED
        else:
            action = Action.REPLACE
        plan.append(PlannedFile(want, action, old))
    return plan


# How a message names a FileMeta.kind that is in the way.
KIND_WORDS = {"symlink": "a symlink", "directory": "a directory", "other": "a special file"}


def refuse_unsafe_targets(layout: Layout, relpaths: Iterable[str]) -> None:
    """Refuse targets that are not plain files in plain directories, before any write.

    Each target must be absent or a regular file, and the directory it goes
    in absent or a real directory: replacing a symlink, a FIFO or a directory
    would change what the operator put there, and writing through a
    symlinked directory would write outside the root. (The directories above
    are the system's own business: ``/var/lock`` is a symlink on Debian.)

    Raises:
        RefusedByVerification: listing every such target (exit 4).
    """
    problems: list[str] = []
    seen: set[str] = set()
    for relpath in relpaths:
        parent = Path(relpath).parent.as_posix()
        where = FileMeta.of(layout.path(parent))
        if where is not None and where.kind != "directory":
            if parent not in seen:
                seen.add(parent)
                problems.append(
                    f"{parent} is {KIND_WORDS.get(where.kind, 'a file')}, not a directory"
                )
            continue
        old = FileMeta.of(layout.path(relpath))
        if old is not None and old.kind != "file":
            problems.append(f"{relpath} is {KIND_WORDS[old.kind]}, not a regular file")
    if problems:
        raise RefusedByVerification(
            "refused: txsetup replaces only regular files in real directories; "
            "move these away, then run again",
            problems=problems,
        )
