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
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txsetup.errors import InternalError
from txsetup.master.ssh import Node, RemoteCall, end_process, read_bounded, run_quietly

__all__ = ["PERSIST_SECONDS", "Connected", "SharedConnections"]

PERSIST_SECONDS = 120
_GRACE = 5.0
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
class SharedConnections:
    """The master connections of one push, one per node, under a private directory.

    Use it as ``async with``: leaving it ends every connection still open and
    removes the directory.
    """

    call: RemoteCall
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="txsetup-ssh-")))
    _sockets: dict[Node, Path] = field(default_factory=dict)

    async def connect(self, node: Node, *, timeout: float | None, stop: asyncio.Event) -> Connected:
        """Open the node's connection and wait until it is up or has failed.

        When ``timeout`` passes or ``stop`` is set first, ssh is ended.
        """
        path = self._sockets.setdefault(node, self.directory / str(len(self._sockets)))
        proc = await asyncio.create_subprocess_exec(
            *self.call.master_argv(node, path, PERSIST_SECONDS),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C on the terminal is the push's to handle
        )
        if proc.stderr is None:  # asked for above: cannot happen
            raise InternalError("ssh was started without its stderr pipe")
        said = asyncio.ensure_future(read_bounded(proc.stderr, _STDERR_LIMIT))
        work = asyncio.gather(said, proc.wait())
        stopped = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {work, stopped}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when="FIRST_COMPLETED")
        stopped.cancel()
        if work not in done:
            await end_process(proc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(work, _GRACE)
            return Connected(None, (), timed_out=not stop.is_set(), interrupted=stop.is_set())
        lines = said.result().decode("utf-8", "replace").splitlines()
        return Connected(proc.returncode, tuple(line for line in lines if line.strip()))

    def socket(self, node: Node) -> Path | None:
        """The node's control socket, while its connection is up."""
        path = self._sockets.get(node)
        return path if path is not None and path.exists() else None

    async def release(self, node: Node) -> None:
        """End the node's connection once its commands are done."""
        path = self.socket(node)
        if path is not None:
            await run_quietly(self.call.exit_argv(node, path))

    async def __aenter__(self) -> SharedConnections:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(self.release(node) for node in self._sockets))
        shutil.rmtree(self.directory, ignore_errors=True)
