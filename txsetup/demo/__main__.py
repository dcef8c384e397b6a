"""``python -m txsetup.demo`` (``nox -s demo``): a real run on an embedded default.

A temporary node root, a generated cluster certificate, a realistic payload;
then a real ``txsetup node-daemon-setup`` run (the installed console script,
exactly as a master runs it), a re-run that converges, and ``status``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from txsetup.demo.certs import generate_node_certificate

CLUSTER = "demo-cluster.example.com"


def payload(pem: str, *, nodes: int = 3) -> dict[str, Any]:
    """A document as a Ganeti master builds it, for a small cluster."""
    names = [f"node{i}.{CLUSTER}" for i in range(1, nodes + 1)]
    return {
        "cluster_name": CLUSTER,
        "node_daemon_certificate": pem,
        "hmac_key": "demo-hmac-key-0123456789abcdef\n",
        "node_name": names[-1],
        "start_node_daemon": False,
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
        print(f"node root: {root}")
        pem = generate_node_certificate(CLUSTER, key_type="ec")
        document = payload(pem)

        plan = txsetup(root, "node-daemon-setup", "--dry-run", document=document)
        print("\n== dry run plan:")
        for item in plan.get("plan", []):
            print(
                f"   {item['action']:<9} {item['path']} ({item['new_size']} bytes, "
                f"mode {item['new_mode']})"
            )
        first = txsetup(root, "node-daemon-setup", document=document)
        show("first run", first)
        again = txsetup(root, "node-daemon-setup", document=document)
        show("same payload again", again)
        status = txsetup(root, "status")
        print(f"\n== status: txid={status['txid']} state={status['state']}")
        print("\nfiles now on the node:")
        for path in sorted((root / "var/lib/ganeti").iterdir()):
            print(
                f"   {path.stat().st_mode & 0o777:04o} {path.stat().st_size:>6}  "
                f"{path.relative_to(root)}"
            )
        ok = first["outcome"] == "committed" and again["outcome"] == "converged"
        print("\ndemo", "succeeded" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
