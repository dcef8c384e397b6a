"""The transaction page, generated from the programs' step tables and the recovery rules.

``{transaction-steps} node-daemon-setup`` draws a step table (its order,
which steps write, which have an undo, where the commit point is) and lists
it; ``{transaction-recovery}`` tells, for every journal state, what
``--resume`` and ``--resume --abort`` do, by asking :func:`rules.decide`
itself, and for every transaction that waits for a decision made elsewhere
(held by ``--prepare``, decided, a commit waiting for its confirmation)
what :data:`rules.WAITING_RULES` say. Nothing here restates the code: a
changed table changes the page.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.ext.graphviz import graphviz
from sphinx.util.docutils import SphinxDirective

from txsetup.log import get_logger
from txsetup.node.config import Config
from txsetup.node.programs import COMMANDS, make_program
from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.txn import rules
from txsetup.txn.journal import FINISHED_STATES, TxnState
from txsetup.txn.layout import Layout
from txsetup.txn.steps import step_table
from txsetup_docs.nodes import depend_on_package, paragraph, table

TABLES: dict[str, Sequence[Any]] = {
    command: step_table(
        make_program(command, config=Config(), layout=Layout(Path("/")), log=get_logger())
    )
    for command in COMMANDS
}
# Every journal state in journal order: the services' between commit and the end.
STATES: list[str] = [
    TxnState.BEGUN,
    TxnState.PREPARED,
    TxnState.DECIDED,
    TxnState.COMMITTED,
    DAEMON.state,
    SSHD.state,
    TxnState.ROLLING_BACK,
    TxnState.ROLLED_BACK,
    TxnState.DONE,
]
_ACTION: dict[rules.RecoveryAction | None, str] = {
    rules.RecoveryAction.ROLLED_FORWARD: "roll forward",
    rules.RecoveryAction.ROLLED_BACK: "roll back",
    rules.RecoveryAction.REVERTED: "revert",
    None: "no action: exit 5 (held)",
}
_COLOUR: dict[rules.RecoveryAction | None, str] = {
    rules.RecoveryAction.ROLLED_FORWARD: "#e6f4ea",
    rules.RecoveryAction.ROLLED_BACK: "#fce8e6",
    rules.RecoveryAction.REVERTED: "#fce8e6",
    None: "#fef7e0",
}


# A decided transaction rolls back when the decision was to abort (recovery passes it as --abort).
_DECIDED_NOTE = "; this is a decision to commit: one to abort rolls back (below)"


def commit_point(steps: Sequence[Any]) -> int:
    """Index of the first writing step: it ends by journaling ``prepared``, the commit point."""
    return next(i for i, step in enumerate(steps) if step.writes)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def steps_dot(command: str, steps: Sequence[Any]) -> str:
    """The steps in order; a failure before the first writing step is a refusal, later an undo."""
    point = commit_point(steps)
    lines = [
        f"digraph {_quote(command)} {{",
        "rankdir=LR; node [shape=box, fontname=sans, fontsize=10];",
        "edge [fontname=sans, fontsize=9];",
        'start [shape=circle, label="", width=0.15, style=filled, fillcolor=black];',
        'ok [shape=doublecircle, label="done\\nexit 0", fontsize=9];',
        'refused [shape=box, style="rounded,dashed", label="refused: nothing written\\nexit 1-5"];',
        'undone [shape=box, style="rounded,dashed", label="undo every step done,\\n'
        'newest first\\nexit 6 (8 if an undo fails)"];',
        "start -> " + _quote(steps[0].name) + ";",
    ]
    for index, step in enumerate(steps):
        style = ', style=filled, fillcolor="#e8f0fe"' if step.writes else ""
        lines.append(f"{_quote(step.name)} [label={_quote(step.name)}{style}];")
        after = _quote(steps[index + 1].name) if index + 1 < len(steps) else "ok"
        label = (
            ' [label="prepared journaled:\\ncommit point", penwidth=2]' if index == point else ""
        )
        lines.append(f"{_quote(step.name)} -> {after}{label};")
        failed = "undone" if step.writes else "refused"
        lines.append(f"{_quote(step.name)} -> {failed} [style=dotted, arrowsize=0.5];")
    lines.append("{rank=same; refused; undone;}")
    lines.append("}")
    return "\n".join(lines)


def steps_rows(steps: Sequence[Any]) -> list[list[str]]:
    """Step, what it does, whether it writes, its undo."""
    return [
        [
            f"`{step.name}`",
            step.description,
            "yes" if step.writes else "no",
            f"`{step.undo.__name__}`" if step.undo is not None else "—",
        ]
        for step in steps
    ]


def reached(state: str) -> set[str]:
    """The states a journal whose newest record is ``state`` went through (in journal order)."""
    return set(STATES[: STATES.index(state) + 1])


def recovery_rows() -> list[list[str]]:
    """For each unfinished journal state: what ``--resume`` and ``--resume --abort`` do, and why."""
    rows = []
    for state in STATES:
        if state in FINISHED_STATES:
            rows.append([f"`{state}`", "nothing to do", "nothing to do", "finished"])
            continue
        states = reached(state)
        rule = next(r for r in rules.RECOVERY_RULES if r.state in states)
        rows.append(
            [
                f"`{state}`",
                _ACTION[rules.decide(states, abort=False)],
                _ACTION[rules.decide(states, abort=True)],
                rule.why + _DECIDED_NOTE if state == TxnState.DECIDED else rule.why,
            ]
        )
    return rows


def recovery_dot() -> str:
    """Every journal state, each with what ``--resume`` / ``--abort`` do when it is the newest."""
    lines = [
        "digraph journal {",
        "node [shape=box, style=rounded, fontname=sans, fontsize=10];",
    ]
    unfinished = [s for s in STATES if s not in FINISHED_STATES]
    for state in unfinished:
        forward = rules.decide(reached(state), abort=False)
        colour = _COLOUR[forward]
        text = (
            f"{state}\\n--resume: {_ACTION[forward]}\\n"
            f"--abort: {_ACTION[rules.decide(reached(state), abort=True)]}"
        )
        lines.append(
            f'{_quote(state)} [label="{text}", style="rounded,filled", fillcolor="{colour}"];'
        )
    # Journal order, in rows of four; a transaction skips the states it does not need.
    ordered = list(STATES)
    rows = [ordered[i : i + 4] for i in range(0, len(ordered), 4)]
    for row in rows:
        lines.append("{rank=same; " + " ".join(f"{_quote(state)};" for state in row) + "}")
        lines.extend(
            f"{_quote(a)} -> {_quote(b)} [style=invis];" for a, b in itertools.pairwise(row)
        )
    for upper, lower in itertools.pairwise(rows):
        lines.append(f"{_quote(upper[0])} -> {_quote(lower[0])} [style=invis];")
    for state in (s for s in STATES if s in FINISHED_STATES):
        lines.append(f'{_quote(state)} [label="{state}\\nnothing to do", shape=box];')
    lines.extend(waiting_dot_lines(anchor=rows[-1][0]))
    lines.append("}")
    return "\n".join(lines)


def waiting_dot_lines(anchor: str) -> list[str]:
    """The waiting transactions, one box each, in rows of three below ``anchor``."""
    lines = [
        "subgraph cluster_waiting {",
        'label="waiting for a decision made elsewhere"; fontname=sans; fontsize=10;',
        'style="rounded,dashed";',
    ]
    names = [f"waiting {rule.condition}" for rule in rules.WAITING_RULES]
    for name, rule in zip(names, rules.WAITING_RULES, strict=True):
        text = (
            f"{rule.condition}\\n--resume: {_ACTION[rule.resume]}\\n--abort: {_ACTION[rule.abort]}"
        )
        lines.append(
            f'{_quote(name)} [label="{text}", style="rounded,filled", '
            f'fillcolor="{_COLOUR[rule.resume]}"];'
        )
    rows = [names[i : i + 3] for i in range(0, len(names), 3)]
    for row in rows:
        lines.append("{rank=same; " + " ".join(f"{_quote(name)};" for name in row) + "}")
        lines.extend(
            f"{_quote(a)} -> {_quote(b)} [style=invis];" for a, b in itertools.pairwise(row)
        )
    lines.extend(
        f"{_quote(upper[0])} -> {_quote(lower[0])} [style=invis];"
        for upper, lower in itertools.pairwise(rows)
    )
    lines.append("}")
    lines.append(f"{_quote(anchor)} -> {_quote(names[0])} [style=invis];")
    return lines


def waiting_rows() -> list[list[str]]:
    """For each waiting transaction: how it shows, what recovery and ``--abort`` do, and why."""
    return [
        [
            f"{rule.condition}",
            rule.journal,
            _ACTION[rules.decide_waiting(rule.condition, abort=False)],
            _ACTION[rules.decide_waiting(rule.condition, abort=True)],
            rule.why,
        ]
        for rule in rules.WAITING_RULES
    ]


def graph(code: str, docname: str, alt: str) -> graphviz:
    node = graphviz()
    node["code"] = code
    node["options"] = {"docname": docname}
    node["alt"] = alt
    return node


class TransactionSteps(SphinxDirective):
    """``{transaction-steps} node-daemon-setup``: a step table as a diagram and a table."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """The diagram, then the table."""
        depend_on_package(self.env)
        command = self.arguments[0]
        steps = TABLES[command]
        header = ("step", "does", "writes", "undo")
        point = steps[commit_point(steps)].name
        return [
            graph(steps_dot(command, steps), self.env.docname, f"the steps of {command}"),
            paragraph(
                f"The commit point is the end of `{point}`, the first step that writes: "
                "its last act is to journal `prepared` durably."
            ),
            table(header, steps_rows(steps)),
        ]


class TransactionRecovery(SphinxDirective):
    """``{transaction-recovery}``: every journal state and what recovery does there."""

    def run(self) -> list[nodes.Node]:
        """The diagram, then the table."""
        depend_on_package(self.env)
        header = ("newest journal state", "`--resume`", "`--resume --abort`", "why")
        waiting = ("waiting", "shown by", "`--resume` (and every run)", "`--resume --abort`", "why")
        return [
            graph(recovery_dot(), self.env.docname, "journal states and recovery"),
            table(header, recovery_rows()),
            paragraph(
                "Before those rules, recovery looks at what waits for a decision made "
                "elsewhere: a transaction held by `--prepare`, one whose decision is "
                "journaled (`decided`), and a commit waiting for its confirmation. "
                "A held one is never decided by recovery, and neither is a commit before "
                "its deadline: every run (its `lock` step), dry runs and `--resume` are "
                "refused with exit 5 naming the transaction and the commands that end "
                "the wait."
            ),
            table(waiting, waiting_rows()),
        ]


def setup(app: Sphinx) -> None:
    """Register the two directives."""
    app.add_directive("transaction-steps", TransactionSteps)
    app.add_directive("transaction-recovery", TransactionRecovery)
