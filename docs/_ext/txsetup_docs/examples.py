"""``{txsetup-example} NAME``: the output of a real run of the installed ``txsetup``.

Once per build, in a temporary root, with a certificate and a payload made by
the demo's own helpers (``start_node_daemon`` false: no daemon to run), the
console script runs as a master runs it: a dry run, a committed run with JSON
logs, a run this node refuses (another cluster: exit 4), and ``txsetup
status``, the same document again (converged) and ``--resume`` (nothing to
resume: it names the converged run); then, on fresh roots and with
``--log-format console`` (no colour: stderr is a pipe), a committed run, a
refusal, a run whose daemon restart fails and is rolled back (exit 6), and
one whose undo's restart fails too (exit 8). The runs that need a configuration or a
document of their own (an unfinished transaction and its resume, an invalid
configuration file, ssh-setup) are in ``configured``. Each example is one of
those outputs as it came, except that the temporary root reads ``/srv/node``
and the one-line result object is laid out for reading (one key a line). A
changed output format changes the pages with it.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from txsetup.demo.__main__ import CLUSTER, payload
from txsetup.demo.certs import generate_node_certificate
from txsetup_docs import configured
from txsetup_docs.nodes import depend_on_package, paragraph
from txsetup_docs.runs import Example, result, run, shown


@cache
def examples() -> dict[str, Example]:
    """Run every example once per build."""
    with tempfile.TemporaryDirectory(prefix="txsetup-docs-") as tmp:
        root = Path(tmp) / "node"
        pem = generate_node_certificate(CLUSTER)
        document = {**payload(pem), "start_node_daemon": False}
        stranger = {**document, "cluster_name": "other.example.com"}
        stranger["ssconf"] = {**document["ssconf"], "cluster_name": "other.example.com"}
        # The exit 8 example's document: a new master IP, and the daemon to restart.
        update = {**document, "start_node_daemon": True}
        update["ssconf"] = {**document["ssconf"], "master_ip": "192.0.2.77"}
        nds = "txsetup node-daemon-setup"
        dry = run(root, ["node-daemon-setup", "--dry-run", "--log-format", "json"], document)
        real = run(root, ["node-daemon-setup", "--log-format", "json"], document)
        refused = run(root, ["node-daemon-setup", "--log-format", "json"], stranger)
        status = run(root, ["status"], None)
        # The same document again converges; --resume then names that run.
        run(root, ["node-daemon-setup", "--log-format", "json"], document)
        nothing = run(root, ["node-daemon-setup", "--resume", "--log-format", "json"], None)
        return {
            **_console_examples(Path(tmp) / "console", document, stranger, update),
            **configured.configured_examples(Path(tmp) / "configured", document),
            "dry-run": Example(
                f"{nds} --dry-run < payload.json",
                dry.returncode,
                result(dry.stdout, root),
                "stdout",
            ),
            "committed": Example(
                f"{nds} < payload.json", real.returncode, result(real.stdout, root), "stdout"
            ),
            "committed-log": Example(
                f"{nds} < payload.json", real.returncode, shown(real.stderr, root), "stderr"
            ),
            "refused": Example(
                f"{nds} < other-cluster.json",
                refused.returncode,
                result(refused.stdout, root),
                "stdout",
            ),
            "refused-log": Example(
                f"{nds} < other-cluster.json",
                refused.returncode,
                shown(refused.stderr, root),
                "stderr",
            ),
            "status": Example(
                "txsetup status", status.returncode, result(status.stdout, root), "stdout"
            ),
            "resume-nothing": Example(
                f"{nds} --resume", nothing.returncode, result(nothing.stdout, root), "stdout"
            ),
        }


# A daemon whose restart fails: the run is rolled back. No health check, nothing stopped.
_FAILING_DAEMON = '[daemon]\nrestart = [["false"]]\nstop = [["true"]]\nstatus = ["false"]\n'
_FAILING_DAEMON += 'health_url = "none"\n'
# The same, with a daemon that was running: the undo's restart fails too (exit 8).
_STUCK_DAEMON = _FAILING_DAEMON.replace('status = ["false"]', 'status = ["true"]')


def _console_examples(
    base: Path, document: dict[str, object], stranger: dict[str, object], update: dict[str, object]
) -> dict[str, Example]:
    """The console view of a commit, a refusal, a rollback and an exit 8, each on a fresh root."""
    console = ["node-daemon-setup", "--log-format", "console"]
    nds = "txsetup node-daemon-setup"
    fresh = run(base / "fresh", console, document)
    refused = run(base / "fresh", console, stranger)
    config = base / "failing.toml"
    config.write_text(_FAILING_DAEMON)
    failing = run(
        base / "failing",
        [*console, "--config", str(config)],
        {
            **document,
            "start_node_daemon": True,
        },
    )
    # Exit 8: the root's own configuration (no --config), so the command it names is short.
    run(base / "stuck", console, document)
    stuck_config = base / "stuck/etc/txsetup/config.toml"
    stuck_config.parent.mkdir(parents=True)
    stuck_config.write_text(_STUCK_DAEMON)
    stuck = run(base / "stuck", console, update)
    return {
        name: Example(command, ran.returncode, shown(ran.stderr, root), "console")
        for name, command, ran, root in (
            ("console-committed", f"{nds} < payload.json", fresh, base / "fresh"),
            ("console-refused", f"{nds} < other-cluster.json", refused, base / "fresh"),
            (
                "console-rolled-back",
                f"{nds} --config failing.toml < payload.json",
                failing,
                base / "failing",
            ),
            ("console-manual-help", f"{nds} < new-master-ip.json", stuck, base / "stuck"),
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
