"""Concurrent runs serialize on the real transaction lock; a busy lock is exit 5, untouched.

Two real runs of the installed CLI with different payloads race on one node;
the lock they meet is ``var/lock/txsetup.lock`` (filelock), and where a test
needs it held, it holds that same file with :class:`filelock.FileLock`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import (
    NO_PYC,
    Entry,
    Run,
    encode,
    make_document,
    parse_run,
    read_until_lock_step,
    run_txsetup,
    snapshot,
    start_setup,
    state_dir_leftovers,
    strace_argv,
    txsetup_exe,
)
from txsetup.txn.journal import TxnState, read_journal


def document(pem: str, which: str) -> dict[str, Any]:
    """One of two payloads naming the same files with different values."""
    return make_document(
        pem,
        ssconf={
            "master_ip": {"A": "192.0.2.10", "B": "192.0.2.20"}[which],
            "node_list": {"A": "a1.example.com\n", "B": "b1.example.com\nb2.example.com\n"}[which],
            "release_version": {"A": "3.0.1", "B": "3.1.0"}[which],
        },
        hmac_key=f"hmac-secret-{which}",
    )


def applied(tmp_path: Path, pem: str, which: str) -> dict[str, Entry]:
    """The node a single run of payload ``which`` makes of an empty root."""
    root = tmp_path / f"alone-{which}"
    root.mkdir()
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(document(pem, which))
    )
    assert run.returncode == 0, run.stderr
    return snapshot(root)


def finish(proc: subprocess.Popen[bytes], stderr_head: bytes = b"") -> Run:
    """Wait for a started run; check its output contract like ``run_txsetup`` does."""
    out, err = proc.communicate(timeout=120)
    return parse_run(proc.returncode, out.decode(), (stderr_head + err).decode())


def holding_interval(run: Run) -> tuple[datetime, datetime]:
    """From taking the lock to the end of the last step: when the run owned the node."""
    ends = [
        datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        for e in run.events
        if e["event"] == "step.end"
    ]
    lock_end = next(
        datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        for e in run.events
        if e["event"] == "step.end" and e["step"] == "lock"
    )
    return lock_end, max(ends)


@pytest.mark.parametrize("gated", [False, True], ids=["racing", "gated"])
def test_concurrent_runs_serialize_and_the_last_one_wins_whole(
    tmp_path: Path, node_pem: str, gated: bool
) -> None:
    """Two runs started together both commit in turn; the node ends with one payload, whole."""
    expected = {"A": applied(tmp_path, node_pem, "A"), "B": applied(tmp_path, node_pem, "B")}
    assert expected["A"] != expected["B"]
    for round_ in range(1 if gated else 3):
        root = tmp_path / f"node-{round_}"
        root.mkdir()
        (root / "var/lock").mkdir(parents=True)
        gate = FileLock(root / "var/lock/txsetup.lock")
        heads = {"A": b"", "B": b""}
        if gated:
            # Both runs queue on the held lock, so they really contend when it is let go.
            gate.acquire()
        procs = {w: start_setup(root, encode(document(node_pem, w))) for w in ("A", "B")}
        if gated:
            heads = {w: read_until_lock_step(p) for w, p in procs.items()}
            time.sleep(0.2)
            gate.release()
        runs = {w: finish(p, heads[w]) for w, p in procs.items()}

        for which, run in runs.items():
            assert run.returncode == 0, (which, run.stderr)
            assert run.result["outcome"] == "committed", (which, run.result)
        (first, a), (last, b) = sorted(
            ((w, holding_interval(r)) for w, r in runs.items()), key=lambda item: item[1]
        )
        assert a[1] <= b[0], f"runs overlapped: {first} held {a}, {last} held {b}"
        assert snapshot(root) == expected[last], f"round {round_}: not exactly {last}'s files"
        assert state_dir_leftovers(root) == []
        records = read_journal(root / "var/lib/txsetup/journal")
        assert records[-1].state is TxnState.DONE
        assert records[-1].txid == runs[last].result["txid"]
        shutil.rmtree(root)


@pytest.fixture
def installed(root: Path, node_pem: str) -> Path:
    """A node with payload A installed by a real run."""
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(document(node_pem, "A"))
    )
    assert run.returncode == 0, run.stderr
    return root


def state_files(root: Path) -> dict[str, bytes]:
    """The state directory's files and their bytes (the journal, any copies)."""
    state = root / "var/lib/txsetup"
    return {p.name: p.read_bytes() for p in sorted(state.iterdir())}


def test_held_lock_with_zero_timeout_is_busy_and_touches_nothing(
    installed: Path, node_pem: str
) -> None:
    """With the lock held elsewhere, ``--lock-timeout 0`` exits 5 at once and changes nothing."""
    before, journal = snapshot(installed), state_files(installed)
    with FileLock(installed / "var/lock/txsetup.lock"):
        run = run_txsetup(
            ["node-daemon-setup", "--root", str(installed), "--lock-timeout", "0"],
            stdin=encode(document(node_pem, "B")),
        )
    assert run.returncode == 5
    assert run.result["outcome"] == "failed"
    assert run.result["error_code"] == "busy"
    assert snapshot(installed) == before
    assert state_files(installed) == journal


def test_held_lock_is_waited_for_until_the_timeout(installed: Path, node_pem: str) -> None:
    """A run waits ``--lock-timeout`` seconds for a held lock before giving up with exit 5."""
    before = snapshot(installed)
    with FileLock(installed / "var/lock/txsetup.lock"):
        started = time.monotonic()
        run = run_txsetup(
            ["node-daemon-setup", "--root", str(installed), "--lock-timeout", "1"],
            stdin=encode(document(node_pem, "B")),
        )
        waited = time.monotonic() - started
    assert run.returncode == 5
    assert waited >= 1.0
    assert snapshot(installed) == before


def test_resume_with_the_lock_held_is_busy(installed: Path) -> None:
    """``--resume`` while another process holds the lock exits 5 and changes nothing."""
    before, journal = snapshot(installed), state_files(installed)
    with FileLock(installed / "var/lock/txsetup.lock"):
        run = run_txsetup(
            ["node-daemon-setup", "--resume", "--root", str(installed), "--lock-timeout", "0"]
        )
    assert run.returncode == 5
    assert run.result["outcome"] == "failed"
    assert snapshot(installed) == before
    assert state_files(installed) == journal


def test_a_run_after_the_lock_is_released_proceeds(installed: Path, node_pem: str) -> None:
    """Once the holder lets go, a waiting run takes the lock and commits."""
    lock = FileLock(installed / "var/lock/txsetup.lock")
    lock.acquire()
    proc = start_setup(installed, encode(document(node_pem, "B")), "--lock-timeout", "60")
    head = read_until_lock_step(proc)
    time.sleep(0.3)
    assert proc.poll() is None, "the run did not wait for the held lock"
    lock.release()
    run = finish(proc, head)
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    assert os.path.exists(installed / "var/lib/ganeti/hmac.key")
    assert (installed / "var/lib/ganeti/hmac.key").read_bytes() == b"hmac-secret-B"


# --- many runs, many payloads -------------------------------------------------------------

RUNS = 20


def payload(pem: str, index: int) -> dict[str, Any]:
    """The ``index``-th of RUNS payloads: the same files, each with its own values."""
    return make_document(
        pem,
        ssconf={
            "master_ip": f"192.0.2.{10 + index}",
            "node_list": "".join(f"n{index}-{k}.example.com\n" for k in range(index % 4 + 1)),
            "release_version": f"3.0.{index}",
        },
        hmac_key=f"hmac-secret-{index:02d}",
    )


def applied_alone(tmp_path: Path, pem: str, index: int) -> dict[str, Entry]:
    """The node a single run of payload ``index`` makes of an empty root."""
    root = tmp_path / f"alone-{index}"
    (root / "var/lock").mkdir(parents=True)
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(payload(pem, index)))
    assert run.returncode == 0, run.stderr
    return snapshot(root)


@pytest.mark.parametrize("flavour", ["waiting", "busy"])
def test_twenty_runs_with_twenty_payloads_leave_exactly_one_whole(
    tmp_path: Path, node_pem: str, flavour: str
) -> None:
    """20 runs with 20 payloads at once: each commits in turn (waiting) or exits 5 (busy,
    short --lock-timeout); no two hold the node at once, and it ends with exactly the last
    committer's files, byte for byte as that payload alone makes them."""
    root = tmp_path / "node"
    (root / "var/lock").mkdir(parents=True)
    gate = FileLock(root / "var/lock/txsetup.lock")
    timeout = "120" if flavour == "waiting" else "0.5"
    heads = [b""] * RUNS
    if flavour == "waiting":
        gate.acquire()  # all 20 queue on the lock, then contend for it at once
    procs = [
        start_setup(root, encode(payload(node_pem, i)), "--lock-timeout", timeout)
        for i in range(RUNS)
    ]
    if flavour == "waiting":
        heads = [read_until_lock_step(p) for p in procs]
        gate.release()
    runs = [finish(p, heads[i]) for i, p in enumerate(procs)]

    codes = [r.returncode for r in runs]
    assert set(codes) <= ({0} if flavour == "waiting" else {0, 5}), codes
    for run in runs:
        if run.returncode == 5:
            assert run.result["error_code"] == "busy"
            assert "lock" not in {e.get("step") for e in run.events if e["event"] == "step.end"}
    committed = sorted((holding_interval(r), i) for i, r in enumerate(runs) if r.returncode == 0)
    assert committed, "no run committed"
    for ((_, end), first), ((start, _), second) in itertools.pairwise(committed):
        assert end <= start, f"runs {first} and {second} held the node at once"
    last = committed[-1][1]
    assert snapshot(root) == applied_alone(tmp_path, node_pem, last)
    assert state_dir_leftovers(root) == []
    records = read_journal(root / "var/lib/txsetup/journal")
    assert records[-1].state is TxnState.DONE
    assert records[-1].txid == runs[last].result["txid"]


def test_killed_lock_holder_is_recovered_by_the_next_run(tmp_path: Path, node_pem: str) -> None:
    """The lock holder is SIGKILLed at its first commit rename while another run waits for
    the lock: that run recovers the prepared transaction (``txn.recovered``), then commits
    its own payload, and the node holds exactly that payload's files."""
    root = tmp_path / "node"
    (root / "var/lock").mkdir(parents=True)
    holder = subprocess.Popen(
        [
            *strace_argv("rename,renameat,renameat2", "signal=SIGKILL:when=1"),
            txsetup_exe(),
            "node-daemon-setup",
            "--root",
            str(root),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **NO_PYC},
    )
    assert holder.stdin is not None
    assert holder.stderr is not None
    # The lock step comes before decode: with its stdin still open, the holder keeps the lock.
    holder_log = read_until_lock_step(holder)
    while b'"step.end"' not in holder_log.splitlines()[-1]:
        holder_log += holder.stderr.readline()
    holder_txid = json.loads(holder_log.splitlines()[0])["txid"]
    waiter = start_setup(root, encode(payload(node_pem, 1)), "--lock-timeout", "120")
    waiter_head = read_until_lock_step(waiter)
    time.sleep(0.2)
    assert waiter.poll() is None, "the second run did not wait for the held lock"

    holder.stdin.write(encode(payload(node_pem, 0)))
    holder.stdin.close()
    holder.wait(timeout=120)
    assert holder.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), holder.returncode
    if holder.stdout is not None:
        holder.stdout.close()
    holder.stderr.close()

    # The waiter takes the lock the moment the holder dies: only its log can tell what it found.
    run = finish(waiter, waiter_head)
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    recovered = [e for e in run.events if e["event"] == "txn.recovered"]
    # Rolled forward: the holder died past its commit point (prepared), before any rename.
    assert [(e["recovered_txid"], e["action"]) for e in recovered] == [
        (holder_txid, "rolled_forward")
    ]
    assert snapshot(root) == applied_alone(tmp_path, node_pem, 1)
    assert state_dir_leftovers(root) == []
    records = read_journal(root / "var/lib/txsetup/journal")
    assert (records[-1].txid, records[-1].state) == (run.result["txid"], TxnState.DONE)


@pytest.mark.parametrize("resume", [False, True], ids=["run", "resume"])
@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "directory", "fifo"])
def test_a_lock_path_that_is_not_a_regular_file_is_refused(
    installed: Path, node_pem: str, tmp_path: Path, kind: str, resume: bool
) -> None:
    """A symlink, directory or FIFO at the lock's path: exit 4, nothing followed or changed.

    Opening it would write through a symlink outside the root, or block on a FIFO.
    """
    lock_path = installed / "var/lock/txsetup.lock"
    lock_path.unlink(missing_ok=True)
    outside = tmp_path / "outside"
    outside.write_text("not txsetup's\n")
    if kind == "symlink":
        lock_path.symlink_to(outside)
    elif kind == "dangling-symlink":
        lock_path.symlink_to(tmp_path / "missing/lock")
    elif kind == "directory":
        lock_path.mkdir()
    else:
        os.mkfifo(lock_path)
    before, journal = snapshot(installed), state_files(installed)
    argv = ["node-daemon-setup", "--root", str(installed), "--lock-timeout", "1"]
    run = run_txsetup(
        [*argv, "--resume"] if resume else argv,
        stdin=b"" if resume else encode(document(node_pem, "B")),
    )
    assert run.returncode == 4, run.stderr
    assert run.result["error_code"] == "refused"
    assert "var/lock/txsetup.lock is a" in run.result["error"]
    assert "move it away" in run.result["error"]
    assert snapshot(installed) == before
    assert state_files(installed) == journal
    assert outside.read_text() == "not txsetup's\n"
    assert not (tmp_path / "missing").exists()
