"""A tiny TLS "node daemon" for the demo and the tests — NOT a Ganeti replacement.

It does one thing a health check can observe: serve TLS with
``<root>/var/lib/ganeti/server.pem``, so after txsetup installs a certificate
and restarts it, a real handshake shows whether the new certificate is the one
being served. Each connection gets one JSON line and is closed; there is no
RPC. Like a real daemon it validates its inputs at start: an existing
``hmac.key`` must hold at least 32 hex digits, or it refuses to start.
Control it like an init script::

    python -m txsetup.demo.noded {start,stop,restart,status} --root R --port P

``status`` exits 0 when running and 3 when not (the LSB convention); the
others exit 0 on success and 1 with a message on stderr on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final, NoReturn

__all__ = ["DAEMON_NAME", "main"]

DAEMON_NAME: Final = "txsetup-demo-noded"
NOT_RUNNING: Final = 3
_START_WAIT: Final = 60.0  # catches a daemon that never serves, not a slow machine
_STOP_WAIT: Final = 30.0
_CONNECTION_TIMEOUT: Final = 30.0


class _Paths:
    """Where this daemon keeps its files under ``--root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.cert = self.root / "var/lib/ganeti/server.pem"
        self.hmac_key = self.root / "var/lib/ganeti/hmac.key"
        self.pidfile = self.root / f"var/run/{DAEMON_NAME}.pid"
        self.log = self.root / f"var/log/{DAEMON_NAME}.log"


def _running_pid(paths: _Paths) -> int | None:
    """The pid in the pidfile if that process is alive and is this daemon for this root."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = b"txsetup.demo.noded" in cmdline and b"serve" in cmdline
    return pid if ours and os.fsencode(paths.root) in cmdline else None


def _start(paths: _Paths, host: str, port: int) -> int:
    """Spawn the server detached and wait until it serves or fails."""
    if _running_pid(paths) is not None:
        return 0
    paths.pidfile.unlink(missing_ok=True)
    for directory in (paths.pidfile.parent, paths.log.parent):
        directory.mkdir(parents=True, exist_ok=True)
    ready_read, ready_write = os.pipe()
    argv = [sys.executable, "-m", "txsetup.demo.noded", "serve", "--root", str(paths.root)]
    argv += ["--port", str(port), "--host", host, "--ready-fd", str(ready_write)]
    with paths.log.open("ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(ready_write,),
            start_new_session=True,
        )
    os.close(ready_write)
    try:
        report = _read_report(ready_read, deadline=time.monotonic() + _START_WAIT)
    finally:
        os.close(ready_read)
    if report == "ready":
        return 0
    if child.poll() is None:
        child.kill()
    child.wait()
    reason = report or f"exited with status {child.returncode} before serving"
    print(f"{DAEMON_NAME}: failed to start: {reason} (log: {paths.log})", file=sys.stderr)
    return 1


def _read_report(fd: int, *, deadline: float) -> str:
    """Read the server's report: "ready", its error, or "" when it died without one."""
    report = b""
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return report.decode("utf-8", "replace")
        report += chunk
    return f"not serving after {_START_WAIT:g} s"


def _stop(paths: _Paths) -> int:
    """SIGTERM the daemon, SIGKILL it if it lingers, and remove the pidfile."""
    pid = _running_pid(paths)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, _STOP_WAIT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, _STOP_WAIT):
                print(f"{DAEMON_NAME}: pid {pid} survives SIGKILL", file=sys.stderr)
                return 1
    paths.pidfile.unlink(missing_ok=True)
    return 0


def _wait_gone(pid: int, seconds: float) -> bool:
    """Wait until ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _serve(paths: _Paths, host: str, port: int, ready_fd: int) -> int:
    """Load the certificate, listen, report readiness, then answer until SIGTERM."""
    with os.fdopen(ready_fd, "w") if ready_fd >= 0 else open(os.devnull, "w") as ready:
        try:
            _check_hmac_key(paths.hmac_key)
            context = _load_context(paths.cert)
            listener = _listen(host, port)
        except ValueError as exc:
            ready.write(str(exc))
            _log(str(exc))
            return 1
        os.chdir("/")  # imported like its starter (same cwd), then holds no directory
        signal.signal(signal.SIGTERM, _exit_on_signal)
        _write_pidfile(paths.pidfile)
        ready.write("ready")
    _log(f"serving TLS on {host}:{port} with {paths.cert}, pid {os.getpid()}")
    greeting = json.dumps({"daemon": DAEMON_NAME, "pid": os.getpid()}).encode() + b"\n"
    try:
        with listener:
            while True:
                conn, _ = listener.accept()
                threading.Thread(
                    target=_answer, args=(context, conn, greeting), daemon=True
                ).start()
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(paths.pidfile.read_text()) == os.getpid():
                paths.pidfile.unlink()
        _log("stopped")


def _check_hmac_key(path: Path) -> None:
    """Refuse to start with a malformed confd HMAC key, as a real daemon would.

    This is what lets the demo and the tests show a restart that fails
    because of the *new* files (and succeeds again once they are rolled back).

    Raises:
        ValueError: the key exists and is not at least 32 hexadecimal digits.
    """
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if len(key) < 32 or any(c not in "0123456789abcdefABCDEF" for c in key):
        raise ValueError(f"{path}: not a valid HMAC key (need at least 32 hex digits)")


def _load_context(cert: Path) -> ssl.SSLContext:
    """A TLS server context serving ``cert`` (key and certificate in one PEM file).

    Raises:
        ValueError: the file is missing, unreadable or not a matching key and certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=cert)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"cannot use {cert}: {reason}") from exc
    return context


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ValueError says why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _answer(context: ssl.SSLContext, conn: socket.socket, greeting: bytes) -> None:
    """Handshake, send the greeting, close; a client's failure is only logged."""
    conn.settimeout(_CONNECTION_TIMEOUT)
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(greeting)
    except (ssl.SSLEOFError, ConnectionError):
        pass  # a health probe hangs up right after the handshake
    except OSError as exc:
        _log(f"connection failed: {exc}")
    finally:
        conn.close()


def _write_pidfile(pidfile: Path) -> None:
    """Write the pidfile whole (a reader never sees it half written)."""
    staged = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
    staged.write_text(f"{os.getpid()}\n")
    staged.replace(pidfile)


def _exit_on_signal(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(0)


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} {DAEMON_NAME}[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the init-script style command line and act on it."""
    parser = argparse.ArgumentParser(
        prog="python -m txsetup.demo.noded",
        description=(__doc__ or "").splitlines()[0],
        epilog="status exits 0 when running, 3 when not; the others 0, or 1 with a message.",
    )
    parser.add_argument(
        "action",
        choices=("start", "stop", "restart", "status", "serve"),
        metavar="{start,stop,restart,status}",
    )
    parser.add_argument("--root", type=Path, required=True, help="prefix of every path")
    parser.add_argument("--port", type=int, help="TCP port to serve TLS on (start, restart)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    paths = _Paths(args.root)
    if args.port is None and args.action in ("start", "restart", "serve"):
        parser.error(f"{args.action} needs --port")
    if args.action == "serve":
        return _serve(paths, args.host, args.port, args.ready_fd)
    if args.action == "status":
        return 0 if _running_pid(paths) is not None else NOT_RUNNING
    if args.action in ("stop", "restart") and (code := _stop(paths)) != 0:
        return code
    if args.action in ("start", "restart"):
        return _start(paths, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
