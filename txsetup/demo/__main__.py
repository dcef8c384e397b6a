"""``python -m txsetup.demo`` (``nox -s demo``): a real run on an embedded default.

A temporary node root, a generated cluster certificate, a realistic payload
and a configuration that drives the demo node daemon (``txsetup.demo.noded``)
on a free loopback port. Then, with the installed console script exactly as a
master runs it: a dry run; a real run that installs the files, restarts the
daemon and probes it over TLS; a re-run that converges; and a run whose new
files the daemon refuses, which is rolled back to the old files and the old,
healthy daemon. Then, when OpenSSH is installed, a ``txsetup push`` from a
master root to three loopback sshd "nodes", each with its own demo daemon.

It tells the story in a screenful: one line per scenario and its outcome,
then the install run as an operator sees it on a terminal. That view is
rendered here from the run's JSON log, which is what a master reads, so the
screen also shows that the two say the same; the JSON log of every run is
kept in a directory the last line names, for anyone who wants every detail.
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
from txsetup.demo.runs import Runs, Told, console_view
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


def main() -> int:
    """Set up, tell each scenario in a line, show the install as an operator sees it."""
    logs = Path(tempfile.mkdtemp(prefix="txsetup-demo-logs-"))
    with tempfile.TemporaryDirectory(prefix="txsetup-demo-") as tmp:
        root = Path(tmp) / "node"
        (root / "var/lib").mkdir(parents=True)
        (root / "var/lock").mkdir()
        port = free_port()
        config = write_config(root, port)
        pem = generate_node_certificate(CLUSTER, key_type="ec")
        document = payload(pem)
        print("txsetup demo: a node root, a cluster certificate, a demo node daemon\n")
        print(f"  node root         {root}")
        print(f"  certificate       {CLUSTER}, EC key, fingerprint {pem_fingerprint(pem)[:12]}")
        print(f"  node daemon       tls://127.0.0.1:{port} (txsetup.demo.noded, {config.name})\n")
        runs = Runs(logs)
        try:
            told, install = scenarios(runs, root, port, pem, document)
            for each in told:
                print(each.line())
            pushed = push_scenario(
                Path(tmp),
                document,
                runs=runs,
                write_config=write_config,
                free_port=free_port,
                served=served_fingerprint,
                installed=pem_fingerprint(pem),
            )
            print(pushed.line())
            told += [] if pushed.skipped else [pushed]
        finally:
            subprocess.run(
                [sys.executable, "-m", "txsetup.demo.noded", "stop", "--root", str(root)],
                check=False,
            )
    print("\nThe install, as an operator sees it on a terminal (--log-format console):")
    print("\n".join(console_view(install)))
    failed = [each.name for each in told if not each.ok]
    print(f"\n{len(told) - len(failed)} of {len(told)} scenarios did what they should.", end=" ")
    print(f"The JSON log of every run is kept in {logs}")
    return 1 if failed else 0


def scenarios(
    runs: Runs, root: Path, port: int, pem: str, document: dict[str, Any]
) -> tuple[list[Told], list[dict[str, Any]]]:
    """The four runs on one node, told; and the install run's log events."""
    installed = pem_fingerprint(pem)
    plan, _ = runs.txsetup("dry-run", root, "node-daemon-setup", "--dry-run", document=document)
    creates = sum(item["action"] == "create" for item in plan.get("plan", []))
    dry = Told(
        "dry run",
        plan["outcome"] == "dry_run" and not (root / "var/lib/ganeti").exists(),
        f"would create {creates} files; wrote nothing",
    )

    first, events = runs.txsetup("install", root, "node-daemon-setup", document=document)
    serving = served_fingerprint(port)
    install = Told(
        "install",
        first["outcome"] == "committed" and serving == installed,
        f"{first['outcome']}: {len(first['changed'])} files; the daemon restarted and serves "
        f"{serving[:12]} over TLS",
    )

    again, _ = runs.txsetup("same-again", root, "node-daemon-setup", document=document)
    same = Told(
        "same payload", again["outcome"] == "converged", f"{again['outcome']}: nothing written"
    )

    refused = json.loads(json.dumps(document))
    refused["hmac_key"] = "not-a-valid-key"
    refused["ssconf"]["master_ip"] = "192.0.2.99"
    master_ip = root / "var/lib/ganeti/ssconf_master_ip"
    before = master_ip.read_text()
    bad, _ = runs.txsetup("refused", root, "node-daemon-setup", document=refused)
    after, serving_after = master_ip.read_text(), served_fingerprint(port)
    back = Told(
        "refused payload",
        bad["exit_code"] == 6 and before == after and serving_after == installed,
        f"{bad['outcome'].replace('_', ' ')} (exit {bad['exit_code']}): old files back, "
        f"the old daemon serves {serving_after[:12]}",
    )
    return [dry, install, same, back], events


if __name__ == "__main__":
    sys.exit(main())
