"""The last commit's earlier files, kept so that ``txsetup revert TXID`` can put them back.

When a transaction commits, its hold copies (hard links to the files it
replaced) are not removed: each is renamed from ``<copy>.old`` to
``<copy>.revert`` in the same directory, and a manifest,
``var/lib/txsetup/revertable``, names the transaction, every file it wrote
(with the inode, size, mode, owner and mtime it wrote it with, which is how
a revert knows nobody changed it since), the copy of each earlier file
(none for a file it created), the directories it created and what its
services ran and served before. The next commit replaces the set; refused,
aborted, rolled-back and converged runs leave it, and recovery's sweep of
leftovers (``.new`` and ``.old`` names only) never touches it.

Kept copies stay in the state directory (0700) or beside their target (on
another filesystem) with their own, final mode: never wider than the file
they were. A revert consumes the set (:func:`consume`).

Keeping is not durable unless asked (a commit to be confirmed, which must
be revertable after a power loss): a power loss may then lose the manifest
or a copy, and a revert is refused (nothing to revert, or a copy missing),
never wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from txsetup.txn.atomic import fsync_dir
from txsetup.txn.changeset import discard_copies, remove_created_dirs
from txsetup.txn.journal import SERVICE_STATE
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn, utc_now

__all__ = [
    "KeptFile",
    "Revertable",
    "confirm_kept",
    "consume",
    "keep",
    "read_revertable",
    "settle",
    "sweep",
]

_KEPT = ".revert"
_MANIFEST_LIMIT = 1 << 20


@dataclass(frozen=True)
class KeptFile:
    """One file the kept transaction wrote: as it wrote it, and the copy of what it replaced."""

    path: str
    new: dict[str, int]  # ino, size, mode, uid, gid, mtime_ns as the commit left it
    kept: str | None  # the earlier file's copy; None: the commit created the file


@dataclass(frozen=True)
class Revertable:
    """The manifest of the kept set: which transaction, its files, what its services were."""

    txid: str
    command: str
    kept_at: str
    files: list[KeptFile]
    created_dirs: list[str]
    details: dict[str, Any]  # the transaction's service details
    services: dict[str, dict[str, Any]]  # each service's record: what it ran and served before
    unconfirmed: dict[str, Any] | None = None  # a commit to confirm: its deadline

    @property
    def deadline(self) -> datetime | None:
        """When an unconfirmed commit reverts by itself; None once confirmed (or never asked)."""
        if self.unconfirmed is None:
            return None
        try:
            return datetime.fromisoformat(str(self.unconfirmed["deadline"]))
        except (KeyError, ValueError):
            return datetime.min.replace(tzinfo=UTC)  # unreadable: as passed, it reverts

    def deadline_passed(self, now: datetime | None = None) -> bool:
        """Whether an unconfirmed commit's deadline has passed (it must be reverted)."""
        deadline = self.deadline
        return deadline is not None and (now or datetime.now(UTC)) >= deadline

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form (paths, inode numbers, fingerprints: no content)."""
        return {
            "txid": self.txid,
            "command": self.command,
            "kept_at": self.kept_at,
            "files": [{"path": f.path, "new": f.new, "kept": f.kept} for f in self.files],
            "created_dirs": self.created_dirs,
            "details": self.details,
            "services": self.services,
            "unconfirmed": self.unconfirmed,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Revertable:
        """Inverse of :meth:`to_json`; KeyError, TypeError or ValueError when it is not one."""
        files = [KeptFile(str(f["path"]), dict(f["new"]), f["kept"]) for f in obj["files"]]
        return cls(
            str(obj["txid"]),
            str(obj["command"]),
            str(obj["kept_at"]),
            files,
            [str(d) for d in obj["created_dirs"]],
            dict(obj["details"]),
            {str(k): dict(v) for k, v in obj["services"].items()},
            dict(obj["unconfirmed"]) if obj.get("unconfirmed") is not None else None,
        )

    def copies(self) -> set[str]:
        """The root-relative paths of its kept copies."""
        return {f.kept for f in self.files if f.kept is not None}


def read_revertable(layout: Layout) -> Revertable | None:
    """The kept set's manifest, or None when there is none (or it is not a whole one)."""
    try:
        with open(layout.revertable, "rb") as stream:
            raw = stream.read(_MANIFEST_LIMIT + 1)
        return Revertable.from_json(json.loads(raw))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # torn by a power loss: nothing can be reverted, nothing is wrong


def _new_meta(path: Path, ino: int | None) -> dict[str, int]:
    st = os.lstat(path)
    return {
        "ino": ino if ino is not None else -1,
        "size": st.st_size,
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
    }


def keep(
    layout: Layout, txn: PendingTxn, *, command: str, confirm_within: float | None = None
) -> Revertable:
    """Keep the earlier files of ``txn``, which committed, in place of the last set.

    Its hold copies become kept copies (a rename in their directory), its
    other copies go, the manifest is replaced, and whatever kept copy the
    manifest no longer names (the last set's) is removed. Idempotent: a
    roll-forward after a crash here does it again.

    With ``confirm_within`` the commit is unconfirmed: the manifest carries
    its deadline (from now), and every kept copy and the manifest are on
    disk when this returns, for a revert must work after a power loss.
    """
    durable = confirm_within is not None
    # The last set is obsolete now that this commit is in place: until the new
    # manifest is written, nothing is revertable (a failure here leaves it so).
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.revertable)
    files: list[KeptFile] = []
    for change in txn.changes:
        kept = None
        if change.hold is not None:
            hold = layout.path(change.hold)
            kept_path = hold.with_name(hold.name.removesuffix(".old") + _KEPT)
            if os.path.lexists(hold):
                os.replace(hold, kept_path)
            kept = layout.relative(kept_path)
        new = _new_meta(layout.path(change.path), change.new_ino)
        files.append(KeptFile(change.path, new, kept))
    discard_copies(layout, txn.txid, txn.target_dirs)
    services = {
        str(r.state): dict(r.data) for r in txn.records if SERVICE_STATE.fullmatch(str(r.state))
    }
    details = {k: v for k, v in txn.details.items() if k not in ("hold", "cause")}
    for transient in ("command", "started_at", "decision", "decided_at", "entries_synced"):
        details.pop(transient, None)
    unconfirmed = None
    if confirm_within is not None:
        deadline = datetime.now(UTC) + timedelta(seconds=confirm_within)
        unconfirmed = {"deadline": deadline.isoformat(timespec="milliseconds")}
    manifest = Revertable(
        txn.txid, command, utc_now(), files, list(txn.created_dirs), details, services, unconfirmed
    )
    dirs = {layout.path(f.kept).parent for f in files if f.kept is not None}
    if durable:
        for directory in sorted(dirs):
            fsync_dir(directory)
    _write_manifest(layout, manifest, durable=durable)
    _remove_unnamed(layout, manifest.copies(), txn.target_dirs)
    return manifest


def confirm_kept(layout: Layout, kept: Revertable) -> Revertable:
    """Confirm an unconfirmed commit: its manifest without a deadline, durably."""
    confirmed = replace(kept, unconfirmed=None)
    _write_manifest(layout, confirmed, durable=True)
    return confirmed


def consume(layout: Layout, txn: PendingTxn) -> None:
    """After a revert: its own copies, the kept set it put back, and the emptied directories go.

    Best effort and idempotent, like :func:`txsetup.txn.changeset.discard_copies`.
    """
    discard_copies(layout, txn.txid, txn.target_dirs)
    found = read_revertable(layout)
    if found is not None and found.txid == txn.details.get("reverts"):
        with contextlib.suppress(OSError):
            os.unlink(layout.revertable)
    _remove_unnamed(layout, set(), txn.target_dirs)
    emptied = txn.details.get("emptied_dirs")
    if isinstance(emptied, list):
        remove_created_dirs(layout, [str(d) for d in emptied])


def settle(
    layout: Layout, txn: PendingTxn, *, command: str, confirm_within: float | None = None
) -> Revertable | None:
    """A committed transaction's copies, once it is done: kept (a commit) or consumed (a revert)."""
    if "reverts" in txn.details:
        consume(layout, txn)
        return None
    return keep(layout, txn, command=command, confirm_within=confirm_within)


def _write_manifest(layout: Layout, manifest: Revertable, *, durable: bool) -> None:
    """Replace the manifest by a rename: a reader sees the last one or this one, whole."""
    body = json.dumps(manifest.to_json(), sort_keys=True, separators=(",", ":")).encode()
    temp = layout.revertable.with_name(layout.revertable.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, layout.revertable)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(layout.state_dir)


def sweep(layout: Layout, dirs: Iterable[str]) -> list[str]:
    """Recovery's sweep: kept copies no manifest names (a keep cut short), and a manifest's
    temporary file. Best effort; returns the kept copies removed (root-relative)."""
    kept = read_revertable(layout)
    with contextlib.suppress(OSError):
        os.unlink(layout.revertable.with_name(layout.revertable.name + ".tmp"))
    return _remove_unnamed(layout, kept.copies() if kept else set(), dirs)


def _remove_unnamed(layout: Layout, named: set[str], target_dirs: Iterable[str]) -> list[str]:
    """Remove kept copies the manifest does not name (an earlier set's), best effort."""
    removed: list[str] = []
    places = [(layout.state_dir, "")] + [(layout.path(d), ".txsetup-") for d in target_dirs]
    for directory, prefix in places:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not (name.startswith(prefix) and name.endswith(_KEPT)):
                continue
            if layout.relative(directory / name) in named:
                continue
            with contextlib.suppress(OSError):
                os.unlink(directory / name)
                removed.append(layout.relative(directory / name))
    return removed
