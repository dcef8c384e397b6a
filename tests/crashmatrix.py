"""The crash harness of both programs: kill -9 and I/O errors at file syscalls, real strace.

A *scenario* is one program (``node-daemon-setup`` or ``ssh-setup``) on one
node state: ``fresh`` (nothing installed yet: the old side is "absent", no
file and no directory of ours) or ``re-add`` (document A installed by a real
run). Document B is what the matrix runs (or, in :mod:`tests.crashdecision`, a
prepare of B, and ``txsetup commit`` or ``abort`` of that prepare).
:func:`make_scenario` builds it: the old node, and the new state (B applied to
a copy), byte for byte.

A clean traced run of B gives, per syscall, the occurrences that happen once
the run has touched its lock or state directory (Python's start-up is left
out, and so are ``openat`` calls of paths outside the node root: module
imports). Then, for each chosen occurrence N, a fresh copy of the old node
runs B under ``strace -e inject=SYSCALL:signal=SIGKILL:when=N`` (or
``error=EIO`` / ``error=ENOSPC``).

After a kill the expected side is not "old or new": it is derived from the
journal the killed run left (read here by its documented format, see
``docs/journal.md``). A transaction that reached ``prepared`` and never wrote
``rolling_back`` must be rolled forward (new); anything else rolled back
(old). ``--resume`` must then leave exactly that side — bytes, mode, owner,
symlinks, no staged or hold copy anywhere — and a re-run of B must converge.
After an injected error the run itself must leave old (exit 6, or a failure
before any change) or new (exit 0). The same is done inside ``--resume``,
and for a kill during the undo an I/O error started (a double fault).

How deep it goes, by ``TXSETUP_CRASH`` (``tests/conftest.py``; the sampling
is :func:`tests.crashtrace.sample`):

* ``quick`` (the default, in ``nox -s tests``): ``QUICK_POINTS`` occurrences
  of each syscall, spread over the run: the first, the last, one between;
  the middle call of a whole ``--resume`` and of an undo. A run that met an
  error is resumed but not re-run.
* ``sampled``: every ``TXSETUP_CRASH_STRIDE``-th (default 3) occurrence of the
  numerous syscalls (``write``, ``openat``), every occurrence of the others.
* ``full`` (``nox -s matrix``, or ``TXSETUP_CRASH_FULL=1``): every occurrence.

Traced runs read byte-code from a private, pre-filled cache and never write
any, so the syscall counts do not depend on what else runs in the tree. Each
matrix collects every bad point (syscall, N, the call strace hit, what went
wrong) and is reported once with the whole list.
"""

from __future__ import annotations

import json
import os
import re
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
    assert_no_secrets,
    check_log_lines,
    copy_root,
    encode,
    kept_for_revert,
    require_tool,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
    txsetup_exe,
)
from tests.crashtrace import (
    ALL_NAMES,
    GROUPS,
    NUMEROUS,
    STRIDE,
    Call,
    Traced,
    journal_states,
    parse_trace,
    pending,
    sample,
)

ERRORS = ("EIO", "ENOSPC")
NODE_STATES = ("fresh", "re-add")
WORKERS = max(1, min(4, os.cpu_count() or 1))

# --- programs and scenarios --------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """What differs between the two programs: the command and how a bare node is laid out."""

    command: str
    lay_out: Callable[[Path], None]  # a node on which nothing of ours was ever installed


@dataclass(frozen=True)
class Scenario:
    """One program on one node state: the old node, the new state, the document, the env."""

    program: Program
    node: str  # "fresh" or "re-add"
    work: Path
    old_root: Path
    old: dict[str, Entry]
    new: dict[str, Entry]
    old_txids: frozenset[str]
    payload: bytes
    env: dict[str, str]
    traced_env: dict[str, str]
    strace: str

    def fresh_root(self) -> Path:
        """A private copy of the old node."""
        root = Path(tempfile.mkdtemp(dir=self.work)) / "root"
        copy_root(self.old_root, root)
        return root

    def argv(self, root: Path, extra: Sequence[str], command: Sequence[str] = ()) -> list[str]:
        """``txsetup``'s arguments: the program (or ``command``: ``commit TXID``) on ``root``."""
        return [*(command or [self.program.command]), "--root", str(root), *extra]

    def run(
        self,
        root: Path,
        *extra: str,
        payload: bytes | None = None,
        command: Sequence[str] = (),
    ) -> Run:
        """A normal (untraced) run of the installed CLI against ``root``."""
        return run_txsetup(self.argv(root, extra, command), stdin=payload, env=self.env)

    def traced(
        self,
        root: Path,
        inject: tuple[str, str] | None,
        *extra: str,
        payload: bytes | None = None,
        trace: Sequence[str] = (),
        path: Path | None = None,
        then: tuple[str, str] | None = None,
        command: Sequence[str] = (),
    ) -> Traced:
        """Run under strace injecting ``(syscall, action)`` (and ``then``), or tracing ``trace``.

        The program runs, or ``command`` instead (``commit TXID``, ``abort TXID``).
        """
        out = Path(tempfile.mkstemp(dir=self.work, suffix=".trace")[1])
        injects = [pair for pair in (inject, then) if pair is not None]
        names = ",".join(trace or [name for name, _ in injects])
        argv = [self.strace, "-f", "-qq", "-o", str(out), "-e", f"trace={names}"]
        argv += ["-P", str(path)] if path is not None else []
        for name, action in injects:
            argv += ["-e", f"inject={name}:{action}"]
        argv += [txsetup_exe(), *self.argv(root, extra, command)]
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
        self,
        root: Path,
        *extra: str,
        payload: bytes | None = None,
        command: Sequence[str] = (),
    ) -> dict[str, list[Call]]:
        """Occurrences of each syscall in txsetup's own file work, from a clean traced run."""
        traced = self.traced(root, None, *extra, payload=payload, trace=ALL_NAMES, command=command)
        assert traced.returncode == 0, traced.stderr
        calls, start = parse_trace(traced.trace)
        found: dict[str, list[Call]] = {name: [] for name in ALL_NAMES}
        for call in calls[start:]:
            # Opening Python modules imported on the way is not txsetup's file work.
            if not call.main:
                continue
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


def make_scenario(
    tmp_path_factory: Any,
    program: Program,
    node: str,
    old_document: dict[str, Any],
    new_document: dict[str, Any],
) -> Scenario:
    """The scenario factory: ``program`` on a ``node`` (fresh or re-add), running B.

    On ``re-add`` the old node holds A, installed by a real run; on ``fresh``
    it is the bare layout (A is not used). The new state is B applied to a copy.
    """
    assert node in NODE_STATES, node
    strace = require_tool("strace")
    work = tmp_path_factory.mktemp(f"crash-{program.command}-{node}")
    # A private byte-code cache, filled once: traced runs then never write
    # .pyc files, so syscall counts do not depend on what else ran in the tree.
    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache")}
    traced_env = {**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"}
    old_root, new_root = work / "old", work / "new"
    program.lay_out(old_root)
    argv = [program.command, "--root"]
    if node == "re-add":
        first = run_txsetup([*argv, str(old_root)], stdin=encode(old_document), env=env)
        assert first.result["outcome"] == "committed", first.stderr
    payload = encode(new_document)
    copy_root(old_root, new_root)
    applied = run_txsetup([*argv, str(new_root)], stdin=payload, env=env)
    assert applied.result["outcome"] == "committed", applied.stderr
    # Warm the byte-code cache for the failure, recovery and status paths too.
    run_txsetup([*argv, str(new_root), "--resume"], env=env)
    run_txsetup([*argv, str(new_root)], stdin=b"{}", env=env)
    run_txsetup(["status", "--root", str(new_root)], env=env)
    scenario = Scenario(
        program=program,
        node=node,
        work=work,
        old_root=old_root,
        old=snapshot(old_root),
        new=snapshot(new_root),
        old_txids=frozenset(txid for txid, _ in journal_states(old_root)),
        payload=payload,
        env=env,
        traced_env=traced_env,
        strace=strace,
    )
    assert scenario.old != scenario.new
    return scenario


# --- the checks ----------------------------------------------------------------------------


def points(
    reference: dict[str, list[Call]],
    group: str,
    *,
    keep: Callable[[Call], bool] = lambda _: True,
    stride: int | None = None,
) -> list[Call]:
    """The chosen occurrences of one group of syscalls (numerous ones every STRIDE-th)."""
    stride = stride or (STRIDE if group in NUMEROUS else 1)
    return [
        call
        for name in GROUPS[group]
        for call in sample([c for c in reference.get(name, []) if keep(c)], stride)
    ]


def chosen_points(scenario: Scenario, calls: list[Call], group: str) -> list[Call]:
    """``calls``, which must not be empty on a re-add; a fresh node may lack a group.

    A fresh node has no old file to hold or remove: no ``unlink`` there is
    the program doing less, not the matrix testing less, and it is skipped
    as such.
    """
    if not calls:
        assert scenario.node == "fresh", f"no {group} call in the run: the matrix tests nothing"
        pytest.skip(f"a fresh node: {scenario.program.command} makes no {group} call")
    return calls


def run_matrix(check: Callable[[Call], list[str]], calls: Sequence[Call]) -> list[str]:
    """Run ``check`` for every call in parallel; every failure, labelled with its point."""

    def one(call: Call) -> list[str]:
        label = f"{call.name} #{call.ordinal} [{call.text[:160]}]"
        try:
            return [f"{label}: {problem}" for problem in check(call)]
        except Exception as exc:  # every point is reported, not only the first
            return [f"{label}: {exc!r}"]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [failure for found in pool.map(one, calls) for failure in found]


def leftovers(root: Path) -> list[str]:
    """Staged or hold copies anywhere: in the state directory, or beside a target."""
    kept = kept_for_revert(root)
    strays = [
        str(path.relative_to(root))
        for path in root.rglob(".txsetup-*")
        if not path.is_relative_to(root / "var/lib/txsetup")
        and path.relative_to(root).as_posix() not in kept
    ]
    return state_dir_leftovers(root) + sorted(strays)


def converges(scenario: Scenario, root: Path, was: str) -> list[str]:
    """A normal re-run of B ends new (converged if it was new already); resume is then idle."""
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
    if CRASH_DEPTH != "quick":  # at quick, the resume matrices' own resumes show it
        idle = scenario.run(root, "--resume")
        if idle.returncode != 0 or idle.result["outcome"] != "nothing_to_resume":
            problems.append(f"second --resume: exit {idle.returncode}, {idle.result['outcome']}")
    if left := leftovers(root):
        problems.append(f"copies left after the re-run: {left}")
    return problems


def resumes_to(scenario: Scenario, root: Path, *extra: str, converge: bool = True) -> list[str]:
    """``--resume`` leaves the side the journal at the crash calls for, and no copy; converges.

    ``--abort`` undoes whatever is unfinished: old. Otherwise a transaction
    that is ``prepared`` and not ``rolling_back`` is rolled forward (new),
    any other is undone (old); with nothing unfinished the node must already
    be the journal's side and the outcome is ``nothing_to_resume``.
    """
    at_crash = pending(root, scenario.old_txids)
    side = "old" if "--abort" in extra else at_crash.side
    outcome = "nothing_to_resume"
    if at_crash.unfinished:
        outcome = "resumed" if side == "new" else "rolled_back"
    resume = scenario.run(root, "--resume", *extra)
    said = resume.result["outcome"]
    problems = []
    if resume.returncode != 0 or said != outcome:
        problems.append(
            f"--resume{' ' if extra else ''}{' '.join(extra)} after {list(at_crash.states)}: "
            f"exit {resume.returncode}, outcome {said} (expected {outcome}), "
            f"error {resume.result.get('error')}"
        )
    if (state := scenario.which(root)) != side:
        problems.append(f"journal {list(at_crash.states)} calls for {side}, the node is {state}")
    if left := leftovers(root):
        problems.append(f"copies left after --resume: {left}")
    return problems or (converges(scenario, root, side) if converge else [])


def kill_point(scenario: Scenario, call: Call) -> list[str]:
    """Kill a run of B at ``call``, then resume as the journal it left says."""
    root = scenario.fresh_root()
    kill = (call.name, f"signal=SIGKILL:when={call.ordinal}")
    traced = scenario.traced(root, kill, payload=scenario.payload)
    if not traced.killed:
        return [f"the injection did not fire (exit {traced.returncode}): the counts changed"]
    return resumes_to(scenario, root)


def kill_matrix(scenario: Scenario, reference: dict[str, list[Call]], group: str) -> list[str]:
    """Every failure of the kill -9 matrix over one group of syscalls."""
    calls = chosen_points(scenario, points(reference, group), group)
    return run_matrix(lambda call: kill_point(scenario, call), calls)


_FAILED_STEP = re.compile(r'"event": "step\.failed".*?"step": "(?P<step>\w+)"')
_BEFORE_CHANGES = ("lock", "decode", "verify_cluster", "verify_cert", "verify_keys")


def side_after_error(traced: Traced, result: dict[str, Any] | None) -> str | None:
    """The side a run that met an error must leave, by its exit code and log (None: wrong exit).

    0 is committed (new), 6 rolled back (old); 1 only for a failure before
    anything changed (old); 8 only when the lock step's recovery check could
    not read the journal: it cannot tell what is unfinished, changes nothing.
    """
    if result is not None and result["exit_code"] != traced.returncode:
        return None
    failed = _FAILED_STEP.search(traced.stderr)
    step = failed["step"] if failed is not None else None
    if traced.returncode == 1:
        return "old" if step in _BEFORE_CHANGES else None
    if traced.returncode == 8:
        return "old" if step == "lock" else None
    return {0: "new", 6: "old"}.get(traced.returncode)


def error_run_problems(scenario: Scenario, root: Path, traced: Traced) -> list[str]:
    """One run that met an injected error: a clean result, an exit code matching the node."""
    hit = traced.hit
    if "(INJECTED)" not in hit:
        return ["the injection did not fire: the syscall counts changed"]
    if "Traceback" in traced.stderr:
        return [f"traceback (exit {traced.returncode}): {traced.stderr[-700:]}"]
    result: dict[str, Any] | None = None
    lines = traced.stdout.splitlines()
    if len(lines) == 1:
        result = json.loads(lines[0])
    elif not hit.startswith("write(1,"):  # a failed result write may leave stdout empty
        return [f"expected one result line on stdout, got {traced.stdout!r}"]
    if not hit.startswith(("write(1,", "write(2,")):
        check_log_lines(traced.stderr)
        assert_no_secrets(traced.stdout, traced.stderr)
    state = scenario.which(root)
    side = side_after_error(traced, result)
    said = f"exit {traced.returncode}" + (
        f" ({result['outcome']}: {result.get('error')})" if result else ""
    )
    if side is None or state != side:
        return [f"{said}; the node is {state}"]
    at_end = pending(root, scenario.old_txids)
    if not at_end.unfinished and at_end.states and at_end.side != state:
        return [f"{said}; the node is {state} but the journal says {list(at_end.states)}"]
    return []


def error_point(scenario: Scenario, call: Call, errno_name: str) -> list[str]:
    """Inject ``errno_name`` at ``call`` of a run of B; check it, then resume and re-run."""
    root = scenario.fresh_root()
    error = (call.name, f"error={errno_name}:when={call.ordinal}")
    traced = scenario.traced(root, error, payload=scenario.payload)
    if problems := error_run_problems(scenario, root, traced):
        return problems
    # A cleanup a failed removal deferred is the next recovery's: resume, at
    # quick without the re-run after it.
    return resumes_to(scenario, root, converge=CRASH_DEPTH != "quick")


def error_matrix(
    scenario: Scenario,
    reference: dict[str, list[Call]],
    group: str,
    errno_name: str,
    *,
    streams: bool = False,
) -> list[str]:
    """Every failure of the I/O error matrix over one group (or the log and result writes)."""
    if streams:
        calls = points(reference, "write", keep=lambda call: call.to_stream)
    else:
        # Without log lines, the writes are the journal's and the files': few, all taken.
        stride = 1 if group == "write" else None
        calls = points(reference, group, keep=lambda call: not call.to_stream, stride=stride)
    calls = chosen_points(scenario, calls, group)
    if CRASH_DEPTH == "quick":  # the errors share the few points: EIO the 1st, 3rd...
        calls = calls[ERRORS.index(errno_name) :: len(ERRORS)]
    return run_matrix(lambda call: error_point(scenario, call, errno_name), calls)


# --- a kill during the undo that follows an I/O error -----------------------------------

# Where an error leads to an undo of staged or committed files, which a kill may cut short.
ROLLBACK_GROUPS = ("fsync", "fdatasync", "rename")
_UNDO_NAMES = ("unlink", "unlinkat", "rename", "renameat", "renameat2", "fsync", "fdatasync")


def undo_calls(traced: Traced) -> list[Call]:
    """The file calls a run made after the error injected into it: its compensation."""
    calls, _ = parse_trace(traced.trace)
    after = next(i for i, call in enumerate(calls) if "(INJECTED)" in call.text)
    return [call for call in calls[after + 1 :] if call.main and call.name in _UNDO_NAMES]


def kill_in_rollback_matrix(
    scenario: Scenario, reference: dict[str, list[Call]], group: str
) -> list[str]:
    """EIO at each point of ``group``, then a kill at the calls of the undo that follows it.

    At ``quick`` the first error point and the middle call of its undo; else
    every point and every call of the undo (``sampled``: every ``STRIDE``-th).
    The kill leaves an unfinished transaction, and ``--resume`` must leave the
    side its journal calls for.
    """
    errors = [c for name in GROUPS[group] for c in reference[name] if not c.to_stream]
    # At quick, the first: the prepared record's own fdatasync, the first commit rename.
    errors = errors[:1] if CRASH_DEPTH == "quick" else errors
    errors = chosen_points(scenario, errors, group)

    def check(error: Call) -> list[str]:
        eio = (error.name, f"error=EIO:when={error.ordinal}")
        first = scenario.traced(
            scenario.fresh_root(), eio, payload=scenario.payload, trace=ALL_NAMES
        )
        undo = [call for call in undo_calls(first) if call.name != error.name]
        if CRASH_DEPTH == "quick":
            undo = undo[len(undo) // 2 :][:1]
        elif CRASH_DEPTH == "sampled":
            undo = undo[::STRIDE]
        problems = []
        for call in undo:
            root = scenario.fresh_root()
            kill = (call.name, f"signal=SIGKILL:when={call.ordinal}")
            traced = scenario.traced(root, eio, payload=scenario.payload, then=kill)
            if not traced.killed:
                problems.append(f"then kill at {call.name} #{call.ordinal}: did not fire")
                continue
            found = resumes_to(scenario, root)
            problems += [
                f"then kill at {call.name} #{call.ordinal} [{call.text[:120]}]: {p}" for p in found
            ]
        return problems

    return run_matrix(check, errors)


# --- faults inside --resume ----------------------------------------------------------------

# An unfinished transaction to resume: which first crash leaves it, and how it is resumed.
SECOND_LEVEL = {
    "prepared, rolled forward": ("rename", ()),
    "prepared, aborted": ("rename", ("--abort",)),
    "unprepared, undone": ("link", ()),
}


@dataclass(frozen=True)
class Interrupted:
    """A node left with an unfinished transaction by a first kill, and the resume to finish it."""

    scenario: Scenario
    first: Call
    extra: tuple[str, ...]
    prepared: bool

    def crashed(self) -> Path:
        """A fresh copy of the old node whose run of B was killed at ``first``."""
        root = self.scenario.fresh_root()
        kill = (self.first.name, f"signal=SIGKILL:when={self.first.ordinal}")
        traced = self.scenario.traced(root, kill, payload=self.scenario.payload)
        assert traced.killed, f"first crash did not happen: exit {traced.returncode}"
        left = pending(root, self.scenario.old_txids)
        assert left.unfinished, left
        assert ("prepared" in left.states) == self.prepared, left
        return root

    def resume_points(self) -> list[Call]:
        """The chosen file syscalls of a clean ``--resume`` of such a node."""
        found = self.scenario.reference(self.crashed(), "--resume", *self.extra)
        if CRASH_DEPTH == "quick":  # one point in the middle of the whole resume
            every = sorted(
                (c for name in ALL_NAMES for c in found.get(name, []) if not c.to_stream),
                key=lambda c: c.seq,
            )
            return sample(every, 1, quick=1)
        calls = [
            call
            for group, names in GROUPS.items()
            for name in names
            for call in sample(
                [c for c in found.get(name, []) if not c.to_stream],
                STRIDE if group in NUMEROUS else 1,
            )
        ]
        assert calls, "a resume of an unfinished transaction does file work"
        return calls


def interrupted(scenario: Scenario, reference: dict[str, list[Call]], case: str) -> Interrupted:
    """The ``case`` of :data:`SECOND_LEVEL`: the first crash at the middle call of its group.

    ``rename`` is commit's (after the commit point: prepared); ``link`` is
    stage's hold links (before it). :meth:`Interrupted.crashed` checks in the
    journal that the crash left what the case says.
    """
    group, extra = SECOND_LEVEL[case]
    calls = [
        call
        for name in GROUPS[group]
        for call in reference.get(name, [])
        if group != "rename" or ".new" in call.text
    ]
    assert calls, f"no {group} call to crash a run at"
    return Interrupted(scenario, calls[len(calls) // 2], extra, prepared=group == "rename")


def kill_in_resume_matrix(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> list[str]:
    """Kill ``--resume`` itself at each point, then ``--resume`` as the journal says."""
    node = interrupted(scenario, reference, case)

    def check(call: Call) -> list[str]:
        root = node.crashed()
        kill = (call.name, f"signal=SIGKILL:when={call.ordinal}")
        traced = scenario.traced(root, kill, "--resume", *node.extra)
        if not traced.killed:
            return [f"the injection in --resume did not fire (exit {traced.returncode})"]
        return resumes_to(scenario, root)

    return run_matrix(check, node.resume_points())


def error_in_resume_matrix(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> list[str]:
    """EIO inside ``--resume``: exit 0 with the journal's side, or 8 with the journal kept."""
    node = interrupted(scenario, reference, case)

    def check(call: Call) -> list[str]:
        root = node.crashed()
        at_crash = pending(root, scenario.old_txids)
        side = "old" if node.extra else at_crash.side
        error = (call.name, f"error=EIO:when={call.ordinal}")
        traced = scenario.traced(root, error, "--resume", *node.extra)
        if "(INJECTED)" not in traced.hit:
            return ["the injection in --resume did not fire"]
        if "Traceback" in traced.stderr:
            return [f"traceback (exit {traced.returncode}): {traced.stderr[-700:]}"]
        result = json.loads(traced.stdout)
        check_log_lines(traced.stderr)
        assert_no_secrets(traced.stdout, traced.stderr)
        state = scenario.which(root)
        if traced.returncode == 8:
            # Recovery could not finish: the journal must still say so, for a retry.
            if not pending(root, scenario.old_txids).unfinished:
                return [f"exit 8 ({result.get('error')}) but nothing is left to resume"]
        elif traced.returncode != 0:
            return [f"exit {traced.returncode} ({result.get('error')}); the node is {state}"]
        elif state != side:
            return [f"--resume said {result['outcome']}: the node is {state}, expected {side}"]
        return resumes_to(scenario, root, *node.extra)

    return run_matrix(check, node.resume_points())
