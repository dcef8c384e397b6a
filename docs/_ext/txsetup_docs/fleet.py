"""The atomic push's protocol, drawn from :data:`txsetup.master.fleetlog.TRANSITIONS`.

``{fleet-protocol}`` draws every stage a push's record can be in and every
move between them, with the condition of each, and lists them. The master
refuses to record any move not in that table, so the page is the protocol
the code runs.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from txsetup.master.fleetlog import TRANSITIONS
from txsetup_docs.nodes import depend_on_package, table
from txsetup_docs.transaction import graph

_ENDS = ("committed", "aborted", "reverted")


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def fleet_dot() -> str:
    """Stages as boxes (the ends doubled), moves as arrows labelled with their condition."""
    lines = [
        "digraph fleet {",
        "rankdir=LR; node [shape=box, style=rounded, fontname=sans, fontsize=10];",
        "edge [fontname=sans, fontsize=8];",
        *(f"{_quote(end)} [shape=doubleoctagon];" for end in _ENDS),
    ]
    for move in TRANSITIONS:
        label = move.when.replace(", or ", ",\\nor ").replace(" and ", "\\nand ")
        lines.append(f"{_quote(move.before)} -> {_quote(move.after)} [label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines)


class FleetProtocol(SphinxDirective):
    """``{fleet-protocol}``: the diagram, then the table of moves."""

    def run(self) -> list[nodes.Node]:
        """The diagram, then the table."""
        depend_on_package(self.env)
        rows = [[f"`{m.before}`", f"`{m.after}`", m.when] for m in TRANSITIONS]
        return [
            graph(fleet_dot(), self.env.docname, "the stages of an atomic push"),
            table(("recorded stage", "next stage", "when"), rows),
        ]


def setup(app: Sphinx) -> None:
    """Register the directive."""
    app.add_directive("fleet-protocol", FleetProtocol)
