"""The do/undo runner in-process: tiny step tables of real file operations in tmp_path.

Each test has the shape do → check → fail → undo → check: the directory the
steps worked in is back exactly as it was. No mocks; failures are real
``OSError``s from the filesystem or the typed errors steps raise.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict, FilteringBoundLogger

from txsetup.errors import (
    ExitCode,
    InternalError,
    InvalidInput,
    RecoveryFailed,
    RolledBack,
    TxsetupError,
)
from txsetup.log import configure_logging, get_logger
from txsetup.txn.engine import Interrupted, Step, StepReport, StepState, run_steps, signals_raise


@dataclass
class Workdir:
    """The context the test steps share: a directory and the order things ran in."""

    path: Path
    calls: list[str] = field(default_factory=list)


Do = Callable[[Workdir], bool]
Undo = Callable[[Workdir], None]


def create(name: str, *, then: Callable[[Workdir], None] | None = None) -> Do:
    """A ``do`` that creates ``name`` (and then, optionally, fails halfway with ``then``)."""

    def do(ctx: Workdir) -> bool:
        ctx.calls.append(f"do {name}")
        (ctx.path / name).write_bytes(f"made by {name}\n".encode())
        if then is not None:
            then(ctx)
        return True

    return do


def remove(name: str) -> Undo:
    """An idempotent ``undo`` that removes ``name`` whether or not its do ran."""

    def undo(ctx: Workdir) -> None:
        ctx.calls.append(f"undo {name}")
        (ctx.path / name).unlink(missing_ok=True)

    return undo


def file_step(
    name: str, *, writes: bool = False, then: Callable[[Workdir], None] | None = None
) -> Step[Workdir]:
    """A step that creates the file ``name``; its undo removes it."""
    return Step(name, f"create {name}", create(name, then=then), remove(name), writes=writes)


def read_missing(ctx: Workdir) -> None:
    """Fail for real: read a file that is not there (``FileNotFoundError``)."""
    (ctx.path / "no-such-file").read_bytes()


def refuse_input(_: Workdir) -> None:
    """Fail with a typed error, as ``decode`` does on a bad document."""
    raise InvalidInput.at(["$.ssconf.master_ip: expected string, got number"])


def unlink_a_directory(ctx: Workdir) -> None:
    """An undo that fails for real: ``unlink`` on a directory (``EISDIR``)."""
    ctx.calls.append("undo broken")
    (ctx.path / "a-directory").mkdir(exist_ok=True)
    os.unlink(ctx.path / "a-directory")


def contents(path: Path) -> dict[str, bytes]:
    """Every regular file directly in ``path`` with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@contextmanager
def captured() -> Iterator[tuple[FilteringBoundLogger, list[MutableMapping[str, Any]]]]:
    """A logger whose events are collected in a list (structlog's own capture)."""
    with structlog.testing.capture_logs() as events:
        yield cast(FilteringBoundLogger, structlog.get_logger()), events


def states(reports: list[StepReport]) -> list[str]:
    """Each report's state, in table order."""
    return [str(r.state) for r in reports]


@pytest.fixture
def work(tmp_path: Path) -> Workdir:
    """A directory with one file that existed before any step ran."""
    (tmp_path / "existing").write_bytes(b"old\n")
    return Workdir(tmp_path)


def test_steps_run_in_order_and_report_done(work: Workdir) -> None:
    """Every step's do runs once, in table order, and each report says done."""
    table = [file_step("a"), file_step("b", writes=True), file_step("c")]
    with captured() as (log, events):
        reports = run_steps(table, work, log=log)
    assert work.calls == ["do a", "do b", "do c"]
    assert states(reports) == ["done", "done", "done"]
    assert all(r.changed for r in reports)
    assert set(contents(work.path)) == {"existing", "a", "b", "c"}
    assert [e["event"] for e in events] == ["step.begin", "step.end"] * 3
    assert [e["step"] for e in events if e["event"] == "step.end"] == ["a", "b", "c"]


def test_failure_undoes_every_earlier_step_in_reverse_and_the_failing_one(work: Workdir) -> None:
    """A failing step is undone first, then each earlier step in reverse; later steps never run."""
    before = contents(work.path)
    table = [
        file_step("a"),
        file_step("b", writes=True),
        file_step("c", writes=True, then=read_missing),
        file_step("d"),
    ]
    reports: list[StepReport] = []
    with captured() as (log, events), pytest.raises(RolledBack):
        run_steps(table, work, log=log, reports=reports)
    assert work.calls == ["do a", "do b", "do c", "undo c", "undo b", "undo a"]
    assert contents(work.path) == before
    assert states(reports) == ["compensated", "compensated", "failed", "pending"]
    compensated = [e["step"] for e in events if e["event"] == "compensate.end"]
    assert compensated == ["c", "b", "a"]
    failed = [e for e in events if e["event"] == "step.failed"]
    assert [(e["step"], e["error_code"]) for e in failed] == [("c", "internal")]


def test_failure_before_any_write_keeps_its_own_error(work: Workdir) -> None:
    """With no writing step reached, the step's own typed error surfaces (InvalidInput: exit 3)."""
    before = contents(work.path)
    table = [
        file_step("lock"),
        file_step("decode", then=refuse_input),
        file_step("stage", writes=True),
    ]
    with captured() as (log, _), pytest.raises(InvalidInput) as caught:
        run_steps(table, work, log=log)
    assert caught.value.exit_code is ExitCode.INVALID_INPUT
    assert caught.value.problems == ("$.ssconf.master_ip: expected string, got number",)
    assert work.calls == ["do lock", "do decode", "undo decode", "undo lock"]
    assert contents(work.path) == before


def test_typed_failure_after_writes_began_is_rolled_back(work: Workdir) -> None:
    """Once a writing step is reached, any failure becomes RolledBack (exit 6) from the original."""
    before = contents(work.path)
    table = [file_step("stage", writes=True), file_step("commit", then=refuse_input)]
    with captured() as (log, _), pytest.raises(RolledBack) as caught:
        run_steps(table, work, log=log)
    assert caught.value.exit_code is ExitCode.ROLLED_BACK
    assert isinstance(caught.value.__cause__, InvalidInput)
    assert "step commit failed and was rolled back" in str(caught.value)
    assert caught.value.problems == ("$.ssconf.master_ip: expected string, got number",)
    assert contents(work.path) == before


def test_foreign_exception_before_writes_is_internal_error(work: Workdir) -> None:
    """A non-txsetup exception in a read-only step is an InternalError (exit 1) from the cause."""
    table = [file_step("decode", then=read_missing)]
    with captured() as (log, _), pytest.raises(InternalError) as caught:
        run_steps(table, work, log=log)
    assert caught.value.exit_code is ExitCode.INTERNAL
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert "FileNotFoundError" in str(caught.value)
    assert not (work.path / "decode").exists()


def test_foreign_exception_after_writes_is_rolled_back(work: Workdir) -> None:
    """A non-txsetup exception in a writing step is RolledBack (exit 6), naming the cause."""
    before = contents(work.path)
    table = [file_step("stage", writes=True, then=read_missing)]
    with captured() as (log, _), pytest.raises(RolledBack) as caught:
        run_steps(table, work, log=log)
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert "FileNotFoundError" in str(caught.value)
    assert contents(work.path) == before


def test_undo_failure_is_recovery_failed_and_keeps_the_original(work: Workdir) -> None:
    """A failing undo gives RecoveryFailed (exit 8) naming both errors; other undos still run."""
    broken = Step("broken", "create b; undo fails", create("b"), unlink_a_directory, writes=True)
    table = [file_step("a"), broken, file_step("c", then=refuse_input)]
    reports: list[StepReport] = []
    with captured() as (log, events), pytest.raises(RecoveryFailed) as caught:
        run_steps(table, work, log=log, reports=reports)
    error = caught.value
    assert error.exit_code is ExitCode.RECOVERY_FAILED
    assert isinstance(error.__cause__, InvalidInput)
    assert "step c failed (invalid input (1 problem)" in str(error)
    assert len(error.problems) == 1
    assert error.problems[0].startswith("undo of broken failed: [Errno 21] Is a directory")
    assert work.calls == ["do a", "do b", "do c", "undo c", "undo broken", "undo a"]
    assert not (work.path / "a").exists()
    assert states(reports) == ["compensated", "done", "failed"]
    assert [e["step"] for e in events if e["event"] == "compensate.failed"] == ["broken"]


def test_on_failure_hears_the_step_and_error_before_any_undo(work: Workdir) -> None:
    """``on_failure`` gets the failing step and its error first; one that raises stops no undo."""
    heard: list[tuple[str, str, list[str]]] = []
    before = contents(work.path)

    def note(step: str, error: TxsetupError) -> None:
        heard.append((step, error.error_code, list(work.calls)))
        raise ValueError("a broken listener")

    table = [file_step("a"), file_step("b", writes=True, then=refuse_input)]
    with captured() as (log, _), pytest.raises(RolledBack):
        run_steps(table, work, log=log, on_failure=note)
    assert heard == [("b", "invalid_input", ["do a", "do b"])]
    assert work.calls == ["do a", "do b", "undo b", "undo a"]
    assert contents(work.path) == before


def test_step_without_undo_is_not_compensated(work: Workdir) -> None:
    """A step with no undo (decode, verify) gets no compensate events and stays done."""
    table = [
        file_step("lock"),
        Step[Workdir]("verify", "read only", lambda _: False),
        file_step("stage", writes=True, then=read_missing),
    ]
    reports: list[StepReport] = []
    with captured() as (log, events), pytest.raises(RolledBack):
        run_steps(table, work, log=log, reports=reports)
    assert [e["step"] for e in events if e["event"] == "compensate.begin"] == ["stage", "lock"]
    assert states(reports) == ["compensated", "done", "failed"]
    assert reports[1].changed is False


def test_reports_to_json_match_the_result_shape(work: Workdir) -> None:
    """A report serialises to the result's ``steps`` entry: name, state, duration_ms."""

    def nap(_: Workdir) -> bool:
        time.sleep(0.02)
        return False

    with captured() as (log, _):
        (report,) = run_steps([Step("stage", "sleep", nap)], work, log=log)
    assert report.to_json() == {"name": "stage", "state": "done", "duration_ms": report.duration_ms}
    assert report.duration_ms >= 20


def test_describe_becomes_the_summary_and_its_failure_costs_only_the_words(
    work: Workdir,
) -> None:
    """``describe`` runs after a successful do; one that raises leaves the step done."""

    def words(ctx: Workdir) -> str:
        return f"{len(ctx.calls)} file made"

    def broken(_: Workdir) -> str:
        raise KeyError("no such fact")

    table = [
        Step("a", "create a", create("a"), describe=words),
        Step("b", "create b", create("b"), describe=broken),
        file_step("c"),
    ]
    with captured() as (log, events):
        reports = run_steps(table, work, log=log)
    assert states(reports) == ["done", "done", "done"]
    ends = [e for e in events if e["event"] == "step.end"]
    assert ends[0]["summary"] == "1 file made"
    assert "summary" not in ends[1]
    assert "summary" not in ends[2]


def test_hush_is_called_before_compensation(work: Workdir) -> None:
    """The ``hush`` callback runs once, before the first undo, so signals cannot stop undo."""

    def hush() -> None:
        work.calls.append("hush")

    table = [file_step("a"), file_step("b", then=read_missing)]
    with captured() as (log, _), pytest.raises(InternalError):
        run_steps(table, work, log=log, hush=hush)
    assert work.calls == ["do a", "do b", "hush", "undo b", "undo a"]


def _wait_for_signal(ctx: Workdir) -> None:
    """Sleep until a signal handler raises (at most five seconds)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.calls.append("signal never arrived")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_a_step_is_interrupted_and_undone(work: Workdir, signum: int) -> None:
    """A real SIGTERM or SIGINT inside a step raises Interrupted (exit 6) after the undo ran."""
    before = contents(work.path)

    def kill_self(ctx: Workdir) -> None:
        os.kill(os.getpid(), signum)
        _wait_for_signal(ctx)

    table = [file_step("lock"), file_step("stage", writes=True, then=kill_self)]
    reports: list[StepReport] = []
    previous = signal.getsignal(signum)
    with captured() as (log, _), signals_raise() as hush, pytest.raises(Interrupted) as caught:
        run_steps(table, work, log=log, hush=hush, reports=reports)
    assert caught.value.exit_code is ExitCode.ROLLED_BACK
    assert signal.Signals(signum).name in str(caught.value)
    assert work.calls == ["do lock", "do stage", "undo stage", "undo lock"]
    assert contents(work.path) == before
    assert states(reports) == ["compensated", "failed"]
    assert signal.getsignal(signum) is previous


def test_signal_before_writes_is_still_interrupted(work: Workdir) -> None:
    """A signal is exit 6 even when it lands in a read-only step such as the lock wait."""

    def kill_self(ctx: Workdir) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal(ctx)

    with captured() as (log, _), signals_raise() as hush, pytest.raises(Interrupted):
        run_steps([file_step("lock", then=kill_self)], work, log=log, hush=hush)
    assert not (work.path / "lock").exists()


def test_signal_between_two_steps_is_compensated(work: Workdir) -> None:
    """A signal landing in the engine's own logging after a step ends is still fully undone."""
    capture = structlog.testing.LogCapture()

    def kill_after_a(_: Any, __: str, event_dict: EventDict) -> EventDict:
        if (event_dict["event"], event_dict.get("step")) == ("step.end", "a"):
            os.kill(os.getpid(), signal.SIGTERM)
        return event_dict

    log = cast(
        FilteringBoundLogger,
        structlog.wrap_logger(
            structlog.PrintLogger(io.StringIO()),
            processors=[kill_after_a, capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        ),
    )
    table = [file_step("a", writes=True), file_step("b"), file_step("c")]
    reports: list[StepReport] = []
    with signals_raise() as hush, pytest.raises(Interrupted):
        run_steps(table, work, log=log, hush=hush, reports=reports)
    assert work.calls == ["do a", "undo b", "undo a"]
    assert set(contents(work.path)) == {"existing"}
    assert states(reports) == ["compensated", "failed", "pending"]
    failed = [e for e in capture.entries if e["event"] == "step.failed"]
    assert [(e["step"], e["error_code"]) for e in failed] == [("b", "interrupted")]


def test_signal_after_the_last_step_does_not_undo_the_run(work: Workdir) -> None:
    """Once every step is done the run is hushed: a late signal no longer undoes it."""
    with captured() as (log, _), signals_raise() as hush:
        reports = run_steps([file_step("a", writes=True)], work, log=log, hush=hush)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert states(reports) == ["done"]
    assert (work.path / "a").exists()


def test_signal_during_undo_is_ignored(work: Workdir) -> None:
    """After compensation begins, a further SIGTERM is ignored so every undo runs to its end."""

    def undo_under_fire(ctx: Workdir) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        remove("b")(ctx)

    table = [
        file_step("a"),
        Step("b", "create b", create("b", then=read_missing), undo_under_fire, writes=True),
    ]
    with captured() as (log, _), signals_raise() as hush, pytest.raises(RolledBack) as caught:
        run_steps(table, work, log=log, hush=hush)
    assert not isinstance(caught.value, Interrupted)
    assert work.calls == ["do a", "do b", "undo b", "undo a"]
    assert set(contents(work.path)) == {"existing"}


@contextmanager
def dead_stderr() -> Iterator[FilteringBoundLogger]:
    """A JSON logger writing into a pipe nobody reads any more (a dropped SSH session)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    try:
        with pytest.raises(BrokenPipeError):
            print("probe", file=stream, flush=True)
        configure_logging(fmt="json", stream=stream)
        yield get_logger()
    finally:
        structlog.reset_defaults()
        with contextlib.suppress(OSError):
            stream.close()


def test_closed_stderr_does_not_stop_a_run(work: Workdir) -> None:
    """Logging into a closed pipe (EPIPE) neither fails a step nor changes the outcome."""
    with dead_stderr() as log:
        reports = run_steps([file_step("a", writes=True), file_step("b")], work, log=log)
    assert states(reports) == ["done", "done"]
    assert set(contents(work.path)) == {"existing", "a", "b"}


def test_closed_stderr_does_not_stop_compensation(work: Workdir) -> None:
    """With stderr gone, a failure is still undone to the end and reported as RolledBack."""
    before = contents(work.path)
    table = [file_step("a"), file_step("b", writes=True), file_step("c", then=read_missing)]
    with dead_stderr() as log, pytest.raises(RolledBack):
        run_steps(table, work, log=log)
    assert work.calls == ["do a", "do b", "do c", "undo c", "undo b", "undo a"]
    assert contents(work.path) == before


# A library warning after logging is set up, then one log line (as a txsetup process would).
WARN_THEN_LOG = """
import sys, warnings
from txsetup.log import configure_logging, get_logger
configure_logging(fmt="json", stream=sys.stderr)
warnings.warn("a new release of a library deprecates something", UserWarning)
warnings.warn("and something else", DeprecationWarning)
get_logger().info("txn.test_line")
"""


@pytest.mark.parametrize("asked", [False, True], ids=["default", "pythonwarnings"])
def test_a_library_warning_never_breaks_the_json_log(asked: bool) -> None:
    """Warnings stay off stderr's JSON lines, unless PYTHONWARNINGS asks to see them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if asked:
        env["PYTHONWARNINGS"] = "always"
    run = subprocess.run(
        [sys.executable, "-c", WARN_THEN_LOG], env=env, capture_output=True, text=True, check=True
    )
    lines = run.stderr.splitlines()
    if asked:
        assert "deprecates something" in run.stderr
        return
    assert [json.loads(line)["event"] for line in lines] == ["txn.test_line"]


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(st.booleans(), min_size=1, max_size=8),
    failing=st.integers(min_value=0, max_value=7),
    typed=st.booleans(),
    existing=st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), st.binary(max_size=16)),
)
def test_any_failing_step_leaves_exactly_the_old_files(
    writes: list[bool], failing: int, typed: bool, existing: dict[str, bytes]
) -> None:
    """For any table length and failing index, the directory after equals the directory before."""
    failing %= len(writes)
    with tempfile.TemporaryDirectory() as name:
        work = Workdir(Path(name))
        for key, data in existing.items():
            (work.path / key).write_bytes(data)
        before = contents(work.path)
        fail = refuse_input if typed else read_missing
        table = [
            file_step(f"s{i}", writes=w, then=fail if i == failing else None)
            for i, w in enumerate(writes)
        ]
        reports: list[StepReport] = []
        with captured() as (log, _), pytest.raises(TxsetupError) as caught:
            run_steps(table, work, log=log, reports=reports)
        assert contents(work.path) == before
        began = any(writes[: failing + 1])
        expected = RolledBack if began else InvalidInput if typed else InternalError
        assert type(caught.value) is expected
        assert [r.state for r in reports] == (
            [StepState.COMPENSATED] * failing
            + [StepState.FAILED]
            + [StepState.PENDING] * (len(writes) - failing - 1)
        )
        undone = [f"undo s{i}" for i in reversed(range(failing + 1))]
        assert work.calls == [f"do s{i}" for i in range(failing + 1)] + undone
