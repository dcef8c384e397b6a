"""The console view, as a person at a terminal sees it, and the renderer on odd input.

The end-to-end tests run the installed ``txsetup`` with stderr on a real
pseudo-terminal (so it picks the console view and colour by itself), with
``NO_COLOR=1`` on that terminal, and with ``--log-format console`` on a pipe,
for a commit (the demo daemon restarted and probed over TLS), a refusal
(exit 4), a rollback (exit 6) and a resume after a run was killed mid-restart.
In each: every step shows exactly once, the summary line closes the run, no
raw event name leaks, and colour appears exactly when it should.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog import DropEvent

from tests.conftest import (
    SECRET_MARKERS,
    encode,
    make_document,
    parse_run,
    run_txsetup,
    txsetup_exe,
)
from txsetup.console import ConsoleRenderer
from txsetup.demo.__main__ import free_port, write_config
from txsetup.log import refuse_key_material

GOOD_HMAC = "0123456789abcdef0123456789abcdef\n"
MODES = ("pty", "pty-no-color", "pipe")
STEPS = ("lock", "decode", "verify_cluster", "verify_cert", "stage", "commit", "restart_daemon")
RAW_EVENT = re.compile(r"\b(?:step|txn|compensate)\.[a-z_]+")
ESCAPES = re.compile(r"\x1b\[[0-9;]*m")
QUIET_DAEMON = 'stop = [["true"]]\nhealth_url = "none"\n'


@dataclass
class Shown:
    """What a run showed: its exit code, its result, and its console lines (no escapes)."""

    returncode: int
    result: dict[str, Any]
    raw: str
    lines: list[str]

    def step_lines(self, step: str) -> list[str]:
        """The lines that report ``step`` (a mark, then the step's name in its column)."""
        return [line for line in self.lines if re.match(rf"^[✓✗] {step}\s", line)]

    @property
    def summary(self) -> str:
        """The last line: the run's summary."""
        return self.lines[-1]


def show(root: Path, *args: str, stdin: bytes = b"", mode: str = "pty") -> Shown:
    """Run ``txsetup node-daemon-setup --root root *args``; stderr on a terminal or a pipe."""
    argv = [txsetup_exe(), "node-daemon-setup", "--root", str(root), *args]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if mode == "pty-no-color":
        env["NO_COLOR"] = "1"
    with tempfile.TemporaryFile() as data:
        data.write(stdin)
        data.seek(0)
        if mode == "pipe":
            proc = subprocess.run(
                [*argv, "--log-format", "console"],
                stdin=data,
                capture_output=True,
                env=env,
                timeout=120,
                check=False,
            )
            return _shown(proc.returncode, proc.stdout, proc.stderr)
        controller, terminal = os.openpty()
        with subprocess.Popen(
            argv, stdin=data, stdout=subprocess.PIPE, stderr=terminal, env=env
        ) as child:
            os.close(terminal)
            err = _read_all(controller)
            out, _ = child.communicate(timeout=120)
        return _shown(child.returncode, out, err.replace(b"\r\n", b"\n"))


def _read_all(fd: int) -> bytes:
    """Everything a terminal's other end wrote, until it was closed (EIO on Linux)."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def _shown(returncode: int, stdout: bytes, stderr: bytes) -> Shown:
    raw = stderr.decode()
    assert "Traceback" not in raw, raw
    for marker in SECRET_MARKERS:
        assert marker not in raw
    lines = [ESCAPES.sub("", line) for line in raw.splitlines() if line.strip()]
    return Shown(returncode, json.loads(stdout), raw, lines)


def assert_readable(
    shown: Shown, mode: str, steps: tuple[str, ...], *, twice: tuple[str, ...] = ()
) -> None:
    """Each of ``steps`` once (``twice``: its failure, then its failed undo), no other step
    line, no raw event name, colour only on a tty."""
    for step in STEPS:
        expected = 2 if step in twice else int(step in steps)
        assert len(shown.step_lines(step)) == expected, (step, shown.raw)
    assert not RAW_EVENT.search(shown.raw), shown.raw
    if mode == "pty":
        assert "\x1b[" in shown.raw, shown.raw
    else:
        assert "\x1b" not in shown.raw, shown.raw
    assert shown.result["txid"] in shown.summary


@pytest.fixture
def demo_daemon(root: Path) -> Iterator[Path]:
    """``root`` configured to restart the demo daemon on a free port; stopped afterwards."""
    write_config(root, free_port())
    try:
        yield root
    finally:
        subprocess.run(
            [*_noded(), "stop", "--root", str(root)], capture_output=True, check=False, timeout=60
        )


def _noded() -> list[str]:
    import sys

    return [sys.executable, "-m", "txsetup.demo.noded"]


@pytest.mark.parametrize("mode", MODES)
def test_commit_shows_each_step_once_and_a_summary(
    demo_daemon: Path, node_pem: str, mode: str
) -> None:
    """A real install: seven step lines in words, the daemon's health folded in, a summary."""
    document = make_document(node_pem, start_node_daemon=True, hmac_key=GOOD_HMAC)
    shown = show(demo_daemon, stdin=encode(document), mode=mode)
    assert shown.returncode == 0, shown.raw
    assert_readable(shown, mode, STEPS)
    assert "files staged" in shown.step_lines("stage")[0]
    assert "files put in place" in shown.step_lines("commit")[0]
    restart = shown.step_lines("restart_daemon")[0]
    assert re.search(r"daemon restarted; healthy after \d+ attempts?, \d+ ms", restart), restart
    assert re.match(r"^✓ committed · txid \S+ · \d+ files changed · ", shown.summary)


@pytest.mark.parametrize("mode", MODES)
def test_refusal_says_what_to_do(root: Path, node_pem: str, mode: str) -> None:
    """A document for another cluster: the failing check in words, the action, exit 4."""
    installed = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem))
    )
    assert installed.returncode == 0, installed.stderr
    other = make_document(node_pem, cluster="other.example.com")
    shown = show(root, stdin=encode(other), mode=mode)
    assert shown.returncode == 4, shown.raw
    assert_readable(shown, mode, ("lock", "decode", "verify_cluster"))
    failed = shown.step_lines("verify_cluster")[0]
    assert failed.startswith("✗ verify_cluster")
    assert "fix the document on the master" in failed
    assert re.match(r"^✗ refused · txid \S+ · nothing changed · .* · exit 4$", shown.summary)


@pytest.mark.parametrize("mode", MODES)
def test_rollback_shows_the_undo_in_one_line(root: Path, node_pem: str, mode: str) -> None:
    """A restart command that fails after the commit: the undo in one line, exit 6."""
    config = root / "config.toml"
    config.write_text(f'[daemon]\nrestart = [["false"]]\nstatus = ["false"]\n{QUIET_DAEMON}')
    first = make_document(node_pem)
    run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(first))
    update = make_document(node_pem, start_node_daemon=True, ssconf={"master_ip": "192.0.2.77"})
    shown = show(root, "--config", str(config), stdin=encode(update), mode=mode)
    assert shown.returncode == 6, shown.raw
    assert_readable(shown, mode, STEPS)
    assert shown.step_lines("restart_daemon")[0].startswith("✗ restart_daemon")
    undone = [line for line in shown.lines if line.startswith("↺ undone:")]
    assert len(undone) == 1, shown.raw
    assert "restart_daemon, commit, stage" in undone[0]
    assert "read the error above, fix the cause, run again" in undone[0]
    assert re.match(r"^↺ rolled back · txid \S+ · nothing changed · .* · exit 6$", shown.summary)


@pytest.mark.parametrize("mode", MODES)
def test_resume_after_a_kill_says_what_it_finished(root: Path, node_pem: str, mode: str) -> None:
    """Killed mid-restart (the restart command kills txsetup), then --resume rolls forward."""
    killing = root / "killing.toml"
    killing.write_text(
        f'[daemon]\nrestart = [["sh", "-c", "kill -9 $PPID"]]\nstatus = ["false"]\n{QUIET_DAEMON}'
    )
    document = make_document(node_pem, start_node_daemon=True)
    killed = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root), "--config", str(killing)],
        input=encode(document),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    working = root / "working.toml"
    working.write_text(f'[daemon]\nrestart = [["true"]]\nstatus = ["true"]\n{QUIET_DAEMON}')
    shown = show(root, "--resume", "--config", str(working), mode=mode)
    assert (shown.returncode, shown.result["outcome"]) == (0, "resumed"), shown.raw
    assert_readable(shown, mode, ())
    txid = shown.result["txid"]
    recovered = [line for line in shown.lines if line.startswith("↺ interrupted transaction")]
    assert recovered == [
        f"↺ interrupted transaction {txid} finished (rolled forward); daemon restarted"
    ]
    assert shown.summary.startswith(
        f"✓ resumed: the interrupted transaction is finished · txid {txid}"
    )


# The undo's restart fails too (the daemon was running): exit 8.
FAILING_UNDO = f'[daemon]\nrestart = [["false"]]\nstatus = ["true"]\n{QUIET_DAEMON}'


@pytest.mark.parametrize("mode", MODES)
def test_exit_8_shows_its_cause_and_the_command_to_run_next(
    root: Path, node_pem: str, mode: str
) -> None:
    """An undo that fails too: the cause and the --resume command to run, on the run and on
    a --resume alike, and never "the node is as it was"."""
    config = root / "config.toml"
    config.write_text(FAILING_UNDO)
    run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem)))
    update = make_document(node_pem, start_node_daemon=True, ssconf={"master_ip": "192.0.2.77"})
    resume = f"txsetup node-daemon-setup --root {root} --config {config} --resume"

    shown = show(root, "--config", str(config), stdin=encode(update), mode=mode)
    assert shown.returncode == 8, shown.raw
    assert_readable(shown, mode, STEPS, twice=("restart_daemon",))
    failed, undo = shown.step_lines("restart_daemon")
    assert failed.endswith("daemon restart: false exited 1 → undoing what was done")
    assert undo.startswith("✗ restart_daemon  undo failed: restoring the node daemon failed")
    assert "the node is as it was" not in shown.raw
    assert not [line for line in shown.lines if line.startswith("↺ undone")], shown.raw
    (cause,) = [line for line in shown.lines if line.startswith("✗ cause: ")]
    assert cause.startswith("✗ cause: step restart_daemon failed (daemon restart: false exited 1)")
    assert "journal and backups kept in" in cause
    assert shown.lines[-2] == cause
    assert shown.summary.startswith(f"✗ needs manual help · txid {shown.result['txid']} · ")
    assert f"`{resume}` to finish it, or `{resume} --abort` to undo it" in shown.summary

    again = show(root, "--resume", "--config", str(config), mode=mode)
    assert (again.returncode, again.result["outcome"]) == (8, "failed"), again.raw
    assert not RAW_EVENT.search(again.raw), again.raw
    assert "the node is as it was" not in again.raw
    (cause,) = [line for line in again.lines if line.startswith("✗ cause: ")]
    assert cause.startswith("✗ cause: restoring the node daemon failed: daemon restart: false")
    assert again.summary.startswith("✗ needs manual help · ")
    assert f"`{resume}` to finish it, or `{resume} --abort` to undo it" in again.summary


def test_exit_8_of_an_alias_names_the_alias_to_resume_with(root: Path, node_pem: str) -> None:
    """Run as Ganeti's drop-in ``node-daemon-setup``, the command to run next is that name."""
    config = root / "config.toml"
    config.write_text(FAILING_UNDO)
    run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem)))
    alias = str(Path(txsetup_exe()).with_name("node-daemon-setup"))
    update = make_document(node_pem, start_node_daemon=True, ssconf={"master_ip": "192.0.2.78"})
    proc = subprocess.run(
        [alias, "--root", str(root), "--config", str(config)],
        input=encode(update),
        capture_output=True,
        timeout=120,
        check=False,
    )
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.returncode == 8, run.stderr
    (end,) = [e for e in run.events if e["event"] == "txn.end"]
    assert end["resume_command"] == f"node-daemon-setup --root {root} --config {config} --resume"
    assert (end["error"], end["error_code"]) == (run.result["error"], "recovery_failed")


def test_json_step_end_carries_the_summary(root: Path, node_pem: str) -> None:
    """The words of the console are in the JSON log too (the master reads them there)."""
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)], stdin=encode(make_document(node_pem))
    )
    summaries = {e["step"]: e.get("summary") for e in run.events if e["event"] == "step.end"}
    assert summaries["verify_cluster"] == "cluster name accepted (this node has none yet)"
    assert summaries["commit"] == f"{len(run.result['changed'])} files put in place"
    assert all(summaries.values()), summaries


# --- the renderer alone ------------------------------------------------------------------

KNOWN = [
    "txn.begin",
    "step.begin",
    "step.end",
    "step.failed",
    "compensate.begin",
    "compensate.end",
    "compensate.failed",
    "txn.rolled_back",
    "txn.recovered",
    "txn.committed",
    "txn.converged",
    "txn.end",
    "txn.leftovers_removed",
    "txn.cleanup_deferred",
    "cert.expires_soon",
    "daemon.restart",
    "daemon.healthy",
    "daemon.unhealthy",
    "sshd.reload",
    "sshd.healthy",
    "sshd.reload_failed",
    "ssh.root_key_generated",
    "usage.error",
    "config.error",
    "push.error",
    "push.begin",
    "node.begin",
    "node.output",
    "node.end",
    "push.end",
]
FIELDS = [
    "step",
    "summary",
    "error",
    "error_code",
    "outcome",
    "exit_code",
    "duration_ms",
    "changed",
    "txid",
    "attempts",
    "returncode",
    "timed_out",
    "counts",
    "node",
    "line",
    "kind",
    "not_after",
    "private",
    "hmac_key",
]
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"
ODD_TEXT = st.one_of(
    st.text(),
    st.sampled_from(
        [KEY, "line\nforged ✓ line", "\x1b[2J\x1b]0;title\x07", "\u2028\x85\ud800", ""]
    ),
)
VALUES = st.recursive(
    st.one_of(
        ODD_TEXT,
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
EVENTS = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(KNOWN), st.text(max_size=20))},
    optional={"level": st.sampled_from(["info", "warning", "error", "debug"])},
).flatmap(
    lambda head: st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), VALUES, max_size=6
    ).map(lambda tail: {**tail, **head})
)


def render(renderer: ConsoleRenderer, event: Mapping[str, Any]) -> str:
    """What the configured chain shows for ``event``: redaction first, then the renderer."""
    scrubbed = refuse_key_material(None, "info", dict(event))
    try:
        return renderer(None, "info", scrubbed)
    except DropEvent:
        return ""


def assert_one_clean_line(text: str, *, lines: int = 1) -> None:
    """At most ``lines`` lines, each printable once our own colour codes are removed."""
    assert text.count("\n") < lines, text
    plain = ESCAPES.sub("", text).replace("\n", "")
    assert plain.isprintable(), ascii(plain)
    for marker in ("-----BEGIN", "PRIVATE KEY", "MIGHAgEAMBMGByqGSM49"):
        assert marker not in text


@settings(max_examples=300, deadline=None)
@given(event=EVENTS, colors=st.booleans(), unicode=st.booleans())
def test_any_event_renders_as_one_clean_line(
    event: dict[str, Any], colors: bool, unicode: bool
) -> None:
    """Whatever an event holds: one line (or none), never a raise, no escape, no key."""
    assert_one_clean_line(render(ConsoleRenderer(colors=colors, unicode=unicode), event))


@settings(max_examples=100, deadline=None)
@given(events=st.lists(EVENTS, max_size=12), colors=st.booleans())
def test_a_run_of_odd_events_never_breaks_the_view(
    events: list[dict[str, Any]], colors: bool
) -> None:
    """One renderer through many events: each shows at most one line (the summary two)."""
    renderer = ConsoleRenderer(colors=colors)
    for event in events:
        text = render(renderer, event)
        assert_one_clean_line(text, lines=2 if event["event"] == "txn.end" else 1)


def test_step_begin_shows_nothing_and_step_end_shows_the_words() -> None:
    """The begin is dropped; the end is one line with mark, name, words and duration."""
    renderer = ConsoleRenderer(colors=False)
    assert render(renderer, {"event": "step.begin", "step": "commit"}) == ""
    line = render(
        renderer,
        {
            "event": "step.end",
            "step": "commit",
            "duration_ms": 12,
            "changed": True,
            "summary": "3 files put in place",
        },
    )
    assert re.fullmatch(r"✓ commit +3 files put in place +12 ms", line), line


def test_summary_names_three_changes_and_counts_more() -> None:
    """What changed: the paths when three or fewer, a count when more."""
    few, many = ConsoleRenderer(colors=False), ConsoleRenderer(colors=False)
    end = {
        "event": "txn.end",
        "outcome": "committed",
        "exit_code": 0,
        "duration_ms": 1400,
        "txid": "T1",
    }
    render(few, {"event": "txn.committed", "changed": ["var/lib/ganeti/server.pem"]})
    render(many, {"event": "txn.committed", "changed": [f"var/lib/ganeti/f{i}" for i in range(14)]})
    assert render(few, end) == "✓ committed · txid T1 · changed /var/lib/ganeti/server.pem · 1.4 s"
    assert render(many, end) == "✓ committed · txid T1 · 14 files changed · 1.4 s"


@pytest.mark.parametrize(
    ("event", "action"),
    [
        ({"event": "txn.end", "outcome": "failed", "exit_code": 5}, "raise --lock-timeout"),
        ({"event": "txn.end", "outcome": "failed", "exit_code": 8}, "txsetup status"),
        (
            {"event": "cert.expires_soon", "not_after": "2026-12-10"},
            "renew the cluster certificate",
        ),
        (
            {"event": "config.error", "error": "x", "error_code": "invalid_input"},
            "fix the configuration",
        ),
        ({"event": "compensate.failed", "step": "commit", "error": "EIO"}, "journal and backups"),
    ],
)
def test_failures_and_warnings_say_what_to_do(event: dict[str, Any], action: str) -> None:
    """Each error and warning carries the action to take."""
    assert action in render(ConsoleRenderer(colors=False), event)


def test_an_escape_in_a_value_cannot_reach_the_terminal() -> None:
    """A cluster name with a terminal escape or a newline shows escaped, on one line."""
    line = render(
        ConsoleRenderer(colors=True),
        {
            "event": "step.end",
            "step": "decode",
            "summary": "cluster \x1b[2Jevil\nforged: 1 value",
            "duration_ms": 0,
        },
    )
    assert "\\x1b[2Jevil\\nforged" in line
    assert_one_clean_line(line)


def test_an_interrupted_run_is_told_to_run_again_not_to_fix_a_cause() -> None:
    """After SIGINT the undo line says to run again; after a real failure, to fix it first."""
    for code, action in (
        ("interrupted", "run again when ready"),
        ("daemon_unhealthy", "fix the cause"),
    ):
        renderer = ConsoleRenderer(colors=False)
        render(
            renderer,
            {"event": "step.failed", "step": "restart_daemon", "error_code": code, "error": "x"},
        )
        render(renderer, {"event": "compensate.begin", "step": "restart_daemon"})
        line = render(renderer, {"event": "txn.rolled_back", "reason": "x"})
        assert line.startswith("↺ undone: restart_daemon; the node is as it was → ")
        assert action in line


def test_a_failed_undo_is_never_followed_by_the_node_is_as_it_was() -> None:
    """After compensate.failed the end shows the cause and the resume command, no undone line."""
    renderer = ConsoleRenderer(colors=False)
    events: list[dict[str, Any]] = [
        {"event": "step.failed", "step": "restart_daemon", "error_code": "x", "error": "boom"},
        {"event": "compensate.begin", "step": "restart_daemon"},
        {"event": "compensate.failed", "step": "restart_daemon", "error": "again"},
        {"event": "compensate.begin", "step": "commit"},
        {"event": "compensate.end", "step": "commit"},
        {"event": "compensate.begin", "step": "stage"},
        {"event": "compensate.end", "step": "stage"},
    ]
    for event in events:
        render(renderer, event)
    end = {
        "event": "txn.end",
        "outcome": "failed",
        "exit_code": 8,
        "duration_ms": 5,
        "txid": "T8",
        "error": "undo failed\x1b[2J",
        "error_code": "recovery_failed",
        "resume_command": "prepare-node-join --resume",
    }
    cause, summary = render(renderer, end).split("\n")
    assert cause == "✗ cause: undo failed\\x1b[2J"
    assert summary.startswith("✗ needs manual help · txid T8 · 5 ms · exit 8 → ")
    assert "`prepare-node-join --resume` to finish it" in summary
    assert "the node is as it was" not in cause + summary
    renderer = ConsoleRenderer(colors=False)
    for event in events:
        render(renderer, event)
    line = render(renderer, {"event": "txn.rolled_back", "reason": "x"})
    assert "the node is as it was" not in line
    assert "the undo did not finish" in line


def test_a_terminal_without_utf8_gets_ascii_marks(root: Path, node_pem: str) -> None:
    """PYTHONIOENCODING=ascii: the same view with ASCII marks, nothing replaced by ``?``."""
    proc = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root), "--log-format", "console"],
        input=encode(make_document(node_pem)),
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stderr.decode("ascii")
    assert re.search(r"^\+ commit +\d+ files put in place", text, re.MULTILINE), text
    assert re.search(r"^\+ committed \| txid \S+ \| \d+ files changed \| ", text, re.MULTILINE), (
        text
    )
    assert "?" not in text
    assert "\\u" not in text


def test_a_huge_cluster_name_is_cut_short_in_the_summary(root: Path, node_pem: str) -> None:
    """The decode step's words name the cluster, but never megabytes of a hostile name."""
    name = "c" * 1_000_000
    run = run_txsetup(
        ["node-daemon-setup", "--root", str(root)],
        stdin=encode(make_document(node_pem, cluster=name, ssconf={"cluster_name": "short"})),
    )
    assert run.returncode == 4, run.result
    (decoded,) = [e for e in run.events if e["event"] == "step.end" and e["step"] == "decode"]
    assert decoded["summary"].startswith("cluster ccc")
    assert len(decoded["summary"]) < 200
