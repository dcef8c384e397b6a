"""``txsetup push`` end to end: real sshd "nodes" on loopback, the installed CLI, real files.

Each node is a real ``sshd`` (``txsetup.demo.sshnodes``) whose sessions get
their own ``TXSETUP_ROOT``; push runs the system ``ssh`` client against them,
exactly as a master does against a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    CLUSTER,
    assert_no_secrets,
    check_log_lines,
    check_result,
    make_document,
    require_tool,
    snapshot,
    start_setup,
    txsetup_exe,
)
from txsetup.demo.sshnodes import SshNode, SshNodes, start_ssh_nodes
from txsetup.node.files import ssconf_content
from txsetup.txn.journal import read_journal

pytestmark = pytest.mark.system

HMAC = "hmac-secret-0123456789abcdef\n"
# push --timeout in the tests that let it expire: the node must have its whole document and
# be in its (gated) restart by then, which takes well under a second on an idle machine.
TIMEOUT = "8"


@dataclass
class Push:
    """A finished push: exit code, one result per node, the parsed stderr events."""

    returncode: int
    results: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    stdout: str
    stderr: str


def write_master(root: Path, pem: str, *, cluster: str = CLUSTER) -> Path:
    """A master's files as Ganeti keeps them: ssconf_* with newlines, server.pem, hmac.key."""
    ganeti = root / "var/lib/ganeti"
    ganeti.mkdir(parents=True, exist_ok=True)
    document = make_document(pem, cluster=cluster)
    for key, value in document["ssconf"].items():
        (ganeti / f"ssconf_{key}").write_bytes(ssconf_content(value))
    (ganeti / "server.pem").write_text(pem)
    (ganeti / "hmac.key").write_text(HMAC)
    return root


@pytest.fixture
def master(tmp_path: Path, node_pem: str) -> Path:
    """The master's root."""
    return write_master(tmp_path / "master", node_pem)


@contextmanager
def empty_nodes(count: int, where: Path) -> Iterator[SshNodes]:
    """``count`` real sshd nodes on loopback, each with an empty node root."""
    require_tool("sshd")
    require_tool("ssh")
    with start_ssh_nodes(count, where, env={"SHLVL": "1"}) as nodes:
        for node in nodes.nodes:
            (node.root / "var/lib").mkdir(parents=True)
            (node.root / "var/lock").mkdir()
        yield nodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SshNodes]:
    """Five real sshd nodes on loopback, each with an empty node root."""
    with empty_nodes(5, tmp_path / "nodes") as nodes:
        yield nodes


def push_argv(master: Path, cluster: SshNodes, *args: str) -> list[str]:
    """The installed ``txsetup push`` against ``cluster``'s nodes, running the installed
    node-daemon-setup there."""
    return [
        txsetup_exe(),
        "push",
        "--from-root",
        str(master),
        "--remote-command",
        f"{txsetup_exe()} node-daemon-setup",
        *(a for opt in cluster.ssh_options for a in ("--ssh-option", opt)),
        *args,
    ]


def run_push(master: Path, cluster: SshNodes, *args: str, timeout: float = 180) -> Push:
    """Run ``txsetup push``; check its output contract."""
    proc = subprocess.run(
        push_argv(master, cluster, *args), capture_output=True, timeout=timeout, check=False
    )
    return parse_push(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def parse_push(returncode: int, stdout: str, stderr: str) -> Push:
    """No traceback, no secret, every stderr line valid; one result line per node."""
    assert "Traceback" not in stderr, stderr
    assert_no_secrets(stdout, stderr)
    events = check_log_lines(stderr)
    results: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        result = json.loads(line)
        assert set(result) == {
            "node",
            "exit_code",
            "outcome",
            "txid",
            "duration_ms",
            "error",
            "result",
        }
        assert result["node"] not in results
        results[result["node"]] = result
    return Push(returncode, results, events, stdout, stderr)


def installed(node: SshNode) -> dict[str, bytes]:
    """The files under the node's var/lib/ganeti, by name."""
    ganeti = node.root / "var/lib/ganeti"
    return {p.name: p.read_bytes() for p in ganeti.iterdir()} if ganeti.exists() else {}


def master_files(master: Path) -> dict[str, bytes]:
    """What every node must hold byte for byte after a push (client.pem aside)."""
    return {p.name: p.read_bytes() for p in (master / "var/lib/ganeti").iterdir()}


def counting_ssh(tmp_path: Path) -> tuple[Path, Path]:
    """An ``--ssh`` wrapper that logs each call's arguments, and its log."""
    calls = tmp_path / "ssh-calls"
    wrapper = tmp_path / "counting-ssh"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec ssh "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, calls


def control_path(argv: list[str]) -> Path:
    """The control socket an ssh call was given."""
    return Path(next(a for a in argv if a.startswith("ControlPath=")).removeprefix("ControlPath="))


def ssh_calls(calls: Path) -> tuple[list[list[str]], list[list[str]]]:
    """The master connections (``-N``) and the commands (``--``) a push ran, after
    checking that it left none of them behind: no socket directory, no ssh process."""
    argvs = [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []
    masters = [argv for argv in argvs if "-N" in argv]
    commands = [argv for argv in argvs if "--" in argv]
    assert all("ControlMaster=yes" in argv for argv in masters)
    for directory in {control_path(argv).parent for argv in masters}:
        assert not directory.exists()
        left = subprocess.run(["pgrep", "-f", str(directory)], capture_output=True, check=False)
        assert left.stdout == b"", f"ssh processes left on {directory}"
    return masters, commands


def test_push_to_five_nodes_installs_every_file_byte_exact(
    master: Path, cluster: SshNodes, tmp_path: Path
) -> None:
    """Five nodes in parallel over exactly one ssh connection each (counted by an --ssh
    wrapper: one master connection per node, the command over its socket, the socket's
    directory gone after): all committed, each holding the master's files byte for byte."""
    wrapper, calls = counting_ssh(tmp_path)
    push = run_push(
        master,
        cluster,
        *(n.spec for n in cluster.nodes),
        "--no-start-node-daemon",
        "--ssh",
        str(wrapper),
    )
    assert push.returncode == 0, push.stderr
    masters, commands = ssh_calls(calls)
    assert len(masters) == len(commands) == 5
    assert all("ControlMaster=no" in argv for argv in commands)
    assert {control_path(argv) for argv in commands} == {control_path(argv) for argv in masters}
    assert len({control_path(argv) for argv in masters}) == 5
    assert set(push.results) == {n.spec for n in cluster.nodes}
    for node in cluster.nodes:
        result = push.results[node.spec]
        assert (result["outcome"], result["exit_code"], result["error"]) == ("committed", 0, None)
        assert result["txid"] == result["result"]["txid"]
        files = installed(node)
        assert files.pop("client.pem").startswith(b"-----BEGIN")
        assert files == master_files(master)
    node_lines = [e for e in push.events if e["event"] == "step.end"]
    assert {e["node"] for e in node_lines} == {n.spec for n in cluster.nodes}
    assert all(e.get("node") for e in push.events if e["event"].startswith("node."))
    assert push.events[0]["event"] == "push.begin"
    assert push.events[-1]["event"] == "push.end"
    assert push.events[-1]["counts"] == {"committed": 5}


def test_a_refusing_node_fails_alone(master: Path, cluster: SshNodes) -> None:
    """One node of another cluster refuses (exit 4, untouched); the others commit; exit 10."""
    odd = cluster.nodes[2]
    ganeti = odd.root / "var/lib/ganeti"
    ganeti.mkdir()
    (ganeti / "ssconf_cluster_name").write_text("other.example.com\n")
    before = snapshot(odd.root)
    push = run_push(master, cluster, *(n.spec for n in cluster.nodes), "--no-start-node-daemon")
    assert push.returncode == 10
    refused = push.results[odd.spec]
    assert (refused["outcome"], refused["exit_code"]) == ("failed", 4)
    assert "cluster name" in refused["error"]
    assert snapshot(odd.root) == before
    others = [n for n in cluster.nodes if n is not odd]
    assert all(push.results[n.spec]["outcome"] == "committed" for n in others)


def test_unreachable_node_and_retry_from(master: Path, cluster: SshNodes, tmp_path: Path) -> None:
    """A port with no sshd is 'unreachable' (255); --retry-from pushes to exactly the failed."""
    dead = "root@127.0.0.1:1"
    good, refusing = cluster.nodes[0], cluster.nodes[1]
    (refusing.root / "var/lib/ganeti").mkdir()
    (refusing.root / "var/lib/ganeti/ssconf_cluster_name").write_text("other.example.com\n")
    push = run_push(master, cluster, good.spec, refusing.spec, dead, "--no-start-node-daemon")
    assert push.returncode == 10
    assert push.results[dead]["outcome"] == "unreachable"
    assert push.results[dead]["exit_code"] == 255
    assert "Connection refused" in push.results[dead]["error"]
    assert push.results[refusing.spec]["exit_code"] == 4
    outputs = [e for e in push.events if e["event"] == "node.output"]
    assert not any(e["node"] == dead for e in outputs)  # ssh's message is the error, once

    results = tmp_path / "results.json"
    results.write_text(push.stdout)
    (refusing.root / "var/lib/ganeti/ssconf_cluster_name").unlink()
    retry = run_push(master, cluster, "--retry-from", str(results), "--no-start-node-daemon")
    assert set(retry.results) == {refusing.spec, dead}
    assert retry.results[refusing.spec]["outcome"] == "committed"
    assert retry.returncode == 10  # the dead node is still dead


def test_dry_run_writes_nothing_anywhere(master: Path, cluster: SshNodes) -> None:
    """--dry-run (nodes from --nodes-file, with comments) reaches every node, which plans
    only: no node root changes at all."""
    before = {n.spec: snapshot(n.root, skip=()) for n in cluster.nodes}
    nodes_file = master.parent / "nodes.txt"
    listed = "".join(f"{n.spec}  # node {i}\n\n" for i, n in enumerate(cluster.nodes))
    nodes_file.write_text("# the cluster\n" + listed)
    # No daemon to start: these nodes have no [daemon] config, and Ganeti's may be missing.
    push = run_push(
        master, cluster, "--nodes-file", str(nodes_file), "--dry-run", "--no-start-node-daemon"
    )
    assert push.returncode == 0, push.stderr
    assert {r["outcome"] for r in push.results.values()} == {"dry_run"}
    assert all(r["result"]["plan"] for r in push.results.values())
    assert {n.spec: snapshot(n.root, skip=()) for n in cluster.nodes} == before


def test_parallel_nodes_connect_at_once(master: Path, cluster: SshNodes, tmp_path: Path) -> None:
    """--parallel 10 opens ten connections at once: each master connection waits in an
    --ssh wrapper until all ten have started (a barrier, not a timer), so a push that
    opened fewer at a time would leave the barrier unreached."""
    barrier, seen = tmp_path / "barrier", tmp_path / "seen"
    barrier.mkdir()
    wrapper = tmp_path / "barrier-ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -N "*)\n'
        f"  touch {barrier}/$$; i=0; word=unreached\n"
        # Hangs are caught after a minute; the ten start within moments of each other.
        f'  while [ $i -lt 600 ]; do [ "$(ls {barrier} | wc -l)" -ge 10 ] && word=all && break;'
        " sleep 0.1; i=$((i+1)); done\n"
        f"  echo $word >> {seen};;\n"
        "esac\n"
        'exec ssh "$@"\n'
    )
    wrapper.chmod(0o755)
    # Each node twice (with and without its user): ten nodes; dry runs take no lock.
    specs = [n.spec for n in cluster.nodes] + [n.spec.split("@", 1)[1] for n in cluster.nodes]
    push = run_push(master, cluster, *specs, "--dry-run", "--parallel", "10", "--ssh", str(wrapper))
    assert push.returncode == 0, push.stderr
    assert {r["outcome"] for r in push.results.values()} == {"dry_run"}
    assert seen.read_text().split() == ["all"] * 10


def slow_restart_config(node: SshNode, *, fail: bool = False) -> Path:
    """A node whose daemon restart waits until the test creates the returned gate file,
    then succeeds (or exits 3 with ``fail``); 'running' is a marker file.

    The test decides when the restart ends, so a slow machine cannot end it too early.
    """
    config = node.root / "etc/txsetup/config.toml"
    config.parent.mkdir(parents=True)
    running, gate = node.root / "daemon-running", node.root / "restart-may-end"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    end = "exit 3" if fail else f"touch {running}"
    config.write_text(
        "[daemon]\n"
        f'restart = [["sh", "-c", "{wait}; {end}"]]\n'
        f'stop = [["rm", "-f", "{running}"]]\n'
        f'status = ["test", "-e", "{running}"]\n'
        'health_url = "none"\n'
        "command_timeout = 300\n"  # the gate holds the restart for as long as a test needs
    )
    return gate


def test_timeout_ends_ssh_and_the_node_still_finishes(master: Path, cluster: SshNodes) -> None:
    """--timeout ends the ssh client mid-restart; the node's transaction still commits
    on its own, and push --resume then finds nothing left to do."""
    node = cluster.nodes[0]
    gate = slow_restart_config(node)
    push = run_push(master, cluster, node.spec, "--timeout", TIMEOUT)
    gate.touch()
    assert push.returncode == 10
    result = push.results[node.spec]
    assert (result["outcome"], result["exit_code"]) == ("timed_out", None)
    assert "push --resume" in result["error"]
    assert wait_unlocked_and_done(node)
    files = installed(node)
    files.pop("client.pem")
    assert files == master_files(master)
    resume = run_push(master, cluster, node.spec, "--resume")
    assert resume.returncode == 0, resume.stderr
    line = resume.results[node.spec]
    assert line["outcome"] == "nothing_to_resume"
    # What the node ended with: its transaction's txid on the line, its outcome in the result.
    (ended,) = {r.txid for r in read_journal(node.root / "var/lib/txsetup/journal")}
    assert line["txid"] == ended
    check_result(line["result"])
    last = line["result"]["last_transaction"]
    assert (last["txid"], last["outcome"], last["reason"]) == (ended, "committed", None)


def test_resume_after_a_timeout_tells_a_rollback_and_its_reason(
    master: Path, cluster: SshNodes
) -> None:
    """A node whose slow restart then fails rolls back on its own after the timeout;
    push --resume names that transaction, rolled_back, with the step and the error."""
    node = cluster.nodes[0]
    gate = slow_restart_config(node, fail=True)
    push = run_push(master, cluster, node.spec, "--timeout", TIMEOUT)
    gate.touch()
    assert push.results[node.spec]["outcome"] == "timed_out", push.stdout
    assert wait_unlocked_and_done(node)
    assert installed(node) == {}  # rolled back: a fresh node holds nothing again
    resume = run_push(master, cluster, node.spec, "--resume")
    assert resume.returncode == 0, resume.stderr
    line = resume.results[node.spec]
    (ended,) = {r.txid for r in read_journal(node.root / "var/lib/txsetup/journal")}
    assert (line["outcome"], line["txid"]) == ("nothing_to_resume", ended)
    check_result(line["result"])
    last = line["result"]["last_transaction"]
    assert (last["txid"], last["outcome"]) == (ended, "rolled_back")
    assert last["reason"]["step"] == "restart_daemon"
    assert "exited 3" in last["reason"]["error"]


def wait_unlocked_and_done(node: SshNode, seconds: float = 120) -> bool:
    """Wait until the node's last transaction has ended (its journal says so)."""
    journal = node.root / "var/lib/txsetup/journal"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = journal.read_text().splitlines() if journal.exists() else []
        if lines and any(s in lines[-1] for s in ('"done"', '"rolled_back"')):
            return True
        time.sleep(0.1)
    return False


def test_interrupting_the_master(master: Path, cluster: SshNodes, tmp_path: Path) -> None:
    """SIGINT: no new node starts, running ssh clients end, every node is reported, exit 130;
    no ssh connection is left open; the interrupted node ends committed (never mixed) and
    push --resume reports it."""
    slow, *rest = cluster.nodes
    gate = slow_restart_config(slow)
    wrapper, calls = counting_ssh(tmp_path)
    nodes = (slow.spec, *(n.spec for n in rest))
    argv = push_argv(master, cluster, "--parallel", "1", "--ssh", str(wrapper), *nodes)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the slow node is restarting its daemon
        if b'"restart_daemon"' in line and b"step.begin" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    gate.touch()
    push = parse_push(proc.returncode, out.decode(), err.decode())
    assert push.returncode == 130
    assert push.results[slow.spec]["outcome"] == "interrupted"
    assert {push.results[n.spec]["outcome"] for n in rest} == {"not_started"}
    assert push.events[-1]["event"] == "push.end"
    assert push.events[-1]["interrupted"] is True
    masters, commands = ssh_calls(calls)
    assert len(masters) == len(commands) == 1  # no connection to a node that never started
    assert wait_unlocked_and_done(slow)
    files = installed(slow)
    files.pop("client.pem")
    assert files == master_files(master)
    assert all(installed(n) == {} for n in rest)
    resume = run_push(master, cluster, slow.spec, "--resume")
    assert resume.results[slow.spec]["outcome"] == "nothing_to_resume"


def test_killed_ssh_client_leaves_no_node_halfway(master: Path, cluster: SshNodes) -> None:
    """kill -9 of the ssh client while the node stages: the node still ends exactly
    old or exactly new, and push --resume reports a consistent node."""
    node = cluster.nodes[0]
    gate = slow_restart_config(node)
    document = make_document_for(master, node)
    proc = subprocess.Popen(
        cluster.ssh_argv(node, txsetup_exe(), "node-daemon-setup"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    proc.stdin.write(document)
    proc.stdin.close()
    for line in proc.stderr:
        if b"step.begin" in line and b'"stage"' in line:
            break
    proc.kill()
    proc.wait()
    gate.touch()
    assert wait_unlocked_and_done(node)
    files = installed(node)
    assert files.pop("client.pem", b"-----BEGIN").startswith(b"-----BEGIN")
    assert files in ({}, master_files(master))
    resume = run_push(master, cluster, node.spec, "--resume")
    assert resume.returncode == 0
    assert resume.results[node.spec]["outcome"] in ("nothing_to_resume", "resumed")


def make_document_for(master: Path, node: SshNode) -> bytes:
    """The exact bytes push would send to ``node``."""
    from txsetup.master import build_payload

    return build_payload(master, start_node_daemon=True).for_node("127.0.0.1")


def test_usage_and_from_root_errors(master: Path, tmp_path: Path) -> None:
    """Usage errors exit 2, an unusable --from-root exits 3 naming the file; nothing runs."""
    exe = txsetup_exe()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, "push", *args], capture_output=True, text=True, timeout=60, check=False
        )

    for args, code, words in [
        ((), 2, "no NODE"),
        (("--from-root", str(master), "-oProxyCommand=x"), 2, ""),
        (("--from-root", str(master), "--", "-oProxyCommand=x"), 2, "not [user@]host"),
        (("--from-root", str(master), "--abort", "n1"), 2, "--abort goes with --resume"),
        (("--from-root", str(master), "--parallel", "0", "n1"), 2, "positive"),
        (("--from-root", str(tmp_path / "none"), "n1"), 3, "ssconf_cluster_name is missing"),
    ]:
        proc = run(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert words in proc.stderr
        assert "Traceback" not in proc.stderr
        check_log_lines(proc.stderr)
    (master / "var/lib/ganeti/server.pem").unlink()
    proc = run("--from-root", str(master), "n1")
    assert proc.returncode == 3
    assert "server.pem is missing" in proc.stderr
    assert proc.stdout == ""


def test_a_refused_document_contacts_no_node(
    master: Path, cluster: SshNodes, tmp_path: Path
) -> None:
    """The document is checked before any connection: a refused one (exit 3) runs no ssh."""
    (master / "var/lib/ganeti/server.pem").write_text("not a certificate\n")
    wrapper, calls = counting_ssh(tmp_path)
    push = run_push(master, cluster, *(n.spec for n in cluster.nodes), "--ssh", str(wrapper))
    assert push.returncode == 3, push.stderr
    assert push.results == {}
    assert not calls.exists()
    assert all(installed(n) == {} for n in cluster.nodes)


def test_tty_view_shows_rows_and_summary(master: Path, cluster: SshNodes) -> None:
    """Under a pseudo-terminal: a line per finished node and the summary; no raw JSON,
    no traceback; results still go to stdout (a file), not the screen."""
    screen, results = tty_push(master, cluster, [n.spec for n in cluster.nodes[:2]])
    assert "Traceback" not in screen
    assert '{"' not in screen
    assert "2/2 nodes: 2 committed" in screen
    assert all(n.spec in screen for n in cluster.nodes[:2])
    assert len(results.splitlines()) == 2


def test_tty_view_without_rich_falls_back_to_plain_lines(
    master: Path, cluster: SshNodes, tmp_path: Path
) -> None:
    """With rich not importable the view prints plain lines, and never fails."""
    fake = tmp_path / "norich/rich"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('rich is not installed here')\n")
    screen, _ = tty_push(
        master,
        cluster,
        [cluster.nodes[0].spec, "root@127.0.0.1:1"],
        env={"PYTHONPATH": str(fake.parent)},
    )
    assert "Traceback" not in screen
    assert "pushing to 2 node(s)" in screen
    assert "unreachable" in screen
    assert "2/2 nodes: 1 committed, 1 unreachable" in screen
    assert "--retry-from" in screen


def tty_push(
    master: Path, cluster: SshNodes, specs: list[str], env: dict[str, str] | None = None
) -> tuple[str, str]:
    """Run push with stderr on a pty (``script``), stdout to a file; the screen and results."""
    script = require_tool("script")
    out = master.parent / "tty-results.json"
    options = " ".join(f"--ssh-option {opt}" for opt in cluster.ssh_options)
    command = (
        f"{txsetup_exe()} push --from-root {master} --no-start-node-daemon "
        f"--remote-command '{txsetup_exe()} node-daemon-setup' {options} "
        f"{' '.join(specs)} > {out}"
    )
    proc = subprocess.run(
        [script, "-qec", command, "/dev/null"],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", "LINES": "40", **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    screen = proc.stdout.decode("utf-8", "replace")
    assert_no_secrets(screen)
    return screen, out.read_text()


def test_hangup_does_not_stop_a_node_run(master: Path, tmp_path: Path) -> None:
    """SIGHUP (a dropped ssh session with a terminal) mid-restart: the run still commits."""
    node_root = tmp_path / "node"
    (node_root / "var/lib").mkdir(parents=True)
    (node_root / "var/lock").mkdir()
    node = SshNode("local", 0, node_root, 0)
    gate = slow_restart_config(node)
    proc = start_setup(node_root, make_document_for(master, node))
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"step.begin" in line and b'"restart_daemon"' in line:
            break
    proc.send_signal(signal.SIGHUP)
    gate.touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert json.loads(out)["outcome"] == "committed"
