"""The README's first command, ``python -m txsetup.demo`` (what ``nox -s demo`` runs), and
``python -m txsetup.demo nodes N``, the loopback nodes ``docs/push.md`` is tried on."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import check_log_lines, require_root, require_tool
from tests.test_sshnodes import refuses

STEPS = ("lock", "decode", "verify_cluster", "verify_cert", "stage", "commit", "restart_daemon")
DEMO = [sys.executable, "-m", "txsetup.demo"]


@pytest.mark.system
def test_demo_tells_every_scenario_and_the_push_in_a_screenful() -> None:
    """One line per scenario, each done: a real refusal (exit 4) apart from the daemon's
    failure (exit 6, rolled back), a push and an atomic rotation to three loopback nodes;
    the install as an operator sees it; and every log kept
    where the closing lines say, beside the paths the logs name."""
    require_tool("sshd")
    proc = subprocess.run(DEMO, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout
    kept = re.search(r"rm -r (\S+)$", out.rstrip())
    try:
        assert proc.returncode == 0, out + proc.stderr
        assert "Traceback" not in out + proc.stderr
        lines = out.splitlines()
        assert len(lines) <= 30, out
        told = [line for line in lines if re.match(r"^  [✓✗-] ", line)]
        names = [line.split()[1] for line in told]
        assert names == ["dry", "install", "same", "refused", "daemon", "push,", "atomic"]
        assert all(line.startswith("  ✓ ") for line in told), out
        assert "3 of 3 committed over 3 ssh connections" in told[-2]
        assert "confirmed: fleet committed (exit 0); 3 daemons serve it" in told[-1]
        assert "another cluster's name: refused (exit 4) at verify_cluster" in told[3]
        assert "nothing written, daemon untouched" in told[3]
        assert "the daemon refuses the new hmac.key: rolled back (exit 6)" in told[4]

        view = [line.strip() for line in lines if line.startswith("    ")]
        for step in STEPS:
            assert len([line for line in view if re.match(rf"^✓ {step}\s", line)]) == 1, view
        assert re.match(r"^✓ committed · txid \S+ · 14 files changed · ", view[-1]), view
        assert not re.search(r"\b(?:step|txn|compensate)\.[a-z_]+", out)

        assert kept is not None, out
        logs_line = re.search(r"JSON log is kept in (\S+),$", out, re.MULTILINE)
        assert logs_line is not None, out
        logs = Path(logs_line.group(1))
        assert logs.parent == Path(kept.group(1))
        names = [p.name.split("-", 1)[1] for p in sorted(logs.glob("*.jsonl"))]
        assert names == [
            "dry-run.jsonl",
            "install.jsonl",
            "same-again.jsonl",
            "refused.jsonl",
            "daemon-fails.jsonl",
            "push.jsonl",
            "push-atomic.jsonl",
        ]
        named: set[str] = set()
        for log in sorted(logs.glob("*.jsonl")):
            text = log.read_text()
            assert check_log_lines(text), log
            named |= set(re.findall(rf"{re.escape(kept.group(1))}[^\s\"'),:]*", text))
        assert any(path.endswith("txsetup-demo-noded.log") for path in named), named
        missing = sorted(path for path in named if not Path(path).exists())
        assert not missing, f"the logs name paths the demo removed: {missing}"
    finally:
        if kept is not None:
            shutil.rmtree(kept.group(1), ignore_errors=True)


def start_nodes(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``python -m txsetup.demo nodes *args``; the process and its lines up to "Up"."""
    proc = subprocess.Popen(
        [*DEMO, "nodes", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Up "):
            break
    return proc, lines


@pytest.mark.system
def test_demo_nodes_prints_a_push_that_works_as_printed(tmp_path: Path) -> None:
    """`nodes 2`: each node's address and one push command line; run by a shell as printed
    it commits on both nodes (exit 0); Ctrl-C then stops sshd and removes every file."""
    require_tool("sshd")
    proc, lines = start_nodes("2", "--for", "600")
    try:
        assert lines, "nothing printed"
        assert lines[-1].startswith("Up for 600 s"), lines
        told = re.search(r"stop and (\S+) is removed", lines[-1])
        assert told is not None, lines
        workdir = Path(told.group(1))
        nodes = [line.split()[0] for line in lines if re.match(r"^  \S+@127\.0\.0\.1:\d+ ", line)]
        assert len(nodes) == 2, lines
        commands = [line.strip() for line in lines if " push --from-root " in line]
        assert len(commands) == 1, lines
        words = shlex.split(commands[0])
        assert words[words.index("--from-root") + 1].startswith(str(workdir))
        assert words[-2:] == nodes
        push = subprocess.run(
            ["bash", "-c", commands[0]],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=tmp_path,
        )
        assert push.returncode == 0, push.stderr
        results = [json.loads(line) for line in push.stdout.splitlines()]
        assert sorted(r["node"] for r in results) == sorted(nodes)
        assert {r["outcome"] for r in results} == {"committed"}
        roots = [workdir / f"sshd/node{i}/root" for i in range(2)]
        assert all((root / "var/lib/ganeti/server.pem").exists() for root in roots)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err == ""
    assert f"{workdir} removed" in out
    assert not workdir.exists()
    assert all(refuses(int(node.rsplit(":", 1)[1])) for node in nodes)


@pytest.mark.system
def test_demo_nodes_for_seconds_stops_by_itself() -> None:
    """`--for 0`: up, told, then stopped and removed with no signal (exit 0)."""
    require_tool("sshd")
    proc, lines = start_nodes("1", "--for", "0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    workdir = re.search(r"stop and (\S+) is removed", lines[-1])
    assert workdir is not None, lines
    assert f"{workdir.group(1)} removed" in out
    assert not Path(workdir.group(1)).exists()


@pytest.mark.system
def test_demo_nodes_without_sshd_says_what_to_install(tmp_path: Path) -> None:
    """sshd hidden (a private mount namespace): one line naming the package, exit 2."""
    require_root("hiding sshd in a mount namespace")
    sshd = Path(require_tool("sshd")).resolve()
    blank = tmp_path / "not-sshd"
    blank.write_text("")
    blank.chmod(0o644)
    hide = f'mount --bind {shlex.quote(str(blank))} {shlex.quote(str(sshd))} && exec "$@"'
    proc = subprocess.run(
        [require_tool("unshare"), "-m", "sh", "-c", hide, "sh", *DEMO, "nodes", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "txsetup demo nodes: OpenSSH is not installed "
        "(Debian/Ubuntu: apt-get install openssh-server openssh-client)"
    ]
