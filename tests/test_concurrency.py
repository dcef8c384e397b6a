"""Concurrent runs serialize on the real transaction lock; a busy lock is exit 5, untouched.

Two real runs of the installed CLI with different payloads race on one node;
the lock they meet is ``var/lock/txsetup.lock`` (filelock), and where a test
needs it held, it holds that same file with :class:`filelock.FileLock`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import (
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
