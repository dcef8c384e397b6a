"""``txsetup push --atomic`` end to end: three real sshd nodes, each with its demo daemon.

Each test starts with every node serving certificate A and the master
holding B (``tests/fleetnodes.py``); the fleet must end all-A or all-B,
with no node held, whatever fails where.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import assert_no_secrets, check_log_lines, txsetup_exe
from tests.fleetnodes import NODES, Fleet, Ran, fleet_at, parse_ran
from tests.test_push import control_path, counting_ssh, ssh_calls
from txsetup.demo.scene import txsetup_command

pytestmark = pytest.mark.system


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:  # type: ignore[misc]
    """Three nodes on A, the master on B."""
    with fleet_at(tmp_path) as made:
        yield made


def test_all_good_ends_all_new_over_one_connection_per_node(fleet: Fleet, tmp_path: Path) -> None:
    """Every node prepares, commits confirmed, passes its TLS check and is confirmed: all
    serve B, none is held, exit 0; prepare, commit and confirm of a node share one ssh
    connection (counted by an --ssh wrapper), and the record ends committed."""
    wrapper, calls = counting_ssh(tmp_path)
    ran = fleet.run(fleet.atomic_argv("--confirm-within", "300", "--ssh", str(wrapper)))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.fleet is not None
    assert ran.fleet["outcome"] == "committed"
    assert ran.fleet["decision"] == "commit"
    assert ran.fleet["confirmation"] == "confirm"
    assert {r["phase"] for r in ran.results.values()} == {"confirm"}
    decided = [(e["record"], e["decision"]) for e in ran.events if e["event"] == "push.decided"]
    assert decided == [("decision", "commit"), ("confirmation", "confirm")]
    masters, commands = ssh_calls(calls)
    assert len(masters) == NODES
    assert len(commands) == 3 * NODES  # prepare, commit, confirm
    assert {control_path(argv) for argv in commands} == {control_path(argv) for argv in masters}
    fleet.assert_all("new")
    records = fleet.records()
    assert [r["record"] for r in records[:2]] == ["push", "decision"]
    assert records[-1] == {**records[-1], "record": "end", "outcome": "committed"}
    assert_no_secrets(str(records))
    assert "0123456789abcdef" not in str(records)  # the demo's hmac key


def test_a_node_refusing_at_prepare_leaves_all_old_and_none_held(fleet: Fleet) -> None:
    """One node of another cluster refuses at prepare: the decision is abort, every node
    keeps A, none stays held; the refusing node says why (exit 4, phase prepare)."""
    (fleet.node(1).root / "var/lib/ganeti/ssconf_cluster_name").write_text("other.example.com\n")
    ran = fleet.run(fleet.atomic_argv())
    assert ran.returncode == 10
    assert ran.fleet is not None
    assert ran.fleet["outcome"] == "aborted"
    refusing = ran.results[fleet.specs[1]]
    assert (refusing["exit_code"], refusing["phase"]) == (4, "prepare")
    assert {ran.results[s]["outcome"] for s in (fleet.specs[0], fleet.specs[2])} == {"aborted"}
    (fleet.node(1).root / "var/lib/ganeti/ssconf_cluster_name").unlink()
    fleet.assert_all("old")


def test_a_failed_check_reverts_every_node(fleet: Fleet) -> None:
    """A node whose daemon cannot be reached over TLS after its commit fails the master's
    check: the confirmation is revert, and every node serves A again (exit 10)."""
    ports = dict(zip(fleet.specs, fleet.nodes.ports, strict=True))
    ports[fleet.specs[2]] = 9  # nothing listens there
    ran = fleet.run(fleet.atomic_argv("--confirm-within", "300", ports=ports))
    assert ran.returncode == 10, ran.stderr[-3000:]
    assert ran.fleet is not None
    assert (ran.fleet["outcome"], ran.fleet["confirmation"]) == ("reverted", "revert")
    assert {r["outcome"] for r in ran.results.values()} == {"reverted"}
    fleet.assert_all("old")


def test_a_node_whose_daemon_fails_on_the_new_certificate_reverts_the_fleet(
    fleet: Fleet,
) -> None:
    """One node's daemon will not start on B: that node rolls its commit back (exit 6),
    and the master reverts the nodes that committed, so all serve A."""
    node = fleet.node(0)
    config = node.root / "etc/txsetup/config.toml"
    text = config.read_text()
    new_pem = (fleet.master / "var/lib/ganeti/server.pem").read_text()
    lines = new_pem.splitlines()
    marker = lines[lines.index("-----BEGIN CERTIFICATE-----") + 1]  # B's serial is in it
    pem = node.root / "var/lib/ganeti/server.pem"
    guard = f"grep -qF {marker} {pem} && exit 3; "
    (words,) = tomllib.loads(text)["daemon"]["restart"]
    wrapped = ["sh", "-c", guard + 'exec "$@"', "restart", *words]
    line = next(line for line in text.splitlines() if line.startswith("restart = "))
    config.write_text(text.replace(line, f"restart = [{json.dumps(wrapped)}]"))
    ran = fleet.run(fleet.atomic_argv("--confirm-within", "300"))
    assert ran.returncode == 10, ran.stderr[-3000:]
    assert ran.fleet is not None
    assert ran.fleet["outcome"] == "reverted", json.dumps([ran.results, ran.fleet])[-1500:]
    assert ran.results[node.spec]["exit_code"] == 6
    fleet.assert_all("old")


def test_a_node_unreachable_at_commit_is_in_doubt_until_resume(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A node that cannot be reached when the decision is sent leaves the push in doubt
    (exit 10, that node held); a second atomic push is refused (exit 5) naming it; once
    the node answers, ``push --resume`` commits it and the fleet ends all new."""
    flag = tmp_path / "unreachable"
    flag.touch()
    script = tmp_path / "remote-txsetup"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = commit ] && [ -e {flag} ] && [ "$TXSETUP_ROOT" = {fleet.node(2).root} ]; '
        "then exit 255; fi\n"
        f'exec {" ".join(txsetup_command())} "$@"\n'
    )
    script.chmod(0o755)
    argv = fleet.atomic_argv()
    argv[argv.index("--remote-txsetup") + 1] = str(script)
    ran = fleet.run(argv)
    assert ran.returncode == 10, ran.stderr[-3000:]
    assert ran.fleet is not None
    assert ran.fleet["outcome"] == "in_doubt"
    assert ran.results[fleet.specs[2]]["outcome"] == "unreachable"
    held = fleet.statuses()[2]
    assert (held["finished"], held["hold"]["coordinator"]) == (False, ran.fleet["push_id"])
    again = fleet.run(fleet.atomic_argv())
    assert again.returncode == 5
    assert ran.fleet["push_id"] in again.stderr
    flag.unlink()
    resumed = fleet.run(fleet.resume_argv())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.fleet is not None
    assert resumed.fleet["outcome"] == "committed"
    fleet.assert_all("new")
    nothing = subprocess.run(fleet.resume_argv(), capture_output=True, text=True, check=False)
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert "push.nothing_to_resume" in nothing.stderr


def test_a_node_refusing_the_revert_is_in_doubt_until_its_file_is_put_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A failed check reverts the fleet, but node 0's server.pem was changed by hand after
    its commit: that node refuses the revert (exit 4, naming the file) and keeps B, the
    others go back to A, and the push is in doubt (exit 10). Once the file is put back
    exactly (bytes, inode and mtime: ``cp -p`` of a copy),
    ``push --resume`` reverts node 0 and the fleet ends all old."""
    pem = fleet.node(0).root / "var/lib/ganeti/server.pem"
    saved, flag = tmp_path / "server.pem.saved", tmp_path / "change-by-hand"
    flag.touch()
    script = tmp_path / "remote-txsetup"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = revert ] && [ -e {flag} ] && [ "$TXSETUP_ROOT" = {fleet.node(0).root} ]; '
        f"then cp -p {pem} {saved} && echo >> {pem}; fi\n"
        f'exec {" ".join(txsetup_command())} "$@"\n'
    )
    script.chmod(0o755)
    ports = dict(zip(fleet.specs, fleet.nodes.ports, strict=True))
    ports[fleet.specs[2]] = 9  # nothing listens there: node 2 fails the master's check
    argv = fleet.atomic_argv("--confirm-within", "300", ports=ports)
    argv[argv.index("--remote-txsetup") + 1] = str(script)
    ran = fleet.run(argv)
    assert ran.returncode == 10, ran.stderr[-3000:]
    assert ran.fleet is not None
    assert (ran.fleet["outcome"], ran.fleet["confirmation"]) == ("in_doubt", "revert")
    refusing = ran.results[fleet.specs[0]]
    assert (refusing["exit_code"], refusing["phase"]) == (4, "revert")
    assert "server.pem" in refusing["error"]
    assert [ran.results[s]["outcome"] for s in fleet.specs[1:]] == ["reverted"] * 2
    assert fleet.serving()[1:] == [fleet.old] * 2
    flag.unlink()
    shutil.copy2(saved, pem)  # in place, mtime too: exactly as the commit left it
    resumed = fleet.run(fleet.resume_argv())
    assert resumed.returncode == 10, resumed.stderr[-3000:]
    assert resumed.fleet is not None
    assert resumed.fleet["outcome"] == "reverted", json.dumps(resumed.results)
    assert [resumed.results[s]["outcome"] for s in fleet.specs] == ["reverted"] * NODES
    fleet.assert_all("old")


def refuse_on(node_root: Path) -> Path:
    """Make a node refuse every document (another cluster's name); the file to remove."""
    name = node_root / "var/lib/ganeti/ssconf_cluster_name"
    name.write_text("other.example.com\n")
    return name


def plain_argv(fleet: Fleet, *extra: str) -> list[str]:
    """A plain (not atomic) push to every node, in the given order."""
    argv = fleet.atomic_argv(*extra)
    argv.remove("--atomic")
    for port in [a for a in argv if a.startswith("root@") and "=" in a]:
        del argv[argv.index(port) - 1 : argv.index(port) + 1]
    return argv


def test_canary_failing_starts_no_other_node_and_retry_from_picks_them_up(
    fleet: Fleet, tmp_path: Path
) -> None:
    """--canary 1: the first node runs alone; when it fails, the others are not_started
    (exit 10); --retry-from then pushes to exactly the nodes that did not succeed."""
    refusal = refuse_on(fleet.node(0).root)
    ran = fleet.run(plain_argv(fleet, "--canary", "1"))
    assert ran.returncode == 10
    assert ran.fleet is None
    assert ran.results[fleet.specs[0]]["exit_code"] == 4
    for spec in fleet.specs[1:]:
        assert ran.results[spec]["outcome"] == "not_started"
        assert "--canary 1" in ran.results[spec]["error"]
    assert fleet.serving() == [fleet.old] * NODES
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in ran.results.values()) + "\n")
    refusal.unlink()
    argv = plain_argv(fleet, "--retry-from", str(results))
    retried = fleet.run([a for a in argv if a not in fleet.specs])
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert set(retried.results) == set(fleet.specs)
    assert fleet.serving() == [fleet.new] * NODES


def test_max_failures_stops_starting_nodes(fleet: Fleet) -> None:
    """--max-failures 1 with one node at a time: after the first node fails, no other
    node starts; a passing canary lets the rest run."""
    refuse_on(fleet.node(0).root)
    ran = fleet.run(plain_argv(fleet, "--max-failures", "1", "--parallel", "1"))
    assert ran.returncode == 10
    assert [ran.results[s]["outcome"] for s in fleet.specs] == ["failed", *["not_started"] * 2]
    assert "--max-failures 1" in ran.results[fleet.specs[1]]["error"]
    assert fleet.serving() == [fleet.old] * NODES


def test_atomic_canary_failing_prepares_no_other_node(fleet: Fleet) -> None:
    """An atomic push's canary is its prepare: when the canary refuses, the other nodes are
    never contacted, the decision is abort, and every node keeps A unheld."""
    refusal = refuse_on(fleet.node(0).root)
    ran = fleet.run(fleet.atomic_argv("--canary", "1"))
    assert ran.returncode == 10
    assert ran.fleet is not None
    assert ran.fleet["outcome"] == "aborted"
    assert [ran.results[s]["outcome"] for s in fleet.specs[1:]] == ["not_started"] * 2
    decision = next(r for r in fleet.records() if r["record"] == "decision")
    assert decision["to_abort"] == []
    refusal.unlink()
    fleet.assert_all("old")


def test_atomic_usage_errors(fleet: Fleet) -> None:
    """Options that need --atomic, or exclude it, are usage errors (exit 2) that contact
    no node and record nothing."""
    for extra in (
        ["--confirm-within", "30"],
        ["--daemon-port", "1811"],
    ):
        argv = plain_argv(fleet, *extra)
        assert subprocess.run(argv, capture_output=True, check=False).returncode == 2, extra
    for extra in (["--dry-run"], ["--daemon-port", "x=y"], ["--confirm-within", "0"]):
        argv = fleet.atomic_argv(*extra)
        assert subprocess.run(argv, capture_output=True, check=False).returncode == 2, extra
    assert not (fleet.master / "var/lib/txsetup/push").exists()


def test_atomic_ssh_setup_push_all_new_then_a_refusal_leaves_all_old(tmp_path: Path) -> None:
    """--program ssh-setup --document FILE: the same document to every node, atomically;
    all install it, then a second document that one node refuses changes no node."""
    from tests.sshdoc import counting_reload, ssh_document, write_sshd_config
    from tests.test_push import empty_nodes, push_argv

    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(ssh_document(label="a")))
    second.write_text(json.dumps(ssh_document(label="b")))
    with empty_nodes(3, tmp_path / "nodes") as cluster:
        for node in cluster.nodes:
            write_sshd_config(
                node.root, reload=counting_reload(node.root), status=["true"], health_address="none"
            )

        def atomic(document: Path) -> Ran:
            argv = push_argv(tmp_path, cluster, "--atomic", "--program", "ssh-setup")
            argv[argv.index("--remote-command") : argv.index("--remote-command") + 2] = [
                "--remote-txsetup",
                txsetup_exe(),
            ]
            argv += ["--document", str(document), "--log-format", "json"]
            proc = subprocess.run(
                [*argv, *(n.spec for n in cluster.nodes)], capture_output=True, check=False
            )
            return parse_ran(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

        ran = atomic(first)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert ran.fleet is not None
        assert ran.fleet["outcome"] == "committed"
        keys = [sorted((n.root / "etc/ssh").iterdir()) for n in cluster.nodes]
        assert all(k for k in keys)
        before = [{p.name: p.read_bytes() for p in k} for k in keys]
        name = cluster.nodes[1].root / "var/lib/ganeti/ssconf_cluster_name"
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_text("other.example.com\n")
        refused = atomic(second)
        assert refused.returncode == 10
        assert refused.fleet is not None
        assert refused.fleet["outcome"] == "aborted"
        after = [
            {p.name: (n.root / "etc/ssh" / p.name).read_bytes() for p in k}
            for n, k in zip(cluster.nodes, keys, strict=True)
        ]
        assert after == before


def test_an_atomic_push_while_another_runs_is_refused_before_any_node(
    tmp_path: Path, node_pem: str
) -> None:
    """While another atomic push or resume holds the master's lock, an atomic push exits 5
    (busy) naming the lock's directory, records nothing and contacts no node."""
    from filelock import FileLock

    from tests.test_push import write_master

    master = write_master(tmp_path / "master", node_pem)
    directory = master / "var/lib/txsetup/push"
    directory.mkdir(parents=True)
    argv = [txsetup_exe(), "push", "--atomic", "--from-root", str(master), "--ssh", "false"]
    with FileLock(directory / ".lock"):
        proc = subprocess.run(
            [*argv, "--log-format", "json", "root@192.0.2.1"], capture_output=True, check=False
        )
    assert proc.returncode == 5, proc.stderr
    error = next(e for e in check_log_lines(proc.stderr.decode()) if e["event"] == "push.error")
    assert error["error_code"] == "busy"
    assert str(directory) in error["error"]
    assert proc.stdout == b""
    assert [p.name for p in directory.iterdir()] == [".lock"]
