"""Recovery hygiene: after any recovery no staged or hold copy of *any* transaction remains.

A power loss can keep the copies a transaction staged while dropping its
journal records: the truncation that began it, even its ``begun`` record, are
not forced to disk before the commit point. The journal then still names the
transaction before it, finished or not, or nothing at all. These tests build
exactly that state from real runs (a run killed at its first commit rename,
then the journal put back as the power loss would leave it) and check that
``--resume`` or the next run removes every copy, the files stay as the
surviving journal says, and ``status`` reports what was removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Run,
    encode,
    make_document,
    run_traced,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
)
from txsetup.txn.journal import TxnState, read_journal

pytestmark = pytest.mark.system

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"
JOURNAL = "var/lib/txsetup/journal"


def status(root: Path) -> dict[str, Any]:
    """``txsetup status`` of ``root``."""
    run = run_txsetup(["status", "--root", str(root)])
    assert run.returncode == 0, run.stderr
    return run.result


def kill_at_first_commit_rename(root: Path, document: dict[str, Any]) -> str:
    """Run ``document`` until its first rename (commit), SIGKILLed there; its txid."""
    proc = run_traced(root, encode(document), "rename,renameat,renameat2", "signal=SIGKILL:when=1")
    assert proc.returncode in {-9, 128 + 9}, proc.stderr.decode()
    records = read_journal(root / JOURNAL)
    assert records[-1].state is TxnState.PREPARED
    return records[-1].txid


def copies_in_ganeti_dir(root: Path) -> list[str]:
    """Copies staged beside the targets (another filesystem's way)."""
    return sorted(n for n in os.listdir(root / GANETI) if n.startswith(".txsetup-"))


def events(run: Run, name: str) -> list[dict[str, Any]]:
    """The log lines of ``run`` with event ``name``."""
    return [line for line in run.events if line["event"] == name]


@pytest.fixture
def installed(node_pem: str, root: Path, setup_run: SetupRun) -> dict[str, Any]:
    """A node that committed one transaction (A); A's document."""
    document = make_document(node_pem, hmac_key="hmac-secret-a")
    assert setup_run(document).returncode == 0
    return document


def test_copies_of_a_transaction_whose_records_were_lost_are_removed_by_resume(
    node_pem: str, root: Path, setup_run: SetupRun, installed: dict[str, Any]
) -> None:
    """The journal names the finished A again; B's copies survived: --resume removes them all."""
    journal_a = (root / JOURNAL).read_bytes()
    files_a = snapshot(root)
    txid_b = kill_at_first_commit_rename(
        root, make_document(node_pem, ssconf={"master_ip": "192.0.2.77"}, hmac_key="hmac-secret-b")
    )
    copies = state_dir_leftovers(root)
    assert copies, "B staged copies and hold links"
    (root / JOURNAL).write_bytes(journal_a)  # the power loss: B's truncation never reached disk

    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "nothing_to_resume")
    assert state_dir_leftovers(root) == []
    assert snapshot(root) == files_a
    [removed] = events(resumed, "txn.leftovers_removed")
    assert (removed["count"], removed["txids"]) == (len(copies), [txid_b])
    described = status(root)
    assert described["outcome"] == "committed"  # A's summary stays
    assert (described["leftovers_removed"], described["leftovers_of"]) == (len(copies), [txid_b])


def test_the_next_run_removes_them_before_it_begins(
    node_pem: str, root: Path, setup_run: SetupRun, installed: dict[str, Any]
) -> None:
    """The same leftovers met by a new run: removed first, then the run commits its own."""
    journal_a = (root / JOURNAL).read_bytes()
    kill_at_first_commit_rename(root, make_document(node_pem, ssconf={"master_ip": "192.0.2.77"}))
    (root / JOURNAL).write_bytes(journal_a)
    document_c = make_document(node_pem, ssconf={"master_ip": "192.0.2.88"})
    run = setup_run(document_c)
    assert (run.returncode, run.result["outcome"]) == (0, "committed"), run.stderr
    assert events(run, "txn.leftovers_removed")
    assert state_dir_leftovers(root) == []
    assert (root / GANETI / "ssconf_master_ip").read_bytes() == b"192.0.2.88\n"


def test_an_empty_journal_with_copies_reads_as_that_transaction_rolled_back(
    node_pem: str, root: Path, setup_run: SetupRun, installed: dict[str, Any]
) -> None:
    """Truncated and then lost: status names B as rolled back, with its copies removed."""
    files_a = snapshot(root)
    txid_b = kill_at_first_commit_rename(
        root, make_document(node_pem, ssconf={"master_ip": "192.0.2.77"})
    )
    copies = state_dir_leftovers(root)
    (root / JOURNAL).write_bytes(b"")
    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "nothing_to_resume")
    assert state_dir_leftovers(root) == []
    assert snapshot(root) == files_a
    described = status(root)
    assert (described["txid"], described["state"], described["finished"]) == (
        txid_b,
        "rolled_back",
        True,
    )
    assert described["leftovers_removed"] == len(copies)
    assert "lost" in described["reason"]


def test_recovering_one_transaction_removes_every_other_ones_copies(
    node_pem: str, root: Path, setup_run: SetupRun, installed: dict[str, Any]
) -> None:
    """The journal names an unfinished A; copies of a later B lie beside A's: A rolls
    forward with its own, and B's are removed, in the state dir and beside the targets."""
    document = make_document(node_pem, ssconf={"master_ip": "192.0.2.77"})
    txid_a = kill_at_first_commit_rename(root, document)
    txid_b = "20991231T235959Z-0000b0b0"
    state = root / "var/lib/txsetup"
    own = state_dir_leftovers(root)
    for name in own:
        os.link(state / name, state / name.replace(txid_a, txid_b))
    os.link(state / own[0], root / GANETI / f".txsetup-{txid_b}-0.new")
    strays = len(own) + 1

    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "resumed"), resumed.stderr
    assert state_dir_leftovers(root) == []
    assert copies_in_ganeti_dir(root) == []
    assert (root / GANETI / "ssconf_master_ip").read_bytes() == b"192.0.2.77\n"
    described = status(root)
    assert (described["txid"], described["outcome"]) == (txid_a, "resumed")
    assert (described["leftovers_removed"], described["leftovers_of"]) == (strays, [txid_b])
