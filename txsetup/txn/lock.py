"""The transaction lock, ``var/lock/txsetup.lock``: one transaction at a time on a node."""

from __future__ import annotations

from filelock import FileLock, Timeout

from txsetup.errors import Busy, InternalError, RefusedByVerification, environment_problem
from txsetup.txn.layout import Layout
from txsetup.txn.plan import KIND_WORDS, FileMeta

__all__ = ["acquire_lock"]


def acquire_lock(layout: Layout, timeout: float) -> FileLock:
    """Take ``var/lock/txsetup.lock``, refusing a lock file that is not a regular file.

    Raises:
        RefusedByVerification: a symlink, directory or FIFO is at the lock's path (exit 4).
        Busy: another run holds it for longer than ``timeout`` seconds (exit 5).
        EnvironmentProblem: the lock or state directory may not be created or
            opened here: not root, or a read-only file system (exit 7).
        InternalError: the lock file cannot be opened for another reason (exit 1).
    """
    where = layout.relative(layout.lock_file)
    found = FileMeta.of(layout.lock_file)
    if found is not None and found.kind != "file":
        # Opening it would follow a symlink out of the root, or block on a FIFO.
        raise RefusedByVerification(
            f"lock: {where} is {KIND_WORDS.get(found.kind, 'a file')}, not a regular file; "
            "move it away, then run again"
        )
    lock = FileLock(layout.lock_file, timeout=timeout)
    try:
        layout.make_state_dir()
        lock.acquire()
    except Timeout as exc:
        raise Busy(f"lock: {where} is held by another run (waited {timeout:g}s)") from exc
    except OSError as exc:
        raise environment_problem(exc, doing="lock", where=layout.lock_file) or InternalError(
            f"lock: cannot open {where}: {exc.strerror or exc}"
        ) from exc
    return lock
