"""The journal on real files: round trips, torn and corrupt tails, no content, torn recovery.

The unit tests write journals with :class:`txsetup.txn.journal.Journal` into
``tmp_path`` and cut or corrupt them byte by byte. The end-to-end tests stop a
real run at its commit point (strace kills it at its first ``rename``) and tear
the journal's last record: at every byte offset, recovered in-process with
:mod:`txsetup.txn.recovery` (what ``--resume`` runs); and at sampled offsets (as deep as
``TXSETUP_CRASH`` says: see :mod:`tests.crashmatrix`) with the installed ``txsetup --resume``.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    CRASH_DEPTH,
    Entry,
    copy_root,
    encode,
    make_document,
    require_tool,
    run_traced,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
)
from txsetup.txn.finish import finish_forward, finish_undo
from txsetup.txn.journal import Journal, Record, TxnState, read_journal, repair_journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import load_pending

TXID = "20300601T120000Z-0badcafe"
HMAC_KEY = "hmac-secret-journal-test-5f3a"
WORKERS = max(1, min(4, os.cpu_count() or 1))


def write_journal(path: Path) -> list[Record]:
    """A three-record journal as a real transaction writes it; its records."""
    journal = Journal(path, TXID)
    journal.begin(
        {
            "command": "node-daemon-setup",
            "created_dirs": ["var/lib/ganeti"],
            "target_dirs": ["var/lib/ganeti"],
        },
    )
    journal.append(
        TxnState.PREPARED,
        {
            "changes": [
                {
                    "path": "var/lib/ganeti/ssconf_master_ip",
                    "staged": "var/lib/txsetup/x-0.new",
                    "hold": None,
                    "new_ino": 1234,
                    "old": None,
                },
            ],
            "start_node_daemon": False,
        },
        durable=True,
    )
    journal.append(TxnState.COMMITTED, durable=False)
    return [
        Record(
            TXID,
            TxnState.BEGUN,
            {
                "command": "node-daemon-setup",
                "created_dirs": ["var/lib/ganeti"],
                "target_dirs": ["var/lib/ganeti"],
            },
        ),
        Record(
            TXID,
            TxnState.PREPARED,
            {
                "changes": [
                    {
                        "path": "var/lib/ganeti/ssconf_master_ip",
                        "staged": "var/lib/txsetup/x-0.new",
                        "hold": None,
                        "new_ino": 1234,
                        "old": None,
                    },
                ],
                "start_node_daemon": False,
            },
        ),
        Record(TXID, TxnState.COMMITTED, {}),
    ]


def test_records_round_trip_through_the_file(tmp_path: Path) -> None:
    """Every record appended is read back equal, in order, and each line is checksummed."""
    path = tmp_path / "journal"
    expected = write_journal(path)
    assert read_journal(path) == expected
    assert repair_journal(path) == expected
    for line in path.read_bytes().splitlines(keepends=True):
        assert line[:8] == b"%08x" % zlib.crc32(line[9:-1])
        assert Record.decode(line) is not None


def test_begin_replaces_the_previous_transaction(tmp_path: Path) -> None:
    """A new transaction's first record starts a fresh journal: no record of the last one stays."""
    path = tmp_path / "journal"
    write_journal(path)
    inode = path.stat().st_ino
    # The last transaction reached ``prepared``: its writer made the entries durable.
    assert Journal(path, "20300601T130000Z-00000001").begin({"command": "x"}) is False
    assert [(r.txid, r.state) for r in read_journal(path)] == [
        ("20300601T130000Z-00000001", TxnState.BEGUN)
    ]
    assert path.stat().st_ino == inode  # truncated in place, the same directory entry


def test_begin_says_when_the_journal_entries_still_need_an_fsync(tmp_path: Path) -> None:
    """A new journal, or one whose last transaction never reached ``prepared``: entries unsynced."""
    path = tmp_path / "journal"
    assert Journal(path, "20300601T130000Z-00000001").begin({"command": "x"}) is True
    assert Journal(path, "20300601T130000Z-00000002").begin({"command": "x"}) is True
    write_journal(path)
    assert Journal(path, "20300601T130000Z-00000003").begin({"command": "x"}) is False


def test_a_missing_or_empty_journal_has_no_records(tmp_path: Path) -> None:
    """No journal file, or an empty one, reads as no transaction at all."""
    path = tmp_path / "journal"
    assert read_journal(path) == []
    assert repair_journal(path) == []
    path.write_bytes(b"")
    assert read_journal(path) == []
    assert repair_journal(path) == []
    assert path.stat().st_size == 0


def test_a_torn_last_record_at_every_offset_is_not_written(tmp_path: Path) -> None:
    """Cut anywhere inside its last record, the journal reads as the earlier records only."""
    path = tmp_path / "journal"
    records = write_journal(path)
    full = path.read_bytes()
    valid = len(b"".join(full.splitlines(keepends=True)[:-1]))
    for size in range(valid, len(full)):
        path.write_bytes(full[:size])
        assert read_journal(path) == records[:-1], size


def test_repair_cuts_a_torn_tail_so_appends_are_seen(tmp_path: Path) -> None:
    """repair_journal truncates every torn tail to the valid prefix, and a later append reads."""
    path = tmp_path / "journal"
    records = write_journal(path)
    full = path.read_bytes()
    valid = len(b"".join(full.splitlines(keepends=True)[:-1]))
    for size in range(valid, len(full)):
        path.write_bytes(full[:size])
        assert repair_journal(path) == records[:-1], size
        assert path.stat().st_size == valid, size
        Journal(path, TXID).append(TxnState.ROLLING_BACK, {"reason": "test"}, durable=True)
        assert [r.state for r in read_journal(path)] == [
            TxnState.BEGUN,
            TxnState.PREPARED,
            TxnState.ROLLING_BACK,
        ], size


def test_a_flipped_bit_in_a_middle_record_hides_it_and_all_after(tmp_path: Path) -> None:
    """Any single flipped bit in a middle record is caught: it and all later records are ignored."""
    path = tmp_path / "journal"
    records = write_journal(path)
    full = path.read_bytes()
    lines = full.splitlines(keepends=True)
    start = len(lines[0])
    for offset in range(start, start + len(lines[1])):
        for bit in range(8):
            corrupt = bytearray(full)
            corrupt[offset] ^= 1 << bit
            path.write_bytes(bytes(corrupt))
            assert read_journal(path) == records[:1], (offset, bit)


def test_repair_after_a_corrupt_middle_record_keeps_the_valid_prefix(tmp_path: Path) -> None:
    """repair_journal cuts a corrupt middle record and everything after it, leaving the prefix."""
    path = tmp_path / "journal"
    records = write_journal(path)
    full = bytearray(path.read_bytes())
    first = len(full.splitlines(keepends=True)[0])
    full[first + 20] ^= 0x01
    path.write_bytes(bytes(full))
    assert repair_journal(path) == records[:1]
    assert path.stat().st_size == first


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"00000000 {}\n",
        b"zzzzzzzz {}\n",
        b"%08X {}\n" % zlib.crc32(b"{}"),
        b'%08x {"state":"begun","txid":5}\n' % zlib.crc32(b'{"state":"begun","txid":5}'),
        b'%08x {"state":"nope","txid":"t"}\n' % zlib.crc32(b'{"state":"nope","txid":"t"}'),
        b"%08x []\n" % zlib.crc32(b"[]"),
    ],
)
def test_malformed_lines_decode_as_not_written(line: bytes) -> None:
    """A line with a bad checksum, bad JSON, an unknown state or a non-string txid is no record."""
    assert Record.decode(line) is None


def test_records_hold_no_file_content(
    tmp_path: Path, node_pem: str, setup_run: Callable[..., Any], root: Path
) -> None:
    """A real run's journal names paths and metadata only: no PEM, no key, no ssconf value."""
    document = make_document(
        node_pem,
        ssconf={"master_ip": "198.51.100.77"},
        hmac_key=HMAC_KEY,
        node_name="node1.example.com",
    )
    first = setup_run(document)
    assert first.returncode == 0, first.stderr
    raw = (root / "var/lib/txsetup/journal").read_bytes()
    assert [r.state for r in read_journal(root / "var/lib/txsetup/journal")][-1] is TxnState.DONE
    for secret in (
        b"BEGIN",
        b"PRIVATE",
        HMAC_KEY.encode(),
        b"198.51.100.77",
        node_pem.splitlines()[1].encode(),
    ):
        assert secret not in raw, secret


@dataclass(frozen=True)
class Crashed:
    """A node killed at its commit point, and the exact states it may end in."""

    tmp: Path
    root: Path
    old: dict[str, Entry]
    new: dict[str, Entry]
    journal_size: int
    valid: int
    env: dict[str, str]

    def torn_copy(self, size: int) -> Path:
        """A copy of the crashed node with its journal cut to ``size`` bytes."""
        root = Path(tempfile.mkdtemp(dir=self.tmp)) / "root"
        copy_root(self.root, root)
        with (root / "var/lib/txsetup/journal").open("r+b") as stream:
            stream.truncate(size)
        return root

    def expected(self, size: int) -> tuple[str, dict[str, Entry]]:
        """Prepared (whole last record) rolls forward; anything torn is undone."""
        return ("resumed", self.new) if size == self.journal_size else ("rolled_back", self.old)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, node_pem: str) -> Crashed:
    """A real run killed by strace at its first rename: the journal ends in ``prepared``."""
    require_tool("strace")  # skip (or fail under TXSETUP_SYSTEM_TESTS=1) before any work
    tmp = tmp_path_factory.mktemp("torn")
    env = {"PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    old_root = tmp / "old"
    old_root.mkdir()
    installed = run_txsetup(
        ["node-daemon-setup", "--root", str(old_root)],
        stdin=encode(make_document(node_pem)),
        env=env,
    )
    assert installed.returncode == 0, installed.stderr
    payload = encode(make_document(node_pem, ssconf={"master_ip": "192.0.2.50"}))
    new_root = tmp / "new"
    copy_root(old_root, new_root)
    assert (
        run_txsetup(
            ["node-daemon-setup", "--root", str(new_root)], stdin=payload, env=env
        ).returncode
        == 0
    )
    root = tmp / "crashed"
    copy_root(old_root, root)
    # The first rename is the first thing commit does, right after the commit point.
    proc = run_traced(
        root, payload, "rename,renameat,renameat2", "error=EIO:signal=SIGKILL:when=1", env=env
    )
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.stderr.decode()
    journal = root / "var/lib/txsetup/journal"
    assert [r.state for r in read_journal(journal)] == [TxnState.BEGUN, TxnState.PREPARED]
    full = journal.read_bytes()
    valid = len(b"".join(full.splitlines(keepends=True)[:-1]))
    old, new = snapshot(old_root), snapshot(new_root)
    assert old != new
    return Crashed(tmp, root, old, new, len(full), valid, env)


def cut_sizes(crashed: Crashed, *, stride: int, ends: int = 10) -> list[int]:
    """Journal sizes from "last record absent" to "last record whole": the first and last
    ``ends`` of them and every ``stride``-th in between."""
    sizes = list(range(crashed.valid, crashed.journal_size + 1))
    picked = sizes[:ends] + sizes[ends:-ends:stride] + sizes[-ends:]
    return sorted(set(picked))


@pytest.mark.system
def test_torn_last_record_at_every_offset_recovers_exactly(crashed: Crashed) -> None:
    """With its last record cut at any byte, recovery from the journal ends exactly old or new."""
    failures = []
    for size in cut_sizes(crashed, stride=1):
        root = crashed.torn_copy(size)
        layout = Layout(root)
        txn = load_pending(layout)
        outcome, state = crashed.expected(size)
        if txn is None or txn.prepared != (outcome == "resumed"):
            failures.append(f"cut to {size}: pending {txn}, expected to be {outcome}")
        else:
            journal = Journal(layout.journal, txn.txid)
            if txn.prepared:
                finish_forward(layout, txn, journal, lock_timeout=5)
            else:
                finish_undo(layout, txn, journal, lock_timeout=5, reason="torn journal")
            if snapshot(root) != state:
                failures.append(f"cut to {size}: the node is not exactly as expected ({outcome})")
            if leftovers := state_dir_leftovers(root):
                failures.append(f"cut to {size}: leftovers {leftovers}")
            if load_pending(layout) is not None:
                failures.append(f"cut to {size}: still pending after recovery")
        shutil.rmtree(root.parent)
    assert failures == [], "\n".join(failures)


@pytest.mark.system
@pytest.mark.slow
def test_torn_journal_at_the_commit_point_resumes_old_or_new(crashed: Crashed) -> None:
    """Killed at its commit point with its last record torn, ``txsetup --resume`` ends exactly.

    Every offset at the ``full`` crash depth; at ``sampled`` the first and last
    ten bytes of the record (its checksum, its newline) and every 24th in
    between; at ``quick`` the first and last three and every 96th.
    """

    def resume_torn(size: int) -> list[str]:
        root = crashed.torn_copy(size)
        run = run_txsetup(["node-daemon-setup", "--resume", "--root", str(root)], env=crashed.env)
        outcome, state = crashed.expected(size)
        problems = []
        if run.returncode != 0 or run.result["outcome"] != outcome:
            problems.append(
                f"exit {run.returncode}, outcome {run.result['outcome']}, expected {outcome}"
            )
        if snapshot(root) != state:
            problems.append(f"the node is not exactly as expected ({outcome})")
        if leftovers := state_dir_leftovers(root):
            problems.append(f"leftovers {leftovers}")
        again = run_txsetup(["node-daemon-setup", "--resume", "--root", str(root)], env=crashed.env)
        if again.result["outcome"] != "nothing_to_resume":
            problems.append(f"second --resume: {again.result['outcome']}")
        shutil.rmtree(root.parent)
        return [f"journal cut to {size} of {crashed.journal_size} bytes: {p}" for p in problems]

    stride = {"full": 1, "sampled": 24}.get(CRASH_DEPTH, 96)
    sizes = cut_sizes(crashed, stride=stride, ends=3 if CRASH_DEPTH == "quick" else 10)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        failures = [p for found in pool.map(resume_torn, sizes) for p in found]
    assert failures == [], "\n".join(failures)
