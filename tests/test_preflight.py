"""Preflight: a program the run would start is missing → exit 4, nothing written, never stuck.

End to end through the installed console scripts, with real files and a real
``PATH``; only the Ganeti layout hint is proven with a ``ganeti_dir`` under
``tmp_path`` (nothing is created under the real ``/usr/lib/ganeti``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import encode, make_document, run_txsetup, snapshot, txsetup_exe
from tests.sshdoc import ssh_document, write_sshd_config
from txsetup.node.config import Config, DaemonConfig, SshdConfig
from txsetup.node.preflight import MissingProgram, Preflight, programs_of
from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.txn.journal import read_journal

CONFIG = "etc/txsetup/config.toml"
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"


def node_root(tmp_path: Path) -> Path:
    """A fresh node: ``var/lib`` and ``var/lock``, nothing of ours."""
    root = tmp_path / "node"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()
    return root


def write_daemon(root: Path, restart: str, *, status: str = "true") -> Path:
    """``[daemon]`` at the default config path: ``restart`` runs ``restart``, the rest ``true``."""
    path = root / CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[daemon]\nrestart = [["{restart}"]]\nstop = [["true"]]\n'
        f'status = ["{status}"]\nhealth_url = "none"\n'
    )
    return path


def executable(path: Path, body: str = "exit 0", mode: int = 0o755) -> Path:
    """A shell script at ``path`` with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def assert_refused(run_result: dict[str, object], *words: str) -> str:
    """Exit 4 with ``missing_program``, and an error naming each of ``words``."""
    assert run_result["exit_code"] == 4, run_result
    assert run_result["error_code"] == "missing_program"
    error = str(run_result["error"])
    assert "\n" not in error
    for word in words:
        assert word in error, (word, error)
    return error


@pytest.mark.parametrize("start", [True, False], ids=["restart", "no-restart"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_missing_configured_restart_program_is_refused_before_any_write(
    tmp_path: Path, node_pem: str, start: bool, dry_run: bool
) -> None:
    """A config naming a restart program that does not exist: exit 4 naming it, its key and the
    file, whatever the document asks, and the root unchanged (no lock file, no state dir)."""
    root = node_root(tmp_path)
    missing = tmp_path / "bin" / "restart-noded"
    config = write_daemon(root, str(missing))
    before = snapshot(root, skip=())
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root), *(["--dry-run"] if dry_run else [])],
        stdin=encode(make_document(node_pem, start_node_daemon=start)),
    )
    assert_refused(run.result, str(missing), "[daemon] restart", str(config), "does not exist")
    assert snapshot(root, skip=()) == before
    assert not (root / "var/lock/txsetup.lock").exists()
    assert not (root / "var/lib/txsetup").exists()


def interrupted_restart(root: Path, pem: str) -> str:
    """A run killed (SIGKILL, by its own restart command) after commit: the journal is left
    unfinished in ``restarting_daemon``. Returns its txid."""
    write_daemon(root, "sh", status="false")
    config = root / CONFIG
    config.write_text(config.read_text().replace('[["sh"]]', '[["sh", "-c", "kill -9 $PPID"]]'))
    proc = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root)],
        input=encode(make_document(pem, start_node_daemon=True)),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    records = read_journal(root / "var/lib/txsetup/journal")
    assert records[-1].state == DAEMON.state
    return records[-1].txid


@pytest.mark.parametrize("abort", [False, True], ids=["resume", "resume-abort"])
def test_resume_with_a_missing_program_leaves_the_journal_for_later(
    tmp_path: Path, node_pem: str, abort: bool
) -> None:
    """``--resume`` of a transaction whose recovery would run a missing program: exit 4 saying
    what to configure, the root (journal included) untouched; once configured, it finishes."""
    root = node_root(tmp_path)
    txid = interrupted_restart(root, node_pem)
    missing = tmp_path / "gone" / "restart"
    config = write_daemon(root, str(missing))
    before = snapshot(root, skip=())
    flags = ["--resume", *(["--abort"] if abort else [])]
    run = run_txsetup(["node-daemon-setup", "--root", str(root), *flags])
    assert_refused(
        run.result, str(missing), "[daemon] restart", f"set [daemon] restart in {config}"
    )
    assert snapshot(root, skip=()) == before

    write_daemon(root, "true")
    run = run_txsetup(["node-daemon-setup", "--root", str(root), *flags])
    assert run.returncode == 0, run.result
    assert run.result["txid"] == txid
    assert run.result["outcome"] == ("rolled_back" if abort else "resumed")


def test_a_bare_name_is_looked_up_on_path(tmp_path: Path, node_pem: str) -> None:
    """A bare program name is found on ``PATH`` as the run would start it, and run; not on
    ``PATH``, it is refused as such."""
    root = node_root(tmp_path)
    ran = tmp_path / "restarted"
    bindir = tmp_path / "bin"
    executable(bindir / "restart-noded", f"touch '{ran}'")
    write_daemon(root, "restart-noded")
    document = encode(make_document(node_pem, start_node_daemon=True))
    args = ["node-daemon-setup", "--root", str(root)]

    refused = run_txsetup(args, stdin=document)
    assert_refused(refused.result, "restart-noded ([daemon] restart) is not on PATH")
    assert not ran.exists()

    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    run = run_txsetup(args, stdin=document, env={"PATH": path})
    assert run.returncode == 0, run.result
    assert run.result["outcome"] == "committed"
    assert ran.exists()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: executable(p, mode=0o644), "is not executable"),
        (lambda p: p.mkdir(), "is not a regular file"),
        (lambda p: p.symlink_to(p.parent / "nowhere"), "is a dangling symlink"),
    ],
    ids=["not-executable", "directory", "dangling-symlink"],
)
def test_a_path_that_cannot_be_run_is_refused(
    tmp_path: Path, node_pem: str, make: Callable[[Path], object], why: str
) -> None:
    """A configured path that is not an executable regular file is refused, saying why."""
    root = node_root(tmp_path)
    program = tmp_path / "restart"
    make(program)
    write_daemon(root, str(program))
    before = snapshot(root, skip=())
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)],
        stdin=encode(make_document(node_pem, start_node_daemon=True)),
    )
    assert_refused(run.result, f"{program} ([daemon] restart) {why}")
    assert snapshot(root, skip=()) == before


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_ssh_setup_with_a_missing_reload_program_is_refused(tmp_path: Path, dry_run: bool) -> None:
    """ssh-setup whose ``[sshd] reload`` names a missing program: exit 4, nothing written."""
    root = node_root(tmp_path)
    missing = tmp_path / "reload-sshd"
    config = write_sshd_config(root, reload=[str(missing)], status=["true"], health_address="none")
    before = snapshot(root, skip=())
    run = run_txsetup(
        ["ssh-setup", "--root", str(root), *(["--dry-run"] if dry_run else [])],
        stdin=encode(ssh_document()),
    )
    assert_refused(run.result, str(missing), "[sshd] reload", str(config))
    assert snapshot(root, skip=()) == before


def test_every_missing_program_is_reported_at_once(tmp_path: Path, node_pem: str) -> None:
    """Two missing programs: one refusal naming both, each once with all the keys naming it."""
    root = node_root(tmp_path)
    gone = tmp_path / "gone"
    (root / "etc/txsetup").mkdir(parents=True)
    (root / CONFIG).write_text(
        f'[daemon]\nrestart = [["{gone}/ctl", "stop"], ["{gone}/ctl", "start"]]\n'
        f'stop = [["{gone}/ctl", "stop"]]\nstatus = ["{gone}/check"]\n'
    )
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root), "--dry-run"],
        stdin=encode(make_document(node_pem, start_node_daemon=True)),
    )
    error = assert_refused(run.result, "2 programs this run needs are missing")
    assert f"{gone}/ctl ([daemon] restart, stop) does not exist" in error
    assert f"{gone}/check ([daemon] status) does not exist" in error
    assert error.count(f"{gone}/ctl") == 1


def test_the_default_configuration_follows_the_ganeti_package(
    tmp_path: Path, node_pem: str
) -> None:
    """No config file: Ganeti's daemon-util is needed only when the document asks for a
    restart; a node without it (this one has ganeti-3.0 alone) is refused with what to install."""
    root = node_root(tmp_path)
    dry = ["node-daemon-setup", "--root", str(root), "--dry-run"]
    no_restart = run_txsetup(dry, stdin=encode(make_document(node_pem)))
    assert no_restart.returncode == 0, no_restart.result

    run = run_txsetup(dry, stdin=encode(make_document(node_pem, start_node_daemon=True)))
    if os.access(DAEMON_UTIL, os.X_OK):  # the ganeti package is installed
        assert run.returncode == 0, run.result
        return
    error = assert_refused(
        run.result,
        f"{DAEMON_UTIL} ([daemon] restart, stop, status) does not exist",
        '"apt-get install ganeti"',
        f"set [daemon] restart, stop, status in {root / CONFIG}",
    )
    versioned = "/usr/lib/ganeti/3.0/usr/lib/ganeti/daemon-util"
    assert (versioned in error) == os.path.exists(versioned)
    assert snapshot(root, skip=()) == snapshot(node_root(tmp_path / "fresh"), skip=())


def ganeti_config(ganeti_dir: Path) -> Config:
    """Ganeti's default ``[daemon]``, with its PKGLIBDIR at ``ganeti_dir``."""
    util = f"{ganeti_dir}/daemon-util"
    return Config(
        daemon=DaemonConfig(
            restart=((util, "stop-all"), (util, "start", "ganeti-noded")),
            stop=((util, "stop-all"),),
            status=(util, "check", "ganeti-noded"),
        )
    )


def test_the_ganeti_30_only_layout_names_the_package_to_install(tmp_path: Path) -> None:
    """ganeti-3.0 keeps daemon-util in its versioned tree and only the ganeti package links it
    into PKGLIBDIR: the refusal says so exactly; without any Ganeti, that Ganeti is missing;
    with the link, it passes."""
    ganeti_dir = tmp_path / "usr/lib/ganeti"
    config_file = Path("/etc/txsetup/config.toml")
    check = Preflight(ganeti_config(ganeti_dir), config_file, ganeti_dir=str(ganeti_dir))
    util = f"{ganeti_dir}/daemon-util"

    with pytest.raises(MissingProgram) as not_installed:
        check.require_tables("daemon")
    assert str(not_installed.value) == (
        "preflight: a program this run needs is missing: "
        f"{util} ([daemon] restart, stop, status) does not exist (Ganeti is not installed): "
        'install it with "apt-get install ganeti", '
        f"or set [daemon] restart, stop, status in {config_file}"
    )

    versioned = executable(Path(f"{ganeti_dir}/3.0{ganeti_dir}/daemon-util"))
    with pytest.raises(MissingProgram) as only_versioned:
        check.require_tables("daemon")
    assert str(only_versioned.value) == (
        "preflight: a program this run needs is missing: "
        f"{util} ([daemon] restart, stop, status) does not exist: ganeti-3.0 keeps it at "
        f"{versioned}, and only the ganeti package links it there: "
        'install it with "apt-get install ganeti", '
        f"or set [daemon] restart, stop, status in {config_file}"
    )
    assert only_versioned.value.exit_code == 4

    Path(util).symlink_to(versioned)
    check.require_tables("daemon")


def test_ssh_keyscan_is_checked_only_with_a_health_address(tmp_path: Path) -> None:
    """sshd's health check starts ``ssh-keyscan`` (looked up with ``which``); with
    ``health_address = "none"`` it is not needed."""
    config = Config(sshd=SshdConfig(reload=(("/bin/sh", "-c", "true"),), status=("/bin/true",)))
    nothing_on_path = Preflight(config, tmp_path / "c.toml", which=lambda _: None)
    with pytest.raises(MissingProgram) as refused:
        nothing_on_path.require_tables("sshd")
    assert str(refused.value) == (
        "preflight: a program this run needs is missing: ssh-keyscan ([sshd] health_address) "
        'is not on PATH: install the OpenSSH client ("apt-get install openssh-client"), '
        f'or set [sshd] health_address = "none" in {tmp_path / "c.toml"}'
    )
    Preflight(config, tmp_path / "c.toml", which=lambda name: f"/usr/bin/{name}").require_tables(
        "sshd"
    )
    unchecked = Config(sshd=SshdConfig(status=("/bin/true",), health_address=None))
    assert "ssh-keyscan" not in [p.name for p in programs_of(unchecked, "sshd")]


def test_the_result_and_log_carry_the_refusal(tmp_path: Path, node_pem: str) -> None:
    """The refusal before the lock is one ``config.error`` log line with ``missing_program``,
    and no step ran."""
    root = node_root(tmp_path)
    write_daemon(root, str(tmp_path / "none"))
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem))
    )
    errors = [e for e in run.events if e["event"] == "config.error"]
    assert [e["error_code"] for e in errors] == ["missing_program"]
    assert not [e for e in run.events if e["event"] == "step.begin"]
    assert json.loads(run.stdout)["steps"] == []


def test_a_run_refuses_when_recovering_another_commands_transaction_needs_a_missing_program(
    tmp_path: Path, node_pem: str
) -> None:
    """node-daemon-setup on a node with an ssh-setup transaction killed in its reload: the run
    would recover it first, so sshd's missing reload program refuses it before the lock."""
    root = node_root(tmp_path)
    write_sshd_config(
        root, reload=["sh", "-c", "kill -9 $PPID"], status=["true"], health_address="none"
    )
    killed = subprocess.run(
        [txsetup_exe(), "ssh-setup", "--root", str(root)],
        input=encode(ssh_document()),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert read_journal(root / "var/lib/txsetup/journal")[-1].state == SSHD.state
    missing = tmp_path / "reload-sshd"
    write_sshd_config(root, reload=[str(missing)], status=["true"], health_address="none")
    before = snapshot(root, skip=())
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem))
    )
    assert_refused(run.result, f"{missing} ([sshd] reload) does not exist")
    assert snapshot(root, skip=()) == before
