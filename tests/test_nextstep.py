"""The command push's closing summary gives next, and the results file it names."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from txsetup.master.nextstep import Rerun, results_file_of
from txsetup.master.results import INTERRUPTED, NOT_STARTED, NodeResult, PushReport

REACH = ("--ssh-option", "IdentityFile=/k ey", "--remote-command", "/opt/tx node-daemon-setup")
AGAIN = ("--from-root", "/srv/master", "--no-start-node-daemon")


def report(*outcomes: tuple[str, int | None], interrupted: bool = False) -> PushReport:
    """A report with one node per (outcome, exit code)."""
    results = [
        NodeResult(f"n{i}", code, outcome, None, 0, None)
        for i, (outcome, code) in enumerate(outcomes)
    ]
    return PushReport(results, interrupted)


def test_nothing_next_when_every_node_succeeded() -> None:
    """Every node exit 0 (even if a signal came after): no next command."""
    rerun = Rerun(REACH, AGAIN, results_file="r.json")
    assert rerun.next_step(report(("committed", 0))) is None
    assert rerun.next_step(report(("committed", 0), interrupted=True)) is None


def test_after_an_interruption_resume_with_the_options_that_reach_the_nodes() -> None:
    """Interrupted: `push --resume --retry-from FILE` plus ssh and remote command, quoted;
    not the payload's options, which a resume does not take."""
    step = Rerun(REACH, AGAIN, results_file="out/r.json").next_step(
        report((INTERRUPTED, None), (NOT_STARTED, None), interrupted=True)
    )
    assert step is not None
    assert shlex.split(step.command) == [
        "txsetup",
        "push",
        "--resume",
        "--retry-from",
        "out/r.json",
        *REACH,
    ]
    assert "how its run ended" in step.words


def test_after_failures_retry_with_this_push_s_options() -> None:
    """Not interrupted: `push --retry-from FILE` with the payload's options and the reach."""
    step = Rerun(REACH, AGAIN, results_file="r.json").next_step(report(("failed", 4)))
    assert step is not None
    assert shlex.split(step.command) == [
        "txsetup",
        "push",
        "--retry-from",
        "r.json",
        *AGAIN,
        *REACH,
    ]
    assert step.words == "pushes again to just the nodes that did not succeed"


def test_an_abort_is_resumed_as_an_abort() -> None:
    """An interrupted `--resume --abort` push goes on undoing."""
    step = Rerun(abort=True).next_step(report((INTERRUPTED, None), interrupted=True))
    assert step is not None
    assert step.command.startswith("txsetup push --resume --abort --retry-from RESULTS-FILE")
    assert "RESULTS-FILE: this push's stdout, saved to a file" in step.words


def test_results_file_is_a_regular_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdout to a file names it (relative under the working directory); a pipe does not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with (tmp_path / "sub/results.json").open("w") as out:
        assert results_file_of(out) == "sub/results.json"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the working directory: absolute
    with (tmp_path / "sub/results.json").open("w") as out:
        assert results_file_of(out) == str(tmp_path / "sub/results.json")
    read, write = os.pipe()
    with os.fdopen(read), os.fdopen(write, "w") as writer:
        assert results_file_of(writer) is None
    with open(os.devnull, "w") as null:
        assert results_file_of(null) is None


def fleet_report(outcome: str, *, interrupted: bool = False) -> PushReport:
    """An atomic push's report: two nodes and the fleet's line."""
    made = report(("reverted", 0), ("failed", 4), interrupted=interrupted)
    made.fleet = {"push_id": "push-1", "outcome": outcome, "decision": "commit"}
    return made


def test_after_an_atomic_push_in_doubt_or_interrupted_the_next_step_is_its_resume() -> None:
    """In doubt, or interrupted: `txsetup push --resume --from-root DIR`, no node and no
    results file (the record on the master says what is left)."""
    rerun = Rerun(REACH, (*AGAIN, "--atomic"), results_file="r.json")
    for made in (fleet_report("in_doubt"), fleet_report("committed", interrupted=True)):
        step = rerun.next_step(made)
        assert step is not None
        assert step.command == "txsetup push --resume --from-root /srv/master"


def test_after_an_atomic_push_that_did_not_commit_the_whole_fleet_goes_again() -> None:
    """Aborted or reverted: every node is old again, so the next push takes every node of
    the results file (--retry-from does, when the fleet line says so), atomically."""
    rerun = Rerun(REACH, (*AGAIN, "--atomic"), results_file="r.json")
    step = rerun.next_step(fleet_report("reverted"))
    assert step is not None
    assert shlex.split(step.command)[:5] == [
        "txsetup",
        "push",
        "--retry-from",
        "r.json",
        "--from-root",
    ]
    assert "--atomic" in step.command
    assert "every node is old again (reverted)" in step.words
    assert rerun.next_step(fleet_report("committed")) is None


def test_retry_from_an_atomic_push_that_did_not_commit_takes_every_node(tmp_path: Path) -> None:
    """--retry-from skips the fleet line; after a fleet that did not commit it takes every
    node, also those whose own line says exit 0; after a committed fleet, none."""
    import json

    from txsetup.master.results import nodes_to_retry

    path = tmp_path / "r.json"
    lines = [r.to_json() for r in fleet_report("reverted").results]
    path.write_text(
        "\n".join(json.dumps(x) for x in [*lines, {"push_id": "p", "outcome": "reverted"}])
    )
    assert nodes_to_retry(path) == ["n0", "n1"]
    path.write_text(
        "\n".join(json.dumps(x) for x in [lines[0], {"push_id": "p", "outcome": "committed"}])
    )
    assert nodes_to_retry(path) == []


def test_the_summary_starts_with_the_fleet() -> None:
    """An atomic push's summary says first what the fleet ended with, and why."""
    from txsetup.master.progress import summary_lines

    lines = summary_lines(fleet_report("reverted"), 2, Rerun(results_file="r.json"))
    assert lines[0] == "fleet reverted: every node old again (decision commit; push-1)"


def test_the_plain_view_tells_an_atomic_push_phase_by_phase() -> None:
    """Without rich, a person sees each node's phase as it ends, each decision the moment
    it is durable, and the fleet's end first in the summary."""
    import io

    from txsetup.master.progress import PlainView
    from txsetup.master.push import NodeEvent

    out = io.StringIO()
    view = PlainView(out, Rerun(results_file="r.json"))
    view.begin(2)
    for node in ("n0", "n1"):
        view.on_event(NodeEvent(node, {"event": "node.begin", "phase": "prepare"}, False))
        end = {"event": "node.end", "phase": "prepare", "outcome": "prepared", "exit_code": 0}
        view.on_event(NodeEvent(node, {**end, "txid": "t", "duration_ms": 900}, False))
    decided = {"event": "push.decided", "record": "decision", "decision": "commit"}
    view.on_event(NodeEvent("", {**decided, "reason": "every node prepared"}, False))
    view.end(fleet_report("in_doubt"))
    lines = out.getvalue().splitlines()
    assert "✓ n0  prepare: prepared  0.9s" in lines
    assert "» decided: commit (every node prepared)" in lines
    fleet = lines.index(
        "fleet in_doubt: a node did not answer: push --resume finishes it (decision commit; push-1)"
    )
    assert fleet > lines.index("» decided: commit (every node prepared)")
    assert "txsetup push --resume" in out.getvalue()
