"""``python -m txsetup.demo`` (``nox -s demo``): a real run on an embedded default.

A temporary node root, a generated cluster certificate, a realistic payload
and a configuration that drives the demo node daemon (``txsetup.demo.noded``)
on a free loopback port. Then, with the installed console script exactly as a
master runs it: a dry run; a real run that installs the files, restarts the
daemon and probes it over TLS; a re-run that converges; and a run whose new
files the daemon refuses, which is rolled back to the old files and the old,
healthy daemon. Then, when OpenSSH is installed, a ``txsetup push`` from a
master root to three loopback sshd "nodes", each with its own demo daemon.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from txsetup.demo.certs import generate_node_certificate
from txsetup.demo.push import push_scenario
from txsetup.node.config import HealthTarget
from txsetup.node.daemon import probe_tls

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
        "health_timeout = 10\n"
    )
    return config


def txsetup(root: Path, *args: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the installed CLI with console logs on our stderr; return its result object."""
    exe = Path(sys.executable).with_name("txsetup")
    stdin = json.dumps(document).encode() if document is not None else b""
    proc = subprocess.run(
        [str(exe), *args, "--root", str(root), "--log-format", "console"],
        input=stdin,
        stdout=subprocess.PIPE,
        check=False,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


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


def show(title: str, result: dict[str, Any]) -> None:
    """Print a result the way a person wants to read it."""
    print(f"\n== {title}: outcome={result['outcome']} exit={result['exit_code']}")
    for step in result.get("steps", []):
        print(f"   {step['name']:<15} {step['state']:<12} {step['duration_ms']:>5} ms")
    for path in result.get("changed", []):
        print(f"   changed: {path}")
    if "error" in result:
        print(f"   error: {result['error']}")


def main() -> int:
    """Run the scenarios; exit non-zero if any did not do what it should."""
    with tempfile.TemporaryDirectory(prefix="txsetup-demo-") as tmp:
        root = Path(tmp) / "node"
        (root / "var/lib").mkdir(parents=True)
        (root / "var/lock").mkdir()
        port = free_port()
        config = write_config(root, port)
        print(f"node root: {root}\nconfiguration: {config} (demo daemon on 127.0.0.1:{port})")
        pem = generate_node_certificate(CLUSTER, key_type="ec")
        document = payload(pem)
        try:
            checks = scenarios(root, port, pem, document)
            checks |= push_scenario(
                Path(tmp),
                document,
                write_config=write_config,
                free_port=free_port,
                served=served_fingerprint,
                installed=pem_fingerprint(pem),
            )
            print()
            for what, ok in checks.items():
                print(f"   [{'ok' if ok else 'FAILED'}] {what}")
            return 0 if all(checks.values()) else 1
        finally:
            subprocess.run(
                [sys.executable, "-m", "txsetup.demo.noded", "stop", "--root", str(root)],
                check=False,
            )


def scenarios(root: Path, port: int, pem: str, document: dict[str, Any]) -> dict[str, bool]:
    """The four runs on one node; what each should have done, and whether it did."""
    plan = txsetup(root, "node-daemon-setup", "--dry-run", document=document)
    print("\n== dry run plan:")
    for item in plan.get("plan", []):
        print(
            f"   {item['action']:<9} {item['path']} ({item['new_size']} bytes, "
            f"mode {item['new_mode']})"
        )
    installed = pem_fingerprint(pem)
    first = txsetup(root, "node-daemon-setup", document=document)
    show("first run: install and restart the daemon", first)
    serving = served_fingerprint(port)
    print(f"   daemon serves {serving[:16]}..., installed {installed[:16]}...")
    again = txsetup(root, "node-daemon-setup", document=document)
    show("same payload again", again)

    refused = json.loads(json.dumps(document))
    refused["hmac_key"] = "not-a-valid-key"
    refused["ssconf"]["master_ip"] = "192.0.2.99"
    before = (root / "var/lib/ganeti/ssconf_master_ip").read_text()
    bad = txsetup(root, "node-daemon-setup", document=refused)
    show("a payload the daemon refuses to start with", bad)
    after = (root / "var/lib/ganeti/ssconf_master_ip").read_text()
    serving_after = served_fingerprint(port)
    print(
        f"   master_ip before {before.strip()}, after {after.strip()}; "
        f"daemon serves {serving_after[:16]}..."
    )

    status = txsetup(root, "status")
    print(f"\n== status: txid={status['txid']} state={status['state']}")
    print("\nfiles now on the node:")
    for path in sorted((root / "var/lib/ganeti").iterdir()):
        print(
            f"   {path.stat().st_mode & 0o777:04o} {path.stat().st_size:>6}  "
            f"{path.relative_to(root)}"
        )
    return {
        "first run committed": first["outcome"] == "committed",
        "daemon serves the installed certificate": serving == installed,
        "re-run converged": again["outcome"] == "converged",
        "refused payload rolled back (exit 6)": bad["exit_code"] == 6,
        "old files back": before == after,
        "old daemon healthy again": serving_after == installed,
    }


if __name__ == "__main__":
    sys.exit(main())
