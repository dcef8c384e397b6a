"""The crash matrix: kill -9 and I/O errors at every file syscall of a run, real strace.

A node holds an "old" configuration (document A, installed by a real run);
document B changes several ssconf values, adds one and adds ``hmac_key``. A
clean traced run of B gives, per syscall, the occurrences that happen once the
run has touched its lock or state directory (Python's start-up is left out,
and so are ``openat`` calls of paths outside the node root: module imports).
Then, for each such occurrence N, a fresh copy of the old node runs B under
``strace -e inject=SYSCALL:signal=SIGKILL:when=N`` (or ``error=EIO`` /
``error=ENOSPC``), and the node must end exactly old or exactly new — bytes,
mode, owner, symlinks — after ``--resume`` (after a kill) or at once (after an
error), with no staged or hold copy left, and must then converge on a re-run.
The same is done inside ``--resume`` itself (kill, and EIO) for a transaction
interrupted before and after its commit point.

How deep the matrix goes, by ``TXSETUP_CRASH``:

* ``quick`` (the default, so ``nox -s tests`` takes minutes): a few points of
  every group of syscalls, spread over the run — the first, the last and
  ones between (``QUICK_POINTS`` in all).
* ``sampled`` (``nox -s crash``, run by CI): every ``TXSETUP_CRASH_STRIDE``-th
  (default 3) occurrence of the numerous syscalls (``write`` including log
  lines, ``openat``); the few others (``fsync``, ``fdatasync``, ``rename``,
  ``link``, ``unlink``, and the file writes of the I/O-error matrix) at every
  occurrence.
* ``full`` (or ``TXSETUP_CRASH_FULL=1``): every occurrence of every syscall.

Traced runs read byte-code from a private, pre-filled cache and never write
any, so the syscall counts do not depend on what else runs in the tree. Each
test collects every bad point (syscall, N, the call strace hit, what went
wrong) and fails once with the whole list.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    CRASH_DEPTH,
    Entry,
    Run,
    check_log_lines,
    copy_root,
    encode,
    make_document,
    require_tool,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
    txsetup_exe,
)
from txsetup.txn.journal import FINISHED_STATES, read_journal

pytestmark = [pytest.mark.system, pytest.mark.slow]

# Logical groups of syscalls; each concrete name is counted and injected on its own.
GROUPS: dict[str, tuple[str, ...]] = {
    "write": ("write", "pwrite64", "writev"),
    "fsync": ("fsync",),
    "fdatasync": ("fdatasync",),
    "rename": ("rename", "renameat", "renameat2"),
    "link": ("link", "linkat"),
    "unlink": ("unlink", "unlinkat"),
    "openat": ("openat", "open"),
}
NUMEROUS = frozenset({"write", "openat"})
ALL_NAMES = tuple(name for names in GROUPS.values() for name in names)
ERROR_GROUPS = ("write", "fsync", "fdatasync", "rename", "link", "unlink", "openat")
ERRORS = ("EIO", "ENOSPC")
STRIDE = 1 if CRASH_DEPTH == "full" else max(1, int(os.environ.get("TXSETUP_CRASH_STRIDE", "3")))
QUICK_POINTS = 4
WORKERS = max(1, min(4, os.cpu_count() or 1))
_LINE = re.compile(r"^(?:\d+\s+)?(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<ret>.*)$")
_STATE_MARKERS = ("var/lock/txsetup.lock", "var/lib/txsetup")


@dataclass(frozen=True)
class Call:
    """One traced syscall: its name, its 1-based ordinal among calls of that name, its text."""

    name: str
    ordinal: int
    text: str

    @property
    def fd(self) -> int | None:
        """The first argument when it is a file descriptor (``write(2, ...)``)."""
        head = self.text[len(self.name) + 1 :].split(",", 1)[0]
        return int(head) if head.isdigit() else None


def parse_trace(text: str) -> tuple[list[Call], int]:
    """Every complete call in an strace output file, and the index of the first state-dir call.

    The index is where txsetup's own file work begins: the first call naming
    the lock or the state directory.
    """
    calls: list[Call] = []
    counts: dict[str, int] = {}
    start: int | None = None
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        name = match["name"]
        counts[name] = counts.get(name, 0) + 1
        body = f"{name}({match['args']}) = {match['ret']}"
        if start is None and any(marker in match["args"] for marker in _STATE_MARKERS):
            start = len(calls)
        calls.append(Call(name, counts[name], body))
    assert start is not None, "the traced run never touched its state directory"
    return calls, start


def sample(calls: Sequence[Call], stride: int) -> list[Call]:
    """Every ``stride``-th call, always keeping the first and the last.

    At the ``quick`` depth, ``QUICK_POINTS`` calls spread evenly instead,
    the first and the last among them.
    """
    if not calls:
        return []
    if CRASH_DEPTH == "quick":
        last = len(calls) - 1
        spread = sorted({round(i * last / (QUICK_POINTS - 1)) for i in range(QUICK_POINTS)})
        return [calls[index] for index in spread]
    picked = list(calls[::stride])
    if picked[-1] is not calls[-1]:
        picked.append(calls[-1])
    return picked


@dataclass(frozen=True)
class Traced:
    """A run under strace: exit status, outputs, and strace's own record of the calls."""

    returncode: int
    stdout: str
    stderr: str
    trace: str

    @property
    def killed(self) -> bool:
        """Whether the process died of SIGKILL."""
        return self.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)

    @property
    def hit(self) -> str | None:
        """The call the injection hit (an error it returned, or the kill it met)."""
        return next(
            (
                re.sub(r"^\d+\s+", "", line.strip())
                for line in self.trace.splitlines()
                if "(INJECTED)" in line or line.rstrip().endswith("= ?")
            ),
            None,
        )


@dataclass(frozen=True)
class Scenario:
    """Everything one matrix needs: the old node, the new state, the payload, the env."""

    work: Path
    old_root: Path
    old: dict[str, Entry]
    new: dict[str, Entry]
    payload: bytes
    env: dict[str, str]
    traced_env: dict[str, str]
    strace: str
    command: str = "node-daemon-setup"

    def fresh_root(self) -> Path:
        """A private copy of the old node."""
        where = Path(tempfile.mkdtemp(dir=self.work))
        root = where / "root"
        copy_root(self.old_root, root)
        return root

    def run(self, root: Path, *extra: str, payload: bytes | None = None) -> Run:
        """A normal (untraced) run of the installed CLI against ``root``."""
        return run_txsetup([self.command, "--root", str(root), *extra], stdin=payload, env=self.env)

    def traced(
        self,
        root: Path,
        name: str,
        action: str | None,
        *extra: str,
        payload: bytes | None = None,
        trace: Sequence[str] = (),
    ) -> Traced:
        """Run under strace, injecting ``action`` into ``name`` (or just tracing ``trace``)."""
        out = Path(tempfile.mkstemp(dir=self.work, suffix=".trace")[1])
        names = ",".join(trace or (name,))
        argv = [self.strace, "-f", "-qq", "-o", str(out), "-e", f"trace={names}"]
        if action is not None:
            argv += ["-e", f"inject={name}:{action}"]
        argv += [txsetup_exe(), self.command, "--root", str(root), *extra]
        proc = subprocess.run(
            argv,
            input=payload or b"",
            capture_output=True,
            timeout=120,
            env=self.traced_env,
            check=False,
        )
        text = out.read_text(errors="replace")
        out.unlink()
        return Traced(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            text,
        )

    def reference(
        self, root: Path, *extra: str, payload: bytes | None = None
    ) -> dict[str, list[Call]]:
        """Occurrences of each syscall in txsetup's own file work, from a clean traced run."""
        traced = self.traced(root, "", None, *extra, payload=payload, trace=ALL_NAMES)
        assert traced.returncode == 0, traced.stderr
        calls, start = parse_trace(traced.trace)
        found: dict[str, list[Call]] = {name: [] for name in ALL_NAMES}
        for call in calls[start:]:
            # Opening Python modules imported on the way is not txsetup's file work.
            if call.name not in ("open", "openat") or str(root) in call.text:
                found.setdefault(call.name, []).append(call)
        return found

    def which(self, root: Path) -> str:
        """``old``, ``new``, or a description of the mix found under ``root``."""
        now = snapshot(root)
        if now == self.old:
            return "old"
        if now == self.new:
            return "new"
        changed = sorted(
            p for p in set(self.old) | set(self.new) if self.old.get(p) != self.new.get(p)
        )
        as_old = [p for p in changed if now.get(p) == self.old.get(p)]
        neither = sorted(
            p
            for p in set(now) | set(changed)
            if now.get(p) not in (self.old.get(p), self.new.get(p))
        )
        return f"a mix (still old: {as_old}; neither old nor new: {neither})"


def document_a(pem: str) -> dict[str, Any]:
    """The old configuration."""
    return make_document(pem, ssconf={"master_netdev": "eth0", "offline_nodes": ""})


def document_b(pem: str) -> dict[str, Any]:
    """The new configuration: four values changed, one added, an HMAC key added."""
    return make_document(
        pem,
        ssconf={
            "master_netdev": "eth0",
            "offline_nodes": "",
            "master_ip": "192.0.2.99",
            "node_list": "node1.example.com\nnode2.example.com\nnode3.example.com\n",
            "release_version": "3.1.0",
            "cluster_tags": "tag-a\ntag-b",
            "master_netmask": "24",
        },
        hmac_key="hmac-secret-0123456789abcdef",
    )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, node_pem: str) -> Scenario:
    """The old node (A installed), the new state (B applied to a copy), warmed byte-code."""
    strace = require_tool("strace")
    work = tmp_path_factory.mktemp("crash")
    # A private byte-code cache, filled once: traced runs then never write
    # .pyc files, so syscall counts do not depend on what else ran in the tree.
    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache")}
    traced_env = {**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"}
    old_root = work / "old"
    old_root.mkdir()
    first = run_txsetup(
        ["node-daemon-setup", "--root", str(old_root)], stdin=encode(document_a(node_pem)), env=env
    )
    assert first.returncode == 0, first.stderr
    payload = encode(document_b(node_pem))
    new_root = work / "new"
    copy_root(old_root, new_root)
    applied = run_txsetup(["node-daemon-setup", "--root", str(new_root)], stdin=payload, env=env)
    assert applied.result["outcome"] == "committed", applied.stderr
    # Warm the cache for the failure and recovery paths too.
    run_txsetup(["node-daemon-setup", "--resume", "--root", str(new_root)], env=env)
    run_txsetup(["node-daemon-setup", "--root", str(new_root)], stdin=b"{}", env=env)
    run_txsetup(["status", "--root", str(new_root)], env=env)
    scenario = Scenario(
        work, old_root, snapshot(old_root), snapshot(new_root), payload, env, traced_env, strace
    )
    assert scenario.old != scenario.new
    return scenario


@pytest.fixture(scope="module")
def reference(scenario: Scenario) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of B."""
    root = scenario.fresh_root()
    found = scenario.reference(root, payload=scenario.payload)
    assert scenario.which(root) == "new"
    return found


def points(
    reference: dict[str, list[Call]],
    group: str,
    *,
    keep: Callable[[Call], bool] = lambda _: True,
    stride: int | None = None,
) -> list[Call]:
    """The sampled occurrences of one group of syscalls (numerous ones every STRIDE-th)."""
    stride = stride or (STRIDE if group in NUMEROUS else 1)
    chosen: list[Call] = []
    for name in GROUPS[group]:
        chosen.extend(sample([c for c in reference.get(name, []) if keep(c)], stride))
    if not chosen:
        pytest.skip(f"no {group} call in txsetup's file work on this system")
    return chosen


def run_matrix(check: Callable[[Call], list[str]], calls: Sequence[Call]) -> list[str]:
    """Run ``check`` for every call in parallel; every failure, labelled."""

    def one(call: Call) -> list[str]:
        try:
            return [f"{call.name} #{call.ordinal} [{call.text[:160]}]: {p}" for p in check(call)]
        except Exception as exc:  # every point is reported, not only the first
            return [f"{call.name} #{call.ordinal} [{call.text[:160]}]: {exc!r}"]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [failure for found in pool.map(one, calls) for failure in found]


def converges(scenario: Scenario, root: Path, was: str) -> list[str]:
    """A normal re-run of B ends new (converged when it was new already); resume is then idle."""
    problems = []
    again = scenario.run(root, payload=scenario.payload)
    expected = "converged" if was == "new" else "committed"
    if again.returncode != 0 or again.result["outcome"] != expected:
        problems.append(
            f"re-run from {was}: exit {again.returncode}, "
            f"outcome {again.result['outcome']} (expected {expected})"
        )
    if (state := scenario.which(root)) != "new":
        problems.append(f"after the re-run the node is {state}")
    idle = scenario.run(root, "--resume")
    if idle.returncode != 0 or idle.result["outcome"] != "nothing_to_resume":
        problems.append(f"second --resume: exit {idle.returncode}, {idle.result['outcome']}")
    if leftovers := state_dir_leftovers(root):
        problems.append(f"leftovers after the re-run: {leftovers}")
    return problems


def resumed_consistently(
    scenario: Scenario, root: Path, *extra: str, must_be: str | None = None
) -> tuple[str, list[str]]:
    """``--resume`` exits 0, leaves old or new matching its outcome, and no copies."""
    problems = []
    resume = scenario.run(root, "--resume", *extra)
    outcome = resume.result["outcome"]
    if resume.returncode != 0 or outcome not in ("resumed", "rolled_back", "nothing_to_resume"):
        problems.append(
            f"--resume: exit {resume.returncode}, outcome {outcome}, "
            f"error {resume.result.get('error')}"
        )
    state = scenario.which(root)
    if state not in ("old", "new"):
        problems.append(f"after --resume ({outcome}) the node is {state}")
    elif (outcome, state) in (("resumed", "old"), ("rolled_back", "new")):
        problems.append(f"--resume said {outcome} but the node is {state}")
    elif must_be is not None and state != must_be:
        problems.append(f"after --resume ({outcome}) the node is {state}, expected {must_be}")
    if leftovers := state_dir_leftovers(root):
        problems.append(f"leftovers after --resume: {leftovers}")
    return state, problems


@pytest.mark.parametrize("group", list(GROUPS))
def test_kill_at_every_point_then_resume_is_old_or_new(
    scenario: Scenario, reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 at any file syscall of a run, then ``--resume``, leaves exactly old or new."""

    def check(call: Call) -> list[str]:
        root = scenario.fresh_root()
        traced = scenario.traced(
            root, call.name, f"signal=SIGKILL:when={call.ordinal}", payload=scenario.payload
        )
        if not traced.killed:
            return [
                f"the injection did not fire (exit {traced.returncode}): "
                "the syscall counts changed since the reference run"
            ]
        state, problems = resumed_consistently(scenario, root)
        if problems:
            return problems
        return converges(scenario, root, state)

    failures = run_matrix(check, points(reference, group))
    assert failures == [], "\n".join(failures)


_FAILED_STEP = re.compile(r'"event": "step\.failed".*?"step": "(?P<step>\w+)"')
_BEFORE_CHANGES = ("lock", "decode", "verify_cluster", "verify_cert", "verify_keys")


def is_stream(call: Call) -> bool:
    """Whether a write goes to stdout or stderr (the result or a log line)."""
    return call.fd in (1, 2)


def expected_after_error(traced: Traced, result: dict[str, Any] | None) -> str | None:
    """The state a run that met an error must leave, judged by its exit code and log.

    0 means committed (new) and 6 rolled back (old); 1 is allowed only for a
    failure before anything changed (the error's own exit code): old.
    8 is allowed only when the lock step's recovery check could not read the
    journal: it cannot tell whether a transaction is unfinished, so it asks
    for help and changes nothing: old.
    """
    if result is not None and result["exit_code"] != traced.returncode:
        return None
    failed = _FAILED_STEP.search(traced.stderr)
    if traced.returncode == 1:
        return "old" if failed is not None and failed["step"] in _BEFORE_CHANGES else None
    if traced.returncode == 8:
        return "old" if failed is not None and failed["step"] == "lock" else None
    return {0: "new", 6: "old"}.get(traced.returncode)


def error_run_problems(scenario: Scenario, root: Path, traced: Traced) -> tuple[str, list[str]]:
    """Check one run that met an injected error: clean result, exit code matching the node."""
    hit = traced.hit or ""
    if "(INJECTED)" not in hit:
        return "", ["the injection did not fire: the syscall counts changed"]
    if "Traceback" in traced.stderr:
        return "", [f"traceback (exit {traced.returncode}): {traced.stderr[-700:]}"]
    result: dict[str, Any] | None = None
    lines = traced.stdout.splitlines()
    if len(lines) == 1:
        result = json.loads(lines[0])
    elif not hit.startswith("write(1,"):  # a failed result write may leave stdout empty
        return "", [f"expected one result line on stdout, got {traced.stdout!r}"]
    if not hit.startswith(("write(1,", "write(2,")):
        check_log_lines(traced.stderr)
    state = scenario.which(root)
    expected = expected_after_error(traced, result)
    outcome = f"exit {traced.returncode}" + (
        f" ({result['outcome']}: {result.get('error')})" if result else ""
    )
    if expected is None:
        return state, [f"{outcome}; the node is {state}"]
    if state != expected:
        return state, [f"{outcome} but the node is {state}"]
    return state, []


def check_error_point(scenario: Scenario, call: Call, errno_name: str) -> list[str]:
    """Inject ``errno_name`` at ``call``; check the run, then resume and re-run."""
    root = scenario.fresh_root()
    traced = scenario.traced(
        root, call.name, f"error={errno_name}:when={call.ordinal}", payload=scenario.payload
    )
    state, problems = error_run_problems(scenario, root, traced)
    if problems:
        return problems
    after, problems = resumed_consistently(scenario, root, must_be=state)
    return problems or converges(scenario, root, after)


@pytest.mark.parametrize("errno_name", ERRORS)
@pytest.mark.parametrize("group", ERROR_GROUPS)
def test_io_error_at_every_point_rolls_back_or_commits(
    scenario: Scenario, reference: dict[str, list[Call]], group: str, errno_name: str
) -> None:
    """An injected EIO or ENOSPC exits 6 with the old files or 0 with the new, never a mix."""
    # Without log lines, the writes are the journal's and the staged files': few, all taken.
    stride = 1 if group == "write" else None
    calls = points(reference, group, keep=lambda call: not is_stream(call), stride=stride)
    failures = run_matrix(lambda call: check_error_point(scenario, call, errno_name), calls)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
def test_io_error_writing_log_or_result_never_misreports(
    scenario: Scenario, reference: dict[str, list[Call]], errno_name: str
) -> None:
    """A log line or the result that cannot be written never turns into a traceback or a lie."""
    calls = points(reference, "write", keep=is_stream)
    failures = run_matrix(lambda call: check_error_point(scenario, call, errno_name), calls)
    assert failures == [], "\n".join(failures)


# First crash points that leave an unfinished transaction, and how it is resumed.
SECOND_LEVEL = {
    "prepared, rolled forward": (("rename", 3), (), "new"),
    "prepared, aborted": (("rename", 3), ("--abort",), None),
    "unprepared, undone": (("linkat", 3), (), "old"),
}


@dataclass(frozen=True)
class Interrupted:
    """A node left with an unfinished transaction, and the resume to finish it."""

    scenario: Scenario
    first: tuple[str, int]
    extra: tuple[str, ...]
    must_be: str | None

    def crashed(self) -> Path:
        """A fresh copy of the old node whose run of B was killed at ``first``."""
        name, ordinal = self.first
        root = self.scenario.fresh_root()
        traced = self.scenario.traced(
            root, name, f"signal=SIGKILL:when={ordinal}", payload=self.scenario.payload
        )
        assert traced.killed, f"first crash did not happen: exit {traced.returncode}"
        return root

    def resume_points(self) -> list[Call]:
        """The sampled file syscalls of a clean ``--resume`` of such a node."""
        found = self.scenario.reference(self.crashed(), "--resume", *self.extra)
        calls = [
            call
            for group, names in GROUPS.items()
            for name in names
            for call in sample(
                [c for c in found.get(name, []) if not is_stream(c)],
                STRIDE if group in NUMEROUS else 1,
            )
        ]
        assert calls, "a resume of an unfinished transaction does file work"
        return calls


def interrupted(scenario: Scenario, reference: dict[str, list[Call]], case: str) -> Interrupted:
    """The ``case`` of :data:`SECOND_LEVEL` on this scenario."""
    first, extra, must_be = SECOND_LEVEL[case]
    assert len(reference[first[0]]) >= first[1]
    return Interrupted(scenario, first, extra, must_be)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_kill_during_resume_then_resume_again_is_old_or_new(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> None:
    """A kill -9 inside ``--resume`` itself, then another ``--resume``, still ends old or new."""
    node = interrupted(scenario, reference, case)

    def check(call: Call) -> list[str]:
        root = node.crashed()
        traced = scenario.traced(
            root, call.name, f"signal=SIGKILL:when={call.ordinal}", "--resume", *node.extra
        )
        if not traced.killed:
            return [f"the injection in --resume did not fire (exit {traced.returncode})"]
        state, problems = resumed_consistently(scenario, root, must_be=node.must_be)
        return problems or converges(scenario, root, state)

    failures = run_matrix(check, node.resume_points())
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_io_error_during_resume_is_consistent_or_exit_8_and_retried(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> None:
    """EIO inside ``--resume``: exit 0 with old or new, or 8 with the journal kept for a retry."""
    node = interrupted(scenario, reference, case)

    def check(call: Call) -> list[str]:
        root = node.crashed()
        traced = scenario.traced(
            root, call.name, f"error=EIO:when={call.ordinal}", "--resume", *node.extra
        )
        if "(INJECTED)" not in (traced.hit or ""):
            return ["the injection in --resume did not fire"]
        if "Traceback" in traced.stderr:
            return [f"traceback (exit {traced.returncode}): {traced.stderr[-700:]}"]
        result = json.loads(traced.stdout)
        check_log_lines(traced.stderr)
        state = scenario.which(root)
        if traced.returncode == 8:
            # Recovery could not finish: the journal must still say so, for a retry.
            if read_pending(root) is None:
                return [f"exit 8 ({result.get('error')}) but nothing is left to resume"]
        elif traced.returncode != 0:
            return [f"exit {traced.returncode} ({result.get('error')}); the node is {state}"]
        elif (result["outcome"], state) not in (("resumed", "new"), ("rolled_back", "old")):
            return [f"--resume said {result['outcome']} but the node is {state}"]
        state, problems = resumed_consistently(scenario, root, *node.extra, must_be=None)
        return problems or converges(scenario, root, state)

    failures = run_matrix(check, node.resume_points())
    assert failures == [], "\n".join(failures)


def read_pending(root: Path) -> str | None:
    """The txid of the unfinished transaction in ``root``'s journal, if any."""
    records = read_journal(root / "var/lib/txsetup/journal")
    if not records or records[-1].state in FINISHED_STATES:
        return None
    return records[-1].txid


@pytest.mark.parametrize("local_file", ["server.pem", "ssconf_cluster_name"])
def test_unreadable_local_file_never_skips_verification(
    scenario: Scenario, other_pem: str, node_pem: str, local_file: str
) -> None:
    """An I/O error reading the local key or cluster name refuses the run, never skips the check."""
    refused = {
        # A certificate whose key is not the local one.
        "server.pem": make_document(other_pem, ssconf={"master_ip": "192.0.2.7"}),
        # The local key, but another cluster's name.
        "ssconf_cluster_name": make_document(node_pem, cluster="other.example.com"),
    }[local_file]
    plain = scenario.fresh_root()
    run = scenario.run(plain, payload=encode(refused))
    assert run.returncode == 4, run.result

    root = scenario.fresh_root()
    target = root / "var/lib/ganeti" / local_file
    out = scenario.work / f"unreadable-{local_file}.trace"
    proc = subprocess.run(
        [
            scenario.strace,
            "-f",
            "-qq",
            "-o",
            str(out),
            "-P",
            str(target),
            "-e",
            "trace=openat",
            "-e",
            "inject=openat:error=EIO:when=1",
            txsetup_exe(),
            "node-daemon-setup",
            "--root",
            str(root),
        ],
        input=encode(refused),
        capture_output=True,
        timeout=120,
        env=scenario.traced_env,
        check=False,
    )
    assert "(INJECTED)" in out.read_text()
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr, stderr
    result = json.loads(proc.stdout)
    assert proc.returncode not in (0, 6), result
    assert result["outcome"] == "failed", result
    assert scenario.which(root) == "old"
