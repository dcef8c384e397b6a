"""Durable file replacement, one small function per step of the protocol.

The protocol (as in python-atomicwrites, on :func:`os.replace`):
new file on the target's filesystem → created with its final mode → written
→ fsynced → renamed over the target → directory fsynced. The transaction
splits it across steps (stage writes and fsyncs every file and the staging
directory once; commit renames them all, then fsyncs each target directory
once), so these are the pieces, one small function each.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

__all__ = ["fsync_dir", "hold", "read_regular", "write_new"]

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_new(path: Path, data: bytes, *, mode: int, uid: int = -1, gid: int = -1) -> int:
    """Create ``path`` (which must not exist) holding ``data``, durably, with ``mode``.

    The file is created with ``mode`` so it is never wider, even for an instant
    (the umask can only narrow it; ``fchmod`` then sets it exactly), and owned
    as asked before any byte is written. Returns its inode number, which is how
    recovery recognises the file after it has been renamed into place.
    """
    fd = os.open(path, _CREATE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return os.fstat(fd).st_ino
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hold(target: Path, hold_path: Path) -> bool:
    """Keep the current ``target`` under ``hold_path`` by a hard link, not a copy.

    The link is to the inode itself, so bytes, mode, owner and mtime are kept
    exactly, and a symlink at the target is held as the link (never followed).
    Returns False when there is no target.
    """
    try:
        os.link(target, hold_path, follow_symlinks=False)
    except FileNotFoundError:
        if os.path.lexists(target):
            raise
        return False
    return True


def read_regular(path: Path, limit: int) -> bytes | None:
    """The content of ``path`` if it is a regular file of at most ``limit`` bytes.

    A symlink, a directory or anything else is never read (``O_NOFOLLOW``,
    then ``fstat``), and yields None, as does an absent or larger file: for
    planning, "not the bytes we want" is all that matters. Any other error
    (``EIO``, ``EACCES``) is raised, never None: verification reads the local
    cluster name and key with this, and "could not read it" must not pass for
    "there is none", which would skip the check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a socket
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    finally:
        os.close(fd)
    return data if len(data) <= limit else None
