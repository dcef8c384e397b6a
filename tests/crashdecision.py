"""The crash matrix of the participant's verbs: kill -9 during ``--prepare``, ``commit``, ``abort``.

It extends :mod:`tests.crashmatrix`: the same scenario (a program on a fresh
node or on a re-add of A, running B), the same traced runs and checks, with
another command killed. ``prepare`` runs B with ``--prepare --coordinator c1``
on a copy of the old node; ``commit`` and ``abort`` run ``txsetup commit|abort
TXID`` on a *held* node: a copy of the old node where B was just prepared, with
that prepare's txid (:class:`Held`). A node is never copied once prepared: the
journal names its staged and hold copies by inode number, which ``cp -a`` does
not keep, so every way of finishing a kill gets a kill of its own.

The side a kill must leave comes from the journal the killed run left
(:func:`tests.crashtrace.pending`). ``prepared`` with a hold and no
``decided`` record is *held*: the files as the prepare left them (old, and on
a fresh node the empty target directory), ``--resume`` refused with exit 5
naming the txid and changing nothing, and ``txsetup commit`` (new) or
``abort`` (old) still deciding it. A ``decided`` record goes the decision's
way: after a kill during ``commit`` or ``abort``, repeating the same command
and ``--resume`` must each finish it to that side.
Every end is checked as the kill matrix checks it: exactly that side, no
staged or hold copy anywhere, and a re-run of B converges.

How deep, by ``TXSETUP_CRASH``: at ``quick`` two or four calls of each
verb (:meth:`Verb.points`), each kill finished one way (alternately a repeat of
the decision or ``--resume``; commit or abort of a held node), and the re-run
of B only where the end is new; at ``sampled`` and ``full`` each group of
syscalls is taken as the kill matrix takes it, and every way is tried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    CRASH_DEPTH,
    Entry,
    assert_no_secrets,
    check_log_lines,
    snapshot,
)
from tests.crashmatrix import (
    ERRORS,
    Scenario,
    converges,
    leftovers,
    points,
    resumes_to,
    run_matrix,
)
from tests.crashtrace import ALL_NAMES, GROUPS, Call, Pending, Traced, pending

VERBS = ("prepare", "commit", "abort")
PREPARE = ("--prepare", "--coordinator", "c1")
# What a decision ends with: the side and the outcome word.
ENDS = {"commit": ("new", "committed"), "abort": ("old", "aborted")}
# Where a clean run of each verb leaves the node.
CLEAN = {"prepare": "held", "commit": "new", "abort": "old"}
# The matrices' parameter: at quick the few points of Verb.points, else each group.
DECISION_GROUPS = ("any",) if CRASH_DEPTH == "quick" else tuple(GROUPS)


@dataclass(frozen=True)
class Held:
    """The scenario's node held by B (``--prepare --coordinator c1``): what commit and abort decide.

    Every run that decides starts from a prepare of its own: the journal names
    staged and hold copies by inode number, which no copy of a node keeps.
    """

    scenario: Scenario
    files: dict[str, Entry]  # the old files, and on a fresh node the empty target directory

    def prepare(self) -> tuple[Path, str]:
        """A private copy of the old node, with B prepared: the root and the txid."""
        root = self.scenario.fresh_root()
        prepared = self.scenario.run(root, *PREPARE, payload=self.scenario.payload)
        assert (prepared.returncode, prepared.result["outcome"]) == (0, "prepared"), prepared.stderr
        return root, str(prepared.result["txid"])

    def side(self, root: Path, side: str) -> str | None:
        """None when ``root`` is on ``side`` (``old``, ``new`` or ``held``), else what it is."""
        want = {"old": self.scenario.old, "new": self.scenario.new, "held": self.files}[side]
        return None if snapshot(root) == want else self.scenario.which(root)


def make_held(scenario: Scenario) -> Held:
    """What a node held by B looks like; warm the decisions' byte-code cache."""
    held = Held(scenario, {})
    root, txid = held.prepare()
    files = snapshot(root)
    # The prepare changed no file: at most it made the target directory of a fresh node.
    assert {p: e for p, e in files.items() if p in scenario.old} == scenario.old
    assert all(e.kind == "dir" for p, e in files.items() if p not in scenario.old)
    assert scenario.run(root, "--resume").returncode == 5
    # Both decisions import the same modules: one of them fills the cache.
    assert scenario.run(root, command=("abort", txid)).returncode == 0
    return Held(scenario, files)


@dataclass(frozen=True)
class Verb:
    """One verb of the matrix on one scenario: where it starts and how it is called."""

    held: Held
    name: str  # one of VERBS

    @property
    def scenario(self) -> Scenario:
        """The program and node it runs on."""
        return self.held.scenario

    def start(self) -> tuple[Path, str | None]:
        """A private node to run it on: old for a prepare, else held (with the txid)."""
        return self.held.prepare() if self.name in ENDS else (self.scenario.fresh_root(), None)

    def traced(self, root: Path, txid: str | None, inject: tuple[str, str] | None) -> Traced:
        """The verb on ``root`` under strace, injecting ``inject``."""
        if txid is None:
            return self.scenario.traced(root, inject, *PREPARE, payload=self.scenario.payload)
        return self.scenario.traced(root, inject, command=(self.name, txid))

    def reference(self) -> dict[str, list[Call]]:
        """Occurrences of each syscall in a clean traced run of the verb."""
        root, txid = self.start()
        if txid is None:
            found = self.scenario.reference(root, *PREPARE, payload=self.scenario.payload)
        else:
            found = self.scenario.reference(root, command=(self.name, txid))
        assert self.held.side(root, CLEAN[self.name]) is None, self.scenario.which(root)
        return found

    def points(self, reference: dict[str, list[Call]], group: str) -> list[Call]:
        """The chosen calls: at quick (``any``) the few that matter most; else the group's.

        At quick, the write of the verb's own durable record (``prepared``,
        ``decided``): a kill there leaves the side before it (old, or held);
        then its ``fdatasync``: held, or decided with nothing done yet (an
        abort's only record of its direction until ``rolling_back``). What
        comes before a prepare's record is a plain run's, which the kill
        matrix covers. For a decision, then the middle call of what follows
        (half way) and the last (all done, the end record being written).
        """
        if group != "any":
            return points(reference, group)
        every = sorted(
            (c for name in ALL_NAMES for c in reference.get(name, []) if not c.to_stream),
            key=lambda c: c.seq,
        )
        synced = next(i for i, c in enumerate(every) if c.name == "fdatasync")
        if self.name == "prepare":
            return every[synced - 1 : synced + 1]
        after = every[synced + 1 :]
        return [every[synced - 1], every[synced], after[(len(after) - 1) // 2], after[-1]]

    def killed(self, call: Call) -> tuple[Path, Pending] | str:
        """A private node whose run of the verb was killed at ``call``, and its journal."""
        root, txid = self.start()
        traced = self.traced(root, txid, (call.name, f"signal=SIGKILL:when={call.ordinal}"))
        if not traced.killed:
            return f"the injection did not fire (exit {traced.returncode}): the counts changed"
        at_crash = pending(root, self.scenario.old_txids)
        if txid is not None and at_crash.txid != txid:
            return f"the journal names {at_crash.txid}, not the held {txid}"
        return root, at_crash


def decided(held: Held, root: Path, verb: str, txid: str) -> list[str]:
    """``txsetup VERB TXID`` on ``root`` ends the transaction: its outcome, its side, no copy."""
    scenario = held.scenario
    side, outcome = ENDS[verb]
    run = scenario.run(root, command=(verb, txid))
    problems = []
    if run.returncode != 0 or run.result["outcome"] != outcome:
        problems.append(
            f"{verb} {txid}: exit {run.returncode}, outcome {run.result['outcome']} "
            f"(expected {outcome}), error {run.result.get('error')}"
        )
    if (state := held.side(root, side)) is not None:
        problems.append(f"after {verb} the node is {state}, expected {side}")
    if left := leftovers(root):
        problems.append(f"copies left after {verb}: {left}")
    converge = side == "new" or CRASH_DEPTH != "quick"
    return problems or (converges(scenario, root, side) if converge else [])


def still_held(held: Held, root: Path, at_crash: Pending, decision: str) -> list[str]:
    """A held node: files as prepared, ``--resume`` exit 5 and no change; ``decision`` ends it."""
    scenario = held.scenario
    txid = str(at_crash.txid)
    problems = []
    if (state := held.side(root, "held")) is not None:
        problems.append(f"journal {list(at_crash.states)} holds the node, but it is {state}")
    before = snapshot(root, skip=("var/lock",))
    refused = scenario.run(root, "--resume")
    error = str(refused.result.get("error"))
    if refused.returncode != 5 or refused.result.get("error_code") != "held" or txid not in error:
        problems.append(f"--resume on a held node: exit {refused.returncode}, error {error}")
    if snapshot(root, skip=("var/lock",)) != before:
        problems.append("--resume on a held node changed it")
    return problems or [f"then {decision}: {p}" for p in decided(held, root, decision, txid)]


def finish(verb: Verb, call: Call, way: str) -> tuple[list[str], bool]:
    """Kill the verb at ``call``, then finish it ``way`` (a decision, or ``--resume``).

    Returns what went wrong, and whether the kill left the node held.
    """
    killed = verb.killed(call)
    if isinstance(killed, str):
        return [killed], False
    root, at_crash = killed
    if at_crash.side == "held":
        decision = verb.name if way == "--resume" else way
        return still_held(verb.held, root, at_crash, decision), True
    converge = at_crash.side == "new" or CRASH_DEPTH != "quick"
    if verb.name in ENDS and at_crash.side != ENDS[verb.name][0]:
        return [f"a kill during {verb.name} left {list(at_crash.states)}: {at_crash.side}"], False
    if verb.name == "prepare" or way == "--resume":
        return resumes_to(verb.scenario, root, converge=converge), False
    return decided(verb.held, root, way, str(at_crash.txid)), False


def ways(verb: Verb, index: int) -> list[str]:
    """How a kill at the ``index``-th point is finished: each way, or at ``quick`` one in turn.

    After a kill during a decision: the same decision again, and ``--resume``
    (on a node still held it is refused, then the decision ends it). After a
    kill during a prepare that left the node held: ``abort`` and ``commit``
    (``--resume`` for one that did not).
    """
    every = ["abort", "commit"] if verb.name == "prepare" else [verb.name, "--resume"]
    return [every[index % 2]] if CRASH_DEPTH == "quick" else every


def check_point(verb: Verb, call: Call, index: int) -> list[str]:
    """Every way of finishing a kill at the ``index``-th point, each after a kill of its own."""
    problems = []
    for way in ways(verb, index):
        found, held = finish(verb, call, way)
        problems += [f"finished by {way}: {p}" for p in found]
        if verb.name == "prepare" and not held:
            break  # a prepare's kill that left no hold is --resume's, whatever the way
    return problems


def decision_kill_matrix(verb: Verb, reference: dict[str, list[Call]], group: str) -> list[str]:
    """Every failure of the kill -9 matrix of one verb over one group (``any`` at quick)."""
    calls = verb.points(reference, group)
    if not calls:
        pytest.skip(f"{verb.name} on a {verb.scenario.node} node makes no {group} call")
    index = {call.seq: i for i, call in enumerate(calls)}
    return run_matrix(lambda call: check_point(verb, call, index[call.seq]), calls)


# --- an I/O error during a decision ------------------------------------------------------


def clean_result(traced: Traced) -> dict[str, Any] | str:
    """The result of a run that met an injected error, or what is wrong with its output."""
    if "(INJECTED)" not in traced.hit:
        return "the injection did not fire: the syscall counts changed"
    if "Traceback" in traced.stderr:
        return f"traceback (exit {traced.returncode}): {traced.stderr[-700:]}"
    lines = traced.stdout.splitlines()
    if len(lines) != 1:
        return f"expected one result line on stdout, got {traced.stdout!r}"
    check_log_lines(traced.stderr)
    assert_no_secrets(traced.stdout, traced.stderr)
    result: dict[str, Any] = json.loads(lines[0])
    if result.get("exit_code", 0) != traced.returncode:
        return f"exit {traced.returncode}, but the result says {result.get('exit_code')}"
    return result


def error_outcome_problems(verb: Verb, root: Path, traced: Traced) -> list[str]:
    """A decision that met an injected error: a clean result, and a node a repeat can finish.

    Exit 0 is the decision's side; 6 a commit rolled back (old). Any other
    failure leaves the journal held (the decision never recorded; the files
    as prepared) or decided and unfinished (exit 8: the I/O error hit while
    files moved), for a repeat to finish.
    """
    result = clean_result(traced)
    if isinstance(result, str):
        return [result]
    code = traced.returncode
    side, outcome = ENDS[verb.name]
    at_end = pending(root, verb.scenario.old_txids)
    said = f"exit {code} ({result['outcome']}: {result.get('error')})"
    said += f", journal {list(at_end.states)}"
    expected = {0: side, 6: "old" if verb.name == "commit" else None}.get(code)
    if code == 0 and result["outcome"] != outcome:
        expected = None
    elif expected is None and at_end.side == "held":
        expected = "held"
    elif expected is None and at_end.unfinished and at_end.side == side and code == 8:
        return []  # half way: the journal keeps the decision, and a repeat finishes it
    if expected is None:
        return [f"{said}: neither the decision's side nor a journal to finish it from"]
    if (state := verb.held.side(root, expected)) is not None:
        return [f"{said}: the node is {state}, expected {expected}"]
    return []


def error_point(verb: Verb, call: Call, errno_name: str) -> list[str]:
    """Inject ``errno_name`` at ``call`` of the decision; its repeat and ``--resume`` end it."""
    root, txid = verb.held.prepare()
    traced = verb.traced(root, txid, (call.name, f"error={errno_name}:when={call.ordinal}"))
    if problems := error_outcome_problems(verb, root, traced):
        return problems
    if traced.returncode == 6:  # a commit rolled back: finished, old
        return resumes_to(verb.scenario, root, converge=CRASH_DEPTH != "quick")
    scenario, (side, outcome) = verb.scenario, ENDS[verb.name]
    again = scenario.run(root, command=(verb.name, txid))
    problems = []
    if again.returncode != 0 or again.result["outcome"] != outcome:
        problems.append(
            f"{verb.name} again: exit {again.returncode}, outcome {again.result['outcome']}, "
            f"error {again.result.get('error')}"
        )
    if (state := verb.held.side(root, side)) is not None:
        problems.append(f"after {verb.name} again the node is {state}, expected {side}")
    # A copy whose removal failed is the next recovery's to remove.
    converge = side == "new" or CRASH_DEPTH != "quick"
    return problems or resumes_to(scenario, root, converge=converge)


def decision_error_matrix(
    verb: Verb, reference: dict[str, list[Call]], group: str, errno_name: str
) -> list[str]:
    """Every failure of the I/O error matrix of a decision over one group (``any`` at quick).

    The log and result writes aside (the kill matrix's stream checks cover
    them); at quick the errors share the points: EIO the 1st, 3rd...
    """
    if group == "any":  # not the last: an error in the end record is not a failure
        calls = verb.points(reference, group)[:3][ERRORS.index(errno_name) :: len(ERRORS)]
    else:
        stride = 1 if group == "write" else None
        calls = points(reference, group, keep=lambda call: not call.to_stream, stride=stride)
    if not calls:
        pytest.skip(f"{verb.name} on a {verb.scenario.node} node makes no {group} call")
    return run_matrix(lambda call: error_point(verb, call, errno_name), calls)
