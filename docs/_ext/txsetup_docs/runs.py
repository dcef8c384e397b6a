"""Running the installed ``txsetup`` for an example, and showing what it printed.

Shared by the modules that make examples: each run gets its own temporary
root, which the shown output names ``/srv/node`` (the path a reader would
use), and a result object, one line as printed, is laid out one key a line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def run(root: Path, args: list[str], document: object | None) -> subprocess.CompletedProcess[str]:
    """``txsetup ARGS --root ROOT`` with ``document`` as JSON on stdin (nothing when None)."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [_txsetup(), *args, "--root", str(root)],
        input=json.dumps(document) if document is not None else "",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def shown(text: str, root: Path) -> str:
    """``text`` with the temporary root read as ``/srv/node``, without the final newline."""
    return text.replace(str(root), SHOWN_ROOT).rstrip("\n")


def result(text: str, root: Path) -> str:
    """The result object on stdout, one key a line (it is one line as printed)."""
    return shown(readable(json.loads(text)), root)


def readable(found: dict[str, object]) -> str:
    """``found`` as JSON with one key a line, and a list of objects one object a line."""
    lines = []
    for key, value in found.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {json.dumps(item)}" for item in value)
            laid_out = f"[\n{items}\n  ]"
        else:
            laid_out = json.dumps(value)
        lines.append(f"  {json.dumps(key)}: {laid_out}")
    return "{\n" + ",\n".join(lines) + "\n}"
