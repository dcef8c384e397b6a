"""The do/undo runner: steps are data, and one loop runs any table of them.

Lifecycle of a run: each step's ``do`` in order, logged as ``step.begin`` and
``step.end``. When one fails (or a signal interrupts it), that step and every
earlier one are undone in reverse order (``compensate.begin``/``.end``); an
undo that fails is attached to the original error, which is never hidden.
Every ``undo`` must be idempotent and safe when its ``do`` never ran or ran
halfway, because the failing step is undone too (and a signal that lands
between two steps is charged to the next one).

Logging here is best effort: whether anyone still reads stderr must not
change what happens to the node.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from types import FrameType
from typing import Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from txsetup.errors import RecoveryFailed, RolledBack, TxsetupError, error_from

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
    """One state of the transaction: a name from the documented step list, a do, an idempotent undo.

    ``do`` returns whether it changed anything on disk (``step.end``'s
    ``changed``); ``writes`` marks steps from which on a failure counts as
    "failed after changes began" (exit 6) rather than the error's own code.
    ``describe``, called after a successful ``do``, says in a few words what
    the step did ("3 files put in place"): ``step.end``'s ``summary``, so the
    JSON log, the console and the master all read the same sentence.
    """

    name: str
    description: str
    do: Callable[[C], bool]
    undo: Callable[[C], None] | None = None
    writes: bool = False
    describe: Callable[[C], str] | None = None


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
    """SIGINT or SIGTERM arrived during a run (compensate, exit 6)."""

    error_code = "interrupted"


@contextmanager
def signals_raise() -> Iterator[Callable[[], None]]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` until the yielded ``hush`` is called.

    After ``hush()`` (compensation has begun, or every step is done) further
    signals are noted but ignored: undo must run to its end. The handler
    raises at most once, so a second signal cannot interrupt the compensation
    the first one started, even before ``hush`` is reached.
    """
    hushed = False

    def handler(signum: int, _: FrameType | None) -> None:
        nonlocal hushed
        if not hushed:
            hushed = True
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


def _summary(step: Step[C], ctx: C) -> dict[str, str]:
    """``step.end``'s ``summary`` field, or nothing.

    A sentence for the log is never worth failing a step that succeeded, so
    a ``describe`` that raises costs only the sentence.
    """
    if step.describe is None:
        return {}
    try:
        return {"summary": str(step.describe(ctx))}
    except Exception:  # the step is done: only its description is lost
        return {}


@dataclass
class _Run(Generic[C]):
    steps: Sequence[Step[C]]
    ctx: C
    log: FilteringBoundLogger
    reports: list[StepReport] = field(default_factory=list)
    on_failure: Callable[[str, TxsetupError], None] = lambda _step, _error: None
    current: int = 0
    started: float = 0.0

    def do(self, index: int) -> None:
        step, report = self.steps[index], self.reports[index]
        self.current = index
        self.started = time.monotonic()
        self.log.info("step.begin", step=step.name)
        report.changed = step.do(self.ctx)
        report.state = StepState.DONE
        report.duration_ms = _ms(self.started)
        self.log.info(
            "step.end",
            step=step.name,
            duration_ms=report.duration_ms,
            changed=report.changed,
            **_summary(step, self.ctx),
        )

    def failing_index(self) -> int:
        """The step a failure belongs to: the one running, or the next when it fell between."""
        index = self.current
        if self.reports[index].state is StepState.DONE and index + 1 < len(self.steps):
            index += 1
        return index

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

    def fail(self, exc: BaseException) -> BaseException:
        """Compensate after ``exc``; the error to raise (``exc`` itself when it stands)."""
        index = self.failing_index()
        step, report = self.steps[index], self.reports[index]
        if index == self.current:
            report.duration_ms = _ms(self.started)
        report.state = StepState.FAILED
        error = error_from(exc)
        self.log.error(
            "step.failed",
            step=step.name,
            error_code=error.error_code,
            error=str(error),
        )
        with suppress(Exception):  # noting why must never stop the undo
            self.on_failure(step.name, error)
        failures = self.compensate(index)
        began = any(s.writes for s in self.steps[: index + 1])
        if failures:
            return RecoveryFailed(
                f"step {step.name} failed ({error}) and compensation failed", problems=failures
            )
        if began and not isinstance(error, RolledBack | RecoveryFailed):
            return RolledBack(
                f"step {step.name} failed and was rolled back: {error}", problems=error.problems
            )
        return error


def run_steps(
    steps: Sequence[Step[C]],
    ctx: C,
    *,
    log: FilteringBoundLogger,
    hush: Callable[[], None] = lambda: None,
    reports: list[StepReport] | None = None,
    on_failure: Callable[[str, TxsetupError], None] = lambda _step, _error: None,
) -> list[StepReport]:
    """Run ``steps`` in order on ``ctx``; on failure undo in reverse and raise.

    Raises the step's own error when nothing had been written yet,
    :class:`RolledBack` (exit 6) when changes had begun and were undone, and
    :class:`RecoveryFailed` (exit 8) when an undo failed, each ``from`` the
    original error.

    Everything between the first ``step.begin`` and the return, logging
    included, is inside one ``try``: a signal that lands between two steps is
    compensated like one that lands inside a step (it is charged to the next
    step, whose undo is safe when its do never ran). ``hush`` is called before
    compensation and, on success, before returning, so a signal can no longer
    undo a finished run.

    Returns the step reports. A caller that passes ``reports`` gets them
    filled in as the run goes, so it still sees which step failed and which
    were compensated when this raises (the result's ``steps``).
    ``on_failure`` hears the failing step and its error before compensation
    begins, so the undo can record why it runs.
    """
    if reports is None:
        reports = []
    reports[:] = [StepReport(s.name) for s in steps]
    run = _Run(steps, ctx, log, reports, on_failure)
    try:
        for index in range(len(steps)):
            run.do(index)
        hush()
    except BaseException as exc:
        hush()
        raised = run.fail(exc)
        if raised is exc:
            raise
        raise raised from exc
    return run.reports
