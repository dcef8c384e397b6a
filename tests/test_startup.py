"""What a node run imports: only what it uses, even with the master's ``rich`` installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import encode, make_document, txsetup_exe
from txsetup._structlog import OPTIONAL

# Runs the installed console script in this interpreter, exactly as its own file says,
# and writes the names of every module loaded when the process exits.
_RUN_AND_LIST_MODULES = """
import atexit, runpy, sys
out, script, *args = sys.argv[1:]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def _python(code: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def rich_installed() -> None:
    """The test environment holds rich, as a master candidate does; without it nothing is shown."""
    assert importlib.util.find_spec("rich") is not None, "rich must be installed for these tests"


def _top(name: str) -> str:
    return name.partition(".")[0]


def test_node_run_does_not_import_rich(rich_installed: None, tmp_path: Path, node_pem: str) -> None:
    """A node-daemon-setup run loads structlog but none of its optional packages, rich included."""
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()
    listed = tmp_path / "modules"
    argv = [str(listed), txsetup_exe(), "node-daemon-setup", "--dry-run", "--root", str(root)]
    proc = _python(_RUN_AND_LIST_MODULES, *argv, stdin=encode(make_document(node_pem)))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert json.loads(proc.stdout)["outcome"] == "dry_run"
    modules = set(listed.read_text().split())
    assert {"structlog", "structlog.dev", "txsetup.cli"} <= modules  # where rich was probed for
    assert sorted(m for m in modules if _top(m) in OPTIONAL) == []
    assert not any(m.startswith("txsetup.master") for m in modules)


def test_rich_still_imports_after_the_node_path(rich_installed: None) -> None:
    """The push view's own ``import rich`` still finds the package once txsetup is loaded."""
    code = (
        "import sys, txsetup.cli, structlog.dev\n"
        "assert 'rich' not in sys.modules and structlog.dev.rich is None\n"
        "import io\n"
        "from txsetup.master.progress import LiveView\n"
        "LiveView(io.StringIO())\n"
        "print(sys.modules['rich.live'].__name__)"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["rich.live"]


def test_structlog_imported_first_keeps_rich(rich_installed: None) -> None:
    """A program that imports structlog before txsetup keeps structlog's rich tracebacks."""
    code = "import structlog.dev, txsetup.cli\nprint(structlog.dev.rich is not None)"
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["True"]
