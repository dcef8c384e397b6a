"""The one JSON result a command prints, and the exit code it carries: chosen only here.

A run's :class:`~txsetup.txn.run.Outcome`, a refusal before any step, a
``--resume``: each becomes a :class:`Result` whose exit code is the one its
error's type documents (``docs/exit-codes.md``), 0 without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txsetup.errors import ExitCode, RecoveryFailed, TxsetupError
from txsetup.log import get_logger
from txsetup.txn.decide import Decided
from txsetup.txn.layout import Layout
from txsetup.txn.recovery import Recovered
from txsetup.txn.run import Outcome

__all__ = [
    "Result",
    "exit_code_of",
    "failed",
    "internal_error",
    "of_decision",
    "of_outcome",
    "of_resume",
    "refused",
]


@dataclass
class Result:
    """The one JSON object printed on stdout."""

    txid: str | None
    outcome: str
    exit_code: ExitCode = ExitCode.OK
    changed: list[str] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result object."""
        return {
            "txid": self.txid,
            "outcome": self.outcome,
            "exit_code": int(self.exit_code),
            "changed": self.changed,
            "steps": self.steps,
            **self.extra,
        }


def exit_code_of(error: TxsetupError | None) -> ExitCode:
    """The documented exit code of ``error``'s type; 0 for none."""
    return ExitCode.OK if error is None else error.exit_code


def _failure(error: TxsetupError, layout: Layout | None) -> dict[str, Any]:
    message = str(error)
    if isinstance(error, RecoveryFailed) and layout is not None:
        message += f" (journal and backups kept in {layout.state_dir})"
    return {"error": message, "error_code": error.error_code}


def of_outcome(outcome: Outcome, layout: Layout) -> Result:
    """A run's result: what it changed or planned, or why it failed."""
    result = Result(outcome.txid, outcome.outcome, exit_code_of(outcome.error))
    result.steps = outcome.steps
    result.changed = outcome.changed
    if outcome.error is not None:
        result.extra.update(_failure(outcome.error, layout))
    if outcome.recovered:
        result.extra["recovered"] = outcome.recovered
    if outcome.plan is not None:
        result.extra["plan"] = outcome.plan
    if outcome.pending_recovery is not None:
        result.extra["pending_recovery"] = outcome.pending_recovery
    result.extra.update(outcome.extra)
    return result


def of_resume(found: Recovered | None) -> Result:
    """``--resume``'s result: what it finished or undid, or that nothing was unfinished."""
    if found is None:
        return Result(None, "nothing_to_resume")
    outcome = {"rolled_forward": "resumed", "reverted": "reverted"}.get(found.action, "rolled_back")
    return Result(
        found.txid, outcome, changed=found.changed, extra={"recovered": [found.to_json()]}
    )


def of_decision(decided: Decided) -> Result:
    """A decision's result: committed (the files it put in place), aborted, or a commit
    rolled back earlier, reported again (exit 6)."""
    code = ExitCode.ROLLED_BACK if decided.outcome == "rolled_back" else ExitCode.OK
    extra = {"coordinator": decided.coordinator} if decided.coordinator is not None else {}
    extra.update(decided.extra)
    return Result(decided.txid, decided.outcome, code, changed=decided.changed, extra=extra)


def failed(error: TxsetupError, layout: Layout | None = None) -> Result:
    """A run that failed with ``error`` before it had a transaction to report."""
    return Result(None, "failed", exit_code_of(error), extra=_failure(error, layout))


_REFUSED_EVENTS = {"usage": "usage.error", "environment": "environment.error"}


def refused(error: TxsetupError) -> Result:
    """A run refused before any step: its log line, and the result to print.

    The event says whose the fault is: the command line (``usage.error``),
    the node's environment (``environment.error``) or the configuration.
    """
    event = _REFUSED_EVENTS.get(error.error_code, "config.error")
    get_logger().error(event, error=str(error), error_code=error.error_code)
    return failed(error)


def internal_error(error: Exception) -> Result:
    """The last line of defence: a defect becomes exit 1 with its words, never a traceback."""
    return Result(
        None,
        "failed",
        ExitCode.INTERNAL,
        extra={
            "error": f"internal error: {type(error).__name__}: {error}",
            "error_code": "internal",
        },
    )
