"""The demo's push: a master root, three loopback sshd "nodes", one ``txsetup push``.

Each node is a real ``sshd`` with its own node root and its own demo node
daemon (:func:`txsetup.demo.nodes.demo_nodes`, the nodes ``python -m
txsetup.demo nodes N`` leaves running), so the push restarts three daemons
over three SSH connections, and the demo probes each over TLS afterwards.
The push's JSON log (every node's lines, each with its ``node``) is kept with
the other runs' logs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from txsetup.demo.nodes import DemoNodes, demo_nodes, missing_openssh, push_argv
from txsetup.demo.runs import Runs, Told
from txsetup.demo.scene import served_fingerprint, write_master

__all__ = ["push_scenario"]

NODES = 3


def push_scenario(workdir: Path, document: dict[str, Any], *, runs: Runs, installed: str) -> Told:
    """Push to three loopback nodes; the scenario told (how to get sshd when it is missing)."""
    missing = missing_openssh()
    if missing is not None:
        return Told("push", True, f"skipped: {missing}; then run the demo again", skipped=True)
    master = workdir / "master"
    write_master(master, document)
    with demo_nodes(NODES, workdir / "sshd") as nodes:
        results, code = _push(runs, master, nodes)
        serving = [served_fingerprint(port) for port in nodes.ports]
    outcomes = [r["outcome"] for r in results]
    committed = outcomes.count("committed")
    healthy = serving.count(installed)
    return Told(
        f"push, {NODES} nodes",
        code == 0 and committed == NODES and healthy == NODES,
        f"{committed} of {NODES} committed over {NODES} ssh connections (exit {code}); "
        f"{healthy} daemons serve the certificate",
    )


def _push(runs: Runs, master: Path, nodes: DemoNodes) -> tuple[list[dict[str, Any]], int]:
    """``txsetup push`` from ``master`` to every node: the result lines and the exit code."""
    log = runs.next_log("push")
    with log.open("wb") as stderr:
        proc = subprocess.run(
            push_argv(master, nodes, "--log-format", "json"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            check=False,
        )
    return [json.loads(line) for line in proc.stdout.decode().splitlines()], proc.returncode
