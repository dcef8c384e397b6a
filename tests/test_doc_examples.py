"""The example outputs the docs keep as text have the shape of real output.

Most example outputs in ``docs/`` are made by running txsetup while the site
is built. Four are text: a ``txsetup push`` result line (a real push needs
ssh), a journal record (a file txsetup writes, not prints), the outline of a
successful run's events in ``operations.md`` (it names alternatives, no
single run shows them all), and the demo node daemon's greeting in
``configuration.md`` (no daemon is started while the site is built). Each is
compared here with the same thing from a real run, so a renamed, added,
dropped or reordered key or event fails a test instead of leaving the page
wrong.

The push runs the installed ``txsetup push`` with ``--ssh`` pointing at a
stand-in for the ssh client: it drops ssh's own arguments and runs the
remote command line with ``sh -c``, as sshd runs it through the user's
shell. Everything else, the node's run included, is the real program.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, encode, make_document, txsetup_exe
from tests.test_daemon import Noded, free_port
from tests.test_push import write_master
from txsetup.txn.journal import Record, read_journal

DOCS = REPO / "docs"
# A fenced block: its info string and its text.
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# ssh's arguments end at "--"; sshd hands the rest to the user's shell as one line. A
# master connection (-N) and its end (-O exit) have no "--": the stand-in has nothing to do.
STAND_IN_SSH = (
    '#!/bin/sh\ncase " $* " in *" -- "*) ;; *) exit 0;; esac\n'
    'while [ "$1" != "--" ]; do shift; done\nshift\nexec sh -c "$*"\n'
)


def block_after(page: str, marker: str) -> str:
    """The text of the first fenced block after the first line of ``page`` holding ``marker``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(marker)
    found = _FENCE.search(text, start)
    assert found is not None, f"no fenced block after {marker!r} in {page}"
    return found.group(2)


def shape(value: Any) -> Any:
    """The keys of an object and the JSON type of each value, objects recursively."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def test_shape_sees_a_renamed_key_and_a_changed_type() -> None:
    """The comparison below can fail: a key renamed or a value of another type differs."""
    real = {"txid": "t", "result": {"exit_code": 0, "steps": []}}
    assert shape(real) == shape({"txid": "u", "result": {"exit_code": 6, "steps": ["..."]}})
    assert shape(real) != shape({"tx_id": "t", "result": {"exit_code": 0, "steps": []}})
    assert shape(real) != shape({"txid": "t", "result": {"exit_code": "0", "steps": []}})
    assert shape(real) != shape({"txid": "t", "result": {"exit_code": 0}})


@pytest.fixture
def ssh(tmp_path: Path) -> Path:
    """The stand-in ssh client."""
    path = tmp_path / "ssh"
    path.write_text(STAND_IN_SSH)
    path.chmod(0o755)
    return path


def test_push_md_result_line_has_the_shape_of_a_real_one(
    tmp_path: Path, node_pem: str, ssh: Path
) -> None:
    """push.md's stdout example: the keys and value types of a real committed node's line."""
    master = write_master(tmp_path / "master", node_pem)
    node = tmp_path / "node"
    node.mkdir()
    pushed = subprocess.run(
        [
            txsetup_exe(),
            "push",
            "--from-root",
            str(master),
            "--ssh",
            str(ssh),
            "--remote-command",
            f"{txsetup_exe()} node-daemon-setup --root {node}",
            "--no-start-node-daemon",
            "--log-format",
            "json",
            "admin@node2:2222",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    (line,) = pushed.stdout.splitlines()
    real = json.loads(line)
    assert (real["outcome"], real["result"]["outcome"]) == ("committed", "committed")
    assert (node / "var/lib/ganeti/server.pem").read_text() == node_pem
    shown = json.loads(block_after("push.md", "**stdout**: one JSON line per node"))
    assert shape(shown) == shape(real)
    assert list(shown) == list(real), "the example's keys are in the order push prints them"
    assert list(shown["result"]) == list(real["result"])


def test_journal_md_record_is_a_real_begun_record(tmp_path: Path, node_pem: str) -> None:
    """journal.md's example line: its checksum holds, and a real ``begun`` has the same keys."""
    root = tmp_path / "root"
    root.mkdir()
    ran = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root)],
        input=encode(make_document(node_pem)),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    real = read_journal(root / "var/lib/txsetup/journal")[0]
    example = block_after("journal.md", "carries `txid` and `state`. For example")
    shown = Record.decode(example.encode())
    assert shown is not None, f"journal.md's record does not decode: {example!r}"
    assert (shown.state, shape(dict(shown.data))) == (real.state, shape(dict(real.data)))
    assert shown.encode().decode() == example, "the record is not laid out as txsetup writes it"


# operations.md's outline of a successful run: an event, maybe a step, maybe its fields.
_OUTLINE_ITEM = re.compile(r"([a-z]+\.[a-z_]+)(?: ([a-z_]+))?(?:\s+\(([^)]*)\))?")
# Fields in parentheses: "(outcome, exit_code, duration_ms)" or "(changed: ...)".
_FIELDS = re.compile(r"^(\w+(?:, \w+)*)$|^(\w+):")


def outline(text: str) -> list[tuple[str, str | None, set[str]]]:
    """The outline's items in order: event, step (None when not named), fields named.

    Of alternatives (``A or B``) the first is taken; a parenthesis that is a
    remark, not a field list, names no fields.
    """
    items = []
    for line in text.splitlines():
        first = re.split(r"\s{2,}or\s{2,}", line)[0]
        for event, step, remark in _OUTLINE_ITEM.findall(first):
            fields = _FIELDS.match(remark)
            named = (fields[1] or fields[2]).split(", ") if fields else []
            items.append((event, step or None, set(named)))
    return items


def test_outline_reads_events_steps_and_fields() -> None:
    """The parser of the outline below finds what the outline says."""
    assert outline(
        "step.begin stage / step.end stage        (changed: true when files change)\n"
        "txn.committed (changed: [...])   or   txn.converged\n"
        "step.begin lock          (txn.recovered here if a crash was recovered)\n"
        "txn.end (outcome, exit_code)\n"
    ) == [
        ("step.begin", "stage", set()),
        ("step.end", "stage", {"changed"}),
        ("txn.committed", None, {"changed"}),
        ("step.begin", "lock", set()),
        ("txn.end", None, {"outcome", "exit_code"}),
    ]


def test_operations_md_outline_follows_a_real_successful_run(root: Path, node_pem: str) -> None:
    """Each event of the outline, in its order, with the step and the fields it names."""
    ran = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--root", str(root), "--log-format", "json"],
        input=encode(make_document(node_pem)),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stderr.splitlines()]
    expected = outline(block_after("operations.md", "A successful run reads:"))
    assert len(expected) >= 10, expected
    remaining = iter(events)
    for event, step, fields in expected:
        found = next(
            (e for e in remaining if e["event"] == event and step in (None, e.get("step"))), None
        )
        assert found is not None, f"{event} {step or ''} is not where the outline puts it"
        assert fields <= found.keys(), f"{event} {step or ''} lacks {fields - found.keys()}"


def test_configuration_md_greeting_is_what_the_demo_daemon_sends(
    tmp_path: Path, node_pem: str
) -> None:
    """The demo node daemon's one JSON line: the keys and the daemon's name the page gives."""
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    found = re.search(r"one JSON line \(`(\{[^`]*\})`\)", page)
    assert found is not None, "configuration.md no longer shows the demo daemon's line"
    shown = found[1]
    daemon = Noded(tmp_path / "root", free_port())
    daemon.install(node_pem)
    try:
        started = daemon("start")
        assert started.returncode == 0, started.stderr
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            greeting = json.loads(tls.makefile("rb").readline())
    finally:
        daemon("stop")
    assert re.findall(r'"(\w+)":', shown) == list(greeting)
    assert f'"daemon": "{greeting["daemon"]}"' in shown
    assert greeting["pid"] > 0
