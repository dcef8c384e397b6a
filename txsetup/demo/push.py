"""The demo's push: a master root, three loopback sshd "nodes", one ``txsetup push``.

Each node is a real ``sshd`` (:mod:`txsetup.demo.sshnodes`) with its own node
root and its own demo node daemon, so the push restarts three daemons over
three SSH connections, and the demo probes each over TLS afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    write_config: Callable[[Path, int], Path],
    free_port: Callable[[], int],
    served: Callable[[int], str],
    installed: str,
) -> dict[str, bool]:
    """Push to three loopback nodes; the checks it passed (none when sshd is missing)."""
    if sshd_path() is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        print(
            "\n== push: skipped: OpenSSH is not installed. To see txsetup push add three\n"
            "   loopback nodes, install it (Debian: apt-get install openssh-server) and\n"
            "   run the demo again."
        )
        return {}
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
            results = _push(master, cluster)
            serving = [served(port) for port in ports]
        finally:
            for node in cluster.nodes:
                subprocess.run(
                    [sys.executable, "-m", "txsetup.demo.noded", "stop", "--root", str(node.root)],
                    check=False,
                    capture_output=True,
                )
    return {
        f"push: {NODES} nodes committed over {NODES} ssh connections": [
            r["outcome"] for r in results
        ]
        == ["committed"] * NODES,
        "push: every node's daemon serves the installed certificate": serving
        == [installed] * NODES,
    }


def _push(master: Path, cluster: SshNodes) -> list[dict[str, Any]]:
    exe = Path(sys.executable).with_name("txsetup")
    specs = [node.spec for node in cluster.nodes]
    print(f"\n== push: master files in {master}; nodes {', '.join(specs)}")
    print(f"   txsetup push --from-root {master} {' '.join(specs)}")
    proc = subprocess.run(
        [
            str(exe),
            "push",
            "--from-root",
            str(master),
            "--remote-command",
            f"{exe} node-daemon-setup",
            "--log-format",
            "console",
            *(arg for option in cluster.ssh_options for arg in ("--ssh-option", option)),
            *specs,
        ],
        stdout=subprocess.PIPE,
        check=False,
    )
    results = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    print(f"   exit {proc.returncode}; stdout had {len(results)} result lines, one per node")
    return results
