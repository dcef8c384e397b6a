"""What the directives share: tables and inline code from plain text, and rebuild triggers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from docutils import nodes
from sphinx.environment import BuildEnvironment

import txsetup

_CODE = re.compile(r"`([^`]+)`")


def inline(text: str) -> list[nodes.Node]:
    """``text`` as nodes, with each `backticked` part as inline code."""
    parts: list[nodes.Node] = []
    for index, piece in enumerate(_CODE.split(text)):
        if index % 2:
            parts.append(nodes.literal(piece, piece))
        elif piece:
            parts.append(nodes.Text(piece))
    return parts


def paragraph(text: str) -> nodes.paragraph:
    """One paragraph of ``text`` (backticks as inline code)."""
    return nodes.paragraph("", "", *inline(text))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> nodes.table:
    """A table whose cells are plain text with inline code."""
    group = nodes.tgroup(cols=len(header))
    group.extend(nodes.colspec(colwidth=1) for _ in header)
    head = nodes.thead()
    head.append(_row(header))
    body = nodes.tbody()
    body.extend(_row(row) for row in rows)
    group.extend([head, body])
    return nodes.table("", group)


def _row(cells: Sequence[str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry.append(paragraph(cell))
        row.append(entry)
    return row


def depend_on_package(env: BuildEnvironment) -> None:
    """Rebuild the current page whenever a txsetup source file changes.

    A page generated from the code (or from running it) is out of date as soon
    as the code is, although its own Markdown did not change.
    """
    for source in sorted(Path(txsetup.__file__).parent.rglob("*.py")):
        env.note_dependency(str(source))
