"""One loopback node's sshd process: starting it, and waiting until it serves.

Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from txsetup.demo.sshd_config import HOST, SshdSettings, write_sshd_config

__all__ = ["SshdProcess", "free_ports", "wait_ready"]

_START_WAIT: Final = 60.0  # catches an sshd that never serves, not a slow machine
_POLL_INTERVAL: Final = 0.02
_PROBE_TIMEOUT: Final = 2.0
_LOG_TAIL: Final = 2000
_PORT_TAKEN: Final = b"Address already in use"


def free_ports(count: int, *, avoid: Iterable[int]) -> list[int]:
    """``count`` distinct loopback ports nothing is bound to right now.

    All probe sockets stay bound until every port is chosen, so the kernel
    cannot hand out the same port twice; they are closed (never listened on,
    so no TIME_WAIT) before sshd binds. Another process may still take a port
    in between, which is why a node is retried once on a fresh port.
    """
    taken = set(avoid)
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            probe = stack.enter_context(socket.socket())
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
            if port not in taken:
                taken.add(port)
                ports.append(port)
    return ports


def _probe(port: int) -> bool:
    """Whether an SSH server answers on ``port``: connect and read its banner.

    The probe answers with an identification line of its own before hanging
    up: sshd logs an abandoned identification exchange as an error, which
    would litter the log whose tail explains real failures.
    """
    try:
        with (
            socket.create_connection((HOST, port), timeout=_PROBE_TIMEOUT) as conn,
            conn.makefile("rb") as reader,
        ):
            banner = reader.readline(256)
            conn.sendall(b"SSH-2.0-txsetup-sshnodes-probe\r\n")
            return banner.startswith(b"SSH-")
    except OSError:
        return False


class SshdProcess:
    """One node's sshd while it starts: mutable until ready, then an ``SshNode``."""

    def __init__(self, index: int, workdir: Path, port: int) -> None:
        self.name = f"node{index}"
        self.dir = workdir / self.name
        self.root = self.dir / "root"
        self.config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.pidfile = self.dir / "sshd.pid"
        self.log = self.dir / "sshd.log"
        self.port = port
        self.auto_port = port == 0
        self.retried = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.deadline = 0.0

    def write_config(self, settings: SshdSettings) -> None:
        """Write this node's sshd_config for its current port."""
        write_sshd_config(
            self.config,
            settings,
            port=self.port,
            root=self.root,
            host_key=self.host_key,
            pidfile=self.pidfile,
        )

    def spawn(self, settings: SshdSettings, started: list[subprocess.Popen[bytes]]) -> None:
        """Start sshd in the foreground, logging to this node's log file.

        sshd stays in the caller's process group, so a runner that kills the
        group on a timeout takes the daemons with it. A launcher (see
        ``start_ssh_nodes``) goes in front of sshd's own argv.
        """
        self.pidfile.unlink(missing_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [settings.sshd, "-D", "-e", "-f", str(self.config), "-E", str(self.log)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*settings.launcher, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        started.append(self.proc)
        self.deadline = time.monotonic() + _START_WAIT

    @property
    def started(self) -> subprocess.Popen[bytes]:
        """The current attempt's sshd; only asked for after :meth:`spawn`."""
        if self.proc is None:
            raise RuntimeError(f"sshd of {self.name} was never started")
        return self.proc

    def state(self) -> str:
        """``ready``, ``pending``, ``port-taken``, ``exited`` or ``timeout``.

        Ready needs the pid file holding this sshd's pid (written only after it
        bound its port) *and* an SSH banner on the port: either alone could be
        another process that grabbed the port.
        """
        if self.started.poll() is not None:
            return "port-taken" if _PORT_TAKEN in self.log_text() else "exited"
        if self._pidfile_is_ours() and _probe(self.port):
            return "ready"
        return "timeout" if time.monotonic() > self.deadline else "pending"

    def _pidfile_is_ours(self) -> bool:
        """Whether sshd wrote its pid file yet (it does so after binding)."""
        try:
            return int(self.pidfile.read_text().strip()) == self.started.pid
        except (OSError, ValueError):
            return False

    def log_text(self) -> bytes:
        """What sshd logged during the current attempt."""
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_offset)
                return log.read()
        except OSError:
            return b""

    def failure(self, why: str) -> str:
        """A start-up failure message with the tail of the log, for the RuntimeError."""
        tail = self.log_text()[-_LOG_TAIL:].decode(errors="replace").strip()
        return f"sshd of {self.name} on {HOST}:{self.port} {why}; {self.log}:\n{tail}"


def wait_ready(
    daemons: Sequence[SshdProcess],
    settings: SshdSettings,
    started: list[subprocess.Popen[bytes]],
) -> None:
    """Wait until every sshd serves, retrying a node once if its port was taken.

    Raises:
        RuntimeError: An sshd exited or did not serve within the wait.
    """
    pending = list(daemons)
    while pending:
        still = []
        for daemon in pending:
            state = daemon.state()
            if state == "pending":
                still.append(daemon)
            elif state == "port-taken" and daemon.auto_port and not daemon.retried:
                daemon.retried = True
                daemon.port = free_ports(1, avoid=(d.port for d in daemons))[0]
                daemon.write_config(settings)
                daemon.spawn(settings, started)
                still.append(daemon)
            elif state == "timeout":
                raise RuntimeError(daemon.failure(f"did not serve within {_START_WAIT:g} s"))
            elif state != "ready":
                code = daemon.started.returncode
                raise RuntimeError(daemon.failure(f"exited with {code}"))
        pending = still
        if pending:
            time.sleep(_POLL_INTERVAL)
