"""``txsetup push`` for people: what to run after Ctrl-C, a missing command, an unreachable node.

Real sshd nodes on loopback and the installed CLI, as in ``test_push.py``;
each view is read as a person would see it: the JSON log, the plain lines
(``rich`` made unimportable) and the rich view.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import check_log_lines
from tests.test_push import empty_nodes, parse_push, push_argv, write_master
from txsetup.demo.sshnodes import SshNode, SshNodes

pytestmark = pytest.mark.system

DEAD = "root@127.0.0.1:1"
REFUSED = "ssh: connect to host 127.0.0.1 port 1: Connection refused"


@pytest.fixture
def master(tmp_path: Path, node_pem: str) -> Path:
    """The master's root."""
    return write_master(tmp_path / "master", node_pem)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SshNodes]:
    """Two real sshd nodes on loopback, each with an empty node root."""
    with empty_nodes(2, tmp_path / "nodes") as nodes:
        yield nodes


def without_rich(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import rich`` fails, so push shows plain lines."""
    fake = tmp_path / "norich/rich"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('rich is not installed here')\n")
    return {**os.environ, "PYTHONPATH": str(fake.parent)}


VIEWS = ("json", "plain", "rich")


def view_argv(view: str) -> list[str]:
    """The ``--log-format`` for a view (plain is console without rich)."""
    return ["--log-format", "json" if view == "json" else "console"]


def view_env(view: str, tmp_path: Path) -> dict[str, str]:
    """The environment for a view: wide lines, and no rich for the plain one."""
    env = without_rich(tmp_path) if view == "plain" else dict(os.environ)
    return {**env, "COLUMNS": "400"}


def wait_for(path: Path, seconds: float = 60) -> None:
    """Wait until ``path`` exists (a node started its remote command)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("view", VIEWS)
def test_ctrl_c_summary_names_push_resume_with_the_results_file(
    master: Path, cluster: SshNodes, tmp_path: Path, view: str
) -> None:
    """SIGINT while a node's remote command sleeps: exit 130, and the closing summary (each
    view) names `txsetup push --resume --retry-from results.json` with the options used."""
    first: SshNode = cluster.nodes[0]
    sleeper = 'touch "$TXSETUP_ROOT/started" && sleep 60'
    argv = [
        *push_argv(master, cluster, *view_argv(view), "--parallel", "1"),
        "--remote-command",
        sleeper,
        *(n.spec for n in cluster.nodes),
    ]
    with (tmp_path / "results.json").open("w") as results:
        proc = subprocess.Popen(
            argv, stdout=results, stderr=subprocess.PIPE, cwd=tmp_path, env=view_env(view, tmp_path)
        )
        try:
            wait_for(first.root / "started")
        finally:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    outcomes = {
        r["node"]: r["outcome"] for r in map(json.loads, (tmp_path / "results.json").open())
    }
    assert outcomes == {first.spec: "interrupted", cluster.nodes[1].spec: "not_started"}
    command = "txsetup push --resume --retry-from results.json"
    if view == "json":
        end = check_log_lines(stderr)[-1]
        assert end["event"] == "push.end"
        assert end["interrupted"] is True
        assert end["next_command"].startswith(command + " --ssh-option ")
        assert (
            "--remote-command 'touch \"$TXSETUP_ROOT/started\" && sleep 60'"
            in (end["next_command"])
        )
        assert "--parallel 1" in end["next_command"]
        assert "how its run ended" in end["next_words"]
    else:
        lines = stderr.splitlines()
        assert any(line.startswith(f"next: {command} --ssh-option ") for line in lines), stderr
        assert "how its run ended" in stderr
        assert f"  interrupted: {first.spec}" in lines
        assert f"  not_started: {cluster.nodes[1].spec}" in lines


def test_ctrl_c_without_a_results_file_says_what_the_file_is(
    master: Path, cluster: SshNodes, tmp_path: Path
) -> None:
    """stdout a pipe: the next command holds the RESULTS-FILE placeholder, explained."""
    first = cluster.nodes[0]
    argv = [
        *push_argv(master, cluster, "--log-format", "json", first.spec),
        "--remote-command",
        'touch "$TXSETUP_ROOT/started" && sleep 60',
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(first.root / "started")
    finally:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    push = parse_push(proc.returncode, out.decode(), err.decode())
    assert push.returncode == 130
    end = push.events[-1]
    assert end["next_command"].startswith("txsetup push --resume --retry-from RESULTS-FILE ")
    assert "RESULTS-FILE: this push's stdout, saved to a file" in end["next_words"]


@pytest.mark.parametrize("view", VIEWS)
def test_command_not_found_on_the_node_gets_the_remote_command_hint(
    master: Path, cluster: SshNodes, tmp_path: Path, view: str
) -> None:
    """--remote-command /nonexistent: exit 127 on the node; the result's error and the
    view name the command and say to install txsetup or pass --remote-command."""
    node = cluster.nodes[0]
    argv = [*push_argv(master, cluster, *view_argv(view), node.spec)]
    argv += ["--remote-command", "/nonexistent"]  # the last one given wins
    proc = subprocess.run(
        argv, capture_output=True, timeout=120, check=False, env=view_env(view, tmp_path)
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 10, stderr
    result = json.loads(proc.stdout)
    assert (result["outcome"], result["exit_code"]) == ("failed", 127)
    hint = "`/nonexistent` was not found on the node (exit 127): install txsetup there"
    assert result["error"].startswith(hint)
    assert "--remote-command" in result["error"]
    assert "No such file or directory" in result["error"]  # the node's shell said why
    assert hint in stderr
    assert stderr.count("No such file or directory") == 1, stderr
    if view == "json":
        assert not [e for e in check_log_lines(stderr) if e["event"] == "node.output"]


@pytest.mark.parametrize("view", VIEWS)
def test_an_unreachable_nodes_error_shows_once(
    master: Path, cluster: SshNodes, tmp_path: Path, view: str
) -> None:
    """A closed port: ssh's message appears once on stderr (each view), whole in the result."""
    good = cluster.nodes[0]
    argv = [*push_argv(master, cluster, *view_argv(view), good.spec, DEAD)]
    argv.append("--no-start-node-daemon")
    proc = subprocess.run(
        argv, capture_output=True, timeout=120, check=False, env=view_env(view, tmp_path)
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 10, stderr
    results = {r["node"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}
    assert results[DEAD]["error"] == REFUSED
    assert results[DEAD]["outcome"] == "unreachable"
    assert results[good.spec]["outcome"] == "committed"
    assert stderr.count("Connection refused") == 1, stderr
    if view != "json":
        assert f"  unreachable: {DEAD}" in stderr.splitlines()
        assert "retry just these: txsetup push --retry-from RESULTS-FILE " in stderr


def test_a_node_that_talks_before_it_fails_shows_every_line_once(
    master: Path, cluster: SshNodes
) -> None:
    """Lines that are not JSON before the node's own log are passed on as node.output;
    the last ones before a failure without a result are in the error only."""
    node = cluster.nodes[0]
    line = json.dumps(
        {"ts": "2026-12-01T00:00:00Z", "level": "info", "event": "txn.begin", "txid": "t1"}
        | {"program": "txsetup", "version": "0"}
    )
    talker = f"echo early >&2; echo '{line}' >&2; echo one >&2; echo two >&2; exit 3"
    argv = [*push_argv(master, cluster, "--log-format", "json", node.spec)]
    argv += ["--remote-command", talker]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    push = parse_push(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    result = push.results[node.spec]
    assert result["error"] == "remote command exited 3 without a result: one; two"
    outputs = [e["line"] for e in push.events if e["event"] == "node.output"]
    assert outputs == ["early"]
