"""``python -m txsetup.demo nodes N``: loopback sshd nodes to push to, and the command to try.

Each node is a real ``sshd`` (:mod:`txsetup.demo.sshnodes`) on 127.0.0.1 with
its own node root, whose configuration drives its own demo node daemon; a
master root holds the demo cluster's files. The command prints each node and
the exact ``txsetup push`` line that reaches them (the key, the pinned host
keys, the remote command by its path), stays up until Ctrl-C or ``--for
SECONDS``, then stops sshd and the daemons and removes every file it made.
The demo's own push (:mod:`txsetup.demo.push`) uses the same nodes.

Exit 0 when stopped as asked; 2 for a usage error or when OpenSSH's ``sshd``,
``ssh`` or ``ssh-keygen`` is missing (the line says what to install); 1 when
a node's sshd could not start (the message says why).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txsetup.demo.certs import generate_node_certificate
from txsetup.demo.scene import (
    CLUSTER,
    payload,
    prepare_node_root,
    stop_daemon,
    txsetup_command,
    write_master,
)
from txsetup.demo.sshnodes import SshNodes, sshd_path, start_ssh_nodes

__all__ = [
    "DemoNodes",
    "add_nodes_parser",
    "demo_nodes",
    "missing_openssh",
    "push_argv",
    "run_nodes",
]

INSTALL_OPENSSH = "apt-get install openssh-server openssh-client"
MISSING_EXIT = 2
START_FAILED_EXIT = 1


@dataclass(frozen=True)
class DemoNodes:
    """Running nodes, each with a node root whose demo daemon listens on ``ports[i]``."""

    cluster: SshNodes
    ports: tuple[int, ...]


def missing_openssh() -> str | None:
    """What to install when OpenSSH's server or client tools are missing, else None."""
    if sshd_path() is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return f"OpenSSH is not installed (Debian/Ubuntu: {INSTALL_OPENSSH})"
    return None


@contextmanager
def demo_nodes(count: int, workdir: Path) -> Iterator[DemoNodes]:
    """Start ``count`` sshd nodes under ``workdir``; stop their daemons and sshd on exit.

    Sessions get ``SHLVL=1`` so the login shell skips root's rc files (see
    :mod:`txsetup.demo.sshnodes`).
    """
    with start_ssh_nodes(count, workdir, env={"SHLVL": "1"}) as cluster:
        ports = tuple(prepare_node_root(node.root) for node in cluster.nodes)
        try:
            yield DemoNodes(cluster, ports)
        finally:
            for node in cluster.nodes:
                stop_daemon(node.root)


def push_argv(master: Path, nodes: DemoNodes, *extra: str) -> list[str]:
    """The ``txsetup push`` command line that reaches every node and runs txsetup there."""
    txsetup = txsetup_command()
    on_path = shutil.which("txsetup")
    local = ["txsetup"] if on_path and Path(on_path).resolve() == Path(txsetup[0]) else txsetup
    return [
        *local,
        "push",
        "--from-root",
        str(master),
        "--remote-command",
        shlex.join([*txsetup, "node-daemon-setup"]),
        *(arg for option in nodes.cluster.ssh_options for arg in ("--ssh-option", option)),
        *extra,
        *(node.spec for node in nodes.cluster.nodes),
    ]


def add_nodes_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """The ``nodes`` command of ``python -m txsetup.demo``."""
    nodes = sub.add_parser(
        "nodes",
        help="start N loopback sshd nodes and print the txsetup push command to try",
        description="Start N loopback sshd nodes, each with its own node root and demo node "
        "daemon, and a master root; print the txsetup push command that reaches them; stay "
        "up until Ctrl-C (or --for SECONDS); then stop everything and remove its files. "
        f"Exit 0, 1 when sshd cannot start, 2 without OpenSSH ({INSTALL_OPENSSH}).",
    )
    nodes.add_argument("count", type=_count, metavar="N", help="how many nodes (1 to 64)")
    nodes.add_argument(
        "--for",
        dest="seconds",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: at Ctrl-C)",
    )


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("N must be 1 to 64")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("SECONDS must be 0 or more")
    return value


def run_nodes(args: argparse.Namespace) -> int:
    """Start the nodes, print how to push to them, wait, clean up."""
    missing = missing_openssh()
    if missing is not None:
        print(f"txsetup demo nodes: {missing}", file=sys.stderr)
        return MISSING_EXIT
    workdir = Path(tempfile.mkdtemp(prefix="txsetup-demo-nodes-"))
    try:
        master = workdir / "master"
        write_master(master, payload(generate_node_certificate(CLUSTER, key_type="ec")))
        try:
            with demo_nodes(args.count, workdir / "sshd") as nodes:
                _tell(workdir, master, nodes, args.seconds)
                _wait(args.seconds)
        except KeyboardInterrupt:  # Ctrl-C while the nodes started: stop as asked
            pass
        except RuntimeError as exc:  # sshd did not start: its log's tail says why
            print(f"txsetup demo nodes: {exc}", file=sys.stderr)
            return START_FAILED_EXIT
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"stopped: sshd and the demo daemons; {workdir} removed", flush=True)
    return 0


def _tell(workdir: Path, master: Path, nodes: DemoNodes, seconds: float | None) -> None:
    """Each node, the master, and the push command, as one screen."""
    count = len(nodes.ports)
    print(f"txsetup demo: {count} loopback sshd node(s), each with a node root and a demo daemon")
    print()
    for node, port in zip(nodes.cluster.nodes, nodes.ports, strict=True):
        print(f"  {node.spec:<26} root {node.root}  daemon tls://127.0.0.1:{port}")
    print(f"  {'master root':<26} {master} (cluster {CLUSTER})")
    print("\nPush to them (results on stdout, one JSON line per node; add --dry-run to plan only):")
    print()
    print("  " + shlex.join(push_argv(master, nodes)))
    print()
    until = f"for {seconds:g} s" if seconds is not None else "until Ctrl-C"
    print(f"Up {until}; then sshd and the daemons stop and {workdir} is removed.", flush=True)


def _wait(seconds: float | None) -> None:
    """Until SIGINT or SIGTERM, or ``seconds``; either is a normal stop."""
    wanted: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)  # sshd and its sessions already run
    if seconds is None:
        signal.sigwait(wanted)
    else:
        signal.sigtimedwait(wanted, seconds)
