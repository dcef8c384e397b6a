"""Typed errors: each class carries the exit code SPEC §7 gives it.

Only :mod:`txsetup.cli` turns these into exit codes and messages; everything
else raises them ``from`` their cause, naming the step that failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

__all__ = [
    "Busy",
    "ExitCode",
    "InternalError",
    "InvalidInput",
    "RecoveryFailed",
    "RefusedByVerification",
    "RolledBack",
    "TxsetupError",
    "UsageError",
]


class ExitCode(IntEnum):
    """Process exit codes; the numbers are part of the contract (SPEC §7)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    INVALID_INPUT = 3
    REFUSED = 4
    BUSY = 5
    ROLLED_BACK = 6
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
        return cls(f"invalid input ({len(found)} problem(s))", problems=found)


class RefusedByVerification(TxsetupError):
    """A well-formed document that this node refuses (cluster, certificate, key)."""

    exit_code = ExitCode.REFUSED
    error_code = "refused"


class Busy(TxsetupError):
    """Another transaction holds the lock."""

    exit_code = ExitCode.BUSY
    error_code = "busy"


class RolledBack(TxsetupError):
    """A failure after changes began; the node was put back as it was."""

    exit_code = ExitCode.ROLLED_BACK
    error_code = "rolled_back"


class RecoveryFailed(TxsetupError):
    """Undo or recovery failed: the journal and backups are kept for an operator."""

    exit_code = ExitCode.RECOVERY_FAILED
    error_code = "recovery_failed"
