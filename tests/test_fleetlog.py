"""The master's record of an atomic push: durable lines, a torn tail ignored, moves enforced."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txsetup.errors import InternalError
from txsetup.master.fleetlog import (
    TRANSITIONS,
    FleetLog,
    new_push_id,
    push_dir,
    unfinished_pushes,
)
from txsetup.txn.decisions import COORDINATOR_ID


def started(root: Path) -> FleetLog:
    """A push record with two nodes."""
    log = FleetLog(push_dir(root) / f"{new_push_id()}.json")
    log.append("push", push_id=log.push_id, nodes=["a", "b"], digest="0" * 64)
    return log


def test_push_ids_are_coordinator_ids() -> None:
    """A push id is what a node accepts as --coordinator, and sorts by time."""
    assert COORDINATOR_ID.fullmatch(new_push_id())


def test_records_read_back_and_the_push_is_unfinished_until_its_end(tmp_path: Path) -> None:
    """Every appended record reads back in order, mode 0600 in a 0700 directory; the push
    is unfinished until its end record."""
    log = started(tmp_path)
    log.append("decision", decision="commit", txids={"a": "t1", "b": "t2"})
    log.append("ack", node="a", phase="commit", outcome="committed")
    assert [r["record"] for r in FleetLog.read(log.path).records] == ["push", "decision", "ack"]
    assert (log.path.stat().st_mode & 0o777, log.path.parent.stat().st_mode & 0o777) == (
        0o600,
        0o700,
    )
    assert [p.push_id for p in unfinished_pushes(tmp_path)] == [log.push_id]
    assert log.acks("commit") == {"a": "committed"}
    log.append("end", outcome="committed")
    assert list(unfinished_pushes(tmp_path)) == []


@pytest.mark.parametrize(
    ("stage_records", "record", "field"),
    [
        ([], "end", {"outcome": "committed"}),  # no decision yet
        ([("decision", {"decision": "abort"})], "confirmation", {"decision": "confirm"}),
        ([("decision", {"decision": "commit"})], "end", {"outcome": "aborted"}),
        (
            [("decision", {"decision": "commit"}), ("confirmation", {"decision": "revert"})],
            "confirmation",
            {"decision": "confirm"},
        ),
    ],
)
def test_a_move_outside_the_protocol_is_refused_before_it_is_written(
    tmp_path: Path,
    stage_records: list[tuple[str, dict[str, str]]],
    record: str,
    field: dict[str, str],
) -> None:
    """append() refuses any move TRANSITIONS does not list (a revert never becomes a
    confirm; no outcome without its decision), and writes nothing then."""
    log = started(tmp_path)
    for kind, fields in stage_records:
        log.append(kind, **fields)
    size = log.path.stat().st_size
    with pytest.raises(InternalError):
        log.append(record, **field)
    assert log.path.stat().st_size == size


def _kind(stage: str) -> tuple[str, str]:
    """The record (and its field) that moves a push to ``stage``."""
    if stage in ("commit", "abort"):
        return "decision", "decision"
    if stage in ("confirm", "revert"):
        return "confirmation", "decision"
    return "end", "outcome"


def test_every_transition_is_reachable_and_accepted(tmp_path: Path) -> None:
    """Every listed move can be made: its stage is reachable from a fresh push record along
    listed moves, and append() accepts the move from there."""
    paths: dict[str, list[str]] = {"recorded": []}
    for _ in TRANSITIONS:  # breadth first, as many rounds as there are moves
        for move in TRANSITIONS:
            if move.before in paths and move.after not in paths:
                paths[move.after] = [*paths[move.before], move.after]
    for number, move in enumerate(TRANSITIONS):
        assert move.before in paths, f"{move.before} cannot be reached"
        log = started(tmp_path / str(number))
        for stage in [*paths[move.before], move.after]:
            kind, name = _kind(stage)
            log.append(kind, **{name: stage})
        assert log.stage == move.after


@given(st.binary(max_size=200))
def test_a_torn_tail_never_hides_or_invents_a_record(tail: bytes) -> None:
    """Whatever bytes a crash leaves after the last whole line, reading gives the whole
    records before it, and never a record made of the tail."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = started(Path(tmp))
        log.append("decision", decision="abort", to_abort=["a"])
        with open(log.path, "ab") as stream:
            stream.write(tail.replace(b"\n", b" "))
        read = FleetLog.read(log.path).records
        assert [r["record"] for r in read] == ["push", "decision"]
