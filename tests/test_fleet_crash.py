"""The master killed -9 at every step of an atomic push, then ``push --resume``.

The master writes one record per step of the protocol, each as one
``writev`` then one ``fdatasync`` (``docs/fleet.md``). strace kills it at
the Nth of either, so the points are exactly:

* ``writev`` N: the step before record N happened (a node answered, the
  prepares ended, the checks ran), record N is not written;
* ``fdatasync`` N: record N is written but not yet known durable.

The whole process group goes with it (its ssh clients: the master machine
died), then ``push --resume`` runs. After it, the invariant of
``docs/fleet.md`` must hold: every node serves the same certificate, the new
one exactly when the fleet's outcome is ``committed``, and no node is held
or unconfirmed; the master's record has its end.

Scenarios: every node good (commit), every node good with a confirmation
window (confirm), one node refusing at prepare (abort), one node failing the
master's check (revert). ``TXSETUP_CRASH=full`` (``nox -s matrix``) runs
every point; the default runs a few per scenario.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CRASH_DEPTH, require_tool
from tests.fleetnodes import Fleet, fleet_at

pytestmark = pytest.mark.system

#: Each scenario's records in a clean run: push, decision, acks..., [confirmation, acks...], end.
RECORDS = {"commit": 6, "confirm": 10, "abort": 5, "revert": 10}
#: The points run by default: the decision (presumed abort before it), then a middle ack.
QUICK = {"commit": (2, 4), "confirm": (6, 8), "abort": (2,), "revert": (6, 9)}


def _points() -> Iterator[tuple[str, str, int]]:
    for scenario, count in RECORDS.items():
        numbers = range(1, count + 1) if CRASH_DEPTH != "quick" else QUICK[scenario]
        for number in numbers:
            for call in ("writev", "fdatasync"):
                if CRASH_DEPTH == "quick" and (call == "writev") == (number % 2 == 0):
                    continue  # quick: one call per point, alternating
                yield scenario, call, number


def scenario_argv(fleet: Fleet, scenario: str) -> list[str]:
    """The atomic push of ``scenario``, with the node set up to behave so."""
    if scenario == "abort":
        (fleet.node(1).root / "var/lib/ganeti/ssconf_cluster_name").write_text("other.example\n")
        return fleet.atomic_argv()
    if scenario == "commit":
        return fleet.atomic_argv()
    ports = dict(zip(fleet.specs, fleet.nodes.ports, strict=True))
    if scenario == "revert":
        ports[fleet.specs[2]] = 9  # the check finds no daemon there
    return fleet.atomic_argv("--confirm-within", "600", ports=ports)


def run_killed(argv: list[str], call: str, number: int, trace: Path) -> int:
    """Run ``argv`` under strace, killed at the ``number``-th ``call``; then kill its group."""
    strace = require_tool("strace")
    proc = subprocess.Popen(
        [
            strace,
            "-o",
            str(trace),
            "-e",
            "trace=writev,fdatasync",
            "-e",
            f"inject={call}:signal=KILL:when={number}",
            "--",
            *argv,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(proc.pid, signal.SIGKILL)
    return code


def test_each_scenario_writes_one_writev_and_one_fdatasync_per_record(tmp_path: Path) -> None:
    """The matrix's points are the records: a clean run of the fullest scenario makes exactly
    one writev and one fdatasync per record (so ``when=N`` is record N)."""
    with fleet_at(tmp_path) as fleet:
        trace = tmp_path / "trace"
        strace = require_tool("strace")
        argv = scenario_argv(fleet, "revert")
        proc = subprocess.run(
            [strace, "-o", str(trace), "-e", "trace=writev,fdatasync", "--", *argv],
            capture_output=True,
            check=False,
            timeout=300,
        )
        assert proc.returncode == 10, proc.stderr.decode()[-2000:]
        calls = [line.split("(", 1)[0] for line in trace.read_text().splitlines()]
        records = fleet.records()
        assert len(records) == RECORDS["revert"]
        assert calls.count("writev") == calls.count("fdatasync") == len(records)


@pytest.mark.parametrize(("scenario", "call", "number"), list(_points()))
def test_master_killed_then_resumed_ends_all_old_or_all_new(
    tmp_path: Path, scenario: str, call: str, number: int
) -> None:
    """Killed at this step, the push is finished by ``push --resume``: every node on the same
    side (new exactly when committed), none held or unconfirmed, the record ended."""
    with fleet_at(tmp_path) as fleet:
        argv = scenario_argv(fleet, scenario)
        code = run_killed(argv, call, number, tmp_path / "trace")
        assert code != 0  # killed, not finished
        resumed = fleet.run(fleet.resume_argv())
        if scenario == "abort":  # the refusing node may take part again
            (fleet.node(1).root / "var/lib/ganeti/ssconf_cluster_name").unlink()
        files = (fleet.master / "var/lib/txsetup/push").glob("push-*.json")
        written = any(path.read_text().strip() for path in files)
        if resumed.fleet is None:  # nothing to resume
            assert resumed.returncode == 0
            if not written:  # killed before the push record: no node was contacted
                assert (call, number) == ("writev", 1)
                fleet.assert_all("old")
                return
            # killed at the end record's fdatasync: the record is written, the push ended
            assert (call, number) == ("fdatasync", RECORDS[scenario])
            outcome = fleet.records()[-1]["outcome"]
            fleet.assert_all("new" if outcome == "committed" else "old")
            return
        outcome = resumed.fleet["outcome"]
        assert outcome in ("committed", "aborted", "reverted"), resumed.stderr[-3000:]
        assert resumed.returncode == (0 if outcome == "committed" else 10)
        fleet.assert_all("new" if outcome == "committed" else "old")
        assert fleet.records()[-1]["outcome"] == outcome
        if scenario in ("abort", "revert"):
            assert outcome != "committed"
        again = fleet.run(fleet.resume_argv())
        assert (again.returncode, again.fleet) == (0, None)  # nothing left to resume


@pytest.mark.parametrize("call", ["writev", "fdatasync"])
def test_a_window_that_ends_while_the_master_is_down_reverts_the_fleet(
    tmp_path: Path, call: str
) -> None:
    """The master dies after every node committed confirmed (before, or just after, it
    recorded its confirmation); the nodes' windows end and each reverts by itself; the
    resume finds that (a failed check, or confirm refused) and reverts the fleet: all old."""
    with fleet_at(tmp_path) as fleet:
        ports = dict(zip(fleet.specs, fleet.nodes.ports, strict=True))
        argv = fleet.atomic_argv("--confirm-within", "5", ports=ports)
        confirmation = 6  # push, decision, three commit acks, then the confirmation
        assert run_killed(argv, call, confirmation, tmp_path / "trace") != 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and fleet.serving() != [fleet.old] * 3:
            time.sleep(0.5)  # each node's own timer reverts it
        assert fleet.serving() == [fleet.old] * 3
        resumed = fleet.run(fleet.resume_argv())
        assert resumed.fleet is not None
        assert (resumed.returncode, resumed.fleet["outcome"]) == (10, "reverted")
        fleet.assert_all("old")
