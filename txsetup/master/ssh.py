"""One node over the system ``ssh`` client: its address, its command line, its run.

The system client is used on purpose: ``ssh_config``, ``known_hosts``,
agents and ``ProxyJump`` all keep working as the operator set them up. One
connection per node (:mod:`txsetup.master.connections`) carries the payload
on stdin; the node's stderr (JSON log lines) is read line by line as it
arrives, its stdout (one JSON result object) at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txsetup.errors import InternalError

__all__ = [
    "SSH_FAILED",
    "Node",
    "NodeRun",
    "RemoteCall",
    "end_process",
    "parse_node",
    "read_bounded",
    "run_on_node",
    "run_quietly",
]

SSH_FAILED = 255  # ssh's own exit code: connection, authentication or host key
_LINE_LIMIT = 1024 * 1024
_RESULT_LIMIT = 16 * 1024 * 1024
_TERMINATE_GRACE = 5.0
_NODE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True)
class Node:
    """A node as given on the command line: ``[user@]host[:port]`` (IPv6 in brackets)."""

    spec: str
    host: str
    user: str = "root"
    port: int = 22

    @property
    def destination(self) -> str:
        """``user@host`` as ssh takes it."""
        return f"{self.user}@{self.host}"


def parse_node(text: str) -> Node:
    """Parse ``[user@]host[:port]``; refuse anything ssh could read as an option.

    Raises:
        ValueError: the text is not a node address (the message says why).
    """
    spec = text.strip()
    match = _NODE.fullmatch(spec)
    if match is None:
        raise ValueError(f"{text!r} is not [user@]host[:port]")
    port = int(match["port"] or 22)
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return Node(spec, match["ipv6"] or match["host"], match["user"] or "root", port)


@dataclass(frozen=True)
class RemoteCall:
    """How to reach the nodes and what to run there."""

    ssh: str = "ssh"
    ssh_options: tuple[str, ...] = ()
    remote_command: str = "txsetup node-daemon-setup"
    remote_args: tuple[str, ...] = ()

    def argv(self, node: Node, control: Path | None = None) -> list[str]:
        """``ssh -p PORT -o BatchMode=yes [-o OPT]... user@host -- COMMAND [ARGS]``.

        With ``control``, the command goes over that master connection's socket
        (see :mod:`txsetup.master.connections`).
        """
        shared = ("ControlMaster=no", f"ControlPath={control}") if control is not None else ()
        return [
            *self._ssh(node, shared),
            node.destination,
            "--",
            self.remote_command,
            *self.remote_args,
        ]

    def master_argv(self, node: Node, control: Path, persist: int) -> list[str]:
        """A master connection on ``control``: ``ssh -N -f`` returns once it is up."""
        shared = ("ControlMaster=yes", f"ControlPath={control}", f"ControlPersist={persist}")
        return [*self._ssh(node, shared), "-N", "-f", node.destination]

    def exit_argv(self, node: Node, control: Path) -> list[str]:
        """Ask the master connection on ``control`` to end."""
        return [*self._ssh(node, (f"ControlPath={control}",)), "-O", "exit", node.destination]

    def _ssh(self, node: Node, shared: tuple[str, ...]) -> list[str]:
        """The client and its options; the push's own come first, so they win."""
        opts = ("BatchMode=yes", *shared, *self.ssh_options)
        return [*shlex.split(self.ssh), "-p", str(node.port), *(a for o in opts for a in ("-o", o))]


@dataclass
class NodeRun:
    """What came back from one node: exit status and its result object."""

    returncode: int | None
    result: dict[str, Any] | None
    duration_ms: int
    timed_out: bool = False
    interrupted: bool = False


async def run_on_node(
    node: Node,
    call: RemoteCall,
    stdin: bytes | None,
    *,
    control: Path | None = None,
    on_line: Callable[[dict[str, Any] | None, str], None],
    timeout: float | None,
    stop: asyncio.Event,
) -> NodeRun:
    """Run the remote command on ``node`` and report each stderr line as it arrives.

    ``on_line`` gets each line parsed (None when it is not a JSON object) and
    as text. When ``timeout`` passes or ``stop`` is set, the ssh client is
    ended (SIGTERM to its own process group, SIGKILL after a grace period):
    the node's transaction does not depend on the connection and finishes or
    rolls back by itself.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *call.argv(node, control),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=_LINE_LIMIT,
        start_new_session=True,  # Ctrl-C on the master's terminal is the master's to handle
    )
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # asked for above: cannot happen
        raise InternalError("ssh was started without its output pipes")
    work = asyncio.gather(
        _feed(proc, stdin),
        _read_lines(stderr, on_line),
        read_bounded(stdout, _RESULT_LIMIT),
        proc.wait(),
    )
    stopped = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {work, stopped}
    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when="FIRST_COMPLETED")
    stopped.cancel()
    run = NodeRun(None, None, 0)
    if work not in done:
        run.timed_out, run.interrupted = not stop.is_set(), stop.is_set()
        await end_process(proc)
        if control is not None:  # the master connection holds the client's pipes: end it too
            await run_quietly(call.exit_argv(node, control))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(work, _TERMINATE_GRACE)
    out = b""
    if work.done() and not work.cancelled() and work.exception() is None:
        out = work.result()[2]
    run.returncode = proc.returncode
    run.result = _json_object(out.decode("utf-8", "replace").strip().rsplit("\n", 1)[-1])
    run.duration_ms = int((time.monotonic() - started) * 1000)
    return run


async def _feed(proc: asyncio.subprocess.Process, stdin: bytes | None) -> None:
    """Write the document to ssh's stdin, then close it."""
    if stdin is None or proc.stdin is None:
        return
    with contextlib.suppress(ConnectionError):  # ssh gave up before reading it all
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()


async def _read_lines(
    stderr: asyncio.StreamReader, on_line: Callable[[dict[str, Any] | None, str], None]
) -> None:
    """Hand each stderr line to ``on_line`` as it arrives, parsed and as text."""
    while line := await _read_line(stderr):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        on_line(_json_object(text), text)


async def read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    """All of ``stream`` read (so the writer never blocks), its first ``limit`` bytes kept."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def _read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line; one longer than the limit comes in pieces instead of failing."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError as exc:
        return await stream.readexactly(exc.consumed)


async def end_process(proc: asyncio.subprocess.Process) -> None:
    """End an ssh client started in its own session: SIGTERM to its group, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), _TERMINATE_GRACE)
        except TimeoutError:
            continue
        return


async def run_quietly(argv: list[str]) -> int | None:
    """Run a short ssh control command (``-O exit``) without its output; one that hangs is
    ended. Its exit status, None when it had to be ended."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return await asyncio.wait_for(proc.wait(), _TERMINATE_GRACE)
    except TimeoutError:
        await end_process(proc)
        return None


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
