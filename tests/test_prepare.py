"""The node as a participant: ``--prepare`` holds the node; ``txsetup commit`` / ``abort`` decide.

Real runs of the installed CLI on a node root in ``tmp_path``: every other run
on a held node is refused (exit 5) and changes nothing; a decision acts once
and reports the same outcome when repeated; the opposite decision is exit 4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Run, make_document, run_txsetup, snapshot
from txsetup.txn.journal import read_journal

SetupRun = Callable[..., Run]


def decide(root: Path, verb: str, txid: str) -> Run:
    """``txsetup commit|abort TXID`` on ``root``."""
    return run_txsetup([verb, txid, "--root", str(root)])


def test_prepare_holds_the_node_until_commit(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """--prepare stages and exits 0 with outcome prepared, files unchanged; every other run
    (apply, dry run, --resume, another prepare) is exit 5 naming the txid and the two
    decisions, and changes nothing; commit installs; commit again reports it; abort is 4."""
    document = make_document(node_pem, node_name="n1.example.com")
    before = snapshot(root)
    prepared = setup_run(document, "--prepare", "--coordinator", "push-1")
    assert (prepared.returncode, prepared.result["outcome"]) == (0, "prepared"), prepared.stderr
    txid = prepared.result["txid"]
    assert "txn.prepared" in prepared.event_names()
    # A new node's target directory exists from the prepare on, empty: the copies are staged
    # in the state directory.
    after = snapshot(root)
    assert after.pop("var/lib/ganeti").kind == "dir"
    assert after == before
    held = snapshot(root, skip=("var/lock",))
    for extra in ((), ("--dry-run",), ("--prepare",)):
        refused = setup_run(document, *extra)
        assert refused.returncode == 5, (extra, refused.stderr)
        assert refused.result["error_code"] == "held"
        assert txid in refused.result["error"]
        assert f"txsetup commit {txid}" in refused.result["error"]
        assert "push-1" in refused.result["error"]
    resumed = setup_run(None, "--resume")
    assert resumed.returncode == 5
    status = run_txsetup(["status", "--root", str(root)]).result
    assert (status["txid"], status["state"]) == (txid, "prepared")
    assert status["hold"] == {"by": "txsetup node-daemon-setup --prepare", "coordinator": "push-1"}
    assert status["last_transaction"]["outcome"] == "in_doubt"
    assert snapshot(root, skip=("var/lock",)) == held
    committed = decide(root, "commit", txid)
    assert (committed.returncode, committed.result["outcome"]) == (0, "committed")
    assert "var/lib/ganeti/server.pem" in committed.result["changed"]
    assert (root / "var/lib/ganeti/server.pem").read_text() == node_pem
    again = decide(root, "commit", txid)
    assert (again.returncode, again.result["outcome"]) == (0, "committed")
    opposite = decide(root, "abort", txid)
    assert (opposite.returncode, opposite.result["error_code"]) == (4, "decision_refused")
    assert setup_run(document).result["outcome"] == "converged"


def test_abort_leaves_the_earlier_files_exactly(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A re-add prepared then aborted: every file exactly as before, the journal says
    rolled back; abort again is 0; commit afterwards is 4."""
    assert setup_run(make_document(node_pem, node_name="n1.example.com")).returncode == 0
    before = snapshot(root)
    changed = make_document(node_pem, node_name="n1.example.com", ssconf={"node_list": "n1\n"})
    prepared = setup_run(changed, "--prepare")
    assert prepared.result["outcome"] == "prepared", prepared.stderr
    txid = prepared.result["txid"]
    aborted = decide(root, "abort", txid)
    assert (aborted.returncode, aborted.result["outcome"]) == (0, "aborted"), aborted.stderr
    assert snapshot(root) == before
    assert read_journal(root / "var/lib/txsetup/journal")[-1].state == "rolled_back"
    assert decide(root, "abort", txid).result["outcome"] == "aborted"
    assert decide(root, "commit", txid).returncode == 4
    status = run_txsetup(["status", "--root", str(root)]).result
    assert status["last_transaction"]["outcome"] == "aborted"


def test_resume_abort_overrides_a_hold(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """--resume --abort undoes a held transaction and logs it as an override; the hold's
    coordinator then learns it was aborted (abort 0, commit 4)."""
    before = snapshot(root)
    txid = setup_run(make_document(node_pem), "--prepare").result["txid"]
    override = setup_run(None, "--resume", "--abort")
    assert (override.returncode, override.result["outcome"]) == (0, "rolled_back")
    assert "txn.override" in override.event_names()
    assert snapshot(root) == before
    assert decide(root, "abort", txid).returncode == 0
    assert decide(root, "commit", txid).returncode == 4


def test_decisions_on_no_such_transaction_and_usage(root: Path, setup_run: SetupRun) -> None:
    """A txid the node never prepared is exit 4; --coordinator needs --prepare (exit 2)."""
    unknown = decide(root, "commit", "20260101T000000Z-00000000")
    assert (unknown.returncode, unknown.result["error_code"]) == (4, "decision_refused")
    usage = setup_run(b"{}", "--coordinator", "x")
    assert usage.returncode == 2


def test_abort_by_coordinator_before_the_prepare_refuses_it_later(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """An abort by coordinator id that no prepare reached yet is kept (exit 0, aborted,
    again exit 0); a later prepare with that id is exit 4 and changes nothing; a commit by
    that id is 4; another coordinator's prepare is held as usual and can be decided by id."""
    by_id = ["--coordinator", "push-7", "--root", str(root)]
    aborted = run_txsetup(["abort", *by_id])
    assert (aborted.returncode, aborted.result["outcome"]) == (0, "aborted"), aborted.stderr
    assert (aborted.result["txid"], aborted.result["coordinator"]) == (None, "push-7")
    assert run_txsetup(["abort", *by_id]).result["outcome"] == "aborted"
    before = snapshot(root)
    late = setup_run(make_document(node_pem), "--prepare", "--coordinator", "push-7")
    assert (late.returncode, late.result["error_code"]) == (4, "decision_refused"), late.stderr
    assert "push-7" in late.result["error"]
    assert snapshot(root) == before
    assert run_txsetup(["commit", *by_id]).returncode == 4
    other = setup_run(make_document(node_pem), "--prepare", "--coordinator", "push-8")
    assert other.result["outcome"] == "prepared", other.stderr
    committed = run_txsetup(["commit", "--coordinator", "push-8", "--root", str(root)])
    assert (committed.returncode, committed.result["outcome"]) == (0, "committed")
    assert committed.result["txid"] == other.result["txid"]
    assert run_txsetup(["abort", "--coordinator", "push-8", "--root", str(root)]).returncode == 4


def test_abort_by_coordinator_of_a_held_transaction_and_the_override(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Abort by coordinator id undoes the held transaction it prepared; --resume --abort of
    a held transaction also keeps its coordinator's tombstone, so its late prepare is 4."""
    before = snapshot(root)
    held = setup_run(make_document(node_pem), "--prepare", "--coordinator", "c-1")
    aborted = run_txsetup(["abort", "--coordinator", "c-1", "--root", str(root)])
    assert (aborted.result["outcome"], aborted.result["txid"]) == ("aborted", held.result["txid"])
    assert snapshot(root) == before
    setup_run(make_document(node_pem), "--prepare", "--coordinator", "c-2")
    assert setup_run(None, "--resume", "--abort").result["outcome"] == "rolled_back"
    again = setup_run(make_document(node_pem), "--prepare", "--coordinator", "c-2")
    assert again.returncode == 4, again.stderr


def test_coordinator_ids_and_decision_usage_are_checked(root: Path, setup_run: SetupRun) -> None:
    """A coordinator id outside its alphabet is a usage error (2), and so is a decision
    with both or neither of TXID and --coordinator; nothing is written."""
    for bad in ("", "-x", "a b", "a\nb", "x" * 200, "é"):
        assert setup_run(b"{}", "--prepare", "--coordinator", bad).returncode == 2, bad
        assert run_txsetup(["abort", "--coordinator", bad, "--root", str(root)]).returncode == 2
    assert run_txsetup(["abort", "--root", str(root)]).returncode == 2
    both = ["commit", "20260101T000000Z-00000000", "--coordinator", "c", "--root", str(root)]
    assert run_txsetup(both).returncode == 2
    assert not (root / "var/lib/txsetup/decisions").exists()


def test_a_decision_repeated_after_later_runs_reports_its_outcome_again(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Later runs replace the journal; a coordinator repeating its decision (by txid or by its
    id) still learns the outcome (exit 0), and the opposite decision is still exit 4."""
    document = make_document(node_pem)
    txid = setup_run(document, "--prepare", "--coordinator", "push-9").result["txid"]
    assert decide(root, "commit", txid).result["outcome"] == "committed"
    assert setup_run(document).result["outcome"] == "converged"
    other = make_document(node_pem, ssconf={"node_list": "n2\n"})
    assert setup_run(other).result["outcome"] == "committed"
    again = decide(root, "commit", txid)
    assert (again.returncode, again.result["outcome"]) == (0, "committed"), again.stdout
    by_id = run_txsetup(["commit", "--coordinator", "push-9", "--root", str(root)])
    assert (by_id.result["outcome"], by_id.result["txid"]) == ("committed", txid)
    assert decide(root, "abort", txid).returncode == 4
