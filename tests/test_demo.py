"""The README's first command: ``python -m txsetup.demo`` (what ``nox -s demo`` runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import require_tool


@pytest.mark.system
def test_demo_runs_every_scenario_and_the_push() -> None:
    """The demo passes every check it prints, the push to loopback sshd nodes included."""
    require_tool("sshd")
    proc = subprocess.run(
        [sys.executable, "-m", "txsetup.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    checks = [line for line in proc.stdout.splitlines() if line.strip().startswith("[")]
    assert len(checks) == 8
    assert all("[ok]" in line for line in checks)
    assert "push: 3 nodes committed over 3 ssh connections" in proc.stdout
