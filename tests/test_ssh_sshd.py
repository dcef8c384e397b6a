"""ssh-setup against a real sshd on loopback whose host keys live in the test's node root.

The sshd is started by the test with ``HostKey <root>/etc/ssh/ssh_host_<kind>_key``
lines, and ``[sshd] reload`` is ``kill -HUP <its pid>`` (sshd re-executes
itself and reads its keys again), so "healthy" is decided exactly as on a node:
``ssh-keyscan`` must see the new key in a real SSH handshake.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    HANG_SECONDS,
    NO_PYC,
    Run,
    encode,
    parse_run,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
    strace_argv,
    txsetup_exe,
)
from tests.conftest import require_tool as tool
from tests.sshdoc import fingerprint, ssh_document, write_sshd_config
from txsetup.node.sshd import SSHD
from txsetup.txn.journal import TxnState, read_journal

pytestmark = pytest.mark.system

KINDS = ("ed25519", "ecdsa")
_START_WAIT = 60.0  # sshd answers within a second: this catches hangs


@dataclass(frozen=True)
class Sshd:
    """A running sshd serving the host keys of ``root``."""

    proc: subprocess.Popen[bytes]
    port: int
    root: Path

    def served(self, kind: str) -> str | None:
        """The fingerprint of the ``kind`` host key sshd presents now, via ssh-keyscan."""
        out = subprocess.run(
            [
                tool("ssh-keyscan"),
                "-T",
                str(HANG_SECONDS),
                "-p",
                str(self.port),
                "-t",
                kind,
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=4 * HANG_SECONDS,
            check=False,
        ).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3 and not line.startswith("#"):
                return hashlib.sha256(base64.b64decode(fields[2])).hexdigest()
        return None

    def configure(self, **values: object) -> None:
        """``[sshd]`` for this daemon: HUP reload, status by signal 0, keyscan health."""
        settings: dict[str, object] = {
            "reload": ["kill", "-HUP", str(self.proc.pid)],
            "status": ["kill", "-0", str(self.proc.pid)],
            "health_address": f"127.0.0.1:{self.port}",
            "health_timeout": 60,  # a served key answers at once: this catches hangs
        }
        settings.update(values)
        write_sshd_config(self.root, **settings)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers(port: int) -> bool:
    """Whether an SSH server sends its banner on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            banner = conn.recv(64)
            conn.sendall(b"SSH-2.0-txsetup-test-probe\r\n")
            return banner.startswith(b"SSH-")
    except OSError:
        return False


@contextmanager
def running_sshd(root: Path, workdir: Path) -> Iterator[Sshd]:
    """Start sshd in the foreground with its host keys under ``root``; stop it after."""
    sshd = os.path.abspath(tool("sshd"))  # sshd re-executes itself: an absolute path
    tool("ssh-keyscan")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = workdir / "sshd_config"
    lines = [
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        *(f'HostKey "{root}/etc/ssh/ssh_host_{kind}_key"' for kind in KINDS),
        f'PidFile "{workdir}/sshd.pid"',
        "UsePAM no",
        "PasswordAuthentication no",
        "LogLevel ERROR",
    ]
    # OpenSSH 9.8+ would lock out 127.0.0.1 after the probes' abandoned logins.
    host_key = f"HostKey={root}/etc/ssh/ssh_host_ed25519_key"
    penalties = subprocess.run(
        [sshd, "-t", "-f", os.devnull, "-o", host_key, "-o", "PerSourcePenalties=no"],
        capture_output=True,
        check=False,
    )
    if penalties.returncode == 0:
        lines.append("PerSourcePenalties no")
    config.write_text("\n".join(lines) + "\n")
    log = (workdir / "sshd.log").open("ab")
    # -r: no re-execution per connection. A re-executed sshd (OpenSSH 9.2) reads
    # the host key files again for every connection, so a new key would be seen
    # without any reload; without it, keys change only when SIGHUP makes the
    # listener re-execute, as on a node whose sshd must be told, and a reload
    # that does nothing really leaves the old key served.
    proc = subprocess.Popen(
        [sshd, "-D", "-r", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + _START_WAIT
        while not answers(port):
            assert proc.poll() is None, (workdir / "sshd.log").read_text()
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.05)
        yield Sshd(proc, port, root)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def sshd(root: Path, tmp_path: Path) -> Iterator[Sshd]:
    """A node whose host keys are document "old", installed by ssh-setup, served by sshd."""
    write_sshd_config(root, reload=["true"], status=["true"], health_address="none")
    first = run_txsetup(["ssh-setup", "--root", str(root)], stdin=encode(old_document()))
    assert first.returncode == 0, first.stderr
    with running_sshd(root, tmp_path) as daemon:
        daemon.configure()
        for kind in KINDS:
            assert daemon.served(kind) == old_fingerprints()[kind]
        yield daemon


def old_document() -> dict[str, object]:
    """The keys the node starts with."""
    return ssh_document(hosts=KINDS, label="old")


def new_document() -> dict[str, object]:
    """New host keys (as when a master re-adds a node after reinstalling it)."""
    return ssh_document(hosts=KINDS, label="new")


def fingerprints(document: dict[str, object]) -> dict[str, str]:
    """kind → fingerprint of a document's host keys."""
    triples = document["ssh_host_key"]
    assert isinstance(triples, list)
    return {kind: fingerprint(public) for kind, _, public in triples}


def old_fingerprints() -> dict[str, str]:
    """Fingerprints of the old host keys."""
    return fingerprints(old_document())


def setup(root: Path, document: dict[str, object], *extra: str) -> Run:
    """``txsetup ssh-setup --root root`` with ``document`` on stdin."""
    return run_txsetup(["ssh-setup", "--root", str(root), *extra], stdin=encode(document))


def test_new_host_keys_are_served_after_the_reload(sshd: Sshd) -> None:
    """ssh-setup replaces the host keys, and sshd then presents exactly the new ones."""
    run = setup(sshd.root, new_document())
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    for kind, expected in fingerprints(new_document()).items():
        assert sshd.served(kind) == expected
    healthy = [e for e in run.events if e["event"] == "sshd.healthy"]
    assert {e["kind"] for e in healthy} == set(KINDS)
    states = [r.state for r in read_journal(sshd.root / "var/lib/txsetup/journal")]
    assert states.index(TxnState.COMMITTED) < states.index(SSHD.state)


def test_identical_rerun_converges_and_sshd_keeps_serving(sshd: Sshd) -> None:
    """The document already in place changes nothing and does not reload sshd."""
    run = setup(sshd.root, old_document())
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "converged"
    assert "sshd.reload" not in run.event_names()
    for kind, expected in old_fingerprints().items():
        assert sshd.served(kind) == expected


def test_mismatched_halves_are_refused_and_the_old_key_stays(sshd: Sshd) -> None:
    """A private key that does not match its public key: exit 4, nothing written or reloaded."""
    before = snapshot(sshd.root)
    document = new_document()
    triples = document["ssh_host_key"]
    assert isinstance(triples, list)
    triples[0][1] = old_document()["ssh_host_key"][0][1]  # type: ignore[index]
    run = setup(sshd.root, document)
    assert run.returncode == 4, run.stderr
    assert snapshot(sshd.root) == before
    assert "sshd.reload" not in run.event_names()
    assert sshd.served("ed25519") == old_fingerprints()["ed25519"]


@pytest.mark.parametrize(
    "settings",
    [
        {"reload": ["sh", "-c", "exit 1"]},  # the reload command fails
        {"reload": ["true"], "health_timeout": 2},  # sshd never sees the new key
    ],
    ids=["reload exits 1", "new key never served"],
)
def test_failed_reload_restores_the_old_keys_and_sshd_serves_them(
    sshd: Sshd, settings: dict[str, object]
) -> None:
    """A reload that fails or is not seen: old files back, sshd serves the old key, exit 6."""
    sshd.configure(**settings)
    before = snapshot(sshd.root)
    run = setup(sshd.root, new_document())
    assert run.returncode == 6, run.stderr
    assert run.result["outcome"] == "rolled_back"
    assert [e["step"] for e in run.events if e["event"] == "step.failed"] == ["reload_sshd"]
    assert snapshot(sshd.root) == before
    assert state_dir_leftovers(sshd.root) == []
    for kind, expected in old_fingerprints().items():
        assert sshd.served(kind) == expected


def test_a_key_sshd_does_not_serve_after_a_real_reload_is_rolled_back(sshd: Sshd) -> None:
    """sshd really reloads but cannot serve one new key: the old keys come back, served."""
    ecdsa = sshd.root / "etc/ssh/ssh_host_ecdsa_key"
    flag, hidden = sshd.root.parent / "reloaded-once", sshd.root.parent / "hidden-key"
    pid = sshd.proc.pid
    # The first reload loses the new ecdsa key before sshd reads it; the second is plain.
    script = (
        f"if [ -e '{flag}' ]; then kill -HUP {pid}; "
        f"else touch '{flag}'; mv '{ecdsa}' '{hidden}'; kill -HUP {pid}; fi"
    )
    # ecdsa is never served, so the run waits out the whole health_timeout; the other kinds
    # are served within it, however busy the machine, after sshd re-executes.
    sshd.configure(reload=["sh", "-c", script], health_timeout=10)
    before = snapshot(sshd.root)
    run = setup(sshd.root, new_document())
    assert run.returncode == 6, run.stderr
    unhealthy = [e for e in run.events if e["event"] == "sshd.unhealthy"]
    assert [e["kind"] for e in unhealthy] == ["ecdsa"]
    assert snapshot(sshd.root) == before
    for kind, expected in old_fingerprints().items():
        assert sshd.served(kind) == expected


def test_resume_after_a_kill_at_commit_reloads_sshd(sshd: Sshd) -> None:
    """Killed at its first rename (prepared), the run is finished by the other command's
    --resume, which reloads sshd: the new keys are served."""
    renames = "rename,renameat,renameat2"
    proc = subprocess.run(
        [
            *strace_argv(renames, "error=EIO:signal=SIGKILL:when=1"),
            txsetup_exe(),
            "ssh-setup",
            "--root",
            str(sshd.root),
        ],
        input=encode(new_document()),
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **NO_PYC},
    )
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.stderr
    assert sshd.served("ed25519") == old_fingerprints()["ed25519"]
    resume = run_txsetup(["node-daemon-setup", "--resume", "--root", str(sshd.root)], stdin=None)
    assert resume.returncode == 0, resume.stderr
    assert resume.result["outcome"] == "resumed"
    for kind, expected in fingerprints(new_document()).items():
        assert sshd.served(kind) == expected
    assert state_dir_leftovers(sshd.root) == []
    again = setup(sshd.root, new_document())
    assert again.result["outcome"] == "converged", again.stderr


def test_dry_run_never_reloads(sshd: Sshd) -> None:
    """--dry-run plans the new host keys but neither writes nor reloads."""
    before = snapshot(sshd.root)
    run = setup(sshd.root, new_document(), "--dry-run")
    assert run.returncode == 0, run.stderr
    assert parse_run(run.returncode, run.stdout, run.stderr).result["outcome"] == "dry_run"
    assert snapshot(sshd.root) == before
    assert sshd.served("ecdsa") == old_fingerprints()["ecdsa"]
