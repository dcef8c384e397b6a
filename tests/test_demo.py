"""The README's first command: ``python -m txsetup.demo`` (what ``nox -s demo`` runs)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import check_log_lines, require_tool

STEPS = ("lock", "decode", "verify_cluster", "verify_cert", "stage", "commit", "restart_daemon")


@pytest.mark.system
def test_demo_tells_every_scenario_and_the_push_in_a_screenful() -> None:
    """One line per scenario, each done; the install as an operator sees it; logs kept."""
    require_tool("sshd")
    proc = subprocess.run(
        [sys.executable, "-m", "txsetup.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr
    lines = out.splitlines()
    assert len(lines) <= 30, out
    told = [line for line in lines if re.match(r"^  [✓✗-] ", line)]
    assert [line.split()[1] for line in told] == ["dry", "install", "same", "refused", "push,"]
    assert all(line.startswith("  ✓ ") for line in told), out
    assert "3 of 3 committed over 3 ssh connections" in told[-1]
    assert "rolled back (exit 6)" in told[3]

    view = [line.strip() for line in lines if line.startswith("    ")]
    for step in STEPS:
        assert len([line for line in view if re.match(rf"^✓ {step}\s", line)]) == 1, view
    assert re.match(r"^✓ committed · txid \S+ · 14 files changed · ", view[-1]), view
    assert not re.search(r"\b(?:step|txn|compensate)\.[a-z_]+", out)

    kept = Path(lines[-1].rsplit(" ", 1)[-1])
    try:
        logs = sorted(kept.glob("*.jsonl"))
        assert [p.name.split("-", 1)[1] for p in logs] == [
            "dry-run.jsonl",
            "install.jsonl",
            "same-again.jsonl",
            "refused.jsonl",
            "push.jsonl",
        ]
        for log in logs:
            assert check_log_lines(log.read_text()), log
    finally:
        shutil.rmtree(kept, ignore_errors=True)
