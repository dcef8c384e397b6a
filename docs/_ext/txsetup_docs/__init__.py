"""The site's own Sphinx extension: pages generated from the code, never typed by hand.

- ``transaction``: the step tables and the recovery rules as diagrams and tables;
- ``fleet``: the atomic push's stages and moves as a diagram and a table;
- ``schema``: field tables from the published JSON Schemas;
- ``examples``: outputs of real runs of the installed ``txsetup``, made during the build;
- links from pages under ``docs/`` to the benchmark results under ``bench/``
  resolve to the site's copies of those files (``bench/*.md`` are included
  into ``docs/bench/``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

from txsetup_docs import examples, fleet, schema, transaction

# Pages link `../bench/results.md` (right on a forge); in the site that page is `bench/results`.
_TO_BENCH = re.compile(r"\]\(\.\./bench/([\w.-]+\.md)")
# bench/*.md link back with `../docs/page.md`, and to their own Python files.
_TO_DOCS = re.compile(r"\]\(\.\./docs/")
_TO_SOURCE = re.compile(r"\[`?([\w.-]+\.py)`?\]\(([\w.-]+\.py)\)")


def _docs_links(_app: Sphinx, docname: str, source: list[str]) -> None:
    """Point a page's links to ``../bench/*.md`` at the site's copy, so they work in both places."""
    if "/" not in docname:
        source[0] = _TO_BENCH.sub(r"](bench/\1", source[0])


def _bench_links(
    _app: Sphinx, relative_path: Path, _parent_docname: str, content: list[str]
) -> None:
    """In an included ``bench/*.md``: links back to ``docs/`` resolve, source files are named."""
    if relative_path.parent.name == "bench":
        text = _TO_DOCS.sub("](../", content[0])
        content[0] = _TO_SOURCE.sub(r"`bench/\2`", text)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the link rewriting."""
    app.connect("source-read", _docs_links)
    app.connect("include-read", _bench_links)
    transaction.setup(app)
    fleet.setup(app)
    schema.setup(app)
    examples.setup(app)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
