"""A master and three loopback sshd nodes with their demo daemons, for the atomic push's tests.

Every node first gets certificate A by a plain push, so "all old" means every
daemon serves A and "all new" every daemon serves B, the certificate the
master holds when the test starts its atomic push.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import assert_no_secrets, check_log_lines, require_tool
from txsetup.demo.certs import generate_node_certificate, renew_node_certificate
from txsetup.demo.nodes import DemoNodes, demo_nodes, push_argv
from txsetup.demo.scene import (
    CLUSTER,
    payload,
    pem_fingerprint,
    served_fingerprint,
    txsetup_command,
    write_master,
)
from txsetup.demo.sshnodes import SshNode

NODES = 3


@dataclass
class Ran:
    """A finished push: exit code, node lines, the fleet line, the stderr events."""

    returncode: int
    results: dict[str, dict[str, Any]]
    fleet: dict[str, Any] | None
    events: list[dict[str, Any]]
    stderr: str


@dataclass
class Fleet:
    """The master's root, the nodes, and the certificates old (A) and new (B)."""

    master: Path
    nodes: DemoNodes
    old: str  # fingerprint every daemon serves before the atomic push
    new: str  # fingerprint of the master's certificate now

    @property
    def specs(self) -> list[str]:
        """The nodes as push takes them."""
        return [node.spec for node in self.nodes.cluster.nodes]

    def node(self, index: int) -> SshNode:
        """One node."""
        return self.nodes.cluster.nodes[index]

    def atomic_argv(self, *extra: str, ports: dict[str, int] | None = None) -> list[str]:
        """``txsetup push --atomic`` to every node, checking each daemon on its own port."""
        ports = ports or dict(zip(self.specs, self.nodes.ports, strict=True))
        given = [a for spec, port in ports.items() for a in ("--daemon-port", f"{spec}={port}")]
        return push_argv(
            self.master,
            self.nodes,
            "--log-format",
            "json",
            "--atomic",
            "--remote-txsetup",
            shlex.join(txsetup_command()),
            *given,
            *extra,
        )

    def resume_argv(self) -> list[str]:
        """``txsetup push --resume`` with no node: finish the unfinished atomic push."""
        return [
            *txsetup_command(),
            "push",
            "--resume",
            "--from-root",
            str(self.master),
            "--log-format",
            "json",
        ]

    def run(self, argv: list[str], timeout: float = 300) -> Ran:
        """Run a push; check its output contract."""
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        return parse_ran(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def serving(self) -> list[str]:
        """The fingerprint each node's daemon serves now."""
        return [served_fingerprint(port) for port in self.nodes.ports]

    def statuses(self) -> list[dict[str, Any]]:
        """``txsetup status`` of every node."""
        found = []
        for node in self.nodes.cluster.nodes:
            proc = subprocess.run(
                [*txsetup_command(), "status", "--root", str(node.root)],
                capture_output=True,
                check=False,
            )
            found.append(json.loads(proc.stdout))
        return found

    def records(self) -> list[dict[str, Any]]:
        """The master's record of its one atomic push."""
        (path,) = (self.master / "var/lib/txsetup/push").glob("push-*.json")
        return [json.loads(line) for line in path.read_text().splitlines()]

    def assert_all(self, side: str) -> None:
        """Every daemon serves ``side``'s certificate, and no node is held or unconfirmed."""
        want = self.new if side == "new" else self.old
        assert self.serving() == [want] * NODES, side
        for status in self.statuses():
            assert status.get("finished", True), status  # not held, nothing unfinished
            assert (status.get("revertable") or {}).get("unconfirmed") is None, status


def parse_ran(returncode: int, stdout: str, stderr: str) -> Ran:
    """No traceback, no secret, valid stderr lines; node lines, then at most one fleet line."""
    assert "Traceback" not in stderr, stderr
    assert_no_secrets(stdout, stderr)
    events = check_log_lines(stderr)
    results: dict[str, dict[str, Any]] = {}
    fleet = None
    for line in stdout.splitlines():
        entry = json.loads(line)
        if "push_id" in entry:
            assert fleet is None
            fleet = entry
        else:
            assert fleet is None, "the fleet line is the last"
            results[entry["node"]] = entry
    return Ran(returncode, results, fleet, events, stderr)


@contextmanager
def fleet_at(workdir: Path) -> Iterator[Fleet]:
    """Three nodes serving certificate A; the master now holding B, A renewed (same key)."""
    require_tool("sshd")
    require_tool("ssh")
    master = workdir / "master"
    first = generate_node_certificate(CLUSTER)
    write_master(master, payload(first))
    with demo_nodes(NODES, workdir / "sshd") as nodes:
        proc = subprocess.run(
            push_argv(master, nodes, "--log-format", "json"), capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        second = renew_node_certificate(first, CLUSTER)
        (master / "var/lib/ganeti/server.pem").write_text(second)
        fleet = Fleet(master, nodes, pem_fingerprint(first), pem_fingerprint(second))
        assert fleet.serving() == [fleet.old] * NODES
        yield fleet
