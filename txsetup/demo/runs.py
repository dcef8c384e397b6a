"""How the demo runs the CLI and tells what happened: one line per scenario, logs kept.

Each run's JSON log goes to a file in a kept directory rather than to the
screen, so the screen can tell the story in a screenful while every detail
stays at hand. :func:`console_view` renders a run's JSON log with the
console renderer, so the demo shows the operator's view of a run without a
second run, and shows the JSON and the console say the same.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog import DropEvent

from txsetup.console import ConsoleRenderer, speaks_unicode, wants_colour

__all__ = ["Runs", "Told", "console_view"]


@dataclass
class Told:
    """One scenario as the demo tells it: a name, whether it did what it should, in words."""

    name: str
    ok: bool
    words: str
    skipped: bool = False

    def line(self) -> str:
        """``✓ name  words``: one line of the story (``-`` when it could not run here)."""
        mark = "-" if self.skipped else "✓" if self.ok else "✗"
        return f"  {mark} {self.name:<17} {self.words}"


class Runs:
    """The demo's runs of the installed CLI, each one's JSON log kept in ``logs``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.count = 0

    def next_log(self, name: str) -> Path:
        """The file for the next run's JSON log: numbered in the order the runs ran."""
        self.count += 1
        return self.logs / f"{self.count:02d}-{name}.jsonl"

    def txsetup(
        self, name: str, root: Path, *args: str, document: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run ``txsetup *args --root root`` as a master does; its result and its log events."""
        log = self.next_log(name)
        exe = Path(sys.executable).with_name("txsetup")
        stdin = json.dumps(document).encode() if document is not None else b""
        with log.open("wb") as stderr:
            proc = subprocess.run(
                [str(exe), *args, "--root", str(root), "--log-format", "json"],
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                check=False,
            )
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        result: dict[str, Any] = json.loads(proc.stdout)
        return result, events


def console_view(events: list[dict[str, Any]]) -> list[str]:
    """The console view of a run, rendered from its JSON log: the two never diverge."""
    renderer = ConsoleRenderer(colors=wants_colour(sys.stdout), unicode=speaks_unicode(sys.stdout))
    lines = []
    for event in events:
        with contextlib.suppress(DropEvent):
            lines.append(renderer(None, "info", dict(event)))
    return [f"    {line}" for text in lines for line in text.splitlines()]
