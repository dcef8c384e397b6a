"""What the demo sets up: the demo cluster's document, node roots, a master's files.

Shared by the demo's story (``python -m txsetup.demo``), its push and the
loopback nodes it can leave running (``python -m txsetup.demo nodes N``).
A node root here drives the demo node daemon (:mod:`txsetup.demo.noded`)
instead of Ganeti's ``daemon-util``, so a restart and its TLS health check
are real.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from txsetup.node.config import HealthTarget
from txsetup.node.daemon import probe_tls
from txsetup.node.files import GANETI_DIR, ssconf_content

__all__ = [
    "CLUSTER",
    "free_port",
    "payload",
    "pem_fingerprint",
    "prepare_node_root",
    "served_fingerprint",
    "stop_daemon",
    "txsetup_command",
    "write_config",
    "write_master",
]

CLUSTER = "demo-cluster.example.com"


def payload(pem: str, *, nodes: int = 3) -> dict[str, Any]:
    """A document as a Ganeti master builds it, for a small cluster."""
    names = [f"node{i}.{CLUSTER}" for i in range(1, nodes + 1)]
    return {
        "cluster_name": CLUSTER,
        "node_daemon_certificate": pem,
        "hmac_key": "0123456789abcdef0123456789abcdef01234567\n",
        "node_name": names[-1],
        "start_node_daemon": True,
        "ssconf": {
            "cluster_name": CLUSTER,
            "master_ip": "192.0.2.10",
            "master_netdev": "br0",
            "master_netmask": "24",
            "master_node": names[0],
            "node_list": "\n".join(names),
            "node_primary_ips": "\n".join(f"{n} 192.0.2.{i}" for i, n in enumerate(names, 11)),
            "online_nodes": "\n".join(names),
            "primary_ip_family": "2",
            "release_version": "3.0.2",
            "hypervisor_list": "kvm",
        },
    }


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(root: Path, port: int) -> Path:
    """A configuration that controls the demo daemon instead of Ganeti's daemon-util."""
    noded = [sys.executable, "-m", "txsetup.demo.noded"]
    where = ["--root", str(root)]

    def argv(*words: str) -> str:
        return json.dumps([*noded, *words, *where])

    config = root / "etc/txsetup/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "[daemon]\n"
        f"restart = [{argv('restart', '--port', str(port))}]\n"
        f"stop = [{argv('stop')}]\n"
        f"status = {argv('status')}\n"
        f'health_url = "tls://127.0.0.1:{port}"\n'
        "health_timeout = 60\n"
    )
    return config


def prepare_node_root(root: Path) -> int:
    """A fresh node's root that drives its own demo daemon; the daemon's port."""
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    (root / "var/lock").mkdir(exist_ok=True)
    port = free_port()
    write_config(root, port)
    return port


def stop_daemon(root: Path) -> None:
    """Stop the demo daemon of ``root``, if one runs."""
    subprocess.run(
        [sys.executable, "-m", "txsetup.demo.noded", "stop", "--root", str(root)],
        check=False,
        capture_output=True,
    )


def write_master(root: Path, document: dict[str, Any]) -> None:
    """The master's files, as a Ganeti master keeps them, from the demo document."""
    ganeti = root / GANETI_DIR
    ganeti.mkdir(parents=True)
    for key, value in document["ssconf"].items():
        (ganeti / f"ssconf_{key}").write_bytes(ssconf_content(value))
    (ganeti / "server.pem").write_text(document["node_daemon_certificate"])
    (ganeti / "hmac.key").write_text(document["hmac_key"])


def served_fingerprint(port: int) -> str:
    """What the daemon presents in a real TLS handshake (or why there is nothing)."""
    try:
        return probe_tls(HealthTarget("127.0.0.1", port), timeout=2)
    except OSError as exc:
        return f"nothing ({exc})"


def pem_fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of the certificate in ``pem``."""
    block = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest()


def txsetup_command() -> list[str]:
    """The installed ``txsetup`` next to this interpreter, else this Python's ``-m txsetup``."""
    exe = Path(sys.executable).with_name("txsetup")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "txsetup"]
