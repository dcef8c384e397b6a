"""The crash matrix of a revert and of a commit to be confirmed.

It extends :mod:`tests.crashmatrix` as :mod:`tests.crashdecision` does: the
same scenario (a program on a fresh node or on a re-add of A, with document
B), the same traced runs, with other commands killed:

* ``revert``: ``txsetup revert TXID`` of B, committed by a real run on a copy
  of the old node. The revert is a transaction of its own, so the side a kill
  must leave comes from *its* journal, read as any other: not ``prepared``
  (or ``rolling_back``) is B's files, ``prepared`` is A's (the kept set put
  back). To read it so, the scenario is swapped (:func:`reverting`): B's
  files are the revert's old side, A's its new one, B's txid an earlier one.
  It is finished by ``--resume`` (then, on B's files, the kept set must still
  allow the revert: it is run and ends on A's) and, after a kill of its own,
  by repeating ``txsetup revert TXID`` (which recovers the revert as the
  journal says, then reverts if the kept set is still there: A's files).
* ``confirmed``: a run of B with ``--confirm-within``; ``--resume`` leaves
  the side the journal calls for, as the kill matrix checks it. On B's files
  the node must wait for its confirmation: a run is refused (exit 5),
  ``status`` says ``unconfirmed``, ``txsetup confirm TXID`` keeps it, and the
  kept set is whole (a revert after the confirm ends on A's files).
* ``confirm``: ``txsetup confirm TXID`` of such a commit; repeating it says
  ``confirmed``, the files are B's, the node is no longer held, and the kept
  set is whole.

A committed node is never copied: the kept set's manifest names the files
the commit wrote by inode number (the revert's guard), which ``cp -a`` does
not keep, so every kill starts from a commit of its own. The node's init is
systemd with a stand-in ``systemd-run`` that arms nothing
(:func:`tests.test_revert.fake_systemd`): no timer fires during the matrix.

How deep, by ``TXSETUP_CRASH``: at ``quick`` a few calls of each verb
(:meth:`Verb.points`), a revert's kill finished one way in turn; at
``sampled`` and ``full`` each group of syscalls is taken as the kill matrix
takes it, and a revert's kill is finished both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CRASH_DEPTH, Run, kept_for_revert, run_txsetup, snapshot
from tests.crashmatrix import (
    Program,
    Scenario,
    leftovers,
    make_scenario,
    points,
    resumes_to,
    run_matrix,
)
from tests.crashmatrix import converges as converges_to_b
from tests.crashtrace import ALL_NAMES, GROUPS, Call, Pending, Traced, pending
from tests.test_crash import NODE_DAEMON_SETUP, bare_node
from tests.test_revert import fake_systemd

VERBS = ("revert", "confirmed", "confirm")
CONFIRM_WITHIN = ("--confirm-within", "600")
# The matrices' parameter: at quick the few points of Verb.points, else each group.
REVERT_GROUPS = ("any",) if CRASH_DEPTH == "quick" else tuple(GROUPS)


def systemd_scenario(
    tmp_path_factory: pytest.TempPathFactory,
    node: str,
    old_document: dict[str, Any],
    new_document: dict[str, Any],
) -> Scenario:
    """node-daemon-setup's scenario on a node whose init is systemd, a stand-in
    ``systemd-run`` first on ``PATH`` of every run, traced or not."""
    tools = tmp_path_factory.mktemp("systemd-run")
    path: dict[str, str] = {}

    def lay_out(root: Path) -> None:
        bare_node(root)
        path.update(fake_systemd(root, tools))

    program = Program(NODE_DAEMON_SETUP.command, lay_out)
    scenario = make_scenario(tmp_path_factory, program, node, old_document, new_document)
    return replace(
        scenario, env={**scenario.env, **path}, traced_env={**scenario.traced_env, **path}
    )


def commit(scenario: Scenario, *extra: str) -> tuple[Path, str]:
    """A private copy of the old node with B committed by a real run: the root and B's txid."""
    root = scenario.fresh_root()
    run = scenario.run(root, *extra, payload=scenario.payload)
    assert (run.returncode, run.result["outcome"]) == (0, "committed"), run.stderr
    return root, str(run.result["txid"])


def reverting(scenario: Scenario, txid: str) -> Scenario:
    """The scenario as a revert of ``txid`` sees it: B's files old, A's new, ``txid`` earlier."""
    return replace(
        scenario, old=scenario.new, new=scenario.old, old_txids=scenario.old_txids | {txid}
    )


def warm(scenario: Scenario) -> None:
    """Fill the byte-code cache for the commit to be confirmed, confirm and revert."""
    root, txid = commit(scenario, *CONFIRM_WITHIN)
    assert scenario.run(root, command=("confirm", txid)).result["outcome"] == "confirmed"
    reverted = scenario.run(root, command=("revert", txid))
    assert reverted.result["outcome"] == "reverted", reverted.stderr
    assert snapshot(root) == scenario.old, scenario.which(root)


@dataclass(frozen=True)
class Verb:
    """One verb of the matrix on one scenario: where it starts and how it is called."""

    scenario: Scenario
    name: str  # one of VERBS

    def start(self) -> tuple[Path, str | None]:
        """A private node to run it on: old for ``confirmed``, else B committed (its txid)."""
        if self.name == "confirmed":
            return self.scenario.fresh_root(), None
        return commit(self.scenario, *(CONFIRM_WITHIN if self.name == "confirm" else ()))

    def traced(self, root: Path, txid: str | None, inject: tuple[str, str] | None) -> Traced:
        """The verb on ``root`` under strace, injecting ``inject``."""
        if txid is None:
            return self.scenario.traced(
                root, inject, *CONFIRM_WITHIN, payload=self.scenario.payload
            )
        return self.scenario.traced(root, inject, command=(self.name, txid))

    def reference(self) -> dict[str, list[Call]]:
        """Occurrences of each syscall in a clean traced run of the verb."""
        root, txid = self.start()
        if txid is None:
            found = self.scenario.reference(root, *CONFIRM_WITHIN, payload=self.scenario.payload)
        else:
            found = self.scenario.reference(root, command=(self.name, txid))
        clean = self.scenario.old if self.name == "revert" else self.scenario.new
        assert snapshot(root) == clean, self.scenario.which(root)
        return found

    def points(self, reference: dict[str, list[Call]], group: str) -> list[Call]:
        """The chosen calls: at quick (``any``) the few that matter most; else the group's.

        At quick, for a revert: the write of its ``prepared`` record (a kill
        there leaves B's files), its ``fdatasync`` (A's), the middle call of
        what follows and the last (the ``done`` record). For a commit to be
        confirmed: the removal of the earlier kept set's manifest (no
        manifest at all), the rename of the new one (the new kept set in
        place, ``done`` not written) and the last call. For a confirm: the
        write of the manifest without the deadline, and the last call (the
        state directory's fsync after the rename).
        """
        if group != "any":
            return points(reference, group)
        every = sorted(
            (c for name in ALL_NAMES for c in reference.get(name, []) if not c.to_stream),
            key=lambda c: c.seq,
        )
        synced = next((i for i, c in enumerate(every) if c.name == "fdatasync"), 0)
        after = every[synced + 1 :]
        if self.name == "revert":
            return [every[synced - 1], every[synced], after[(len(after) - 1) // 2], after[-1]]
        manifest = [c for c in after if "var/lib/txsetup/revertable" in c.text]
        if self.name == "confirmed":
            renamed = next(c for c in manifest if c.name in GROUPS["rename"])
            return [manifest[0], renamed, every[-1]]
        written = next(c for c in every if c.name in GROUPS["write"])
        return [written, every[-1]]

    def killed(self, call: Call) -> tuple[Path, str | None, Pending] | str:
        """A node whose run of the verb was killed at ``call``: root, B's txid, its journal."""
        root, txid = self.start()
        traced = self.traced(root, txid, (call.name, f"signal=SIGKILL:when={call.ordinal}"))
        if not traced.killed:
            return f"the injection did not fire (exit {traced.returncode}): the counts changed"
        earlier = self.scenario.old_txids | ({txid} if txid else set())
        return root, txid, pending(root, earlier)


# --- the checks ------------------------------------------------------------------------------


def reverted(scenario: Scenario, root: Path, txid: str, said: str) -> tuple[list[str], Run]:
    """``txsetup revert TXID`` ends on A's files (``scenario.old``), nothing kept, no copy."""
    run = scenario.run(root, command=("revert", txid))
    problems = []
    if run.returncode != 0 or run.result["outcome"] != "reverted":
        problems.append(
            f"{said}: revert {txid}: exit {run.returncode}, outcome {run.result['outcome']}, "
            f"error {run.result.get('error')}"
        )
    if snapshot(root) != scenario.old:
        problems.append(f"{said}: after the revert the node is {scenario.which(root)}, not A")
    if left := leftovers(root):
        problems.append(f"{said}: copies left after the revert: {left}")
    if kept := kept_for_revert(root):
        problems.append(f"{said}: the revert left a kept set: {sorted(kept)}")
    return problems, run


def revert_resumed(scenario: Scenario, root: Path, txid: str, at_crash: Pending) -> list[str]:
    """``--resume`` after a killed revert: the journal's side; on B's, the revert still works."""
    problems = resumes_to(reverting(scenario, txid), root, converge=False)
    if problems:
        return problems
    if at_crash.side == "old":  # B's files: the kept set must still be whole
        return reverted(scenario, root, txid, "then")[0]
    if kept := kept_for_revert(root):
        return [f"the revert was rolled forward, but a kept set is left: {sorted(kept)}"]
    last = run_txsetup(["status", "--root", str(root)], env=scenario.env).result["last_transaction"]
    if (last["outcome"], last.get("reverts")) != ("reverted", txid):
        return [f"a revert rolled forward by --resume ends as {last['outcome']}, not reverted"]
    return []


def revert_repeated(scenario: Scenario, root: Path, txid: str, at_crash: Pending) -> list[str]:
    """Repeating the revert recovers the killed one as its journal says, then ends on A's files."""
    problems, run = reverted(scenario, root, txid, "repeated")
    if not at_crash.unfinished:
        return problems
    action = "rolled_forward" if at_crash.side == "new" else "rolled_back"
    did = [
        e.get("action")
        for e in run.events
        if e["event"] == "txn.recovered" and e.get("recovered_txid") == at_crash.txid
    ]
    if did != [action]:
        problems.append(f"the killed revert {list(at_crash.states)} was {did}, not {action}")
    return problems


def unconfirmed(scenario: Scenario, root: Path, txid: str) -> list[str]:
    """B's files committed to be confirmed: held (exit 5), ``unconfirmed``; confirm keeps it."""
    problems = []
    held = scenario.run(root, payload=scenario.payload)
    error = str(held.result.get("error"))
    if held.returncode != 5 or f"txsetup confirm {txid}" not in error:
        problems.append(f"a run while unconfirmed: exit {held.returncode}, error {error}")
    status = run_txsetup(["status", "--root", str(root)], env=scenario.env).result
    if (outcome := (status.get("last_transaction") or {}).get("outcome")) != "unconfirmed":
        problems.append(f"status says {outcome}, not unconfirmed")
    return problems or confirmed(scenario, root, txid, "confirm", run_between=False)


def confirmed(
    scenario: Scenario, root: Path, txid: str, said: str, *, run_between: bool = True
) -> list[str]:
    """``txsetup confirm TXID`` says ``confirmed``, B's files stay, revert works.

    With ``run_between`` (after a killed confirm) a run of B in between shows the node
    no longer held: it converges.
    """
    run = scenario.run(root, command=("confirm", txid))
    problems = []
    if run.returncode != 0 or run.result["outcome"] != "confirmed":
        problems.append(
            f"{said} {txid}: exit {run.returncode}, outcome {run.result['outcome']}, "
            f"error {run.result.get('error')}"
        )
    if snapshot(root) != scenario.new:
        problems.append(f"after {said} the node is {scenario.which(root)}, not B")
    if left := leftovers(root):
        problems.append(f"copies left after {said}: {left}")
    if problems or not run_between:
        return problems or reverted(scenario, root, txid, f"after {said}")[0]
    again = scenario.run(root, payload=scenario.payload)
    if again.returncode != 0 or again.result["outcome"] != "converged":
        problems.append(f"a run after {said}: exit {again.returncode}, {again.result['outcome']}")
    return problems or reverted(scenario, root, txid, f"after {said}")[0]


def finish(verb: Verb, call: Call, way: str) -> list[str]:
    """Kill the verb at ``call``, then finish it ``way`` and check the end."""
    killed = verb.killed(call)
    if isinstance(killed, str):
        return [killed]
    root, txid, at_crash = killed
    scenario = verb.scenario
    if verb.name == "revert":
        assert txid is not None
        if way == "--resume":
            return revert_resumed(scenario, root, txid, at_crash)
        return revert_repeated(scenario, root, txid, at_crash)
    if verb.name == "confirm":
        assert txid is not None
        return confirmed(scenario, root, txid, "confirm again")
    return confirmed_resumed(scenario, root, at_crash)


def confirmed_resumed(scenario: Scenario, root: Path, at_crash: Pending) -> list[str]:
    """``--resume`` after a killed run to be confirmed: the journal's side; on B's, unconfirmed.

    Rolled forward, the commit then waits for its confirmation, and recovery's
    rules say what comes after any roll forward: with the deadline ahead, exit
    5 (``held``) naming ``txsetup confirm TXID``.
    """
    if at_crash.side != "new":
        problems = resumes_to(scenario, root, converge=False)
        if problems or CRASH_DEPTH == "quick":
            return problems
        return converges_to_b(scenario, root, "old")
    txid = str(at_crash.txid)
    resume = scenario.run(root, "--resume")
    problems = []
    error = str(resume.result.get("error"))
    if resume.returncode != 5 or f"txsetup confirm {txid}" not in error:
        problems.append(
            f"--resume after {list(at_crash.states)}: exit {resume.returncode}, error {error}"
        )
    if pending(root, scenario.old_txids).unfinished:
        problems.append(f"--resume left {txid} unfinished")
    if (state := scenario.which(root)) != "new":
        problems.append(f"journal {list(at_crash.states)} calls for new, the node is {state}")
    if left := leftovers(root):
        problems.append(f"copies left after --resume: {left}")
    return problems or unconfirmed(scenario, root, txid)


def ways(verb: Verb, index: int) -> list[str]:
    """How a kill at the ``index``-th point is finished: each way, or at ``quick`` one in turn.

    A revert: ``--resume``, or the revert repeated; a commit to be confirmed:
    ``--resume``; a confirm: the confirm repeated.
    """
    every = {"revert": ["--resume", "revert"], "confirmed": ["--resume"], "confirm": ["confirm"]}
    found = every[verb.name]
    return [found[index % len(found)]] if CRASH_DEPTH == "quick" else found


def revert_kill_matrix(verb: Verb, reference: dict[str, list[Call]], group: str) -> list[str]:
    """Every failure of the kill -9 matrix of one verb over one group (``any`` at quick).

    Each way of finishing a point gets a kill of its own.
    """
    calls = verb.points(reference, group)
    if not calls:
        pytest.skip(f"{verb.name} on a {verb.scenario.node} node makes no {group} call")
    index = {call.seq: i for i, call in enumerate(calls)}

    def check(call: Call) -> list[str]:
        return [
            f"finished by {way}: {problem}"
            for way in ways(verb, index[call.seq])
            for problem in finish(verb, call, way)
        ]

    return run_matrix(check, calls)
