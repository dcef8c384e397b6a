"""The do/undo runner: steps are data, and one loop runs any table of them.

Lifecycle of a run: each step's ``do`` in order, logged as ``step.begin`` and
``step.end``. When one fails (or a signal interrupts it), that step and every
earlier one are undone in reverse order (``compensate.begin``/``.end``); an
undo that fails is attached to the original error, which is never hidden.
Every ``undo`` must be idempotent and safe when its ``do`` never ran or ran
halfway, because the failing step is undone too.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from types import FrameType
from typing import Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from txsetup.errors import InternalError, RecoveryFailed, RolledBack, TxsetupError

__all__ = ["Interrupted", "Step", "StepReport", "StepState", "run_steps", "signals_raise"]

C = TypeVar("C")


class StepState(StrEnum):
    """What became of a step in this run (shown in results and status)."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    COMPENSATED = "compensated"


@dataclass(frozen=True)
class Step(Generic[C]):
    """One state of the transaction: a name from SPEC §5, a do, an idempotent undo.

    ``do`` returns whether it changed anything on disk (``step.end``'s
    ``changed``); ``writes`` marks steps from which on a failure counts as
    "failed after changes began" (exit 6) rather than the error's own code.
    """

    name: str
    description: str
    do: Callable[[C], bool]
    undo: Callable[[C], None] | None = None
    writes: bool = False


@dataclass
class StepReport:
    """A step's outcome in this run."""

    name: str
    state: StepState = StepState.PENDING
    duration_ms: int = 0
    changed: bool = False

    def to_json(self) -> dict[str, object]:
        """The result's ``steps`` entry."""
        return {"name": self.name, "state": str(self.state), "duration_ms": self.duration_ms}


class Interrupted(RolledBack):
    """SIGINT or SIGTERM arrived during a run (SPEC §5: compensate, exit 6)."""

    error_code = "interrupted"


@contextmanager
def signals_raise() -> Iterator[Callable[[], None]]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` until the yielded ``hush`` is called.

    After ``hush()`` (compensation has begun) further signals are noted but
    ignored: undo must run to its end.
    """
    hushed = False

    def handler(signum: int, _: FrameType | None) -> None:
        if not hushed:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    def hush() -> None:
        nonlocal hushed
        hushed = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield hush
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


@dataclass
class _Run(Generic[C]):
    steps: Sequence[Step[C]]
    ctx: C
    log: FilteringBoundLogger
    reports: list[StepReport] = field(default_factory=list)

    def compensate(self, upto: int) -> list[str]:
        failures = []
        for step, report in reversed(list(zip(self.steps[: upto + 1], self.reports, strict=False))):
            if step.undo is None:
                continue
            self.log.info("compensate.begin", step=step.name)
            try:
                step.undo(self.ctx)
            except Exception as exc:  # collected, reported with the original
                failures.append(f"undo of {step.name} failed: {exc}")
                self.log.error("compensate.failed", step=step.name, error=str(exc))
                continue
            if report.state is StepState.DONE:
                report.state = StepState.COMPENSATED
            self.log.info("compensate.end", step=step.name)
        return failures


def run_steps(
    steps: Sequence[Step[C]],
    ctx: C,
    *,
    log: FilteringBoundLogger,
    hush: Callable[[], None] = lambda: None,
) -> list[StepReport]:
    """Run ``steps`` in order on ``ctx``; on failure undo in reverse and raise.

    Raises the step's own error when nothing had been written yet,
    :class:`RolledBack` (exit 6) when changes had begun and were undone, and
    :class:`RecoveryFailed` (exit 8) when an undo failed, each ``from`` the
    original error.
    """
    run = _Run(steps, ctx, log, [StepReport(s.name) for s in steps])
    for index, step in enumerate(steps):
        report = run.reports[index]
        started = time.monotonic()
        log.info("step.begin", step=step.name)
        try:
            report.changed = step.do(ctx)
        except BaseException as exc:
            hush()
            report.state = StepState.FAILED
            report.duration_ms = _ms(started)
            error = (
                exc
                if isinstance(exc, TxsetupError)
                else InternalError(f"{type(exc).__name__}: {exc}")
            )
            log.error("step.failed", step=step.name, error_code=error.error_code, error=str(error))
            failures = run.compensate(index)
            began = any(s.writes for s in steps[: index + 1])
            if failures:
                raise RecoveryFailed(
                    f"step {step.name} failed ({error}) and compensation failed", problems=failures
                ) from exc
            if began and not isinstance(error, RolledBack | RecoveryFailed):
                raise RolledBack(
                    f"step {step.name} failed and was rolled back: {error}", problems=error.problems
                ) from exc
            if error is exc:
                raise
            raise error from exc
        report.state = StepState.DONE
        report.duration_ms = _ms(started)
        log.info("step.end", step=step.name, duration_ms=report.duration_ms, changed=report.changed)
    return run.reports
