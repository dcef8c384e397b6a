"""``{txsetup-example} NAME``: the output of a real run of the installed ``txsetup``.

Once per build, in a temporary root, with a certificate and a payload made by
the demo's own helpers (``start_node_daemon`` false: no daemon to run), the
console script runs as a master runs it: a dry run, a committed run with JSON
logs, a run this node refuses (another cluster: exit 4), and ``txsetup
status``; then, on fresh roots and with ``--log-format console`` (no colour:
stderr is a pipe), a committed run, a refusal, and a run whose daemon restart
fails and is rolled back (exit 6). Each example is one of those outputs as it came, except that the
temporary root reads ``/srv/node`` and the one-line result object is laid out
for reading (one key a line). A changed output format changes the pages with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from txsetup.demo.__main__ import CLUSTER, payload
from txsetup.demo.certs import generate_node_certificate
from txsetup_docs.nodes import depend_on_package, paragraph

SHOWN_ROOT = "/srv/node"


@dataclass(frozen=True)
class Example:
    """One run: the command as an operator types it, its exit code and what it printed."""

    command: str
    exit_code: int
    output: str
    stream: str


def _txsetup() -> str:
    found = Path(sys.executable).with_name("txsetup")
    return str(found) if found.exists() else shutil.which("txsetup") or "txsetup"


def _run(root: Path, args: list[str], document: object | None) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [_txsetup(), *args, "--root", str(root)],
        input=json.dumps(document) if document is not None else "",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _shown(text: str, root: Path) -> str:
    return text.replace(str(root), SHOWN_ROOT).rstrip("\n")


def _result(text: str, root: Path) -> str:
    """The result object on stdout, one key a line (it is one line as printed)."""
    return _shown(readable(json.loads(text)), root)


def readable(result: dict[str, object]) -> str:
    """``result`` as JSON with one key a line, and a list of objects one object a line."""
    lines = []
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {json.dumps(item)}" for item in value)
            shown = f"[\n{items}\n  ]"
        else:
            shown = json.dumps(value)
        lines.append(f"  {json.dumps(key)}: {shown}")
    return "{\n" + ",\n".join(lines) + "\n}"


@cache
def examples() -> dict[str, Example]:
    """Run every example once per build."""
    with tempfile.TemporaryDirectory(prefix="txsetup-docs-") as tmp:
        root = Path(tmp) / "node"
        pem = generate_node_certificate(CLUSTER)
        document = {**payload(pem), "start_node_daemon": False}
        stranger = {**document, "cluster_name": "other.example.com"}
        stranger["ssconf"] = {**document["ssconf"], "cluster_name": "other.example.com"}
        nds = "txsetup node-daemon-setup"
        dry = _run(root, ["node-daemon-setup", "--dry-run", "--log-format", "json"], document)
        real = _run(root, ["node-daemon-setup", "--log-format", "json"], document)
        refused = _run(root, ["node-daemon-setup", "--log-format", "json"], stranger)
        status = _run(root, ["status"], None)
        return {
            **_console_examples(Path(tmp) / "console", document, stranger),
            "dry-run": Example(
                f"{nds} --dry-run < payload.json",
                dry.returncode,
                _result(dry.stdout, root),
                "stdout",
            ),
            "committed": Example(
                f"{nds} < payload.json", real.returncode, _result(real.stdout, root), "stdout"
            ),
            "committed-log": Example(
                f"{nds} < payload.json", real.returncode, _shown(real.stderr, root), "stderr"
            ),
            "refused": Example(
                f"{nds} < other-cluster.json",
                refused.returncode,
                _result(refused.stdout, root),
                "stdout",
            ),
            "refused-log": Example(
                f"{nds} < other-cluster.json",
                refused.returncode,
                _shown(refused.stderr, root),
                "stderr",
            ),
            "status": Example(
                "txsetup status", status.returncode, _result(status.stdout, root), "stdout"
            ),
        }


# A daemon whose restart fails: the run is rolled back. No health check, nothing stopped.
_FAILING_DAEMON = '[daemon]\nrestart = [["false"]]\nstop = [["true"]]\nstatus = ["false"]\n'
_FAILING_DAEMON += 'health_url = "none"\n'


def _console_examples(
    base: Path, document: dict[str, object], stranger: dict[str, object]
) -> dict[str, Example]:
    """The console view of a commit, a refusal and a rollback, each on a fresh root."""
    console = ["node-daemon-setup", "--log-format", "console"]
    nds = "txsetup node-daemon-setup"
    fresh = _run(base / "fresh", console, document)
    refused = _run(base / "fresh", console, stranger)
    config = base / "failing.toml"
    config.write_text(_FAILING_DAEMON)
    failing = _run(
        base / "failing",
        [*console, "--config", str(config)],
        {
            **document,
            "start_node_daemon": True,
        },
    )
    return {
        name: Example(command, run.returncode, _shown(run.stderr, root), "console")
        for name, command, run, root in (
            ("console-committed", f"{nds} < payload.json", fresh, base / "fresh"),
            ("console-refused", f"{nds} < other-cluster.json", refused, base / "fresh"),
            (
                "console-rolled-back",
                f"{nds} --config failing.toml < payload.json",
                failing,
                base / "failing",
            ),
        )
    }


class TxsetupExample(SphinxDirective):
    """Show one example: the command, its exit code, and its stdout or stderr."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """A line naming the command, then its output as a code block."""
        depend_on_package(self.env)
        name = self.arguments[0]
        found = examples().get(name)
        if found is None:
            raise self.error(f"no example {name!r}; there are {', '.join(sorted(examples()))}")
        what, language = {
            "stderr": ("JSON log lines on stderr", "json"),
            "stdout": ("the result on stdout", "json"),
            "console": ("the console view on stderr", "text"),
        }[found.stream]
        block = nodes.literal_block(found.output, found.output, language=language)
        return [paragraph(f"`{found.command}` (exit {found.exit_code}), {what}:"), block]


def setup(app: Sphinx) -> None:
    """Register ``{txsetup-example}``."""
    app.add_directive("txsetup-example", TxsetupExample)
