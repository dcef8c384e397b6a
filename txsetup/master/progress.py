"""Showing a push as it happens: JSON lines for programs, a live view for people.

* :class:`JsonView` (stderr is not a terminal, or ``--log-format json``):
  every node's own log line re-emitted as it came, with a ``node`` field
  added; the push's own events (``node.begin``, ``node.output``,
  ``node.end``, ``push.begin``, ``push.end``) as txsetup log lines.
* :class:`LiveView` (a terminal): a live row per running node — its current
  step and elapsed time — with each finished node printed above the rows in
  colour, and a closing summary. It uses ``rich`` (the ``txsetup[master]``
  extra) when installed; :class:`PlainView` prints plain lines otherwise.

Every view runs key material through the same processor the node's logs
use, so a line from a misbehaving node cannot leak a key through the master.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from txsetup.log import get_logger, refuse_key_material
from txsetup.master.nextstep import Rerun
from txsetup.master.push import NodeEvent
from txsetup.master.results import NodeResult, PushReport

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["JsonView", "PlainView", "View", "make_view", "summary_lines"]

GOOD = frozenset({"committed", "converged", "resumed", "nothing_to_resume", "dry_run"})
# What an atomic push's phases answer when they took effect.
GOOD_PHASES = frozenset({"prepared", "aborted", "confirmed", "reverted"})
_STYLE = {"rolled_back": "yellow", "interrupted": "magenta", "not_started": "magenta"}
_NAMED = 10  # failed nodes named per outcome in the summary; the results file has them all


class View(Protocol):
    """What the CLI feeds a view: every event, and the report at the end."""

    def begin(self, total: int) -> None: ...
    def on_event(self, event: NodeEvent) -> None: ...
    def end(self, report: PushReport) -> None: ...


def make_view(fmt: str, stream: TextIO, rerun: Rerun | None = None) -> View:
    """The view for ``--log-format`` ``json`` or ``console`` (rich when installed).

    ``rerun`` gives the closing summary its next command.
    """
    rerun = rerun or Rerun()
    if fmt == "json":
        return JsonView(stream, rerun)
    try:
        return LiveView(stream, rerun)
    except ImportError:
        return PlainView(stream, rerun)


class JsonView:
    """JSON lines on stderr; node lines keep their own fields, plus ``node``."""

    def __init__(self, stream: TextIO, rerun: Rerun | None = None) -> None:
        self._stream = stream
        self._rerun = rerun or Rerun()
        self._started = time.monotonic()

    def begin(self, total: int) -> None:
        """Log ``push.begin``."""
        self._started = time.monotonic()
        get_logger().info("push.begin", nodes=total)

    def on_event(self, event: NodeEvent) -> None:
        """Write the node's line as it came, or log the push's event."""
        fields = {k: v for k, v in event.fields.items() if k != "event"}
        if event.from_node:
            line = refuse_key_material(None, "", {**event.fields, "node": event.node})
            try:
                self._stream.write(json.dumps(line) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # nobody reads stderr any more: results still go to stdout
            return
        log = get_logger().bind(node=event.node) if event.node else get_logger()
        if event.event == "node.end" and fields.get("exit_code") != 0:
            log.error(event.event, **fields)
        else:
            log.info(event.event, **fields)

    def end(self, report: PushReport) -> None:
        """Log ``push.end``: the count of each outcome, and the next command if any."""
        step = self._rerun.next_step(report)
        more: dict[str, Any] = (
            {"next_command": step.command, "next_words": step.words} if step else {}
        )
        if report.fleet is not None:
            more["fleet"] = report.fleet
        get_logger().info(
            "push.end",
            counts=report.counts(),
            interrupted=report.interrupted,
            duration_ms=int((time.monotonic() - self._started) * 1000),
            **more,
        )


@dataclass
class _Running:
    started: float = field(default_factory=time.monotonic)
    step: str = "connecting"
    phase: str | None = None


def _doing(fields: dict[str, Any] | Any) -> str | None:
    """What a node's log line says it is doing now, in a few words."""
    name = fields.get("event")
    if name == "step.begin":
        return str(fields.get("step"))
    if name == "compensate.begin":
        return f"undo {fields.get('step')}"
    if name == "txn.recovered":
        return f"recovered {fields.get('recovered_txid')}"
    return None


def _good(result: NodeResult) -> bool:
    return result.outcome in GOOD or (result.ok and result.outcome in GOOD_PHASES)


def _finished_line(result: NodeResult, phase: str | None = None) -> str:
    mark = "✓" if _good(result) else "✗"
    said = f"{phase}: " if phase else ""
    text = f"{mark} {result.node}  {said}{result.outcome}  {result.duration_ms / 1000:.1f}s"
    if result.error and not _good(result):
        text += f"  {result.error}"
    return text


def summary_lines(report: PushReport, total: int, rerun: Rerun | None = None) -> list[str]:
    """The closing summary: counts per outcome, the failed nodes by outcome, what next.

    Each failed node's error was shown once, on its line as it finished; the
    summary names the nodes only.
    """
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts().items()))
    head = f"{len(report.results)}/{total} nodes: {counts or 'none'}"
    if report.interrupted:
        head += " (interrupted)"
    lines = [head]
    if report.fleet is not None:
        lines.insert(0, fleet_line(report.fleet))
    by_outcome: dict[str, list[str]] = {}
    for result in report.failed:
        by_outcome.setdefault(result.outcome, []).append(result.node)
    for outcome, nodes in by_outcome.items():
        more = f" and {len(nodes) - _NAMED} more" if len(nodes) > _NAMED else ""
        lines.append(f"  {outcome}: {', '.join(nodes[:_NAMED])}{more}")
    step = (rerun or Rerun()).next_step(report)
    if step is not None:
        lines.append(f"{'next' if report.interrupted else 'retry just these'}: {step.command}")
        lines.append(f"  {step.words}")
    return lines


def _decided_line(fields: Mapping[str, Any]) -> str:
    """An atomic push's decision or confirmation, the moment it is durable."""
    what = "decided" if fields.get("record") == "decision" else "confirmation"
    return f"» {what}: {fields.get('decision')} ({fields.get('reason')})"


def fleet_line(fleet: dict[str, Any]) -> str:
    """An atomic push's end in words: its outcome and the decisions that led there."""
    decided = ", ".join(
        f"{name} {fleet[name]}" for name in ("decision", "confirmation") if fleet.get(name)
    )
    sides = {
        "committed": "every node new",
        "aborted": "every node old, none held",
        "reverted": "every node old again",
        "in_doubt": "a node did not answer: push --resume finishes it",
    }
    where = sides.get(str(fleet.get("outcome")), "")
    return f"fleet {fleet.get('outcome')}: {where} ({decided or 'no decision'}; {fleet['push_id']})"


class PlainView:
    """Plain lines for a terminal without ``rich``: one per step, node end, summary."""

    def __init__(self, stream: TextIO, rerun: Rerun | None = None) -> None:
        self._stream = stream
        self._rerun = rerun or Rerun()
        self._total = 0

    def _say(self, text: str) -> None:
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def begin(self, total: int) -> None:
        """Say how many nodes."""
        self._total = total
        self._say(f"pushing to {total} node(s)")

    def on_event(self, event: NodeEvent) -> None:
        """A line per step begun, per stray output line, and per node finished."""
        fields = refuse_key_material(None, "", dict(event.fields))
        doing = _doing(fields) if event.from_node else None
        if doing is not None:
            self._say(f"  {event.node}  {doing}")
        elif event.event == "node.output":
            self._say(f"  {event.node}  | {fields.get('line', '')}")
        elif event.event == "node.end":
            self._say(_finished_line(_result_of(event), fields.get("phase")))
        elif event.event == "push.decided":
            self._say(_decided_line(fields))

    def end(self, report: PushReport) -> None:
        """The summary."""
        for line in summary_lines(report, self._total, self._rerun):
            self._say(line)


def _result_of(event: NodeEvent) -> NodeResult:
    f = event.fields
    return NodeResult(
        event.node,
        f.get("exit_code"),
        str(f.get("outcome")),
        f.get("txid"),
        int(f.get("duration_ms") or 0),
        f.get("error"),
    )


class LiveView:
    """rich: running nodes as live rows, finished ones printed above, a summary."""

    def __init__(self, stream: TextIO, rerun: Rerun | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._rerun = rerun or Rerun()
        self._running: dict[str, _Running] = {}
        self._phase: str | None = None
        self._done = 0
        self._bad = 0
        self._total = 0
        self._console: Console = Console(file=stream, highlight=False)
        self._live: Live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,  # stdout carries the results, never the view
            redirect_stderr=False,
        )

    def begin(self, total: int) -> None:
        """Start drawing."""
        self._total = total
        self._console.print(f"pushing to {total} node(s)")
        self._live.start()

    def on_event(self, event: NodeEvent) -> None:
        """Move a node's row on, or print it as finished."""
        phase = event.fields.get("phase")
        if event.event == "node.begin":
            if phase != self._phase:  # an atomic push's next phase: count afresh
                self._phase, self._done, self._bad = phase, 0, 0
            self._running[event.node] = _Running(phase=phase)
        elif event.event == "node.end":
            self._running.pop(event.node, None)
            result = _result_of(event)
            self._done += 1
            self._bad += 0 if result.ok else 1
            style = "green" if _good(result) else _STYLE.get(result.outcome, "red")
            self._console.print(_finished_line(result, phase), style=style, markup=False)
        elif event.from_node and (doing := _doing(event.fields)) is not None:
            self._running.setdefault(event.node, _Running()).step = doing
        elif event.event == "node.output":
            line = refuse_key_material(None, "", dict(event.fields)).get("line", "")
            self._console.print(f"  {event.node} | {line}", style="dim", markup=False)
        elif event.event == "push.decided":
            self._console.print(_decided_line(event.fields), style="bold", markup=False)

    def _render(self) -> RenderableType:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        shown = sorted(self._running.items())[: max(1, self._console.size.height - 3)]
        for node, row in shown:
            step = f"{row.phase}: {row.step}" if row.phase else row.step
            table.add_row(node, step, f"{now - row.started:5.1f}s", style="cyan")
        phase = f"{self._phase}: " if self._phase else ""
        table.add_row(
            "",
            f"{phase}{self._done}/{self._total} done, {len(self._running)} running, "
            f"{self._bad} failed",
            "",
            style="bold",
        )
        return table

    def end(self, report: PushReport) -> None:
        """Stop drawing; print the summary."""
        self._live.stop()
        lines = summary_lines(report, self._total, self._rerun)
        if report.fleet is not None:
            fleet, *lines = lines
            self._console.print(fleet, style="bold" if report.ok else "bold red", markup=False)
        head, *failed = lines
        step = self._rerun.next_step(report)
        if step is not None:
            failed, next_lines = failed[:-2], failed[-2:]
        else:
            next_lines = []
        self._console.print(head, style="bold" if report.ok else "bold red", markup=False)
        for line in failed:
            self._console.print(line, style="red", markup=False)
        for line, style in zip(next_lines, ("bold", "dim"), strict=False):
            self._console.print(line, style=style, markup=False, soft_wrap=True)
