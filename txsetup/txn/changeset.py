"""The journaled change set: stage, commit, undo and clean up a set of files.

Lifecycle (each function is idempotent and safe after a crash at any point):

* :func:`stage_changes` writes every new file's bytes to a staged copy on the
  target's own filesystem (the state directory when it shares it, so commit
  is a rename), with its final mode and owner, fsynced; hard-links every file
  it will replace to a hold name; fsyncs the staging directories once; then
  journals the whole change set durably (``prepared``): the commit point.
* :func:`commit_changes` renames staged copies over their targets and fsyncs
  each target directory once. Re-run after a crash, it skips what is in
  place (recognised by inode number).
* :func:`undo_changes` puts each held file back (a rename restores the very
  inode: bytes, mode, owner, mtime), removes files that did not exist, and
  removes directories it created. It works whether commit ran fully, halfway
  or not at all.
* :func:`discard_copies` removes staged and hold copies once the outcome is
  decided.

A change may also remove its target (``staged`` None): a revert's change to
a file the reverted commit created. Its hold keeps the file for an undo.

The journal records paths and inode numbers only, never content.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txsetup.errors import RecoveryFailed
from txsetup.txn.atomic import fsync_dir, hold, write_new
from txsetup.txn.layout import Layout
from txsetup.txn.plan import Action, FileMeta, PlannedFile

__all__ = [
    "Change",
    "changed_in_place",
    "commit_changes",
    "discard_copies",
    "missing_dirs",
    "remove_created_dirs",
    "stage_changes",
    "txid_of_copy",
    "undo_changes",
]

_STAGE_PREFIX = ".txsetup-"


@dataclass(frozen=True)
class Change:
    """One file the transaction replaces, creates or (``staged`` None) removes, as journaled."""

    path: str
    staged: str | None
    hold: str | None
    new_ino: int | None  # None: the target is removed
    old: FileMeta | None

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        return {
            "path": self.path,
            "staged": self.staged,
            "hold": self.hold,
            "new_ino": self.new_ino,
            "old": self.old.to_json() if self.old else None,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Change:
        """Inverse of :meth:`to_json`."""
        old = obj["old"]
        return cls(
            obj["path"],
            obj["staged"],
            obj["hold"],
            obj["new_ino"],
            FileMeta.from_json(old) if old else None,
        )


def _staging_dir(layout: Layout, target: Path) -> Path:
    """The state directory when it shares the target's filesystem, else the target's."""
    if os.stat(layout.state_dir).st_dev == os.stat(target.parent).st_dev:
        return layout.state_dir
    return target.parent


def copy_names(layout: Layout, txid: str, index: int, target: Path) -> tuple[Path, Path]:
    """The staged and hold copy names of a transaction's ``index``-th change of ``target``."""
    where = _staging_dir(layout, target)
    stem = f"{txid}-{index}" if where == layout.state_dir else f"{_STAGE_PREFIX}{txid}-{index}"
    return where / f"{stem}.new", where / f"{stem}.old"


def missing_dirs(layout: Layout, planned: Iterable[PlannedFile]) -> list[str]:
    """Target directories that do not exist yet, parents first (root-relative)."""
    missing: list[str] = []
    for item in planned:
        parent = layout.path(item.desired.relpath).parent
        chain = []
        while not parent.exists() and parent != layout.root:
            chain.append(layout.relative(parent))
            parent = parent.parent
        missing.extend(d for d in reversed(chain) if d not in missing)
    return missing


def make_dirs(
    layout: Layout, dirs: Sequence[str], *, modes: Mapping[str, int] | None = None
) -> None:
    """Create ``dirs`` (parents first), 0755 unless ``modes`` says otherwise.

    A directory is created with its final mode (``root/.ssh`` 0700), so it
    is never wider, not even for an instant. Not durably: the caller fsyncs
    each one's parent with the staged copies, before the commit point.
    """
    for rel in dirs:
        path = layout.path(rel)
        mode = (modes or {}).get(rel, 0o755)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=mode)
            os.chmod(path, mode)


def stage_changes(
    layout: Layout, txid: str, planned: Sequence[PlannedFile], *, entries: Iterable[Path] = ()
) -> list[Change]:
    """Write staged copies and hold links for every file that changes; fsync them.

    Each copy is fsynced, then each directory holding copies, together with
    ``entries`` (directories whose new entries must be durable by the commit
    point too: the parents of created directories, the journal's), once.
    Does not journal: the caller journals the returned changes (``prepared``)
    once this returns, which is what makes them the commit point.
    """
    changes: list[Change] = []
    staging_dirs: set[Path] = set()
    for index, item in enumerate(p for p in planned if p.action is not Action.UNCHANGED):
        want = item.desired
        target = layout.path(want.relpath)
        staged, hold_path = copy_names(layout, txid, index, target)
        # Unless configured otherwise, an existing file keeps its owner
        # and a new one gets the default owner.
        old = item.old if item.old is not None and item.old.kind == "file" else None
        uid = want.uid if want.uid != -1 else old.uid if old else want.new_uid
        gid = want.gid if want.gid != -1 else old.gid if old else want.new_gid
        if uid == os.geteuid():
            uid = -1
        if gid == os.getegid():
            gid = -1
        new_ino = write_new(staged, want.content, mode=want.mode, uid=uid, gid=gid)
        held = hold(target, hold_path)
        changes.append(
            Change(
                want.relpath,
                layout.relative(staged),
                layout.relative(hold_path) if held else None,
                new_ino,
                item.old,
            )
        )
        staging_dirs.add(staged.parent)
    for directory in sorted(staging_dirs.union(entries)):
        fsync_dir(directory)
    return changes


def _ino(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def commit_changes(layout: Layout, changes: Sequence[Change]) -> None:
    """Rename every staged copy over its target; skip those already in place."""
    for change in changes:
        target = layout.path(change.path)
        if change.staged is None:  # a removal: the hold keeps the file for an undo
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            continue
        staged = layout.path(change.staged)
        if os.path.lexists(staged):
            os.replace(staged, target)
        elif _ino(target) != change.new_ino:
            raise RecoveryFailed(
                f"commit: staged copy {change.staged} is gone and {change.path} is not the new file"
            )
    for directory in sorted({layout.path(c.path).parent for c in changes}):
        # Gone only when every change in it was a removal: a revert that had
        # removed the directories its commit created, rolled forward again.
        if directory.exists():
            fsync_dir(directory)


def undo_changes(layout: Layout, changes: Sequence[Change]) -> None:
    """Put every old file back and remove new ones, in reverse order; idempotent."""
    for change in reversed(changes):
        target = layout.path(change.path)
        if change.hold is not None:
            held = layout.path(change.hold)
            if os.path.lexists(held):
                # Renaming a link over its own inode is a no-op, so an
                # uncommitted target stays and the hold is removed below.
                os.replace(held, target)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(held)
            elif change.old is not None and _ino(target) != change.old.ino:
                raise RecoveryFailed(
                    f"undo: hold copy {change.hold} is gone and {change.path} is not the old file"
                )
        elif change.new_ino is not None and _ino(target) == change.new_ino:
            os.unlink(target)
        if change.staged is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.path(change.staged))
    for directory in sorted({layout.path(c.path).parent for c in changes}):
        if directory.exists():
            fsync_dir(directory)


def remove_created_dirs(layout: Layout, created_dirs: Sequence[str]) -> None:
    """Remove the directories a transaction created, deepest first, if empty.

    Runs after :func:`discard_copies`, which may have emptied them (copies
    are staged beside their targets when the state directory is on another
    filesystem).
    """
    for rel in reversed(created_dirs):
        path = layout.path(rel)
        with contextlib.suppress(OSError):
            path.rmdir()
            fsync_dir(path.parent)


def changed_in_place(layout: Layout, changes: Sequence[Change]) -> list[Change]:
    """The changes whose target already is the new file (commit renamed it, or removed it)."""
    return [c for c in changes if _ino(layout.path(c.path)) == c.new_ino]


def discard_copies(
    layout: Layout,
    txid: str | None,
    target_dirs: Iterable[str] = (),
    *,
    keep: str | None = None,
) -> list[str]:
    """Remove staged and hold copies of ``txid`` (of any transaction when None).

    ``keep`` spares one transaction's copies (the one recovery is about to
    finish, which needs them). No fsync, and best effort: the outcome is
    decided before this runs, so a copy that cannot be removed now (an I/O
    error), or that reappears after a crash, must not change it; the next run
    finds and removes it. Returns the root-relative paths removed.
    """
    removed: list[str] = []
    places = [(layout.state_dir, "")] + [(layout.path(d), _STAGE_PREFIX) for d in target_dirs]
    for directory, prefix in places:
        want = f"{prefix}{txid}-" if txid else prefix
        spare = f"{prefix}{keep}-" if keep else None
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(want) or not name.endswith((".new", ".old")):
                continue
            if spare is not None and name.startswith(spare):
                continue
            with contextlib.suppress(OSError):
                os.unlink(directory / name)
                removed.append(layout.relative(directory / name))
    return removed


def txid_of_copy(relpath: str) -> str:
    """The transaction a staged or hold copy belongs to, from its name."""
    name = Path(relpath).name.removeprefix(_STAGE_PREFIX)
    return name.rsplit("-", 1)[0]
