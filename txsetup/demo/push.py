"""The demo's push: a master root, three loopback sshd "nodes", one ``txsetup push``.

Each node is a real ``sshd`` (:mod:`txsetup.demo.sshnodes`) with its own node
root and its own demo node daemon, so the push restarts three daemons over
three SSH connections, and the demo probes each over TLS afterwards. The
push's JSON log (every node's lines, each with its ``node``) is kept with the
other runs' logs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txsetup.demo.runs import Runs, Told
from txsetup.demo.sshnodes import SshNodes, sshd_path, start_ssh_nodes
from txsetup.node.files import GANETI_DIR, ssconf_content

__all__ = ["push_scenario"]

NODES = 3


def write_master(root: Path, document: dict[str, Any]) -> None:
    """The master's files, as a Ganeti master keeps them, from the demo document."""
    ganeti = root / GANETI_DIR
    ganeti.mkdir(parents=True)
    for key, value in document["ssconf"].items():
        (ganeti / f"ssconf_{key}").write_bytes(ssconf_content(value))
    (ganeti / "server.pem").write_text(document["node_daemon_certificate"])
    (ganeti / "hmac.key").write_text(document["hmac_key"])


def push_scenario(
    workdir: Path,
    document: dict[str, Any],
    *,
    runs: Runs,
    write_config: Callable[[Path, int], Path],
    free_port: Callable[[], int],
    served: Callable[[int], str],
    installed: str,
) -> Told:
    """Push to three loopback nodes; the scenario told (how to get sshd when it is missing)."""
    if sshd_path() is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return Told(
            "push",
            True,
            "skipped: OpenSSH is not installed (Debian: apt-get install openssh-server "
            "openssh-client; then run the demo again)",
            skipped=True,
        )
    master = workdir / "master"
    write_master(master, document)
    with start_ssh_nodes(NODES, workdir / "sshd", env={"SHLVL": "1"}) as cluster:
        ports = []
        for node in cluster.nodes:
            (node.root / "var/lib").mkdir(parents=True)
            (node.root / "var/lock").mkdir()
            ports.append(free_port())
            write_config(node.root, ports[-1])
        try:
            results, code = _push(runs, master, cluster)
            serving = [served(port) for port in ports]
        finally:
            for node in cluster.nodes:
                subprocess.run(
                    [sys.executable, "-m", "txsetup.demo.noded", "stop", "--root", str(node.root)],
                    check=False,
                    capture_output=True,
                )
    outcomes = [r["outcome"] for r in results]
    committed = outcomes.count("committed")
    healthy = serving.count(installed)
    return Told(
        f"push, {NODES} nodes",
        code == 0 and committed == NODES and healthy == NODES,
        f"{committed} of {NODES} committed over {NODES} ssh connections (exit {code}); "
        f"{healthy} daemons serve the certificate",
    )


def _push(runs: Runs, master: Path, cluster: SshNodes) -> tuple[list[dict[str, Any]], int]:
    """``txsetup push`` from ``master`` to every node: the result lines and the exit code."""
    exe = Path(sys.executable).with_name("txsetup")
    log = runs.next_log("push")
    with log.open("wb") as stderr:
        proc = subprocess.run(
            [
                str(exe),
                "push",
                "--from-root",
                str(master),
                "--remote-command",
                f"{exe} node-daemon-setup",
                "--log-format",
                "json",
                *(arg for option in cluster.ssh_options for arg in ("--ssh-option", option)),
                *(node.spec for node in cluster.nodes),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            check=False,
        )
    return [json.loads(line) for line in proc.stdout.decode().splitlines()], proc.returncode
