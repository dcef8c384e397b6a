"""An atomic push: every node ends with the new files, or every node with the old ones.

Two-phase commit with presumed abort, then a confirmation round
(``docs/fleet.md`` has the protocol and its invariants). One function,
:func:`drive`, takes a push from wherever its record (:mod:`fleetlog`) says
it stands to its end, so a fresh push and ``push --resume`` are the same
code:

1. **prepare** every node (``--prepare --coordinator PUSH_ID``), unless a
   decision is recorded; a resume that finds none aborts (presumed abort);
2. record the **decision** (commit when every node prepared, else abort),
   then send it to every node that has not acknowledged it; each answer is
   recorded as it comes;
3. with ``--confirm-within``, check each node end to end (its daemon serves
   the new certificate over TLS), record the **confirmation** (confirm, or
   revert when any node failed its commit or its check), and send it; a node
   found reverted by its own timer turns a confirm into a revert;
4. record the **end** (committed, aborted or reverted) once every node has
   answered; while one has not, the push is ``in_doubt`` and ``push
   --resume`` carries on from here.

All phases of a node share its one ssh connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from txsetup.master.connections import SharedConnections
from txsetup.master.fleetlog import FleetLog
from txsetup.master.push import NodeEvent, OnEvent, Phase, PushOptions, run_nodes
from txsetup.master.results import NOT_STARTED, NodeResult, PushReport
from txsetup.master.ssh import Node, RemoteCall, parse_node
from txsetup.node.config import NODED_PORT, HealthTarget
from txsetup.node.daemon import probe_tls

__all__ = ["FleetOptions", "drive"]

_CHECK_TIMEOUT: Final = 10.0
_REFUSED: Final = 4
_ROLLED_BACK: Final = 6

#: What each phase's command answers when it took effect (exit 0).
_TOOK_EFFECT: Final = {
    "prepare": "prepared",
    "commit": "committed",
    "abort": "aborted",
    "confirm": "confirmed",
    "revert": "reverted",
}


@dataclass(frozen=True)
class FleetOptions:
    """What an atomic push adds to a push: the node verbs, the window and the check."""

    remote_txsetup: str = "txsetup"
    confirm_within: float | None = None
    daemon_port: int = NODED_PORT
    daemon_ports: Mapping[str, int] = field(default_factory=dict)  # node spec -> port
    client_cert: str | None = None  # presented to a daemon that asks (Ganeti's noded does)

    def port_of(self, node: Node) -> int:
        """The node daemon's port on ``node``."""
        return self.daemon_ports.get(node.spec, self.daemon_port)

    def to_record(self) -> dict[str, Any]:
        """The fields the push record keeps, so a resume needs no option again."""
        return {
            "remote_txsetup": self.remote_txsetup,
            "confirm_within": self.confirm_within,
            "daemon_port": self.daemon_port,
            "daemon_ports": dict(self.daemon_ports),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], client_cert: str | None) -> FleetOptions:
        """The options a push record kept."""
        return cls(
            remote_txsetup=record["remote_txsetup"],
            confirm_within=record["confirm_within"],
            daemon_port=record["daemon_port"],
            daemon_ports=record["daemon_ports"],
            client_cert=client_cert,
        )


Check = Callable[[Node], str | None]
"""An end-to-end check of one committed node: None when it passes, else why not."""


@dataclass
class _Fleet:
    """One atomic push being driven: its record, its nodes and their connections."""

    log: FleetLog
    nodes: list[Node]
    options: PushOptions
    fleet: FleetOptions
    connections: SharedConnections
    on_event: OnEvent
    stop: asyncio.Event
    latest: dict[str, NodeResult] = field(default_factory=dict)

    async def round(
        self,
        name: str,
        nodes: Sequence[Node],
        argv_for: Callable[[Node], tuple[str, ...]],
        stdin_for: Callable[[str], bytes | None] | None = None,
    ) -> dict[str, NodeResult]:
        """Run one phase on ``nodes``; record each answer that took effect as an ack."""
        options = self.options
        if name != "prepare":  # the rollout controls choose who prepares, nothing later
            options = dataclasses.replace(options, canary=0, max_failures=None)
        verb = name != "prepare"

        def call_for(node: Node) -> RemoteCall:
            command = self.fleet.remote_txsetup if verb else options.remote_command
            return RemoteCall(options.ssh, options.ssh_options, command, argv_for(node))

        answers: dict[str, NodeResult] = {}

        def on_result(result: NodeResult) -> None:
            result = dataclasses.replace(result, phase=name)
            answers[result.node] = self.latest[result.node] = result
            if verb and _acknowledged(name, result):
                settled = "rolled_back" if result.exit_code == _ROLLED_BACK else result.outcome
                self.log.append("ack", node=result.node, phase=name, outcome=settled)

        phase = Phase(call_for, stdin_for or _nothing, name, release=False)
        await run_nodes(
            nodes,
            phase,
            options,
            self.connections,
            on_event=self.on_event,
            on_result=on_result,
            stop=self.stop,
        )
        return answers

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Make a decision or confirmation durable, then tell it (``push.decided``)."""
        entry = self.log.append(kind, **fields)
        said = {"push_id": self.log.push_id, "record": kind, "decision": fields["decision"]}
        self.on_event(
            NodeEvent("", {"event": "push.decided", **said, "reason": fields["reason"]}, False)
        )
        return entry

    def pending(self, phase: str, among: Sequence[Node] | None = None) -> list[Node]:
        """The nodes (of ``among``, default all) that have not acknowledged ``phase``."""
        done = self.log.acks(phase)
        return [n for n in (self.nodes if among is None else among) if n.spec not in done]


def _nothing(_: str) -> None:
    return None


def _acknowledged(phase: str, result: NodeResult) -> bool:
    """The node's answer settles its part of ``phase``: it took effect, or (commit) the node
    rolled its commit back and so holds the old files."""
    if result.exit_code == 0 and result.outcome == _TOOK_EFFECT[phase]:
        return True
    return phase == "commit" and result.exit_code == _ROLLED_BACK


def tls_check(fleet: FleetOptions, fingerprint: str) -> Check:
    """The daemon on the node serves the certificate whose fingerprint is ``fingerprint``."""

    def check(node: Node) -> str | None:
        target = HealthTarget(node.host, fleet.port_of(node))
        try:
            served = probe_tls(target, timeout=_CHECK_TIMEOUT, client_cert=fleet.client_cert)
        except OSError as exc:
            return f"no TLS handshake with the node daemon at {target}: {exc}"
        if served != fingerprint:
            return f"the node daemon at {target} serves another certificate ({served[:16]}…)"
        return None

    return check


async def drive(
    log: FleetLog,
    options: PushOptions,
    fleet: FleetOptions,
    *,
    stdin_for: Callable[[str], bytes | None] | None,
    check: Check,
    on_event: OnEvent,
    stop: asyncio.Event,
) -> PushReport:
    """Take the push recorded in ``log`` to its end, or as far as the nodes answer.

    ``stdin_for`` gives each node its document for a fresh push's prepare;
    None on a resume, which never prepares. The report holds each node's
    last answer (with the phase it reached) and the fleet's outcome.
    """
    nodes = [parse_node(spec) for spec in log.records[0]["nodes"]]
    async with SharedConnections(RemoteCall(options.ssh, options.ssh_options)) as connections:
        run = _Fleet(log, nodes, options, fleet, connections, on_event, stop)
        outcome = await _settle(run, stdin_for, check)
    if outcome != "in_doubt" and not stop.is_set():
        log.append("end", outcome=outcome)
    report = PushReport(
        results=[run.latest.get(n.spec) or _recorded(log, n) for n in nodes],
        interrupted=stop.is_set(),
    )
    report.fleet = {
        "push_id": log.push_id,
        "outcome": outcome,
        "decision": _decision_of(log),
        "confirmation": (log.last("confirmation") or {}).get("decision"),
    }
    return report


def _decision_of(log: FleetLog) -> str | None:
    decision = log.last("decision")
    return None if decision is None else str(decision["decision"])


def _recorded(log: FleetLog, node: Node) -> NodeResult:
    """A node this run sent nothing: its last answer as the record keeps it."""
    acks = [r for r in log.records if r["record"] == "ack" and r["node"] == node.spec]
    decision = log.last("decision") or {}
    txid = decision.get("txids", {}).get(node.spec)
    if not acks:
        return NodeResult(node.spec, None, "not_started", txid, 0, "nothing sent", phase="none")
    last = acks[-1]
    return NodeResult(node.spec, 0, last["outcome"], txid, 0, None, phase=last["phase"])


async def _settle(
    run: _Fleet, stdin_for: Callable[[str], bytes | None] | None, check: Check
) -> str:
    """Each phase in turn, as far as the record and the nodes allow; the fleet's outcome."""
    decision = run.log.last("decision")
    if decision is None:
        decision = await _prepare(run, stdin_for)
    if run.stop.is_set():
        return "in_doubt"
    if decision["decision"] == "abort":
        targets = [n for n in run.nodes if n.spec in decision["to_abort"]]
        await run.round("abort", run.pending("abort", targets), _by_coordinator(run, "abort"))
        return "aborted" if not run.pending("abort", targets) else "in_doubt"
    txids: dict[str, str] = decision["txids"]
    await run.round("commit", run.pending("commit"), _commit_argv(run))
    return await _confirm_or_revert(run, txids, check)


async def _prepare(run: _Fleet, stdin_for: Callable[[str], bytes | None] | None) -> dict[str, Any]:
    """Prepare every node and record the decision; a resume records abort (presumed abort)."""
    everyone = [n.spec for n in run.nodes]
    if stdin_for is None:
        reason = "the push stopped before it decided (presumed abort)"
        return run.record("decision", decision="abort", reason=reason, to_abort=everyone)
    push_id = run.log.push_id
    answers = await run.round(
        "prepare", run.nodes, lambda _: ("--prepare", "--coordinator", push_id), stdin_for
    )
    prepared = {
        spec: r.txid
        for spec, r in answers.items()
        if r.exit_code == 0 and r.outcome == "prepared" and r.txid
    }
    if len(prepared) == len(run.nodes) and not run.stop.is_set():
        return run.record(
            "decision", decision="commit", reason="every node prepared", txids=prepared
        )
    failed = sorted(set(everyone) - set(prepared))
    # A node that answered "not prepared" holds nothing; one that never answered may.
    unsure = [
        s for s in everyone if answers[s].result is None and answers[s].outcome != NOT_STARTED
    ]
    reason = f"{len(failed)} node(s) did not prepare: {', '.join(failed[:5])}"
    to_abort = [s for s in everyone if s in prepared or s in unsure]
    return run.record("decision", decision="abort", reason=reason, to_abort=to_abort)


def _by_coordinator(run: _Fleet, verb: str) -> Callable[[Node], tuple[str, ...]]:
    return lambda _: (verb, "--coordinator", run.log.push_id)


def _commit_argv(run: _Fleet) -> Callable[[Node], tuple[str, ...]]:
    window = run.fleet.confirm_within
    extra = ("--confirm-within", f"{window:g}") if window is not None else ()
    return lambda _: ("commit", "--coordinator", run.log.push_id, *extra)


async def _confirm_or_revert(run: _Fleet, txids: Mapping[str, str], check: Check) -> str:
    """After the commit round: end committed, or confirm, or revert the whole fleet."""
    committed = run.log.acks("commit")
    if run.log.last("confirmation") is None:
        rolled_back = [spec for spec, outcome in committed.items() if outcome != "committed"]
        if rolled_back:
            _decide(run, "revert", f"{', '.join(rolled_back[:5])} rolled its commit back")
        elif run.pending("commit"):
            return "in_doubt"
        elif run.fleet.confirm_within is None:
            return "committed"
        else:
            failures = await _check_all(run, check)
            if failures:
                spec, why = failures[0]
                _decide(run, "revert", f"{spec} failed its check: {why}")
            else:
                _decide(run, "confirm", "every node committed and passed its check")
    if run.log.stage == "confirm":
        answers = await run.round("confirm", run.pending("confirm"), _with_txid("confirm", txids))
        reverted = [s for s, r in answers.items() if r.exit_code == _REFUSED]
        if not reverted:
            return "committed" if not run.pending("confirm") else "in_doubt"
        _decide(run, "revert", f"{reverted[0]} had reverted by itself (not confirmed in time)")
    # Every node on the new side goes back; one that rolled its commit back already is old.
    new_side = [n for n in run.nodes if run.log.acks("commit").get(n.spec) != "rolled_back"]
    await run.round("revert", run.pending("revert", new_side), _with_txid("revert", txids))
    return "reverted" if not run.pending("revert", new_side) else "in_doubt"


def _decide(run: _Fleet, decision: str, reason: str) -> None:
    run.record("confirmation", decision=decision, reason=reason)


def _with_txid(verb: str, txids: Mapping[str, str]) -> Callable[[Node], tuple[str, ...]]:
    return lambda node: (verb, txids[node.spec])


async def _check_all(run: _Fleet, check: Check) -> list[tuple[str, str]]:
    """Check every node at once (the checks block: each in a thread); the failures."""
    results = await asyncio.gather(*(asyncio.to_thread(check, node) for node in run.nodes))
    return [(n.spec, why) for n, why in zip(run.nodes, results, strict=True) if why is not None]


def certificate_fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of the first certificate in ``pem`` (what the daemon must serve)."""
    import hashlib
    import ssl

    block = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest()


def master_client_cert(from_root: Path) -> str | None:
    """The master's own ``server.pem``, presented to a daemon that asks for a client cert."""
    path = from_root / "var/lib/ganeti/server.pem"
    return str(path) if path.is_file() else None
