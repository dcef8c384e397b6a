"""``python -m txsetup.demo`` (``nox -s demo``): a real run on an embedded default.

A node root, a generated cluster certificate, a realistic payload and a
configuration that drives the demo node daemon (``txsetup.demo.noded``) on a
free loopback port. Then, with the installed console script exactly as a
master runs it: a dry run; a real run that installs the files, restarts the
daemon and probes it over TLS; a re-run that converges; another cluster's
document, refused before anything is written; and new files the daemon
refuses to start with, rolled back to the old files and the old, healthy
daemon. Then, when OpenSSH is installed, a ``txsetup push`` from a master
root to three loopback sshd "nodes", each with its own demo daemon.

It tells the story in a screenful: one line per scenario and its outcome,
then the install run as an operator sees it on a terminal. That view is
rendered here from the run's JSON log, which is what a master reads, so the
screen also shows that the two say the same. Everything stays in one
directory the last lines name: the JSON log of every run, and the node roots
and daemon logs those logs mention.

``python -m txsetup.demo nodes N`` instead starts N loopback sshd nodes and
prints the ``txsetup push`` command to try against them
(:mod:`txsetup.demo.nodes`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from txsetup.demo.certs import generate_node_certificate
from txsetup.demo.nodes import add_nodes_parser, run_nodes
from txsetup.demo.push import push_scenario
from txsetup.demo.runs import Runs, Told, console_view
from txsetup.demo.scene import (
    CLUSTER,
    free_port,
    payload,
    pem_fingerprint,
    prepare_node_root,
    served_fingerprint,
    stop_daemon,
    write_config,
)

# What tests and the docs build import from here; they live in txsetup.demo.scene.
__all__ = ["CLUSTER", "free_port", "main", "payload", "pem_fingerprint", "write_config"]

OTHER_CLUSTER = "other-cluster.example.com"
PIDFILE = "var/run/txsetup-demo-noded.pid"


def main(argv: list[str] | None = None) -> int:
    """The story (no arguments), or ``nodes N``."""
    parser = argparse.ArgumentParser(
        prog="python -m txsetup.demo",
        description="Without a command: a real run of txsetup on a demo node root and a push "
        "to loopback sshd nodes, told in a screenful.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_nodes_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "nodes":
        return run_nodes(args)
    return story()


def story() -> int:
    """Set up, tell each scenario in a line, show the install as an operator sees it."""
    kept = Path(tempfile.mkdtemp(prefix="txsetup-demo-"))
    root = kept / "node"
    port = prepare_node_root(root)
    pem = generate_node_certificate(CLUSTER, key_type="ec")
    document = payload(pem)
    print("txsetup demo: a node root, a cluster certificate, a demo node daemon\n")
    print(f"  node root         {root}")
    print(f"  certificate       {CLUSTER}, EC key, fingerprint {pem_fingerprint(pem)[:12]}")
    print(f"  node daemon       tls://127.0.0.1:{port} (txsetup.demo.noded, config.toml)\n")
    (kept / "logs").mkdir()
    runs = Runs(kept / "logs")
    try:
        told, install = scenarios(runs, root, port, pem, document)
        for each in told:
            print(each.line())
        for pushed in push_scenario(kept, document, runs=runs, installed=pem_fingerprint(pem)):
            print(pushed.line())
            told += [] if pushed.skipped else [pushed]
    finally:
        stop_daemon(root)
    print("\nThe install, as an operator sees it on a terminal (--log-format console):")
    print("\n".join(console_view(install)))
    failed = [each.name for each in told if not each.ok]
    print(f"\n{len(told) - len(failed)} of {len(told)} scenarios did what they should.")
    print(f"Every run's JSON log is kept in {runs.logs},")
    print(f"beside the node roots and daemon logs it names (try: txsetup status --root {root}).")
    print(f"Remove them all when done: rm -r {kept}")
    return 1 if failed else 0


def scenarios(
    runs: Runs, root: Path, port: int, pem: str, document: dict[str, Any]
) -> tuple[list[Told], list[dict[str, Any]]]:
    """The five runs on one node, told; and the install run's log events."""
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

    other = json.loads(json.dumps(document))
    other["cluster_name"] = other["ssconf"]["cluster_name"] = OTHER_CLUSTER
    ganeti, pidfile = root / "var/lib/ganeti", root / PIDFILE
    files, pid = {p.name: p.read_bytes() for p in ganeti.iterdir()}, pidfile.read_text()
    bad, _ = runs.txsetup("refused", root, "node-daemon-setup", document=other)
    failed_at = [s["name"] for s in bad.get("steps", []) if s.get("state") == "failed"]
    untouched = {p.name: p.read_bytes() for p in ganeti.iterdir()} == files
    kept_daemon = pidfile.read_text() == pid and served_fingerprint(port) == installed
    refused = Told(
        "refused payload",
        bad["exit_code"] == 4 and untouched and kept_daemon,
        f"another cluster's name: refused (exit 4) at {', '.join(failed_at) or '?'}; "
        "nothing written, daemon untouched",
    )

    broken = json.loads(json.dumps(document))
    broken["hmac_key"] = "not-a-valid-key"
    broken["ssconf"]["master_ip"] = "192.0.2.99"
    master_ip = ganeti / "ssconf_master_ip"
    before = master_ip.read_text()
    fails, _ = runs.txsetup("daemon-fails", root, "node-daemon-setup", document=broken)
    after, serving_after = master_ip.read_text(), served_fingerprint(port)
    back = Told(
        "daemon fails",
        fails["exit_code"] == 6 and before == after and serving_after == installed,
        f"the daemon refuses the new hmac.key: {fails['outcome'].replace('_', ' ')} "
        f"(exit {fails['exit_code']}); old files back, old daemon serves {serving_after[:12]}",
    )
    return [dry, install, same, refused, back], events


if __name__ == "__main__":
    sys.exit(main())
