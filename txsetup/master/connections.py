"""One shared ssh connection per node: opened when the node's turn comes, used by its commands.

Each node gets an OpenSSH master connection (``ControlMaster``) on a socket in
a private directory (0700, removed at the end). ``ssh -N -f`` returns once the
connection is authenticated and its socket listens, so the wait for it is the
wait for the handshake, and its exit status and stderr are ssh's own verdict
on the node (255 and a message when it cannot be reached). Every command for
that node then runs over the socket without a handshake of its own; the
connection ends when the node is done (``ssh -O exit``).

A master that outlives its push (the push killed with SIGKILL) ends by itself
after ``PERSIST_SECONDS`` without a command; a command whose socket is gone
connects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from txsetup.master.ssh import Node, RemoteCall

__all__ = ["PERSIST_SECONDS", "Connected", "SharedConnections"]

PERSIST_SECONDS = 120
_TERMINATE_GRACE = 5.0
_STDERR_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Connected:
    """How opening one node's connection ended.

    ``returncode`` is ssh's (0: the socket is ready), None when the push ended
    it (``timed_out`` or ``interrupted``); ``said`` its stderr lines.
    """

    returncode: int | None
    said: tuple[str, ...] = ()
    timed_out: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """The master connection is up: commands go over its socket."""
        return self.returncode == 0


@dataclass
class _Link:
    path: Path
    proc: subprocess.Popen[bytes]
    connected: Connected | None = None


@dataclass
class SharedConnections:
    """The master connections of one push, one per node, under a private directory."""

    call: RemoteCall
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="txsetup-ssh-")))
    _links: dict[Node, _Link] = field(default_factory=dict)

    def _open(self, node: Node) -> _Link:
        """Start connecting to the node, once."""
        if node not in self._links:
            path = self.directory / str(len(self._links))
            proc = subprocess.Popen(
                self.call.master_argv(node, path, PERSIST_SECONDS),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C on the terminal is the push's to handle
            )
            self._links[node] = _Link(path, proc)
        return self._links[node]

    def socket(self, node: Node) -> Path | None:
        """The node's control socket, when its connection is up."""
        link = self._links.get(node)
        ok = link is not None and link.connected is not None and link.connected.ok
        return link.path if ok and link is not None else None

    async def connect(self, node: Node, *, timeout: float | None, stop: asyncio.Event) -> Connected:
        """Open the node's connection and wait until it is up or has failed.

        When ``timeout`` passes or ``stop`` is set first, ssh is ended.
        """
        link = self._open(node)
        if link.connected is not None:
            return link.connected
        waiting = asyncio.ensure_future(asyncio.to_thread(_output, link.proc))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {waiting, stopped}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        stopped.cancel()
        if waiting not in done:
            await asyncio.to_thread(_end, link.proc)
            link.connected = Connected(None, (), not stop.is_set(), stop.is_set())
            return link.connected
        link.connected = Connected(link.proc.returncode, waiting.result())
        return link.connected

    async def release(self, node: Node) -> None:
        """End the node's connection once its commands are done."""
        link = self._links.get(node)
        if link is not None and link.path.exists():
            await asyncio.to_thread(_wait_quietly, [_quiet(self.call.exit_argv(node, link.path))])

    def close(self) -> None:
        """End every connection still open, then remove the directory."""
        exits = []
        for node, link in self._links.items():
            if link.proc.poll() is None:
                _end(link.proc)
            if link.path.exists():
                exits.append(_quiet(self.call.exit_argv(node, link.path)))
            if link.proc.stderr is not None:
                link.proc.stderr.close()
        _wait_quietly(exits)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SharedConnections:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _output(proc: subprocess.Popen[bytes]) -> tuple[str, ...]:
    """Wait for ssh's foreground process; its stderr lines (bounded)."""
    said = proc.stderr.read(_STDERR_LIMIT) if proc.stderr is not None else b""
    proc.wait()
    lines = said.decode("utf-8", "replace").splitlines()
    return tuple(line for line in lines if line.strip())


def _wait_quietly(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait for each ``ssh -O exit``; one that hangs is ended."""
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(_TERMINATE_GRACE)
        if proc.poll() is None:
            _end(proc)


def _quiet(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End a connecting ssh: SIGTERM to its process group, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(_TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            continue
        return
