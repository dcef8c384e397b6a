"""Push one document to many nodes: one ssh connection each, at most N at once.

:func:`push` is the API a cluster manager embeds and the CLI is a thin layer
over: it takes parsed nodes and a built payload, reports every node event
through ``on_event`` as it happens and every node's result through
``on_result`` as the node finishes, and returns a :class:`PushReport`. A
node's failure never stops the others. SIGINT or SIGTERM stops the push:
no new node is started, running ssh clients are ended (the nodes finish or
roll back their own transactions), and every node is reported as it stands.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from txsetup.master.connections import SharedConnections
from txsetup.master.payload import Payload
from txsetup.master.results import (
    INTERRUPTED,
    NOT_STARTED,
    TIMED_OUT,
    UNREACHABLE,
    NodeResult,
    PushReport,
    reported_txid,
)
from txsetup.master.ssh import SSH_FAILED, Node, NodeRun, RemoteCall, run_on_node

T = TypeVar("T")
COMMAND_NOT_FOUND = 127  # the node's shell found no such command
_LAST_WORDS = 3  # stderr lines that are not JSON kept for a node's error

__all__ = [
    "NodeEvent",
    "OnEvent",
    "OnResult",
    "Phase",
    "PushOptions",
    "not_found_hint",
    "push",
    "push_async",
    "run_nodes",
    "run_until_stopped",
]


@dataclass(frozen=True)
class PushOptions:
    """How to push: the ssh side, the remote command, how many at once, and the rollout.

    ``canary`` nodes (the first ones given) run alone first; the rest start
    only if every one of them succeeded. After ``max_failures`` failed nodes,
    no further node starts. Nodes that never start are ``not_started``.
    """

    ssh: str = "ssh"
    ssh_options: tuple[str, ...] = ()
    remote_command: str = "txsetup node-daemon-setup"
    parallel: int = 8
    timeout: float | None = None
    dry_run: bool = False
    resume: bool = False
    abort: bool = False
    canary: int = 0
    max_failures: int | None = None

    def remote_call(self, *extra: str) -> RemoteCall:
        """The ssh command line's parts; mode flags (and ``extra``) go to the node's command."""
        args = ["--dry-run"] if self.dry_run else []
        if self.resume:
            args += ["--resume", *(["--abort"] if self.abort else [])]
        return RemoteCall(self.ssh, self.ssh_options, self.remote_command, (*args, *extra))


@dataclass(frozen=True)
class NodeEvent:
    """Something that happened on or for one node.

    ``from_node`` events are the node's own JSON log lines, as it wrote them;
    the others are the push's: ``node.begin``, ``node.output`` (a stderr line
    that is not JSON: ssh's messages, an old node), ``node.end``.
    """

    node: str
    fields: Mapping[str, Any]
    from_node: bool

    @property
    def event(self) -> str:
        """The event's name."""
        return str(self.fields.get("event", ""))


OnEvent = Callable[[NodeEvent], None]
OnResult = Callable[[NodeResult], None]


def _ignore(_: object) -> None:
    return None


def push(
    nodes: Sequence[Node],
    payload: Payload | None,
    options: PushOptions,
    *,
    on_event: OnEvent = _ignore,
    on_result: OnResult = _ignore,
) -> PushReport:
    """Push to every node and wait for all of them (``payload`` None with ``resume``).

    SIGINT and SIGTERM are taken over while it runs: they stop the push as
    described in the module docstring, and the report says ``interrupted``.
    """

    return run_until_stopped(
        lambda stop: push_async(
            nodes, payload, options, on_event=on_event, on_result=on_result, stop=stop
        )
    )


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` in a new event loop; SIGINT and SIGTERM set ``stop``."""

    async def guarded() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(guarded())


async def push_async(
    nodes: Sequence[Node],
    payload: Payload | None,
    options: PushOptions,
    *,
    on_event: OnEvent = _ignore,
    on_result: OnResult = _ignore,
    stop: asyncio.Event | None = None,
) -> PushReport:
    """:func:`push` inside a running event loop; set ``stop`` to interrupt it.

    Each node's connection opens when its turn comes and ends when it is done
    (:mod:`txsetup.master.connections`); none is left open when this returns.
    """
    stop = stop or asyncio.Event()
    call = options.remote_call()
    async with SharedConnections(call) as connections:
        return await run_nodes(
            nodes,
            Phase(lambda _: call, payload.for_node if payload is not None else _no_stdin),
            options,
            connections,
            on_event=on_event,
            on_result=on_result,
            stop=stop,
        )


def _no_stdin(_: str) -> None:
    return None


@dataclass(frozen=True)
class Phase:
    """What one round of a push runs on each node, and what it sends on stdin.

    ``name`` (an atomic push's ``prepare``, ``commit``...) goes into the
    push's own events; ``release`` ends each node's connection when its
    command is done (an atomic push keeps it for the next phase).
    """

    call_for: Callable[[Node], RemoteCall]
    stdin_for: Callable[[str], bytes | None]
    name: str | None = None
    release: bool = True


async def run_nodes(
    nodes: Sequence[Node],
    phase: Phase,
    options: PushOptions,
    connections: SharedConnections,
    *,
    on_event: OnEvent,
    on_result: OnResult,
    stop: asyncio.Event,
) -> PushReport:
    """Run ``phase`` on every node over ``connections``, at most ``options.parallel`` at once,
    canary nodes first and no new node after ``options.max_failures`` failures."""
    report = PushReport()
    slots = asyncio.Semaphore(max(1, options.parallel))
    said = {"phase": phase.name} if phase.name else {}

    def finish(result: NodeResult) -> None:
        report.results.append(result)
        fields = {"event": "node.end", **said, **_summary(result)}
        on_event(NodeEvent(result.node, fields, False))
        on_result(result)

    def held_back() -> str | None:
        if stop.is_set():
            return "push interrupted"
        failed = len(report.failed)
        if options.max_failures is not None and failed >= options.max_failures:
            return f"not started: {failed} node(s) failed (--max-failures {options.max_failures})"
        return None

    async def one(node: Node) -> None:
        async with slots:
            why = held_back()
            if why is not None:
                finish(NodeResult(node.spec, None, NOT_STARTED, None, 0, why))
                return
            begin = {"event": "node.begin", **said, "host": node.host}
            on_event(NodeEvent(node.spec, begin, False))
            finish(await _run_one(node, phase, options, connections, on_event, stop))
            if phase.release:
                await connections.release(node)

    canary = nodes[: max(0, options.canary)]
    rest = nodes[len(canary) :]
    await asyncio.gather(*(one(node) for node in canary))
    if canary and report.failed:
        why = f"not started: a canary node failed (--canary {len(canary)})"
        for node in rest:
            finish(NodeResult(node.spec, None, NOT_STARTED, None, 0, why))
    else:
        await asyncio.gather(*(one(node) for node in rest))
    report.interrupted = stop.is_set()
    return report


async def _run_one(  # noqa: PLR0917 - run_nodes' parts for one node
    node: Node,
    phase: Phase,
    options: PushOptions,
    connections: SharedConnections,
    on_event: OnEvent,
    stop: asyncio.Event,
) -> NodeResult:
    """One node's command: its lines reported as they come, then its result."""
    # Lines that are not JSON wait here while they may still be the node's last
    # words: those become the result's error and are not shown a second time.
    last_words: list[str] = []

    def say(lines: list[str]) -> None:
        for text in lines:
            on_event(NodeEvent(node.spec, {"event": "node.output", "line": text}, False))

    def on_line(parsed: dict[str, Any] | None, text: str) -> None:
        if parsed is not None:
            say(last_words)
            last_words.clear()
            on_event(NodeEvent(node.spec, parsed, True))
        elif text.strip():
            last_words.append(text)
            say(last_words[:-_LAST_WORDS])
            del last_words[:-_LAST_WORDS]

    run = await _reach(
        node,
        phase.call_for(node),
        phase.stdin_for(node.host),
        options=options,
        connections=connections,
        on_line=on_line,
        stop=stop,
        last_words=last_words,
    )
    result = _node_result(node, run, options, last_words)
    say([text for text in last_words if text not in (result.error or "")])
    return result


async def _reach(
    node: Node,
    call: RemoteCall,
    stdin: bytes | None,
    *,
    options: PushOptions,
    connections: SharedConnections,
    on_line: Callable[[dict[str, Any] | None, str], None],
    stop: asyncio.Event,
    last_words: list[str],
) -> NodeRun:
    """Connect to the node (unless its connection is up), then run ``call`` over it.

    ``--timeout`` counts from the start of the connection; when the connection
    fails, ssh's own words become ``last_words``.
    """
    started = time.monotonic()
    if connections.socket(node) is None:
        connected = await connections.connect(node, timeout=options.timeout, stop=stop)
        if not connected.ok:
            last_words[:] = connected.said[-_LAST_WORDS:]
            return NodeRun(
                connected.returncode,
                None,
                _ms_since(started),
                connected.timed_out,
                connected.interrupted,
            )
    left = None if options.timeout is None else options.timeout - (time.monotonic() - started)
    control = connections.socket(node)
    run = await run_on_node(
        node, call, stdin, control=control, on_line=on_line, timeout=left, stop=stop
    )
    run.duration_ms = _ms_since(started)
    return run


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _node_result(
    node: Node, run: NodeRun, options: PushOptions, last_words: list[str]
) -> NodeResult:
    """A node's result from its own result object, or from how ssh ended.

    ``last_words`` are the node's last stderr lines that are not JSON (ssh's
    own message, a shell's "not found"): the error quotes them when the node
    gave no result of its own.
    """
    returncode = run.returncode if run.returncode is not None and run.returncode >= 0 else None
    found = run.result
    if found is not None and isinstance(found.get("outcome"), str):
        error = found.get("error")
        return NodeResult(
            node.spec,
            returncode,
            found["outcome"],
            reported_txid(found),
            run.duration_ms,
            error if isinstance(error, str) else None,
            found,
        )
    if run.interrupted or run.timed_out:
        returncode = None  # what ssh says after we ended it is not the node's word
    said = "; ".join(last_words)
    after = "the node finishes or rolls back on its own; `txsetup push --resume` reports it"
    if run.interrupted:
        outcome, error = INTERRUPTED, f"push interrupted: ssh ended; {after}"
    elif run.timed_out:
        outcome, error = TIMED_OUT, f"no result within {options.timeout:g}s: ssh ended; {after}"
    elif returncode == SSH_FAILED:
        outcome, error = UNREACHABLE, said or "ssh failed (exit 255)"
    elif returncode == COMMAND_NOT_FOUND:
        outcome, error = "failed", not_found_hint(options.remote_command, said)
    else:
        outcome = "failed"
        error = f"remote command exited {returncode} without a result" + (
            f": {said}" if said else ""
        )
    return NodeResult(node.spec, returncode, outcome, None, run.duration_ms, error)


def not_found_hint(remote_command: str, said: str = "") -> str:
    """The error of a node whose shell did not find the remote command (exit 127)."""
    hint = (
        f"`{remote_command}` was not found on the node (exit 127): install txsetup there, "
        "or give the command's path with --remote-command"
    )
    return f"{hint} ({said})" if said else hint


def _summary(result: NodeResult) -> dict[str, Any]:
    """``node.end``'s fields: the result line without the node's own result object
    (and without ``error`` when there is none)."""
    fields = {k: v for k, v in result.to_json().items() if k not in ("node", "result")}
    if fields["error"] is None:
        del fields["error"]
    return fields
