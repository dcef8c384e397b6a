"""Sphinx configuration: the Markdown pages under ``docs/`` as a site and three man pages.

The local extensions in ``_ext`` generate what would otherwise drift: the
transaction page from the step tables and the recovery rules, the field
tables from the JSON Schemas, and example outputs from real runs of the
installed ``txsetup``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from txsetup import __version__  # noqa: E402  (after the path set-up, like every conf.py)

project = "txsetup"
author = "the txsetup authors"
copyright = "the txsetup authors, Apache-2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.graphviz",
    "txsetup_docs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", ".venv"]
# `page.md#some-heading` links, as GitHub renders them, resolve in the site too.
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]
# Fenced blocks in languages Pygments does not know are shown plain, not as a warning.
suppress_warnings = ["misc.highlighting_failure"]

html_theme = "furo"
html_title = f"txsetup {release}"
# The JSON Schemas are published as they are, next to the pages that describe them.
html_extra_path = [
    "log-events.schema.json",
    "node-daemon-setup.schema.json",
    "result.schema.json",
    "ssh-setup.schema.json",
]
graphviz_output_format = "svg"

man_pages: list[tuple[str, str, str, list[str], int]] = [
    ("man/txsetup", "txsetup", "transactional node set-up for a cluster", [], 8),
    (
        "man/node-daemon-setup",
        "node-daemon-setup",
        "install the node daemon's files as one crash-safe transaction",
        [],
        8,
    ),
    (
        "man/prepare-node-join",
        "prepare-node-join",
        "install a node's SSH keys as one crash-safe transaction",
        [],
        8,
    ),
]
man_show_urls = False
