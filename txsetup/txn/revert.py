"""A revert: the last commit's kept earlier files put back, as a transaction of its own.

The files to put back and the services to bring back are those the kept set
names (:mod:`txsetup.txn.revertable`). First a guard: every file the commit
wrote must still be exactly as it wrote it (inode, size, mode, owner,
mtime), and every kept copy must be there; otherwise nothing is touched and
the revert is refused (exit 4) naming the file. Then it is a transaction
like any other, with its own txid and journal, so ``--resume`` finishes or
undoes it after a crash:

* stage: each kept copy is hard-linked as the staged copy (the very inode
  of the earlier file: bytes, mode, owner, mtime), and each current file is
  held; a file the commit created is staged as a removal;
* ``prepared`` (durable) names the changes, the reverted commit's service
  records (``restores``) and what the services serve now (``serving``);
* then the way every commit goes (:func:`txsetup.txn.finish.finish_forward`):
  the renames, each service the commit touched brought back as it was
  before it (restarted on the old certificate, or stopped if it did not
  run) and checked; the kept set is consumed and the directories the commit
  created are removed when empty. If a service does not come back, the
  revert is undone (exit 6) and the kept set stays for another try.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.errors import DecisionRefused, RolledBack, os_error_words
from txsetup.txn.atomic import fsync_dir, hold
from txsetup.txn.changeset import Change, copy_names
from txsetup.txn.finish import finish_undo, forward_or_roll_back
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import Journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn, failure_cause, new_txid, utc_now
from txsetup.txn.plan import FileMeta
from txsetup.txn.revertable import Revertable

__all__ = ["Reverted", "guard", "revert_kept"]

_GUARDED = ("ino", "size", "mode", "uid", "gid", "mtime_ns")


@dataclass(frozen=True)
class Reverted:
    """What a revert did: its own txid, the commit it reverted, why, and the files it changed."""

    txid: str
    reverts: str
    reason: str
    changed: list[str] = field(default_factory=list)
    again: bool = False  # it had been reverted already

    def to_json(self) -> dict[str, Any]:
        """What a result adds for it."""
        return {"reverted": self.reverts, "reason": self.reason}


def guard(layout: Layout, kept: Revertable) -> None:
    """Refuse a revert that would overwrite a change made since the commit, or lacks a copy.

    Raises:
        DecisionRefused: a file is not as the commit wrote it, or a kept copy is
            missing (exit 4); nothing was touched.
    """
    for item in kept.files:
        try:
            st = os.lstat(layout.path(item.path))
        except FileNotFoundError:
            raise DecisionRefused(
                f"revert {kept.txid}: {item.path} was removed since that commit; "
                "nothing was touched"
            ) from None
        now = {"ino": st.st_ino, "size": st.st_size, "mode": st.st_mode}
        now.update(uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns)
        if any(now[key] != item.new.get(key) for key in _GUARDED):
            raise DecisionRefused(
                f"revert {kept.txid}: {item.path} was changed since that commit; "
                "nothing was touched"
            )
        if item.kept is not None and not os.path.lexists(layout.path(item.kept)):
            raise DecisionRefused(
                f"revert {kept.txid}: the earlier copy of {item.path} ({item.kept}) is gone; "
                "nothing was touched"
            )


def revert_kept(
    layout: Layout,
    log: FilteringBoundLogger,
    kept: Revertable,
    *,
    hooks: Hooks,
    lock_timeout: float,
    reason: str,
) -> Reverted:
    """Put the kept set's earlier files back and bring its services back; the caller holds the lock.

    Raises:
        DecisionRefused: the guard refused (exit 4); nothing was touched.
        RolledBack: a service did not come back, or staging failed; the revert
            was undone (exit 6).
        RecoveryFailed: an I/O error while files moved (exit 8).
    """
    guard(layout, kept)
    txid = new_txid()
    journal = Journal(layout.journal, txid)
    txn = PendingTxn(txid, [], target_dirs=_target_dirs(kept))
    txn.details = {
        "reverts": kept.txid,
        "reason": reason,
        "restores": kept.services,
        "serving": {
            s.kind.state: s.kind.serving(kept.details)
            for s in hooks.services
            if s.kind.state in kept.services
        },
        "emptied_dirs": kept.created_dirs,
    }
    try:
        _stage(layout, journal, txn, kept)
    except OSError as exc:
        cause = failure_cause(step="stage", error_code="io_error", error=os_error_words(exc))
        finish_undo(
            layout,
            txn,
            journal,
            lock_timeout=lock_timeout,
            reason="step stage failed",
            cause=cause,
            hooks=hooks,
        )
        raise RolledBack(f"revert of {kept.txid}: staging failed: {os_error_words(exc)}") from exc
    forward_or_roll_back(
        layout,
        txn,
        journal,
        log,
        lock_timeout=lock_timeout,
        hooks=hooks,
        end={"outcome": "reverted", "reverts": kept.txid, "reason": reason},
        doing=f"revert of {kept.txid}",
    )
    log.warning("txn.reverted", reverted_txid=kept.txid, reason=reason)
    return Reverted(txid, kept.txid, reason, [f.path for f in kept.files])


def _target_dirs(kept: Revertable) -> list[str]:
    return sorted({Path(f.path).parent.as_posix() for f in kept.files})


def _stage(layout: Layout, journal: Journal, txn: PendingTxn, kept: Revertable) -> None:
    """Link each kept copy as a staged copy, hold each current file; journal it durably."""
    unsynced = journal.begin(
        {
            "command": "revert",
            "started_at": utc_now(),
            "created_dirs": [],
            "target_dirs": txn.target_dirs,
            "reverts": kept.txid,
        }
    )
    staging: set[Path] = set()
    for index, item in enumerate(kept.files):
        target = layout.path(item.path)
        staged, hold_path = copy_names(layout, txn.txid, index, target)
        staged_rel, new_ino = None, None
        if item.kept is not None:
            os.link(layout.path(item.kept), staged, follow_symlinks=False)
            staged_rel, new_ino = layout.relative(staged), os.lstat(staged).st_ino
        old = FileMeta.of(target)
        held = layout.relative(hold_path) if hold(target, hold_path) else None
        txn.changes.append(Change(item.path, staged_rel, held, new_ino, old))
        staging.add(hold_path.parent)
    if unsynced:
        staging.update((layout.state_dir, layout.state_dir.parent))
    for directory in sorted(staging):
        fsync_dir(directory)
    txn.journal_prepared(journal, {"changes": [c.to_json() for c in txn.changes], **txn.details})
