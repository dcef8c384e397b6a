"""Daemon control and health: real commands, the real demo daemon, real TLS handshakes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import HANG_SECONDS
from txsetup.demo.certs import generate_node_certificate
from txsetup.demo.noded import NOT_RUNNING
from txsetup.node.config import HealthTarget
from txsetup.node.daemon import (
    OUTPUT_LIMIT,
    CommandResult,
    is_running,
    probe_tls,
    run_all,
    run_command,
    wait_healthy,
)


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of the certificate in ``pem``, as cryptography computes it."""
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Noded:
    """The demo daemon under one root, controlled through its real command line."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.target = HealthTarget("127.0.0.1", port)
        self.cert = root / "var/lib/ganeti/server.pem"
        self.pidfile = root / "var/run/txsetup-demo-noded.pid"

    def argv(self, action: str) -> list[str]:
        """The command line for ``action``."""
        where = ["--root", str(self.root), "--port", str(self.port)]
        return [sys.executable, "-m", "txsetup.demo.noded", action, *where]

    def __call__(self, action: str) -> subprocess.CompletedProcess[str]:
        """Run ``action`` and return its exit status and output."""
        return subprocess.run(
            self.argv(action), capture_output=True, text=True, timeout=60, check=False
        )

    def install(self, pem: str) -> None:
        """Put ``pem`` where the daemon reads its certificate."""
        self.cert.parent.mkdir(parents=True, exist_ok=True)
        self.cert.write_text(pem)

    def pid(self) -> int:
        """The running daemon's pid, from its pidfile."""
        return int(self.pidfile.read_text())


@pytest.fixture(scope="module")
def pem() -> str:
    """One node certificate (key and certificate) for the module."""
    return generate_node_certificate("node1.example.com")


@pytest.fixture
def noded(tmp_path: Path, pem: str) -> Iterator[Noded]:
    """A demo daemon root with ``pem`` installed; the daemon is always stopped afterwards."""
    daemon = Noded(tmp_path / "root", free_port())
    daemon.install(pem)
    try:
        yield daemon
    finally:
        daemon("stop")


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def eventually(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll ``condition`` until it is true or ``seconds`` pass (a bound for hangs only)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_start_serves_the_installed_certificate(noded: Noded, pem: str) -> None:
    """Start brings the daemon up; status says so; the handshake shows exactly our cert."""
    started = noded("start")
    assert started.returncode == 0, started.stderr
    assert noded("status").returncode == 0
    assert probe_tls(noded.target, timeout=HANG_SECONDS) == fingerprint(pem)
    health = wait_healthy(noded.target, expected_fingerprint=fingerprint(pem), timeout=60)
    assert health.healthy
    assert health.attempts == 1
    assert health.fingerprint == fingerprint(pem)
    assert health.last_error is None


def test_start_when_running_is_a_no_op(noded: Noded) -> None:
    """Starting a running daemon succeeds and leaves the same process serving."""
    assert noded("start").returncode == 0
    pid = noded.pid()
    assert noded("start").returncode == 0
    assert noded.pid() == pid


def test_restart_serves_the_new_certificate(noded: Noded, pem: str) -> None:
    """After server.pem is replaced, restart serves the new one, and the old is unhealthy."""
    assert noded("start").returncode == 0
    new_pem = generate_node_certificate("node1.example.com")
    noded.install(new_pem)
    assert probe_tls(noded.target, timeout=HANG_SECONDS) == fingerprint(pem)
    restarted = noded("restart")
    assert restarted.returncode == 0, restarted.stderr
    assert probe_tls(noded.target, timeout=HANG_SECONDS) == fingerprint(new_pem)
    # It retries until the timeout (the certificate is the wrong one): long enough for a
    # handshake on a loaded machine, not a measure of speed.
    stale = wait_healthy(noded.target, expected_fingerprint=fingerprint(pem), timeout=5)
    assert not stale.healthy
    assert stale.fingerprint == fingerprint(new_pem)
    assert stale.last_error is not None
    assert "presents certificate" in stale.last_error


def test_stopped_daemon_is_not_running_and_unhealthy(noded: Noded, pem: str) -> None:
    """After stop, status exits 3 and the health check retries, then gives up."""
    assert noded("start").returncode == 0
    pid = noded.pid()
    assert noded("stop").returncode == 0
    assert gone(pid)
    assert not noded.pidfile.exists()
    assert noded("status").returncode == NOT_RUNNING
    # Two attempts at least however slow the first: the backoff starts at 0.05 s.
    health = wait_healthy(noded.target, expected_fingerprint=fingerprint(pem), timeout=2)
    assert not health.healthy
    assert health.attempts > 1
    assert health.fingerprint is None
    assert health.last_error is not None
    assert noded("stop").returncode == 0


def test_start_on_a_port_in_use_fails(noded: Noded) -> None:
    """Start exits 1 with a message when another process holds the port."""
    with socket.create_server(("127.0.0.1", noded.port)):
        started = noded("start")
    assert started.returncode == 1
    assert "cannot listen on 127.0.0.1" in started.stderr
    assert noded("status").returncode == NOT_RUNNING


@pytest.mark.parametrize(
    "content",
    [
        "not a pem file\n",
        generate_node_certificate("a").split("-----BEGIN CERTIFICATE")[0],
    ],
    ids=["garbage", "key-only"],
)
def test_start_with_a_broken_certificate_fails(noded: Noded, content: str) -> None:
    """Start exits 1 naming server.pem when the file is not a usable key and certificate."""
    noded.install(content)
    started = noded("start")
    assert started.returncode == 1
    assert "server.pem" in started.stderr
    assert noded("status").returncode == NOT_RUNNING


def test_start_without_a_certificate_fails(noded: Noded) -> None:
    """Start exits 1 when server.pem is missing."""
    noded.cert.unlink()
    started = noded("start")
    assert started.returncode == 1
    assert "server.pem" in started.stderr


def test_status_ignores_a_stale_pidfile(noded: Noded) -> None:
    """A pidfile naming a live process that is not this daemon means not running."""
    noded.pidfile.parent.mkdir(parents=True, exist_ok=True)
    noded.pidfile.write_text(f"{os.getpid()}\n")
    assert noded("status").returncode == NOT_RUNNING
    assert noded("start").returncode == 0
    assert noded.pid() != os.getpid()


def test_daemon_does_not_inherit_the_callers_fds(noded: Noded, tmp_path: Path) -> None:
    """The detached server holds none of its starter's descriptors (txsetup's lock fd)."""
    lock = tmp_path / "txsetup.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        subprocess.run(noded.argv("start"), pass_fds=(fd,), check=True, timeout=60)
    finally:
        os.close(fd)
    held = {os.readlink(link) for link in Path(f"/proc/{noded.pid()}/fd").iterdir()}
    assert str(lock) not in held


def test_control_through_run_all_and_is_running(noded: Noded) -> None:
    """The daemon's own commands work through run_all, and the server holds no pipe of ours."""
    restarted = run_all([noded.argv("stop"), noded.argv("start")], timeout=30)
    assert restarted.ok, restarted.output
    assert restarted.argv == tuple(noded.argv("start"))
    assert restarted.duration_ms < 10_000
    assert is_running(noded.argv("status"), timeout=30)
    assert run_all([noded.argv("stop")], timeout=30).ok
    assert not is_running(noded.argv("status"), timeout=30)


def test_run_command_captures_merged_output() -> None:
    """stdout and stderr are captured together; stdin is empty, not ours."""
    result = run_command(["sh", "-c", "echo out; echo err >&2; cat; exit 3"], timeout=10)
    assert result == CommandResult(
        ("sh", "-c", "echo out; echo err >&2; cat; exit 3"),
        3,
        "out\nerr\n",
        result.duration_ms,
        timed_out=False,
    )
    assert not result.ok


def test_run_command_missing_executable_is_127() -> None:
    """A program that does not exist is exit status 127 with the error text, no exception."""
    result = run_command(["/nonexistent/daemon-util", "check"], timeout=10)
    assert result.returncode == 127
    assert "No such file or directory" in result.output
    assert not result.timed_out


def test_run_command_timeout_kills_the_process_group() -> None:
    """A command past its timeout is killed together with everything it started."""
    script = "echo $$; sleep 30 & echo $!; sleep 30"
    started = time.monotonic()
    result = run_command(["sh", "-c", script], timeout=3)
    assert time.monotonic() - started < 25  # killed, not waited for: sleep 30 would take 30
    assert result.timed_out
    assert result.returncode == -signal.SIGKILL
    shell, background = (int(line) for line in result.output.split())
    assert eventually(lambda: gone(shell) and gone(background))
    assert eventually(lambda: not group_members(shell))


def test_run_command_does_not_wait_for_a_background_child_holding_the_pipe() -> None:
    """A command that leaves a child holding its output returns when it exits."""
    result = run_command(["sh", "-c", "echo $$; sleep 30 & exit 0"], timeout=20)
    try:
        assert result.ok
        assert result.duration_ms < 25_000  # not the background sleep's 30 s
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(result.output.split()[0]), signal.SIGKILL)


def test_run_command_truncates_long_output() -> None:
    """Only the head and tail of a long output are kept, with a marker saying how much went."""
    script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo LAST"
    result = run_command(["sh", "-c", script], timeout=10)
    assert result.ok
    assert result.output.startswith("a" * (OUTPUT_LIMIT // 2))
    assert result.output.endswith("a\nLAST\n")
    assert f"[... {100_006 - OUTPUT_LIMIT} bytes of output omitted ...]" in result.output
    assert len(result.output) < OUTPUT_LIMIT + 100


def test_run_all_stops_at_the_first_failure(tmp_path: Path) -> None:
    """run_all returns the failing result and never runs the commands after it."""
    marker = tmp_path / "ran"
    result = run_all([["true"], ["sh", "-c", "exit 4"], ["touch", str(marker)]], timeout=10)
    assert result.returncode == 4
    assert result.argv == ("sh", "-c", "exit 4")
    assert not marker.exists()
    assert run_all([["true"], ["touch", str(marker)]], timeout=10).ok
    assert marker.exists()


def test_run_all_refuses_no_commands() -> None:
    """An empty command list is a programming error, not a silent success."""
    with pytest.raises(ValueError, match="no commands"):
        run_all([], timeout=1)


@pytest.mark.parametrize(
    ("argv", "running"),
    [(["true"], True), (["false"], False), (["/nonexistent/status"], False)],
)
def test_is_running_is_exit_status_zero(argv: list[str], running: bool) -> None:
    """Only a status command that exits 0 means the daemon runs."""
    assert is_running(argv, timeout=10) is running


def test_wait_healthy_backs_off_exponentially_up_to_one_second() -> None:
    """Retries wait 0.05 s doubling to at most 1 s, and stop once the time is spent."""
    now = [0.0]
    sleeps: list[float] = []

    def refuse(target: HealthTarget, /, *, timeout: float) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    health = wait_healthy(
        HealthTarget("127.0.0.1", 1),
        expected_fingerprint="ab" * 32,
        timeout=4.0,
        probe=refuse,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert not health.healthy
    assert sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.45])
    assert health.attempts == len(sleeps) + 1
    assert health.duration_ms == 4000
    assert health.last_error == "127.0.0.1:1: [Errno 111] Connection refused"


@contextlib.contextmanager
def demanding_server(cert: Path, version: ssl.TLSVersion) -> Iterator[HealthTarget]:
    """A TLS server that, like Ganeti's noded, demands a client certificate (signed by ``cert``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    context.load_verify_locations(cert)
    context.verify_mode = ssl.CERT_REQUIRED
    context.maximum_version = version
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield HealthTarget("127.0.0.1", listener.getsockname()[1])
    finally:
        done.set()
        thread.join(10)
        listener.close()


def test_probe_tls_presents_a_client_certificate(noded: Noded, pem: str) -> None:
    """Against a server demanding client certificates, the probe succeeds by presenting one."""
    with demanding_server(noded.cert, ssl.TLSVersion.TLSv1_2) as target:
        with pytest.raises(ssl.SSLError):
            probe_tls(target, timeout=HANG_SECONDS)
        assert probe_tls(target, timeout=HANG_SECONDS, client_cert=str(noded.cert)) == fingerprint(
            pem
        )


def test_probe_tls_sees_the_certificate_over_tls13_without_client_certificate(
    noded: Noded, pem: str
) -> None:
    """Over TLS 1.3 the server's certificate arrives before the server judges the client's."""
    with demanding_server(noded.cert, ssl.TLSVersion.TLSv1_3) as target:
        assert probe_tls(target, timeout=HANG_SECONDS) == fingerprint(pem)


def test_probe_tls_refused_raises_oserror() -> None:
    """A probe of a port nothing listens on raises OSError (which wait_healthy retries)."""
    with pytest.raises(OSError, match="refused"):
        probe_tls(HealthTarget("127.0.0.1", free_port()), timeout=2)
