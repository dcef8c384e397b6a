"""Typed errors: each class carries its documented exit code (docs/exit-codes.md).

Only :mod:`txsetup.cli` turns these into exit codes and messages; everything
else raises them ``from`` their cause, naming the step that failed.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from enum import IntEnum
from pathlib import Path

__all__ = [
    "Busy",
    "DecisionRefused",
    "EnvironmentProblem",
    "ExitCode",
    "Held",
    "InternalError",
    "InvalidInput",
    "RecoveryFailed",
    "RefusedByVerification",
    "RolledBack",
    "TxsetupError",
    "UsageError",
    "environment_problem",
    "error_from",
    "os_error_words",
]


class ExitCode(IntEnum):
    """Process exit codes; the numbers are part of the contract."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    INVALID_INPUT = 3
    REFUSED = 4
    BUSY = 5
    ROLLED_BACK = 6
    ENVIRONMENT = 7  # the node's environment refused the run before anything changed
    RECOVERY_FAILED = 8
    NODES_FAILED = 10  # push: some node did not succeed
    INTERRUPTED = 130  # push: stopped by SIGINT or SIGTERM


class TxsetupError(Exception):
    """Base of every error txsetup reports; ``problems`` lists each finding."""

    exit_code: ExitCode = ExitCode.INTERNAL
    error_code: str = "internal"

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems: tuple[str, ...] = tuple(problems)

    def __str__(self) -> str:
        if not self.problems or self.problems == (self.message,):
            return self.message
        return self.message + ": " + "; ".join(self.problems)


class InternalError(TxsetupError):
    """A defect or an unexpected condition; the transaction is still compensated."""


class UsageError(TxsetupError):
    """Wrong command-line arguments or configuration use."""

    exit_code = ExitCode.USAGE
    error_code = "usage"


class InvalidInput(TxsetupError):
    """The document (or the configuration file) is not acceptable input."""

    exit_code = ExitCode.INVALID_INPUT
    error_code = "invalid_input"

    @classmethod
    def at(cls, problems: Iterable[str]) -> InvalidInput:
        """One error for all of a document's problems, each naming its JSON path."""
        found = tuple(problems)
        count = f"{len(found)} problem{'' if len(found) == 1 else 's'}"
        return cls(f"invalid input ({count})", problems=found)


class RefusedByVerification(TxsetupError):
    """A well-formed document that this node refuses (cluster, certificate, key)."""

    exit_code = ExitCode.REFUSED
    error_code = "refused"


class DecisionRefused(TxsetupError):
    """A decision that cannot apply: no such prepared transaction, or the opposite one was
    already taken."""

    exit_code = ExitCode.REFUSED
    error_code = "decision_refused"


class Busy(TxsetupError):
    """Another transaction holds the lock."""

    exit_code = ExitCode.BUSY
    error_code = "busy"


class Held(Busy):
    """The node is held by a prepared transaction: only a decision on it may run."""

    error_code = "held"


class RolledBack(TxsetupError):
    """A failure after changes began; the node was put back as it was."""

    exit_code = ExitCode.ROLLED_BACK
    error_code = "rolled_back"


class RecoveryFailed(TxsetupError):
    """Undo or recovery failed: the journal and backups are kept for an operator."""

    exit_code = ExitCode.RECOVERY_FAILED
    error_code = "recovery_failed"


class EnvironmentProblem(TxsetupError):
    """The node's environment prevents the run before anything changed.

    Permission denied (not root, or not the owner of the tree) or a
    read-only file system: nothing a document or a re-run can fix, and no
    defect to report; the message names the path and the action to take.
    """

    exit_code = ExitCode.ENVIRONMENT
    error_code = "environment"


# The errors of the node's environment: what the run may not do here, not what went wrong.
_ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _mount_point(path: Path) -> Path:
    """The mount point of the file system ``path`` is on: the longest one that holds it.

    Read from ``/proc/self/mounts``, which sees bind mounts and this
    process's own mount namespace; ``/`` when that cannot be read.
    """
    path = Path(os.path.realpath(path))
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            fields = [line.split() for line in mounts]
    except OSError:
        return Path("/")
    points = [Path(_octal_escapes(f[1])) for f in fields if len(f) > 1]
    holding = [point for point in points if point == path or point in path.parents]
    return max(holding, key=lambda point: len(point.parts), default=Path("/"))


def _octal_escapes(text: str) -> str:
    """A path from ``/proc/self/mounts``, its ``\\040`` (space) escapes undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _user() -> str:
    """The user this process runs as, by name when it has one."""
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def os_error_words(exc: OSError, *, where: Path | None = None) -> str:
    """One line for an OS error; for the environment's errors, with the action to take.

    ``where`` stands in for the path when the error carries none (a write
    or an fsync on an open file). Other errors read as Python words them.
    """
    path = Path(exc.filename) if isinstance(exc.filename, str) else where
    named = f" {path}" if path is not None else ""
    if exc.errno == errno.EROFS:
        mount = _mount_point(path) if path is not None else Path("/")
        return f"read-only file system at{named}: remount {mount} read-write, then run again"
    if exc.errno in (errno.EACCES, errno.EPERM):
        denied = "permission denied" if exc.errno == errno.EACCES else "operation not permitted"
        if os.geteuid() != 0:
            return f"{denied} on{named} to user {_user()}: run it as root"
        return (
            f"{denied} on{named} even to root: check its attributes (lsattr -d) "
            "and the security policy (AppArmor, SELinux)"
        )
    return str(exc)


def environment_problem(
    exc: BaseException, *, doing: str = "", where: Path | None = None
) -> EnvironmentProblem | None:
    """The error of the environment (exit 7) that ``exc`` is, or None when it is not one.

    The one place that decides which OS errors are the environment's:
    permission denied and a read-only file system. ``doing`` prefixes the
    message (``lock``); ``where`` stands in for a path the error lacks.
    """
    if not isinstance(exc, OSError) or exc.errno not in _ENVIRONMENT_ERRNOS:
        return None
    prefix = f"{doing}: " if doing else ""
    return EnvironmentProblem(prefix + os_error_words(exc, where=where))


def error_from(exc: BaseException) -> TxsetupError:
    """The typed error for an exception raised before anything changed.

    An error of the environment (:func:`environment_problem`, exit 7), or,
    for anything else that is not a :class:`TxsetupError` already, an
    internal error (exit 1). After changes began the undo decides the code;
    :func:`os_error_words` still gives its message the action to take.
    """
    if isinstance(exc, TxsetupError):
        return exc
    return environment_problem(exc) or InternalError(f"{type(exc).__name__}: {exc}")
