"""``txsetup status``: the last or unfinished transaction, read from the journal alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import (
    SECRET_MARKERS,
    Run,
    encode,
    make_document,
    parse_run,
    run_traced,
    run_txsetup,
    snapshot,
)

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"
SECRET_DOCUMENT_EXTRA: dict[str, Any] = {
    "hmac_key": "hmac-secret-status",
    "node_name": "node1.example.com",
}


def status(root: Path) -> dict[str, Any]:
    """Run ``txsetup status`` on ``root`` (exit 0, no secrets) and return its JSON."""
    run = run_txsetup(["status", "--root", str(root)])
    assert run.returncode == 0, run.stderr
    return run.result


def killed_at_first(root: Path, document: dict[str, Any], syscalls: str) -> int:
    """Run node-daemon-setup under strace, SIGKILLed at the first of ``syscalls``."""
    proc = run_traced(root, encode(document), syscalls, "error=EIO:signal=SIGKILL:when=1")
    assert proc.stdout == b"", "a killed run prints no result"
    return proc.returncode


def test_status_of_an_empty_root_is_none(root: Path) -> None:
    """With no journal, status says state none, finished, no files, and creates nothing."""
    before = snapshot(root, skip=())
    assert status(root) == {
        "txid": None,
        "state": "none",
        "finished": True,
        "files": [],
        "revertable": None,
        "last_transaction": None,
    }
    assert snapshot(root, skip=()) == before


def test_status_of_an_unreadable_journal_is_exit_1_with_a_message(root: Path) -> None:
    """A journal that cannot be read: exit 1, one JSON object saying why, no traceback."""
    (root / "var/lib/txsetup/journal").mkdir(parents=True)
    before = snapshot(root, skip=())
    run = run_txsetup(["status", "--root", str(root)])
    assert run.returncode == 1
    assert run.result == {
        "txid": None,
        "state": "unknown",
        "exit_code": 1,
        "error": "status: cannot read var/lib/txsetup/journal: Is a directory",
        "error_code": "internal",
    }
    assert "Traceback" not in run.stderr
    assert run.event_names() == ["status.error"]
    assert snapshot(root, skip=()) == before


def test_status_after_a_commit(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """After a commit status shows done, the outcome and every file, and no key material."""
    run = setup_run(make_document(node_pem, **SECRET_DOCUMENT_EXTRA))
    assert run.returncode == 0, run.stderr
    described = status(root)
    assert described["txid"] == run.result["txid"]
    assert (described["state"], described["finished"], described["step"]) == ("done", True, None)
    assert described["outcome"] == "committed"
    assert described["command"] == "node-daemon-setup"
    assert described["states"] == ["begun", "prepared", "committed", "done"]
    assert described["started_at"] <= described["ended_at"]
    files = {f["path"]: f for f in described["files"]}
    assert sorted(files) == sorted(run.result["changed"])
    assert {f"{GANETI}/server.pem", f"{GANETI}/hmac.key", f"{GANETI}/client.pem"} <= set(files)
    assert all(f["action"] == "create" and f["old_mode"] is None for f in files.values())
    journal = (root / "var/lib/txsetup/journal").read_text()
    assert not any(marker in journal for marker in SECRET_MARKERS)


def test_status_shows_replaced_files_with_their_old_mode(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A replaced file is listed as replace with the mode it had before."""
    assert setup_run(make_document(node_pem)).returncode == 0
    (root / GANETI / "ssconf_master_ip").chmod(0o644)
    assert setup_run(make_document(node_pem, ssconf={"master_ip": "192.0.2.9"})).returncode == 0
    assert status(root)["files"] == [
        {"path": f"{GANETI}/ssconf_master_ip", "action": "replace", "old_mode": "0644"}
    ]


def test_status_after_a_rolled_back_run(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """After an exit-6 run status shows rolled_back, finished, with its reason."""
    assert setup_run(make_document(node_pem)).returncode == 0
    document = make_document(node_pem, ssconf={"offline_nodes": "node3\n"})
    proc = run_traced(root, encode(document), "fsync", "error=EIO:when=1")  # fails stage
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.returncode == 6, run.stderr
    described = status(root)
    assert described["txid"] == run.result["txid"]
    assert (described["state"], described["finished"], described["step"]) == (
        "rolled_back",
        True,
        None,
    )
    assert described["states"] == ["begun", "rolled_back"]
    assert described["reason"] == "step stage failed"
    assert described["outcome"] is None
    assert described["ended_at"] is not None


def test_status_of_a_transaction_killed_at_commit(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Killed at commit's first rename: unfinished, prepared, in commit; --resume then finishes."""
    assert setup_run(make_document(node_pem)).returncode == 0
    document = make_document(node_pem, ssconf={"master_ip": "192.0.2.9"}, **SECRET_DOCUMENT_EXTRA)
    returncode = killed_at_first(root, document, "rename,renameat,renameat2")
    assert returncode in {-9, 128 + 9}
    described = status(root)
    assert (described["state"], described["finished"], described["step"]) == (
        "prepared",
        False,
        "commit",
    )
    before = snapshot(root, skip=())
    dry = setup_run(document, "--dry-run")
    assert dry.result["pending_recovery"] == described["txid"]
    assert snapshot(root, skip=()) == before
    assert described["ended_at"] is None
    paths = {f["path"] for f in described["files"]}
    assert f"{GANETI}/ssconf_master_ip" in paths
    assert f"{GANETI}/hmac.key" in paths
    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "resumed")
    after = status(root)
    assert (after["txid"], after["state"], after["finished"]) == (described["txid"], "done", True)
    assert after["outcome"] == "resumed"
    assert (root / GANETI / "ssconf_master_ip").read_bytes() == b"192.0.2.9\n"


def test_status_of_a_transaction_killed_while_staging(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Killed at stage's first hold link: unfinished, begun, in stage; the next run undoes it."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root)
    document = make_document(node_pem, ssconf={"master_ip": "192.0.2.9"})
    assert killed_at_first(root, document, "link,linkat") in {-9, 128 + 9}
    described = status(root)
    assert (described["state"], described["finished"], described["step"]) == (
        "begun",
        False,
        "stage",
    )
    assert described["files"] == []
    resumed = setup_run(None, "--resume")
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "rolled_back")
    assert status(root)["state"] == "rolled_back"
    assert snapshot(root) == before
