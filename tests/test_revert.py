"""Revert and commit confirmed, end to end: the installed CLI, the real demo daemon, real TLS.

``txsetup revert TXID`` puts back the files the last commit replaced (and
removes those it created) and brings the daemon back to what it ran and
served before; ``--confirm-within`` makes a commit wait for ``txsetup
confirm``, and the node reverts it by itself when none comes in time: by a
transient systemd timer where systemd runs (here a stand-in ``systemd-run``
on ``PATH``, a process boundary, that records what it was asked), by a
detached process elsewhere, and at the next run when neither fired.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import (
    HANG_SECONDS,
    Entry,
    Run,
    encode,
    make_document,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
    txsetup_exe,
)
from tests.sshdoc import counting_reload, reload_count, ssh_document, write_sshd_config
from tests.test_restart import GOOD_HMAC, NEW_SSCONF, Node, fingerprint, renewed


@pytest.fixture
def node(root: Path, tmp_path: Path) -> Iterator[Node]:
    """A node root with a demo-daemon config; the daemon is always stopped afterwards."""
    node = Node(root, tmp_path / "config.toml")
    node.write_config()
    try:
        yield node
    finally:
        node.noded("stop")


@pytest.fixture(scope="module")
def new_pem(node_pem: str) -> str:
    """A renewed certificate for the cluster's key: accepted by the node, new fingerprint."""
    return renewed(node_pem)


@pytest.fixture
def systemd(node: Node, tmp_path: Path) -> dict[str, str]:
    """systemd as the init system, with a stand-in systemd-run (:func:`fake_systemd`)."""
    return fake_systemd(node.root, tmp_path)


def fake_systemd(root: Path, tmp_path: Path) -> dict[str, str]:
    """systemd as the init system (``<root>/run/systemd/system``) and a stand-in
    ``systemd-run`` that records its arguments and arms nothing: the env to run with."""
    (root / "run/systemd/system").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-run"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{tmp_path / 'timer-args'}'\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def timer_argv(tmp_path: Path) -> list[str]:
    """What the stand-in systemd-run was asked to run."""
    return (tmp_path / "timer-args").read_text().splitlines()


def setup(
    node: Node, document: dict[str, object], *extra: str, env: dict[str, str] | None = None
) -> Run:
    """``txsetup node-daemon-setup`` on the node, with its config."""
    argv = ["node-daemon-setup", "--root", str(node.root), "--config", str(node.config), *extra]
    return run_txsetup(argv, stdin=encode(document), env=env)


def verb(node: Node, *args: str, env: dict[str, str] | None = None) -> Run:
    """``txsetup commit|abort|confirm|revert ...`` on the node, with its config."""
    return run_txsetup([*args, "--root", str(node.root), "--config", str(node.config)], env=env)


def old_document(pem: str) -> dict[str, object]:
    """The first install: certificate A, the daemon started."""
    return make_document(pem, start_node_daemon=True, hmac_key=GOOD_HMAC)


def new_document(pem: str) -> dict[str, object]:
    """An update: the renewed certificate, one ssconf value changed."""
    return make_document(pem, start_node_daemon=True, hmac_key=GOOD_HMAC, ssconf=NEW_SSCONF)


def installed_twice(node: Node, old_pem: str, new_pem: str) -> tuple[dict[str, Entry], str]:
    """A's files with the daemon on A, then B committed: A's snapshot and B's txid."""
    assert setup(node, old_document(old_pem)).result["outcome"] == "committed"
    old = node.files()
    committed = setup(node, new_document(new_pem))
    assert committed.result["outcome"] == "committed", committed.stderr
    assert node.served() == fingerprint(new_pem)
    return old, committed.result["txid"]


def deadline_of(run: Run) -> datetime:
    """The deadline an unconfirmed commit's result gives."""
    return datetime.fromisoformat(run.result["unconfirmed"]["deadline"])


def wait_past(deadline: datetime) -> None:
    """Sleep until the wall clock is past ``deadline`` (what the node compares with)."""
    while (left := (deadline - datetime.now(UTC)).total_seconds()) >= 0:
        time.sleep(left + 0.05)


# --- revert --------------------------------------------------------------------------------


def test_revert_puts_back_the_files_and_the_daemon_on_its_old_certificate(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """revert TXID of the last commit: A's files exactly (bytes, mode, owner), the daemon
    serving A again, no copy left; status names it; repeating reports it again; confirm
    after it is 4; the next commit is revertable in its turn."""
    old, txid = installed_twice(node, node_pem, new_pem)
    status = run_txsetup(["status", "--root", str(node.root)]).result
    assert status["revertable"]["txid"] == txid
    reverted = verb(node, "revert", txid)
    assert (reverted.returncode, reverted.result["outcome"]) == (0, "reverted"), reverted.stderr
    assert reverted.result["reverted"] == txid
    assert "var/lib/ganeti/server.pem" in reverted.result["changed"]
    assert "txn.reverted" in reverted.event_names()
    assert node.files() == old
    assert node.served() == fingerprint(node_pem)
    assert state_dir_leftovers(node.root) == []
    again = verb(node, "revert", txid)
    assert (again.returncode, again.result["outcome"]) == (0, "reverted")
    assert node.files() == old
    status = run_txsetup(["status", "--root", str(node.root)]).result
    assert status["revertable"] is None
    last = status["last_transaction"]
    assert (last["outcome"], last["reverts"], last["program"]) == ("reverted", txid, "revert")
    assert verb(node, "confirm", txid).returncode == 4
    recommitted = setup(node, new_document(new_pem))
    assert recommitted.result["outcome"] == "committed"
    assert verb(node, "revert", recommitted.result["txid"]).result["outcome"] == "reverted"


def test_revert_of_a_first_install_removes_its_files_and_stops_the_daemon(
    node: Node, node_pem: str
) -> None:
    """A commit on a fresh node reverted: every file and directory it created is gone and
    the daemon, which did not run before, is stopped."""
    before = node.files()
    txid = setup(node, old_document(node_pem)).result["txid"]
    assert node.running()
    reverted = verb(node, "revert", txid)
    assert reverted.result["outcome"] == "reverted", reverted.stderr
    assert node.files() == before
    assert not node.running()


def test_revert_is_refused_when_a_file_changed_or_it_is_not_the_last_commit(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A file changed by hand since the commit: exit 4 naming it, nothing touched; an
    earlier commit than the last, or a txid never seen: exit 4."""
    first = setup(node, old_document(node_pem)).result["txid"]
    txid = setup(node, new_document(new_pem)).result["txid"]
    assert verb(node, "revert", first).returncode == 4
    assert verb(node, "revert", "20260101T000000Z-00000000").returncode == 4
    (node.root / "var/lib/ganeti/ssconf_master_ip").write_text("198.51.100.1\n")
    touched = snapshot(node.root, skip=("var/lock", "var/run", "var/log"))
    refused = verb(node, "revert", txid)
    assert (refused.returncode, refused.result["error_code"]) == (4, "decision_refused")
    assert "var/lib/ganeti/ssconf_master_ip" in refused.result["error"]
    assert snapshot(node.root, skip=("var/lock", "var/run", "var/log")) == touched
    assert node.served() == fingerprint(new_pem)


def test_a_revert_whose_daemon_fails_is_undone_and_can_be_tried_again(
    node: Node, node_pem: str, new_pem: str, tmp_path: Path
) -> None:
    """The restart with the old files fails once: the revert is undone (exit 6), the new
    files and certificate stay, the kept files too; the next revert succeeds."""
    old, txid = installed_twice(node, node_pem, new_pem)
    flag = tmp_path / "fail-once"
    once = ["sh", "-c", f"if [ -e '{flag}' ]; then rm '{flag}'; exit 1; fi"]
    node.write_config(restart=[node.noded_argv("restart"), once])
    new = node.files()
    flag.touch()
    failed = verb(node, "revert", txid)
    assert (failed.returncode, failed.result["error_code"]) == (6, "rolled_back"), failed.stdout
    assert node.files() == new
    assert node.served() == fingerprint(new_pem)
    assert verb(node, "revert", txid).result["outcome"] == "reverted"
    assert node.files() == old
    assert node.served() == fingerprint(node_pem)


def test_the_earlier_files_are_kept_through_refused_aborted_and_rolled_back_runs(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """After a commit: a refused run, a prepare and its abort, a run rolled back (its
    daemon fails) and a --resume leave the commit revertable."""
    old, txid = installed_twice(node, node_pem, new_pem)
    assert setup(node, {**new_document(new_pem), "cluster_name": "other.example"}).returncode == 4
    prepared = setup(node, new_document(node_pem), "--prepare")
    assert verb(node, "abort", prepared.result["txid"]).result["outcome"] == "aborted"
    bad = make_document(node_pem, start_node_daemon=True, hmac_key="short")
    assert setup(node, bad).returncode == 6
    assert node.resume().result["outcome"] == "nothing_to_resume"
    assert verb(node, "revert", txid).result["outcome"] == "reverted"
    assert node.files() == old


# --- commit confirmed ----------------------------------------------------------------------


def test_an_unconfirmed_commit_holds_the_node_until_confirmed(
    node: Node, node_pem: str, new_pem: str, systemd: dict[str, str], tmp_path: Path
) -> None:
    """--confirm-within: committed with a deadline and a systemd timer that runs revert
    --if-unconfirmed; every other run (dry run too) is 5 naming confirm; confirm keeps it,
    again too; the timer firing afterwards changes nothing."""
    setup(node, old_document(node_pem))
    committed = setup(node, new_document(new_pem), "--confirm-within", "600", env=systemd)
    assert committed.result["outcome"] == "committed", committed.stderr
    txid = committed.result["txid"]
    assert committed.result["unconfirmed"]["timer"] == "systemd"
    argv = timer_argv(tmp_path)
    assert f"--unit=txsetup-confirm-{txid}" in argv
    assert argv[argv.index("revert") + 1 :][:2] == [txid, "--if-unconfirmed"]
    assert 590 <= int(next(a for a in argv if a.startswith("--on-active="))[12:]) <= 600
    status = run_txsetup(["status", "--root", str(node.root)]).result
    assert status["last_transaction"]["outcome"] == "unconfirmed"
    for extra in ((), ("--dry-run",)):
        held = setup(node, new_document(new_pem), *extra)
        assert (held.returncode, held.result["error_code"]) == (5, "held"), extra
        assert f"txsetup confirm {txid}" in held.result["error"]
    new = node.files()
    confirmed = verb(node, "confirm", txid)
    assert (confirmed.returncode, confirmed.result["outcome"]) == (0, "confirmed")
    assert "txn.confirmed" in confirmed.event_names()
    assert verb(node, "confirm", txid).result["outcome"] == "confirmed"
    command = argv[argv.index("revert") - 3 :]  # python -m txsetup revert ...
    fired = subprocess.run(command, capture_output=True, timeout=HANG_SECONDS, check=False)
    assert fired.returncode == 0, fired.stderr
    assert json.loads(fired.stdout)["outcome"] == "confirmed"
    assert node.files() == new
    assert setup(node, new_document(new_pem)).result["outcome"] == "converged"


def test_a_deadline_that_passed_while_nothing_ran_reverts_at_the_next_run(
    node: Node, node_pem: str, new_pem: str, systemd: dict[str, str]
) -> None:
    """The timer never fires (the node was down): once the deadline is past, --resume
    reverts (reason not confirmed), and confirm is then refused with exit 4."""
    setup(node, old_document(node_pem))
    old = node.files()
    committed = setup(node, new_document(new_pem), "--confirm-within", "1", env=systemd)
    txid = committed.result["txid"]
    wait_past(deadline_of(committed))
    resumed = node.resume()
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "reverted"), resumed.stderr
    assert resumed.result["recovered"] == [{"txid": txid, "action": "reverted"}]
    assert node.files() == old
    assert node.served() == fingerprint(node_pem)
    last = run_txsetup(["status", "--root", str(node.root)]).result["last_transaction"]
    assert last["reason"]["error"] == "reverted: not confirmed"
    late = verb(node, "confirm", txid)
    assert (late.returncode, late.result["error_code"]) == (4, "decision_refused")


def test_a_run_after_the_deadline_reverts_first_then_runs(
    node: Node, node_pem: str, new_pem: str, systemd: dict[str, str]
) -> None:
    """A plain run after a missed deadline: its lock step reverts the commit, then the run
    commits its own document."""
    setup(node, old_document(node_pem))
    committed = setup(node, new_document(new_pem), "--confirm-within", "1", env=systemd)
    wait_past(deadline_of(committed))
    again = setup(node, new_document(new_pem))
    assert again.result["outcome"] == "committed", again.stderr
    assert again.result["recovered"] == [{"txid": committed.result["txid"], "action": "reverted"}]
    assert node.served() == fingerprint(new_pem)


def test_without_systemd_a_detached_process_reverts_at_the_deadline(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """No systemd: the timer is a detached process that outlives the run and reverts the
    commit once its deadline passed, with nothing else running on the node."""
    setup(node, old_document(node_pem))
    old = node.files()
    committed = setup(node, new_document(new_pem), "--confirm-within", "1")
    assert committed.result["unconfirmed"]["timer"] == "process", committed.stderr
    give_up = time.monotonic() + HANG_SECONDS + 2
    while time.monotonic() < give_up:
        last = run_txsetup(["status", "--root", str(node.root)]).result["last_transaction"]
        if last["outcome"] == "reverted":
            break
        time.sleep(0.2)
    assert last["outcome"] == "reverted", last
    assert last["reverts"] == committed.result["txid"]
    assert node.files() == old
    assert node.served() == fingerprint(node_pem)


def test_commit_confirmed_of_a_prepared_transaction_and_the_override(
    node: Node, node_pem: str, new_pem: str, systemd: dict[str, str]
) -> None:
    """commit TXID --confirm-within on a held node commits it unconfirmed; --resume
    --abort then reverts it at once as the operator's override."""
    setup(node, old_document(node_pem))
    old = node.files()
    txid = setup(node, new_document(new_pem), "--prepare").result["txid"]
    committed = verb(node, "commit", txid, "--confirm-within", "600", env=systemd)
    assert committed.result["outcome"] == "committed", committed.stderr
    assert committed.result["unconfirmed"]["timer"] == "systemd"
    assert node.served() == fingerprint(new_pem)
    override = node.resume(abort=True)
    assert (override.returncode, override.result["outcome"]) == (0, "reverted"), override.stderr
    assert "txn.override" in override.event_names()
    assert node.files() == old
    assert verb(node, "confirm", txid).returncode == 4


def test_confirm_within_usage(node: Node, node_pem: str) -> None:
    """--confirm-within takes positive seconds up to a week, and not with --prepare,
    --dry-run or --resume (exit 2); confirm of a commit never made is 4."""
    document = old_document(node_pem)
    for bad in ("0", "-1", "nan", "x", str(8 * 24 * 3600)):
        assert setup(node, document, "--confirm-within", bad).returncode == 2, bad
    for extra in ("--prepare", "--dry-run"):
        assert setup(node, document, extra, "--confirm-within", "5").returncode == 2
    assert verb(node, "confirm", "20260101T000000Z-00000000").returncode == 4


# --- ssh-setup -----------------------------------------------------------------------------


def test_ssh_setup_prepare_commit_confirm_and_revert(root: Path, tmp_path: Path) -> None:
    """ssh-setup takes the same verbs: a prepared change committed to be confirmed, then
    confirmed, then reverted: the earlier host keys back, sshd reloaded for them."""
    write_sshd_config(root, reload=counting_reload(root), status=["true"], health_address="none")
    ssh = ["ssh-setup", "--root", str(root)]
    assert run_txsetup(ssh, stdin=encode(ssh_document(label="a"))).returncode == 0
    old = snapshot(root, skip=("var/lock", "var/lib/txsetup", "run"))
    reloads = reload_count(root)
    prepared = run_txsetup([*ssh, "--prepare"], stdin=encode(ssh_document(label="b")))
    txid = prepared.result["txid"]
    assert (prepared.returncode, prepared.result["outcome"]) == (0, "prepared"), prepared.stderr
    committed = run_txsetup(
        ["commit", txid, "--root", str(root), "--confirm-within", "600"],
        env=fake_systemd(root, tmp_path),
    )
    assert committed.result["outcome"] == "committed", committed.stderr
    assert reload_count(root) == reloads + 1
    assert run_txsetup(["confirm", txid, "--root", str(root)]).result["outcome"] == "confirmed"
    reverted = run_txsetup(["revert", txid, "--root", str(root)])
    assert reverted.result["outcome"] == "reverted", reverted.stderr
    assert snapshot(root, skip=("var/lock", "var/lib/txsetup", "run")) == old
    assert reload_count(root) == reloads + 2


# --- the Debian package's boot-time unit ---------------------------------------------------

BOOT_UNIT = Path(__file__).parent.parent / "debian/txsetup.txsetup-recover.service"


def boot_unit_commands() -> list[list[str]]:
    """The unit's ExecStartPre and ExecStart, with this txsetup for /usr/bin/txsetup."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(BOOT_UNIT)
    commands = []
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(parser["Service"][key].lstrip("-"))
        assert argv[0] == "/usr/bin/txsetup"
        commands.append([txsetup_exe(), *argv[1:]])
    return commands


def test_the_boot_unit_reverts_a_commit_whose_timer_died_with_the_reboot(
    node: Node, node_pem: str, new_pem: str, systemd: dict[str, str]
) -> None:
    """The boot unit's commands, on a node rebooted within a commit's window (its timer
    gone): the resume is refused (held, ignored by the unit), then the unit waits for the
    deadline and reverts; run again, it finds nothing waiting."""
    (node.root / "etc/txsetup").mkdir(parents=True)
    node.write_config(node.root / "etc/txsetup/config.toml")
    env = {**os.environ, "TXSETUP_ROOT": str(node.root)}
    setup(node, old_document(node_pem))
    old = node.files()
    committed = setup(node, new_document(new_pem), "--confirm-within", "2", env=systemd)
    resume, wait_and_revert = boot_unit_commands()
    held = subprocess.run(resume, env=env, capture_output=True, timeout=120, check=False)
    assert held.returncode == 5, held.stdout
    reverted = subprocess.run(
        wait_and_revert, env=env, capture_output=True, timeout=120, check=False
    )
    result = json.loads(reverted.stdout)
    assert (result["outcome"], result["reverted"]) == ("reverted", committed.result["txid"])
    assert result["reason"] == "not confirmed"
    assert node.files() == old
    again = subprocess.run(wait_and_revert, env=env, capture_output=True, timeout=120, check=False)
    assert json.loads(again.stdout)["outcome"] == "nothing_to_revert"
