"""The demo's push: a master root, three loopback sshd "nodes", a push, then an atomic one.

Each node is a real ``sshd`` with its own node root and its own demo node
daemon (:func:`txsetup.demo.nodes.demo_nodes`, the nodes ``python -m
txsetup.demo nodes N`` leaves running), so the push restarts three daemons
over three SSH connections, and the demo probes each over TLS afterwards.
Then the certificate is renewed on its key and rotated on all three nodes
with ``push --atomic --confirm-within``: every node prepares, the master
records its decision, commits, checks each daemon over TLS and confirms.
Each push's JSON log (every node's lines, each with its ``node``) is kept
with the other runs' logs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from txsetup.demo.certs import renew_node_certificate
from txsetup.demo.nodes import DemoNodes, demo_nodes, missing_openssh, push_argv
from txsetup.demo.runs import Runs, Told
from txsetup.demo.scene import pem_fingerprint, served_fingerprint, txsetup_command, write_master

__all__ = ["push_scenario"]

NODES = 3


def push_scenario(
    workdir: Path, document: dict[str, Any], *, runs: Runs, installed: str
) -> list[Told]:
    """Push to three loopback nodes, then rotate their certificate with an atomic push;
    the scenarios told (one line on how to get sshd when it is missing)."""
    missing = missing_openssh()
    if missing is not None:
        return [Told("push", True, f"skipped: {missing}; then run the demo again", skipped=True)]
    master = workdir / "master"
    write_master(master, document)
    with demo_nodes(NODES, workdir / "sshd") as nodes:
        results, code = _push(runs, master, nodes, "push")
        serving = [served_fingerprint(port) for port in nodes.ports]
        outcomes = [r["outcome"] for r in results]
        committed = outcomes.count("committed")
        healthy = serving.count(installed)
        pushed = Told(
            f"push, {NODES} nodes",
            code == 0 and committed == NODES and healthy == NODES,
            f"{committed} of {NODES} committed over {NODES} ssh connections (exit {code}); "
            f"{healthy} daemons serve the certificate",
        )
        return [pushed, _rotate(runs, master, nodes, document)]


def _rotate(runs: Runs, master: Path, nodes: DemoNodes, document: dict[str, Any]) -> Told:
    """Renew the certificate on its key and push it with ``--atomic --confirm-within``."""
    pem = renew_node_certificate(document["node_daemon_certificate"], document["cluster_name"])
    (master / "var/lib/ganeti/server.pem").write_text(pem)
    ports = [
        arg
        for node, port in zip(nodes.cluster.nodes, nodes.ports, strict=True)
        for arg in ("--daemon-port", f"{node.spec}={port}")
    ]
    atomic = ["--atomic", "--confirm-within", "60", "--remote-txsetup", *_remote_txsetup()]
    results, code = _push(runs, master, nodes, "push-atomic", *atomic, *ports)
    fleet = results[-1] if results and "push_id" in results[-1] else {}
    healthy = [served_fingerprint(port) for port in nodes.ports].count(pem_fingerprint(pem))
    return Told(
        "atomic rotation",
        code == 0 and fleet.get("outcome") == "committed" and healthy == NODES,
        f"renewed certificate: prepared on all {NODES}, decided, committed, checked over "
        f"TLS, confirmed: fleet {fleet.get('outcome')} (exit {code}); {healthy} daemons "
        "serve it",
    )


def _remote_txsetup() -> list[str]:
    return [shlex.join(txsetup_command())]


def _push(
    runs: Runs, master: Path, nodes: DemoNodes, name: str, *extra: str
) -> tuple[list[dict[str, Any]], int]:
    """``txsetup push`` from ``master`` to every node: the result lines and the exit code."""
    log = runs.next_log(name)
    with log.open("wb") as stderr:
        proc = subprocess.run(
            push_argv(master, nodes, "--log-format", "json", *extra),
            stdout=subprocess.PIPE,
            stderr=stderr,
            check=False,
        )
    return [json.loads(line) for line in proc.stdout.decode().splitlines()], proc.returncode
