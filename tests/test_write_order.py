"""Write ordering of real runs, checked from their system calls (``tests/writeorder.py``).

Clean runs of the installed CLI are traced with ``strace -f -y`` and must
break none of the protocol's five rules: a fresh node, a re-add that changes
one ssconf value, ssh-setup on a fresh node, and a run that first recovers a
transaction killed at its first commit rename. Then the checker is shown to
fail when it should: each fsync of each clean trace, removed alone, must make
it report a violation (the few that do not are the findings listed in
:data:`NOT_REQUIRED`), and a copy of the package with a real fsync taken out
of its source must be caught.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    NO_PYC,
    REPO,
    encode,
    make_document,
    parse_run,
    require_root,
    require_tool,
    tmpfs,
    txsetup_exe,
)
from tests.sshdoc import counting_reload, ssh_document, write_sshd_config
from tests.writeorder import (
    JOURNAL_SUFFIX,
    Event,
    check_events,
    check_log,
    parse_log,
    strace_options,
)

pytestmark = pytest.mark.system

# Fsyncs of a clean run that no rule needs, each described as :func:`describe`
# does, with why. None: each one is needed by a rule. (Before the fresh node
# cost files + 4, three were listed here: the durable ``begun`` record and the
# separate fsyncs of ``var/lib`` and of the state directory for their new
# entries, each covered by a later fsync before ``prepared``.)
NOT_REQUIRED: dict[str, str] = {}


@dataclass(frozen=True)
class Trace:
    """One traced run: its strace log, its root, and whether it ran to the end."""

    log: str
    root: Path
    complete: bool = True

    def events(self) -> list[Event]:
        """The parsed events."""
        return parse_log(self.log)


def traced(
    out: Path,
    root: Path,
    stdin: bytes,
    *,
    command: str = "node-daemon-setup",
    inject: str | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.CompletedProcess[bytes], Trace]:
    """Run ``command`` on ``root`` under strace; the process and its trace."""
    strace = require_tool("strace")
    program = argv or [txsetup_exe()]
    proc = subprocess.run(
        [
            strace,
            *strace_options(out),
            *(["-e", f"inject={inject}"] if inject else []),
            *program,
            command,
            "--root",
            str(root),
        ],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **NO_PYC, **(env or {})},
        cwd=cwd,
    )
    return proc, Trace(out.read_text(errors="replace"), root, complete=inject is None)


def finished(
    proc: subprocess.CompletedProcess[bytes], outcome: str = "committed"
) -> dict[str, object]:
    """The result of a run that must have ended with ``outcome``."""
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.result["outcome"] == outcome, run.stderr
    assert run.returncode == (0 if outcome == "committed" else 6), run.stderr
    return run.result


def fresh_root(path: Path) -> Path:
    """A node root as a fresh node has it."""
    (path / "var/lib").mkdir(parents=True)
    (path / "var/lock").mkdir()
    return path


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory, node_pem: str) -> dict[str, Trace]:
    """Clean traced runs: fresh, re-add, ssh-setup, its rollback, a killed run, its recovery."""
    work = tmp_path_factory.mktemp("write-order")
    found: dict[str, Trace] = {}

    node = fresh_root(work / "node")
    proc, found["fresh"] = traced(work / "fresh.log", node, encode(make_document(node_pem)))
    finished(proc)
    readd = make_document(node_pem, ssconf={"master_ip": "192.0.2.7"})
    proc, found["re-add"] = traced(work / "re-add.log", node, encode(readd))
    assert finished(proc)["changed"] == ["var/lib/ganeti/ssconf_master_ip"]

    ssh = fresh_root(work / "ssh")
    write_sshd_config(ssh, reload=counting_reload(ssh), status=["true"], health_address="none")
    proc, found["ssh-setup"] = traced(
        work / "ssh.log", ssh, encode(ssh_document()), command="ssh-setup"
    )
    finished(proc)
    # A reload that fails after the commit: journaled undo, holds renamed back.
    write_sshd_config(
        ssh, reload=counting_reload(ssh, exit_code=1), status=["true"], health_address="none"
    )
    proc, found["rolled-back"] = traced(
        work / "rolled-back.log", ssh, encode(ssh_document(label="new")), command="ssh-setup"
    )
    finished(proc, "rolled_back")
    assert '\\"state\\":\\"rolling_back\\"' in found["rolled-back"].log

    crashed = fresh_root(work / "crashed")
    proc, found["killed"] = traced(
        work / "killed.log",
        crashed,
        encode(make_document(node_pem)),
        inject="rename:signal=SIGKILL:when=1",
    )
    assert proc.returncode in (-9, 137), proc.stderr
    other = make_document(node_pem, ssconf={"master_ip": "192.0.2.8", "master_netdev": "br1"})
    proc, found["recovered"] = traced(work / "recovered.log", crashed, encode(other))
    result = finished(proc)
    assert result["changed"] == [
        "var/lib/ganeti/ssconf_master_ip",
        "var/lib/ganeti/ssconf_master_netdev",
    ]
    assert '"outcome":"resumed"' in found["recovered"].log.replace('\\"', '"')
    return found


SCENARIOS = ["fresh", "re-add", "ssh-setup", "rolled-back", "killed", "recovered"]


def relative(path: str | None, root: Path) -> str:
    """``path`` relative to the node root (as the journal writes paths)."""
    return os.path.relpath(path or "?", root.resolve())


def describe(events: list[Event], index: int, root: Path) -> str:
    """An fsync as "<syscall> <path> after <the last thing it could be for>", run-independent."""
    sync = events[index]
    for event in reversed(events[:index]):
        if event.path is None or not event.path.startswith(str(root.resolve())):
            continue
        if event.call == "write" and event.path.endswith(JOURNAL_SUFFIX):
            record = (event.data or b"").decode(errors="replace")
            state = record.split('"state":"', 1)[-1].split('"', 1)[0]
            what = f"the {state} record"
        elif event.call in ("mkdir", "rename", "link", "unlink", "write"):
            what = f"{event.call} {relative(event.dest or event.path, root)}"
        else:
            continue
        return f"{sync.syscall} {relative(sync.path, root)} after {what}"
    return f"{sync.syscall} {relative(sync.path, root)}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_clean_run_keeps_the_write_order(traces: dict[str, Trace], name: str) -> None:
    """A clean run (or a run killed at its first commit rename) breaks no rule."""
    trace = traces[name]
    events = trace.events()
    assert any(e.call == "rename" and (e.path or "").endswith(".new") for e in events), (
        "the trace holds no commit rename: is strace's -y working?"
    )
    assert '\\"state\\":\\"prepared\\"' in trace.log, "the prepared record is not in the trace"
    violations = check_events(events, complete=trace.complete)
    assert not violations, "\n".join(map(str, violations))


def fsyncs_no_rule_needs(trace: Trace) -> list[str]:
    """Each fsync of the node in ``trace`` whose removal alone breaks no rule, described."""
    lines = trace.log.splitlines()
    events = trace.events()
    root = str(trace.root.resolve())
    syncs = [
        i for i, e in enumerate(events) if e.call == "sync" and (e.path or "").startswith(root)
    ]
    assert syncs
    not_needed = []
    for index in syncs:
        line = events[index].line
        mutated = "\n".join(lines[: line - 1] + lines[line:])
        if not check_log(mutated, complete=trace.complete):
            not_needed.append(describe(events, index, trace.root))
    return not_needed


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_fsync_is_needed_by_a_rule(traces: dict[str, Trace], name: str) -> None:
    """Each fsync of a clean trace, removed alone, breaks a rule (the findings aside)."""
    unexplained = [d for d in fsyncs_no_rule_needs(traces[name]) if d not in NOT_REQUIRED]
    assert not unexplained, f"fsyncs no rule needs: {unexplained}"


def test_copies_beside_targets_keep_the_write_order(
    tmp_path: Path, node_pem: str, root: Path
) -> None:
    """Targets on another filesystem (copies ``.txsetup-*`` beside them): same rules, all needed."""
    require_root("mounting a tmpfs")
    with tmpfs(root / "var/lib/ganeti"):
        runs = {}
        for name, document in [
            ("install", make_document(node_pem)),
            ("change", make_document(node_pem, ssconf={"master_ip": "192.0.2.77"})),
        ]:
            proc, runs[name] = traced(tmp_path / f"{name}.log", root, encode(document))
            finished(proc)
        for name, trace in runs.items():
            assert ".txsetup-" in trace.log, name
            violations = check_events(trace.events())
            assert not violations, "\n".join(map(str, violations))
            unexplained = [d for d in fsyncs_no_rule_needs(trace) if d not in NOT_REQUIRED]
            assert not unexplained, f"{name}: fsyncs no rule needs: {unexplained}"


# --- a broken copy of the package is caught ----------------------------------------------


def without_call(source: Path, function: str, call: str) -> None:
    """Replace each statement ``call`` inside ``function`` of ``source`` by ``pass``."""
    text = source.read_text()
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    replaced = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            assert node.end_lineno is not None
            for number in range(node.lineno, node.end_lineno + 1):
                if lines[number - 1].strip() == call:
                    indent = lines[number - 1][: -len(lines[number - 1].lstrip())]
                    lines[number - 1] = f"{indent}pass\n"
                    replaced += 1
    assert replaced, f"no `{call}` in {function} of {source}: update this test"
    source.write_text("".join(lines))


@pytest.mark.parametrize(
    ("module", "function", "call", "rules"),
    [
        ("txn/changeset.py", "commit_changes", "fsync_dir(directory)", {4}),
        ("txn/atomic.py", "write_new", "os.fsync(fd)", {1, 2}),
    ],
)
def test_a_missing_fsync_in_the_source_is_caught(
    tmp_path: Path, node_pem: str, module: str, function: str, call: str, rules: set[int]
) -> None:
    """A copy of txsetup without one real fsync, run under strace, breaks the expected rules."""
    package = tmp_path / "pkg"
    shutil.copytree(
        REPO / "txsetup", package / "txsetup", ignore=shutil.ignore_patterns("__pycache__")
    )
    without_call(package / "txsetup" / module, function, call)
    root = fresh_root(tmp_path / "root")
    proc, trace = traced(
        tmp_path / "broken.log",
        root,
        encode(make_document(node_pem)),
        argv=[sys.executable, "-m", "txsetup"],
        env={"PYTHONPATH": str(package)},
        cwd=tmp_path,  # ``-m`` puts the working directory first on sys.path
    )
    finished(proc)
    assert f"{package}/txsetup/{module}" in trace.log, "the copy was not the one imported"
    violations = check_log(trace.log)
    assert violations, "the checker missed the missing fsync"
    assert {v.rule for v in violations} == rules, "\n".join(map(str, violations))


# --- the parser and rules on small hand-written logs -------------------------------------

JOURNAL = "/r/s/j"
CLEAN = """\
10 openat(AT_FDCWD</>, "/r/s/j", O_WRONLY|O_TRUNC|O_CLOEXEC) = 3</r/s/j>
10 write(3</r/s/j>, "0 {\\"state\\":\\"begun\\",\\"txid\\":\\"t\\"}\\n", 30) = 30
10 openat(AT_FDCWD</>, "/r/s/t-0.new", O_WRONLY|O_CREAT|O_EXCL, 0444) = 4</r/s/t-0.new>
10 write(4</r/s/t-0.new>, "x\\n", 2 <unfinished ...>
11 close(9</dev/null>) = 0
10 <... write resumed>) = 2
10 fsync(4</r/s/t-0.new>) = 0
10 linkat(AT_FDCWD</>, "/r/g/f", AT_FDCWD</>, "/r/s/t-0.old", 0) = 0
10 fsync(5</r/s>) = 0
10 write(3</r/s/j>, "0 {\\"state\\":\\"prepared\\",\\"txid\\":\\"t\\"}\\n", 30) = 30
10 fdatasync(3</r/s/j>) = 0
10 rename("/r/s/t-0.new", "/r/g/f") = 0
10 fsync(6</r/g>) = 0
10 write(3</r/s/j>, "0 {\\"state\\":\\"committed\\",\\"txid\\":\\"t\\"}\\n", 30) = 30
"""


def test_a_hand_written_clean_log_passes_and_each_fsync_counts() -> None:
    """The rules on a minimal log: clean passes; each fsync removed breaks its rule."""
    assert check_log(CLEAN, journal=JOURNAL) == []
    lines = CLEAN.splitlines()
    expected = {"t-0.new>) = 0": {1, 2}, "</r/s>": {2}, "fdatasync": {3}, "</r/g>": {4}}
    for marker, rules in expected.items():
        mutated = "\n".join(line for line in lines if not ("sync(" in line and marker in line))
        assert {v.rule for v in check_log(mutated, journal=JOURNAL)} == rules, marker


def test_short_strings_fall_back_to_the_last_journal_write_before_commit() -> None:
    """With records cut short (small -s), the write before the commit rename is prepared."""
    short = re.sub(r'"0 \{.*?\}\\n"', '"0 {"...', CLEAN)  # each record cut after "0 {"
    assert check_log(short, journal=JOURNAL) == []
    without = "\n".join(line for line in short.splitlines() if "fdatasync" not in line)
    assert {v.rule for v in check_log(without, journal=JOURNAL)} == {3}
