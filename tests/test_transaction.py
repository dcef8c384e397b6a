"""End to end through the installed CLI: a run that fails for a real reason leaves the old files.

Every failure test has one shape: install the old files (a first real run
with document A) → snapshot → a run with document B that fails at a step for
a real cause (a directory where a file must go, an immutable file, a full
filesystem, a held lock, a signal, an injected I/O error) → its documented exit
code → the snapshot equals the old one exactly (bytes, mode, owner, and
the very same inodes) and no staged or hold copy is left in the state dir.
We run as root, so ``chmod`` cannot make anything fail; these causes can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    CLUSTER,
    Entry,
    Run,
    encode,
    make_document,
    parse_run,
    read_until_lock_step,
    require_tool,
    run_traced,
    run_txsetup,
    snapshot,
    start_setup,
    state_dir_leftovers,
    tmpfs,
)
from txsetup.node.files import ssconf_content
from txsetup.node.ganeti_fields import SSCONF_KEYS
from txsetup.txn.journal import TxnState, read_journal

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"
# Python must not rename .pyc files into place while strace counts renames.


# --- helpers ------------------------------------------------------------------------------


def inodes(snap: Mapping[str, Entry]) -> dict[str, int]:
    """Each path's inode number: a restored file is the very same inode, not a copy."""
    return {path: entry.ino for path, entry in snap.items()}


def assert_restored(root: Path, before: Mapping[str, Entry]) -> None:
    """The root is exactly as before (bytes, mode, owner, inode); no copies left; txn closed."""
    after = snapshot(root)
    assert after == before
    assert inodes(after) == inodes(before)
    assert state_dir_leftovers(root) == []
    records = read_journal(root / "var/lib/txsetup/journal")
    if records:
        assert records[-1].state in {TxnState.ROLLED_BACK, TxnState.DONE}


def assert_rolled_back(run: Run, step: str) -> None:
    """Exit 6 with outcome rolled_back, and the failure events in order."""
    assert run.returncode == 6, run.stderr
    assert run.result["outcome"] == "rolled_back"
    assert run.result["error_code"] in {"rolled_back", "interrupted"}
    names = run.event_names()
    failed = [e for e in run.events if e["event"] == "step.failed"]
    assert [e["step"] for e in failed] == [step], run.stderr
    assert all(e["txid"] == run.result["txid"] for e in failed)
    compensated = [e["step"] for e in run.events if e["event"] == "compensate.end"]
    assert compensated, "no compensation was logged"
    assert compensated[-1] == "lock"
    order = [
        names.index("step.failed"),
        names.index("compensate.begin"),
        len(names) - 1 - names[::-1].index("compensate.end"),
        names.index("txn.rolled_back"),
        names.index("txn.end"),
    ]
    assert order == sorted(order)
    end = run.events[-1]
    assert (end["event"], end["outcome"], end["exit_code"]) == ("txn.end", "rolled_back", 6)


def ssconf(root: Path, key: str) -> Path:
    """The path of one ssconf file under ``root``."""
    return root / GANETI / f"ssconf_{key}"


def install(root: Path, document: Mapping[str, Any]) -> Run:
    """The first, successful run that puts the old files in place."""
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(document))
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] in {"committed", "converged"}
    return run


def run_under_strace(root: Path, document: Mapping[str, Any], fault: str) -> Run:
    """Run node-daemon-setup with strace injecting ``fault`` into rename calls."""
    proc = run_traced(root, encode(document), "rename,renameat,renameat2", fault)
    return parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i`` on ``path`` for the duration (even root cannot change it then)."""
    chattr = require_tool("chattr")
    subprocess.run([chattr, "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@contextmanager
def held(lock_file: Path) -> Iterator[None]:
    """Hold a real filelock on ``lock_file`` from this process."""
    lock = FileLock(lock_file)
    lock.acquire()
    try:
        yield
    finally:
        lock.release(force=True)


@contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where`` prepared as a node root; skip when mount is denied."""
    with tmpfs(where, size):
        (where / "var/lib").mkdir(parents=True)
        (where / "var/lock").mkdir()
        yield where


# --- failures with real causes --------------------------------------------------------------


def fail_in_stage(root: Path, document: Mapping[str, Any], when: int = 1) -> Run:
    """Run ``document`` with strace failing its ``when``-th fsync (1: a staged copy's) with EIO."""
    proc = run_traced(root, encode(document), "fsync", f"error=EIO:when={when}")
    return parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.mark.parametrize("what", ["directory", "FIFO", "symlink"])
def test_something_else_where_a_file_goes_is_refused_untouched(
    what: str, node_pem: str, root: Path, tmp_path: Path, setup_run: SetupRun
) -> None:
    """A directory, FIFO or symlink at a target: exit 4 before any write, all of it untouched.

    Replacing it would change what the operator put there (and a symlink's
    target is outside txsetup's say), so the run refuses and names it.
    """
    install(root, make_document(node_pem))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"precious\n")
    blocker = ssconf(root, "offline_nodes")
    if what == "directory":
        blocker.mkdir()
        (blocker / "inside").write_bytes(b"not ours\n")
    elif what == "FIFO":
        os.mkfifo(blocker)
    else:
        blocker.symlink_to(elsewhere)
    before, kept = snapshot(root), snapshot(tmp_path, skip=("root",))
    for extra in ((), ("--dry-run",)):
        run = setup_run(
            make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "offline_nodes": "n3\n"}),
            *extra,
        )
        assert run.returncode == 4, run.stderr
        assert f"{GANETI}/ssconf_offline_nodes is a" in run.result["error"]
        assert snapshot(root) == before
        assert snapshot(tmp_path, skip=("root",)) == kept


def test_a_symlinked_target_directory_is_refused(
    node_pem: str, root: Path, tmp_path: Path, setup_run: SetupRun
) -> None:
    """var/lib/ganeti as a symlink out of the root: exit 4, nothing written through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / GANETI).symlink_to(outside)
    before = snapshot(root)  # the lock step's lock file and state dir aside
    run = setup_run(make_document(node_pem))
    assert run.returncode == 4, run.stderr
    assert f"{GANETI} is a symlink, not a directory" in run.result["error"]
    assert snapshot(root) == before
    assert list(outside.iterdir()) == []


def test_io_error_while_staging_rolls_back(node_pem: str, root: Path) -> None:
    """EIO on a staged copy's fsync makes stage fail: exit 6, every old file exactly back."""
    install(root, make_document(node_pem))
    before = snapshot(root)
    run = fail_in_stage(
        root, make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "offline_nodes": "n3\n"})
    )
    assert_rolled_back(run, "stage")
    assert "Input/output error" in run.result["error"]
    assert_restored(root, before)


def test_failure_logs_the_spec_events(node_pem: str, root: Path) -> None:
    """A failing run logs step.failed, compensate.begin/end per undo, txn.rolled_back, txn.end 6."""
    install(root, make_document(node_pem))
    run = fail_in_stage(root, make_document(node_pem, ssconf={"offline_nodes": "node3\n"}))
    assert_rolled_back(run, "stage")
    begins = [e["step"] for e in run.events if e["event"] == "compensate.begin"]
    ends = [e["step"] for e in run.events if e["event"] == "compensate.end"]
    assert begins == ends == ["stage", "lock"]
    (failed,) = [e for e in run.events if e["event"] == "step.failed"]
    assert failed["error_code"] == "internal"
    assert "Input/output error" in failed["error"]
    (rolled,) = [e for e in run.events if e["event"] == "txn.rolled_back"]
    assert "stage" in rolled["reason"]
    assert "txn.committed" not in run.event_names()


def test_immutable_file_rolls_back(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """An immutable target (chattr +i) cannot be replaced: exit 6 and nothing changed."""
    install(root, make_document(node_pem))
    target = ssconf(root, "master_ip")
    with immutable(target):
        before = snapshot(root)
        run = setup_run(
            make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "release_version": "3.1.0"})
        )
        assert_rolled_back(run, "stage")
        assert_restored(root, before)


def test_immutable_directory_fails_commit_and_rolls_back(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """With var/lib/ganeti immutable the commit's rename fails: exit 6, staged copies gone."""
    install(root, make_document(node_pem))
    with immutable(root / GANETI):
        before = snapshot(root)
        run = setup_run(
            make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "cluster_tags": "new"})
        )
        assert_rolled_back(run, "commit")
        assert_restored(root, before)


def test_full_filesystem_rolls_back(node_pem: str, tmp_path: Path) -> None:
    """On a 64 KiB tmpfs a 100 KiB value cannot be staged (ENOSPC): exit 6, old state back."""
    with mounted_tmpfs(tmp_path / "small", "64k") as root:
        install(root, make_document(node_pem))
        before = snapshot(root)
        document = make_document(node_pem, ssconf={"node_list": "n" * (100 * 1024)})
        run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(document))
        assert_rolled_back(run, "stage")
        assert "No space left on device" in run.result["error"]
        assert_restored(root, before)


def test_full_filesystem_on_empty_root_removes_created_dirs(node_pem: str, tmp_path: Path) -> None:
    """A first install that fails on a full filesystem removes the var/lib/ganeti it created."""
    with mounted_tmpfs(tmp_path / "small", "64k") as root:
        before = snapshot(root)
        document = make_document(node_pem, ssconf={"node_list": "n" * (100 * 1024)})
        run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(document))
        assert_rolled_back(run, "stage")
        assert not (root / GANETI).exists()
        assert_restored(root, before)


def test_injected_rename_error_on_empty_root_removes_created_dirs(
    node_pem: str, root: Path
) -> None:
    """EIO on the first rename of a first install: exit 6 and var/lib/ganeti is gone again."""
    before = snapshot(root)
    run = run_under_strace(root, make_document(node_pem), "error=EIO:when=1")
    assert_rolled_back(run, "commit")
    assert not (root / GANETI).exists()
    assert_restored(root, before)


def test_held_ssconf_lock_fails_commit_on_empty_root(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Ganeti's ssconf lock held past --lock-timeout fails commit: exit 6, created dirs removed."""
    before = snapshot(root)
    with held(root / "var/lock/ganeti-ssconf.lock"):
        run = setup_run(make_document(node_pem), "--lock-timeout", "0.3")
    assert_rolled_back(run, "commit")
    assert "ganeti-ssconf.lock" in run.result["error"]
    assert not (root / GANETI).exists()
    assert_restored(root, before)


def test_injected_rename_error_midway_through_commit_rolls_back(node_pem: str, root: Path) -> None:
    """EIO on commit's second rename (the first already done) puts every file back: exit 6."""
    install(root, make_document(node_pem))
    before = snapshot(root)
    document = make_document(
        node_pem, ssconf={"master_ip": "192.0.2.9", "release_version": "3.1.0"}
    )
    run = run_under_strace(root, document, "error=EIO:when=2")
    assert_rolled_back(run, "commit")
    assert "Input/output error" in run.result["error"]
    assert_restored(root, before)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_waiting_for_the_lock_exits_6(
    signum: signal.Signals, node_pem: str, root: Path
) -> None:
    """SIGTERM or SIGINT while the run waits for the lock: exit 6, and nothing changed."""
    install(root, make_document(node_pem))
    before = snapshot(root)
    with held(root / "var/lock/txsetup.lock"):
        proc = start_setup(
            root,
            encode(make_document(node_pem, ssconf={"master_ip": "192.0.2.9"})),
            "--lock-timeout",
            "60",
        )
        seen = read_until_lock_step(proc)
        time.sleep(0.3)  # well inside filelock's polling wait by now
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    run = parse_run(proc.returncode, stdout.decode(), (seen + stderr).decode())
    assert_rolled_back(run, "lock")
    assert run.result["error_code"] == "interrupted"
    assert signum.name in run.result["error"]
    assert_restored(root, before)


def test_master_gone_mid_commit_still_finishes_the_transaction(node_pem: str, root: Path) -> None:
    """stderr closed while commit waits (SSH dropped): the node still ends fully new, closed."""
    install(root, make_document(node_pem))
    with held(root / "var/lock/ganeti-ssconf.lock"):
        proc = start_setup(root, encode(make_document(node_pem, ssconf={"master_ip": "192.0.2.9"})))
        assert proc.stderr is not None
        while True:
            line = proc.stderr.readline()
            assert line, "run ended before commit"
            event = json.loads(line)
            if (event["event"], event.get("step")) == ("step.begin", "commit"):
                break
        proc.stderr.close()
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert ssconf(root, "master_ip").read_bytes() == b"192.0.2.9\n"
    assert state_dir_leftovers(root) == []
    records = read_journal(root / "var/lib/txsetup/journal")
    assert records[-1].state is TxnState.DONE
    resumed = run_txsetup(["node-daemon-setup", "--root", str(root), "--resume"])
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "nothing_to_resume")


def test_failed_result_names_the_failed_step(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """The result's ``steps`` of a failed run say which step failed and which were compensated."""
    install(root, make_document(node_pem))
    run = fail_in_stage(root, make_document(node_pem, ssconf={"offline_nodes": "node3\n"}))
    assert run.returncode == 6
    assert {s["name"]: s["state"] for s in run.result["steps"]} == {
        "lock": "compensated",
        "decode": "done",
        "verify_cluster": "done",
        "verify_cert": "done",
        "stage": "failed",
        "commit": "pending",
        "restart_daemon": "pending",
    }


# --- successful runs ----------------------------------------------------------------------------


def test_first_install_creates_var_lib_ganeti(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """On an empty root the first run creates var/lib/ganeti and each file with its mode."""
    run = setup_run(make_document(node_pem, hmac_key="hmac-secret-1"))
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    ganeti = root / GANETI
    assert oct(ganeti.stat().st_mode & 0o7777) == oct(0o755)
    modes = {p.name: oct(p.stat().st_mode & 0o7777) for p in ganeti.iterdir()}
    assert modes == {
        "ssconf_cluster_name": "0o444",
        "ssconf_master_ip": "0o444",
        "ssconf_master_netdev": "0o444",
        "ssconf_node_list": "0o444",
        "ssconf_release_version": "0o444",
        "server.pem": "0o440",
        "hmac.key": "0o440",
    }
    assert sorted(run.result["changed"]) == sorted(f"{GANETI}/{n}" for n in modes)
    assert oct((root / "var/lib/txsetup").stat().st_mode & 0o7777) == oct(0o700)
    assert state_dir_leftovers(root) == []


def test_idempotent_rerun_touches_no_inode_or_mtime(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """Re-running the same document converges and leaves every file's inode and mtime alone."""
    document = make_document(node_pem)
    install(root, document)
    files = sorted((root / GANETI).iterdir())
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    run = setup_run(document)
    assert (run.returncode, run.result["outcome"], run.result["changed"]) == (0, "converged", [])
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert after == before
    assert state_dir_leftovers(root) == []


def test_one_changed_value_rewrites_only_that_file(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """With one value changed only that file is in ``changed``; every other keeps its inode."""
    install(root, make_document(node_pem))
    before = snapshot(root)
    run = setup_run(make_document(node_pem, ssconf={"master_netdev": "eth1"}))
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] == [f"{GANETI}/ssconf_master_netdev"]
    after = snapshot(root)
    changed = f"{GANETI}/ssconf_master_netdev"
    assert after[changed].content == b"eth1\n"
    assert after[changed].ino != before[changed].ino
    assert {k: v for k, v in inodes(after).items() if k != changed} == {
        k: v for k, v in inodes(before).items() if k != changed
    }


def test_right_content_with_wrong_mode_is_rewritten_0444(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A file with the right bytes but mode 0644 is replaced by the same bytes at 0444."""
    install(root, make_document(node_pem))
    target = ssconf(root, "master_ip")
    target.chmod(0o644)
    run = setup_run(make_document(node_pem))
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    assert run.result["changed"] == [f"{GANETI}/ssconf_master_ip"]
    assert target.read_bytes() == b"192.0.2.1\n"
    assert oct(target.stat().st_mode & 0o7777) == oct(0o444)


def test_dry_run_on_a_populated_root_changes_nothing(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """--dry-run plans create, replace (bytes or mode) and unchanged; the root is left as it was."""
    install(root, make_document(node_pem))
    ssconf(root, "master_netdev").chmod(0o644)
    before = snapshot(root, skip=())
    document = make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "uid_pool": "1-9"})
    run = setup_run(document, "--dry-run")
    assert (run.returncode, run.result["outcome"]) == (0, "dry_run")
    actions = {p["path"].removeprefix(f"{GANETI}/"): p["action"] for p in run.result["plan"]}
    assert actions == {
        "ssconf_cluster_name": "unchanged",
        "ssconf_master_ip": "replace",
        "ssconf_master_netdev": "replace",
        "ssconf_node_list": "unchanged",
        "ssconf_release_version": "unchanged",
        "ssconf_uid_pool": "create",
        "server.pem": "unchanged",
    }
    assert run.result["changed"] == []
    assert snapshot(root, skip=()) == before
    assert inodes(snapshot(root, skip=())) == inodes(before)


def test_dry_run_on_a_bare_root_creates_nothing_at_all(node_pem: str, tmp_path: Path) -> None:
    """On a root with nothing in it a dry run creates no var/lock, var/lib/txsetup or target dir."""
    bare = tmp_path / "bare"
    bare.mkdir()
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(bare), "--dry-run"],
        stdin=encode(make_document(node_pem)),
    )
    assert (run.returncode, run.result["outcome"]) == (0, "dry_run")
    assert {p["action"] for p in run.result["plan"]} == {"create"}
    assert list(bare.iterdir()) == []


def test_resume_with_nothing_pending_is_nothing_to_resume(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """--resume after a finished transaction exits 0 with outcome nothing_to_resume, no change."""
    install(root, make_document(node_pem))
    before = snapshot(root)
    run = setup_run(None, "--resume")
    assert (run.returncode, run.result["outcome"]) == (0, "nothing_to_resume")
    assert_restored(root, before)


def test_abort_without_resume_is_a_usage_error(node_pem: str, setup_run: SetupRun) -> None:
    """--abort alone is exit 2 and reads no document."""
    run = setup_run(make_document(node_pem), "--abort")
    assert run.returncode == 2
    assert run.result["outcome"] == "failed"
    assert "--resume" in run.result["error"]


# --- property: any real failure leaves exactly the old file set -------------------------------

POOL = sorted(SSCONF_KEYS - {"cluster_name"})
CAUSES = ("fsync_eio", "immutable_file", "immutable_dir", "rename_eio", "ssconf_lock")
VALUES = st.text(alphabet="abcxyz019.:-\n", max_size=12)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], str, str, int]:
    """Old and new ssconf values, a key that surely changes, a cause and its parameter."""
    old = draw(st.dictionaries(st.sampled_from(POOL), VALUES, max_size=6))
    new = draw(st.dictionaries(st.sampled_from(POOL), VALUES, max_size=6))
    changing = draw(st.sampled_from(POOL))
    old[changing] = "old-" + old.get(changing, "")
    new[changing] = "new-" + new.get(changing, "")
    cause = draw(st.sampled_from(CAUSES))
    nth = draw(st.integers(min_value=1, max_value=8))
    return old, new, changing, cause, nth


def node_document(pem: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A document with exactly these ssconf values (and the cluster name)."""
    return {
        "cluster_name": CLUSTER,
        "node_daemon_certificate": pem,
        "ssconf": {"cluster_name": CLUSTER, **values},
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_any_real_failure_leaves_exactly_the_old_file_set(
    node_pem: str, scenario: tuple[dict[str, str], dict[str, str], str, str, int]
) -> None:
    """Random old and new documents and a random real failure cause: the file set is the old one."""
    old, new, changing, cause, nth = scenario
    with tempfile.TemporaryDirectory() as name:
        root = Path(name) / "root"
        (root / "var/lib").mkdir(parents=True)
        (root / "var/lock").mkdir()
        install(root, node_document(node_pem, old))
        args = ["node-daemon-setup", "--root", str(root), "--lock-timeout", "0.3"]
        before = snapshot(root)
        document = node_document(node_pem, new)
        if cause == "immutable_file":
            with immutable(ssconf(root, changing)):
                run = run_txsetup(args, stdin=encode(document))
        elif cause == "immutable_dir":
            with immutable(root / GANETI):
                run = run_txsetup(args, stdin=encode(document))
        elif cause == "ssconf_lock":
            with held(root / "var/lock/ganeti-ssconf.lock"):
                run = run_txsetup(args, stdin=encode(document))
        else:
            changes = sum(
                1
                for k, v in new.items()
                if k not in old or ssconf_content(old[k]) != ssconf_content(v)
            )
            if cause == "rename_eio":
                run = run_under_strace(root, document, f"error=EIO:when={min(nth, changes)}")
            else:  # an fsync of stage: a staged copy's, or the staging directory's
                run = fail_in_stage(root, document, when=min(nth, changes + 1))
        assert run.returncode == 6, run.stderr
        assert run.result["outcome"] == "rolled_back"
        assert_restored(root, before)
