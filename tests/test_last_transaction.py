"""What a node says about its last transaction: ``status``, ``--resume``, and the journal.

Every run ends with a record of why it ended as it did: a converged run's
txid, the step that failed and its error, where a killed run stopped and
what finished or undid it. ``txsetup status`` and every ``--resume`` result
carry it as ``last_transaction``. The runs are real (the installed CLI on a
temporary root; strace kills or fails one at a chosen syscall); the
journals of the version before the ``cause`` are fixtures that must still
read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    SECRET_MARKERS,
    Run,
    encode,
    make_document,
    parse_run,
    require_tool,
    run_traced,
    run_txsetup,
    snapshot,
    txsetup_exe,
)
from tests.sshdoc import ssh_document, write_sshd_config
from txsetup.node.status import last_transaction
from txsetup.txn.journal import Journal, read_journal
from txsetup.txn.pending import PendingTxn

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"
JOURNAL = "var/lib/txsetup/journal"
FIXTURES = Path(__file__).parent / "journals" / "v1"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# A restart command that SIGKILLs txsetup itself: a crash after the commit.
QUIET = 'stop = [["true"]]\nhealth_url = "none"\n'
KILLING = f'[daemon]\nrestart = [["sh", "-c", "kill -9 $PPID"]]\nstatus = ["false"]\n{QUIET}'
WORKING = f'[daemon]\nrestart = [["true"]]\nstatus = ["true"]\n{QUIET}'


def status(root: Path) -> dict[str, Any]:
    """``txsetup status`` on ``root`` (exit 0)."""
    run = run_txsetup(["status", "--root", str(root)])
    assert run.returncode == 0, run.stderr
    return run.result


def last(root: Path) -> dict[str, Any]:
    """``status``'s ``last_transaction``, with its times checked as RFC 3339 UTC."""
    found: dict[str, Any] | None = status(root)["last_transaction"]
    assert found is not None
    assert RFC3339_UTC.match(found["started_at"]), found
    if found["ended_at"] is not None:
        assert RFC3339_UTC.match(found["ended_at"]), found
        assert found["started_at"] <= found["ended_at"]
    return found


def config(root: Path, name: str, text: str) -> Path:
    """A configuration file beside the root."""
    path = root.parent / f"{name}.toml"
    path.write_text(text)
    return path


def killed_at_first_rename(root: Path, document: dict[str, Any]) -> None:
    """Run ``document`` under strace, SIGKILLed at its first rename (after ``prepared``)."""
    proc = run_traced(
        root,
        encode(document),
        "rename,renameat,renameat2",
        "error=EIO:signal=SIGKILL:when=1",
    )
    assert proc.returncode in {-9, 128 + 9}, proc.stderr
    assert proc.stdout == b""


def test_a_converged_runs_txid_is_in_status_and_in_resume(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A converged run is the last transaction: status names its txid, --resume reports it."""
    document = make_document(node_pem, hmac_key="hmac-secret-converged")
    assert setup_run(document).result["outcome"] == "committed"
    before = snapshot(root)
    converged = setup_run(document)
    assert converged.result["outcome"] == "converged", converged.stderr
    assert snapshot(root) == before  # no managed file written
    expected = {
        "txid": converged.result["txid"],
        "program": "node-daemon-setup",
        "outcome": "converged",
        "reason": None,
    }
    described = last(root)
    assert {k: described[k] for k in expected} == expected
    assert status(root)["txid"] == converged.result["txid"]
    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "nothing_to_resume")
    assert (resumed.result["txid"], resumed.result["last_transaction"]) == (None, described)
    journal = (root / JOURNAL).read_text()
    assert not any(marker in journal for marker in SECRET_MARKERS)


def test_a_re_add_after_a_converged_run_costs_no_extra_fsync(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """The converged summary keeps the journal's entries known durable: a re-add is files + 3."""
    require_tool("strace")
    assert setup_run(make_document(node_pem)).result["outcome"] == "committed"
    assert setup_run(make_document(node_pem)).result["outcome"] == "converged"
    trace = root.parent / "fsyncs.trace"
    document = make_document(node_pem, ssconf={"master_ip": "192.0.2.31"})
    proc = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=fsync,fdatasync,sync_file_range,syncfs",
            txsetup_exe(),
            "node-daemon-setup",
            "--root",
            str(root),
        ],
        input=encode(document),
        capture_output=True,
        timeout=120,
        check=False,
    )
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.result["changed"] == [f"{GANETI}/ssconf_master_ip"], run.stderr
    syncing = re.compile(r"\b(fsync|fdatasync|sync_file_range|syncfs)\(")
    calls = [line for line in trace.read_text().splitlines() if syncing.search(line)]
    assert len(calls) == 1 + 3, calls


def test_a_converged_run_replacing_a_fresh_journal_leaves_the_entries_unsynced(
    tmp_path: Path,
) -> None:
    """A converged summary in a journal it created claims nothing durable: the next run syncs."""
    path = tmp_path / "journal"
    begun = {"command": "node-daemon-setup", "started_at": None}
    Journal(path, "20300601T120000Z-00000001").record_unchanged(begun, {"outcome": "converged"})
    assert Journal(path, "20300601T120000Z-00000002").begin({"command": "x"}) is True
    shutil.copy(FIXTURES / "committed.journal", path)
    Journal(path, "20300601T120000Z-00000003").record_unchanged(begun, {"outcome": "converged"})
    assert read_journal(path)[0].data["entries_synced"] is True
    assert Journal(path, "20300601T120000Z-00000004").begin({"command": "x"}) is False


def test_a_rollback_names_the_step_that_failed_and_its_error(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Exit 6: the reason is the failing step, its error code and its error, as logged."""
    assert setup_run(make_document(node_pem)).returncode == 0
    document = make_document(node_pem, ssconf={"offline_nodes": "node3\n"})
    proc = run_traced(root, encode(document), "fsync", "error=EIO:when=1")  # fails stage
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.returncode == 6, run.stderr
    (failed,) = [e for e in run.events if e["event"] == "step.failed"]
    described = last(root)
    assert described["txid"] == run.result["txid"]
    assert described["outcome"] == "rolled_back"
    assert described["reason"] == {
        "step": "stage",
        "error_code": failed["error_code"],
        "error": failed["error"],
    }
    assert "Input/output error" in described["reason"]["error"]
    assert status(root)["reason"] == "step stage failed"
    resumed = setup_run(None, "--resume")
    assert resumed.result["outcome"] == "nothing_to_resume"
    assert resumed.result["last_transaction"] == described


def test_a_killed_run_is_unfinished_then_resume_lists_what_it_completed(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Killed at commit: status says unfinished in commit; --resume finishes it and lists
    the files it put in place, and the reason then says where it stopped and who finished it."""
    assert setup_run(make_document(node_pem)).returncode == 0
    document = make_document(
        node_pem, ssconf={"master_ip": "192.0.2.9"}, hmac_key="hmac-secret-killed"
    )
    killed_at_first_rename(root, document)
    stuck = last(root)
    assert (stuck["outcome"], stuck["ended_at"]) == ("unfinished", None)
    assert stuck["reason"]["step"] == "commit"
    assert stuck["reason"]["error_code"] == "unfinished"
    files = sorted(f["path"] for f in status(root)["files"])
    assert f"{GANETI}/ssconf_master_ip" in files

    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "resumed"), resumed.stderr
    assert sorted(resumed.result["changed"]) == files
    assert (root / GANETI / "ssconf_master_ip").read_bytes() == b"192.0.2.9\n"
    done = resumed.result["last_transaction"]
    assert (done["txid"], done["outcome"]) == (stuck["txid"], "resumed")
    assert done["reason"]["step"] == "commit"
    assert done["reason"]["error_code"] == "interrupted"
    assert "finished by --resume" in done["reason"]["error"]
    assert last(root) == done


def test_resume_abort_lists_the_files_it_restored(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Killed in the restart after commit, then --resume --abort: ``changed`` names every
    file it put back (root-relative), the old bytes are back, the reason says aborted."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root)
    document = make_document(node_pem, start_node_daemon=True, ssconf={"master_ip": "192.0.2.7"})
    killing = config(root, "killing", KILLING)
    proc = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root), "--config", str(killing)],
        input=encode(document),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    assert last(root)["reason"]["step"] == "restart_daemon"

    working = config(root, "working", WORKING)
    aborted = setup_run(None, "--resume", "--abort", "--config", str(working))
    assert (aborted.returncode, aborted.result["outcome"]) == (0, "rolled_back"), aborted.stderr
    assert aborted.result["changed"] == [f"{GANETI}/ssconf_master_ip"]
    assert snapshot(root) == before
    reason = aborted.result["last_transaction"]["reason"]
    assert (reason["step"], reason["error_code"]) == ("restart_daemon", "aborted")
    assert reason["error"] == "undone by --resume --abort (it had stopped in restart_daemon)"


def test_the_next_run_that_recovers_is_named_in_the_reason(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A killed run undone by the next run (which is then refused): the reason names that run."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root)
    # Killed before the commit point (its first hold link): the next run undoes it.
    proc = run_traced(
        root,
        encode(make_document(node_pem, ssconf={"master_ip": "192.0.2.5"})),
        "link,linkat",
        "error=EIO:signal=SIGKILL:when=1",
    )
    assert proc.returncode in {-9, 128 + 9}
    refused = setup_run(make_document(node_pem, cluster="other.example.com"))
    assert refused.returncode == 4, refused.stderr
    assert snapshot(root) == before
    described = last(root)
    assert described["outcome"] == "rolled_back"
    assert described["reason"]["step"] == "stage"
    assert described["reason"]["error_code"] == "interrupted"
    assert described["reason"]["error"].endswith(f"undone by run {refused.result['txid']}")


def test_ssh_setup_converged_is_named_as_its_program(root: Path) -> None:
    """ssh-setup's converged run is recorded too, under its own program name."""
    write_sshd_config(root, reload=["true"], status=["true"], health_address="none")
    document = ssh_document()
    argv = ["ssh-setup", "--root", str(root)]
    assert run_txsetup(argv, stdin=encode(document)).returncode == 0
    again = run_txsetup(argv, stdin=encode(document))
    assert again.result["outcome"] == "converged", again.stderr
    described = last(root)
    assert (described["txid"], described["program"], described["outcome"]) == (
        again.result["txid"],
        "ssh-setup",
        "converged",
    )


# --- journals of the version before ``cause`` --------------------------------------------

FIXTURE_CASES = {
    "committed.journal": ("committed", None),
    "rolled-back.journal": (
        "rolled_back",
        {"step": None, "error_code": None, "error": "step failed"},
    ),
    "rolling-back.journal": ("unfinished", {"step": "compensate", "error_code": "unfinished"}),
    "aborted.journal": ("rolled_back", {"step": None, "error_code": None, "error": "aborted"}),
    "killed.journal": ("unfinished", {"step": "restart_daemon", "error_code": "unfinished"}),
    "resumed.journal": ("resumed", None),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_journals_of_the_earlier_version_still_read(name: str, tmp_path: Path) -> None:
    """Each fixture journal: status reads it, its last transaction has the outcome and
    the reason that version's records allow, and an unfinished one rebuilds for recovery."""
    outcome, reason = FIXTURE_CASES[name]
    records = read_journal(FIXTURES / name)
    assert records, name
    found = last_transaction(records)
    assert found is not None
    assert (found["txid"], found["program"], found["outcome"]) == (
        records[0].txid,
        "node-daemon-setup",
        outcome,
    )
    if reason is None:
        assert found["reason"] is None
    else:
        assert {k: found["reason"][k] for k in reason} == reason
    root = tmp_path / "root"
    (root / "var/lib/txsetup").mkdir(parents=True)
    shutil.copy(FIXTURES / name, root / JOURNAL)
    assert status(root)["last_transaction"] == found
    if outcome == "unfinished":
        txn = PendingTxn.from_records(records)
        assert txn.prepared
        assert [c.path for c in txn.changes] == [f"{GANETI}/ssconf_master_ip"]
