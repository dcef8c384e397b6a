"""Control and health of the node daemon: run its commands, probe its TLS port.

Commands run without a shell, with no stdin, in their own session, and their
output is captured (never mixed into our stdout, which carries the result).
A command that outlives its timeout is killed with its whole process group,
so a hung ``daemon-util`` cannot leave helpers behind.

A daemon is healthy only when a TLS handshake with it presents exactly the
certificate just installed (compared by SHA-256 fingerprint): a daemon that
still serves the old certificate answers, but is not yet running the new
configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from txsetup.node.config import HealthTarget

__all__ = [
    "OUTPUT_LIMIT",
    "CommandResult",
    "Health",
    "Probe",
    "is_running",
    "probe_tls",
    "run_all",
    "run_command",
    "wait_healthy",
]

OUTPUT_LIMIT: Final = 4096
"""Bytes of a command's output kept: its first and last halves, around a marker."""

_POLL_INTERVAL: Final = 0.02
_DRAIN_GRACE: Final = 0.2  # reading on after exit, for output still in the pipe
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_CAP: Final = 1.0
_PROBE_TIMEOUT_CAP: Final = 5.0


@dataclass(frozen=True)
class CommandResult:
    """What one command did.

    ``returncode`` is negative (``-signal``) when the command was killed,
    127 when the program could not be found and 126 when it could not be run.
    """

    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_ms: int
    timed_out: bool

    @property
    def ok(self) -> bool:
        """Whether the command exited 0 within its time."""
        return self.returncode == 0 and not self.timed_out


class Probe(Protocol):
    """How one health probe is made; returns the peer certificate's fingerprint."""

    def __call__(self, target: HealthTarget, /, *, timeout: float) -> str: ...


@dataclass(frozen=True)
class Health:
    """The outcome of waiting for the daemon: healthy or not, and the evidence."""

    healthy: bool
    attempts: int
    duration_ms: int
    fingerprint: str | None
    last_error: str | None


class _Capture:
    """Keeps the head and the tail of a stream of bytes, counting what it drops."""

    def __init__(self, limit: int) -> None:
        self._half = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = max(self._half - len(self._head), 0)
        self._head += chunk[:room]
        self._tail += chunk[room:]
        if len(self._tail) > self._half:
            del self._tail[: -self._half]

    def text(self) -> str:
        dropped = self._total - len(self._head) - len(self._tail)
        marker = f"\n[... {dropped} bytes of output omitted ...]\n".encode() if dropped else b""
        return (bytes(self._head) + marker + bytes(self._tail)).decode("utf-8", "replace")


def run_command(argv: Sequence[str], *, timeout: float) -> CommandResult:
    """Run ``argv`` (no shell), capturing its output, for at most ``timeout`` seconds.

    A program that cannot be started is a result (127 or 126, with the error
    as output), not an exception, so the caller reports it like any failing
    command. Output is read while the command runs, so a chatty command never
    blocks on a full pipe, and only :data:`OUTPUT_LIMIT` bytes of it are kept.
    """
    args = tuple(argv)
    if not args:
        raise ValueError("run_command: empty argv")
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        return CommandResult(args, code, f"{args[0]}: {exc.strerror or exc}", _ms(started), False)
    capture = _Capture(OUTPUT_LIMIT)
    with process:
        try:
            timed_out = _collect(process, capture, deadline=started + timeout)
        except BaseException:
            _kill_group(process)  # interrupted (SIGINT, SIGTERM): leave nothing running
            raise
    return CommandResult(args, process.returncode, capture.text(), _ms(started), timed_out)


def _collect(process: subprocess.Popen[bytes], capture: _Capture, *, deadline: float) -> bool:
    """Read the output until the command exits; at ``deadline`` kill it. True if killed.

    Reading stops shortly after the command exits even when the pipe is still
    open: a daemon it started may hold the pipe for as long as it lives.
    """
    assert process.stdout is not None  # noqa: S101 -- stdout=PIPE
    fd = process.stdout.fileno()
    timed_out = False
    drain_until: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if drain_until is None and (process.poll() is not None or now >= deadline):
                timed_out = process.returncode is None
                if timed_out:
                    _kill_group(process)
                drain_until = now + _DRAIN_GRACE
            elif drain_until is not None and now >= drain_until:
                break
            limit = deadline if drain_until is None else drain_until
            if not selector.select(max(min(limit - now, _POLL_INTERVAL), 0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            capture.add(chunk)
    if not timed_out:
        try:
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return True
    return timed_out


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group (its own session) and reap the command."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()  # in case it left its group; a no-op once it is dead
    process.wait()


def run_all(commands: Sequence[Sequence[str]], *, timeout: float) -> CommandResult:
    """Run ``commands`` in order, each with ``timeout``, stopping at the first failure.

    Returns the failing command's result, or the last one's when all succeeded.
    An empty ``commands`` is a ValueError: the configuration never allows it.
    """
    if not commands:
        raise ValueError("run_all: no commands to run")
    result = run_command(commands[0], timeout=timeout)
    for argv in commands[1:]:
        if not result.ok:
            break
        result = run_command(argv, timeout=timeout)
    return result


def is_running(status_argv: Sequence[str], *, timeout: float) -> bool:
    """Whether the daemon runs: its status command exits 0 within ``timeout``.

    Anything else (non-zero, timed out, status program missing) is "not running",
    the answer that makes a later restart start it rather than skip it.
    """
    return run_command(status_argv, timeout=timeout).ok


def probe_tls(target: HealthTarget, *, timeout: float, client_cert: str | None = None) -> str:
    """One TLS handshake with ``target``: the lowercase hex SHA-256 of its DER certificate.

    The chain is not verified: node certificates are self-signed, and what
    matters is *which* certificate the daemon serves, which the fingerprint
    answers exactly. ``timeout`` bounds the connect and the handshake each.
    ``client_cert`` (a key + certificate PEM file) is presented to a daemon
    that asks for one: Ganeti's noded does, and over TLS 1.2 refuses the
    handshake without it.

    Raises:
        OSError: no connection, no handshake (:class:`ssl.SSLError`), or no certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(client_cert)
    with (
        socket.create_connection((target.host, target.port), timeout=timeout) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{target}: the peer presented no certificate")
    return hashlib.sha256(der).hexdigest()


def wait_healthy(
    target: HealthTarget,
    *,
    expected_fingerprint: str,
    timeout: float,
    probe: Probe = probe_tls,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Health:
    """Probe ``target`` until it presents the expected certificate or ``timeout`` passes.

    Retries back off exponentially (0.05 s doubling, at most 1 s) so a daemon
    that starts fast is seen fast and a slow one is not hammered. At least one
    probe is made, and each gets only the time that is left. A daemon serving
    another certificate answers, but is not healthy: it runs the old setup.
    """
    expected = expected_fingerprint.replace(":", "").lower()
    started = clock()
    deadline = started + timeout
    delay = _BACKOFF_FIRST
    attempts = 0
    fingerprint: str | None = None
    last_error: str | None = None
    while True:
        attempts += 1
        remaining = deadline - clock()
        try:
            fingerprint = probe(target, timeout=min(max(remaining, 0.01), _PROBE_TIMEOUT_CAP))
        except OSError as exc:
            fingerprint, last_error = None, f"{target}: {exc}"
        else:
            if fingerprint == expected:
                return Health(True, attempts, _ms(started, clock), fingerprint, None)
            last_error = f"{target}: presents certificate {fingerprint}, expected {expected}"
        remaining = deadline - clock()
        if remaining <= 0:
            return Health(False, attempts, _ms(started, clock), fingerprint, last_error)
        sleep(min(delay, remaining))
        delay = min(delay * 2, _BACKOFF_CAP)


def _ms(started: float, clock: Callable[[], float] = time.monotonic) -> int:
    return round((clock() - started) * 1000)
