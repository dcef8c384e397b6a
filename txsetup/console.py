"""The console view: one line per step, in words, and a closing summary.

``--log-format console`` (the default when stderr is a terminal) renders the
same events as the JSON log, for a person: a status mark, the step's name,
what it did (``step.end``'s ``summary``) and how long it took; warnings and
errors in colour with the action to take; and on ``txn.end`` a summary line
with the outcome, the txid, what changed and the total time. ``step.begin``
prints nothing, so each step shows exactly once; the daemon's and sshd's own
events are folded into the line of the step, undo or recovery they belong to,
and the undo of every step after a failure into one line.

The renderer is a structlog processor that remembers a few facts between
events of one run (what changed, what was undone). It never raises: a log
line is never worth failing a run. It imports neither ``structlog.dev`` nor
``rich``, which keeps a node's start-up light. Key material never reaches
it: :func:`txsetup.log.refuse_key_material` runs first. The words themselves
are in :mod:`txsetup.console_words`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from structlog import DropEvent
from structlog.typing import EventDict, WrappedLogger

from txsetup.console_words import (
    ACTION,
    FAILED_AS,
    OUTCOME,
    WARNING,
    Fields,
    Marks,
    action_for,
    changed_words,
    clean,
    duration,
    fact_of,
    node_line,
    resume_advice,
)

__all__ = ["ConsoleRenderer", "wants_colour"]

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"

_TONE = {"good": GREEN, "undone": YELLOW, "bad": RED}
_WIDTH = 15  # restart_daemon and a space: the step names line up
_COLUMN = 66  # where a step's duration goes
_NOISE = frozenset({"ts", "timestamp", "level", "event", "program", "version", "txid"})
_WRITING = frozenset({"stage", "commit", "restart_daemon", "reload_sshd"})
_ERRORS = {
    "usage.error": "usage",
    "environment.error": "environment",
    "config.error": "configuration",
    "push.error": "push",
}
_PUSH = ("push.begin", "node.begin", "node.output", "node.end", "push.end")


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (OSError, ValueError):
        return False


def speaks_unicode(stream: TextIO) -> bool:
    """Whether the stream can carry the marks (✓ ✗ ↺); ASCII ones otherwise."""
    encoding = str(getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return encoding.startswith("utf")


class ConsoleRenderer:
    """The final structlog processor of ``--log-format console``: an event dict to a line."""

    def __init__(self, *, colors: bool, unicode: bool = True) -> None:
        self._colors = colors
        self._marks = Marks.for_terminal(unicode)
        self._reset()

    def _reset(self) -> None:
        """Forget the last run's facts (one process may log more than one run)."""
        self._changed: list[str] = []
        self._facts: list[str] = []
        self._undone: list[str] = []
        self._advised = False
        self._in_step = False
        self._resume = False
        self._undo_failed = False
        self._failure = "rolled_back"

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> str:
        """Render one event; if its fields defeat the words, a plain generic line.

        An event with nothing to show (``step.begin``, a fact folded into the
        next line) is dropped rather than printed as an empty line.
        """
        try:
            line = self._render(event_dict)
        except Exception:  # whatever a field holds, the run goes on
            line = self._generic(event_dict)
        if not line:
            raise DropEvent
        return line

    # --- shaping a line ------------------------------------------------------------------

    def _paint(self, colour: str, text: str) -> str:
        return f"{colour}{text}{RESET}" if self._colors and colour and text else text

    def _line(self, mark: str, name: str, text: str, colour: str, *, ms: object = None) -> str:
        """``✓ name  text  12 ms``; a warning or error (not green) is coloured whole."""
        body = (f"{name:<{_WIDTH}} " if name else "") + text
        if ms is not None:  # durations line up when the words are short
            body = f"{body:<{_COLUMN}}"
        tail = f"  {self._paint(DIM, duration(ms))}" if ms is not None else ""
        if colour == GREEN:
            return f"{self._paint(GREEN, mark)} {body}{tail}"
        return self._paint(colour, f"{mark} {body}") + tail

    def _advice(self, action: str, *, final: bool = True) -> str:
        """`` → action``; a final one is remembered so the summary need not repeat it."""
        if not action:
            return ""
        self._advised = self._advised or final
        return f" {self._marks.arrow} {action}"

    def _with_facts(self, text: str) -> str:
        """``text`` and the folded daemon or sshd facts seen since the last line."""
        facts, self._facts = self._facts, []
        said = [t for t in (text, *facts) if t]
        for subject in ("daemon ", "sshd "):  # "daemon restarted; healthy after ...", once
            first = next((i for i, t in enumerate(said) if t.startswith(subject)), len(said))
            said[first + 1 :] = [t.removeprefix(subject) for t in said[first + 1 :]]
        return "; ".join(said)

    # --- events --------------------------------------------------------------------------

    def _render(self, e: EventDict) -> str:
        event = str(e.get("event", ""))
        handler = _HANDLERS.get(event)
        if handler is not None:
            return handler(self, e)
        fact = fact_of(event, e, in_step=self._in_step)
        if fact is not None:
            self._facts += [fact] if fact else []
            return ""
        return self._generic(e)

    def _begin(self, e: EventDict) -> str:
        self._reset()
        command = clean(e.get("command") or "txsetup")
        self._resume = bool(e.get("resume"))
        if self._resume:
            what = "--resume --abort: undo" if e.get("abort") else "--resume: finish or undo"
            return self._paint(BOLD, f"{self._marks.begin} {command} {what} the unfinished run")
        where = f" on {clean(e['root'])}" if e.get("root") else ""
        dry = " (dry run: nothing is written)" if e.get("dry_run") else ""
        return self._paint(BOLD, f"{self._marks.begin} {command}{where}{dry}")

    def _step_begin(self, _: EventDict) -> str:
        self._in_step = True
        return ""

    def _step_end(self, e: EventDict) -> str:
        self._in_step = False
        summary = clean(e.get("summary") or ("done, changed" if e.get("changed") else "done"))
        return self._line(
            self._marks.done,
            clean(e.get("step")),
            self._with_facts(summary),
            GREEN,
            ms=e.get("duration_ms"),
        )

    def _step_failed(self, e: EventDict) -> str:
        self._in_step = False
        step = clean(e.get("step"))
        text = self._with_facts(clean(e.get("error"), limit=600))
        self._failure = "interrupted" if e.get("error_code") == "interrupted" else "rolled_back"
        if step in _WRITING:  # not the end: the undo follows, and its line says what next
            text += self._advice("undoing what was done", final=False)
        else:
            text += self._advice(action_for(e.get("error_code")))
        return self._line(self._marks.failed, step, text, RED)

    def _compensate_begin(self, e: EventDict) -> str:
        self._undone.append(clean(e.get("step")))
        return ""

    def _compensate_failed(self, e: EventDict) -> str:
        # Never to be followed by "undone: ...; the node is as it was".
        self._undo_failed = True
        self._undone = [step for step in self._undone if step != clean(e.get("step"))]
        text = self._with_facts(f"undo failed: {clean(e.get('error'), limit=600)}")
        advice = self._advice(ACTION["recovery_failed"])
        return self._line(self._marks.failed, clean(e.get("step")), text + advice, RED)

    def _undone_line(self, action: str = "") -> str:
        steps = [step for step in self._undone if step != "lock"]
        self._undone = []
        what = f"undone: {', '.join(steps)}; the node is as it was" if steps else "nothing undone"
        if self._undo_failed:  # the node may be half way: never say it is as it was
            what = "the undo did not finish: the node may be half way"
        text = self._with_facts(what)
        return self._line(self._marks.undone, "", text + self._advice(action), YELLOW)

    def _rolled_back(self, _: EventDict) -> str:
        return self._undone_line(ACTION[self._failure])

    def _recovered(self, e: EventDict) -> str:
        forward = e.get("action") == "rolled_forward"
        what = "finished (rolled forward)" if forward else "undone (rolled back)"
        text = self._with_facts(f"interrupted transaction {clean(e.get('recovered_txid'))} {what}")
        return self._line(self._marks.undone, "", text, YELLOW)

    def _warning(self, e: EventDict) -> str:
        event = str(e.get("event"))
        text = WARNING[event].format_map(Fields(e)) + self._advice(ACTION.get(event, ""))
        return self._line(self._marks.warning, "", text, YELLOW)

    def _error(self, e: EventDict) -> str:
        event, code = str(e.get("event")), str(e.get("error_code") or "usage")
        action = ACTION.get(f"{event}:{code}") or action_for(code)
        text = clean(e.get("error"), limit=600) + self._advice(action)
        return self._line(self._marks.failed, _ERRORS[event], text, RED)

    def _committed(self, e: EventDict) -> str:
        changed = e.get("changed")
        self._changed = [clean(path) for path in changed] if isinstance(changed, list) else []
        return ""

    def _converged(self, _: EventDict) -> str:
        self._changed = []
        return ""

    def _end(self, e: EventDict) -> str:
        """The summary: outcome, txid, what changed, total time, and the action if any.

        Exit 8 is preceded by its cause (the error, also on ``--resume``, where
        no step line said it) and ends with the command to run next.
        """
        outcome, code = str(e.get("outcome", "")), e.get("exit_code")
        if code == 8:
            pending = self._cause_line(e)
        elif any(s != "lock" for s in self._undone):
            pending = self._undone_line()
        else:
            pending = ""
        mark, tone, words = OUTCOME.get(outcome, ("failed", "bad", clean(outcome)))
        if outcome == "failed" and isinstance(code, int):
            words = FAILED_AS.get(code, words)
        parts = [words]
        if e.get("txid"):
            parts.append(f"txid {clean(e.get('txid'))}")
        if outcome == "dry_run":
            parts.append("nothing written")
        elif outcome in ("committed", "converged"):
            parts.append(changed_words(self._changed))
        elif outcome == "rolled_back" and self._resume:
            parts.append("the interrupted transaction was undone")
        elif outcome in ("rolled_back", "failed") and code != 8:
            parts.append("nothing changed")
        parts.append(duration(e.get("duration_ms")))
        if code:
            parts.append(f"exit {clean(code)}")
        text = self._marks.sep.join(parts)
        if code == 8 and e.get("resume_command"):
            text += self._advice(resume_advice(e.get("resume_command")))
        elif code and not self._advised:
            text += self._advice(action_for(code))
        line = self._paint(BOLD + _TONE[tone], f"{getattr(self._marks, mark)} {text}")
        return f"{pending}\n{line}" if pending else line

    def _cause_line(self, e: EventDict) -> str:
        """``✗ cause: <error>``, with whatever the daemon or sshd said on the way."""
        self._undone = []
        if not e.get("error"):
            return ""
        text = self._with_facts(f"cause: {clean(e.get('error'), limit=600)}")
        return self._line(self._marks.failed, "", text, RED)

    def _node(self, e: EventDict) -> str:
        mark, text, bad = node_line(e)
        colour = RED if bad else GREEN if mark == "done" else ""
        return self._line(getattr(self._marks, mark), clean(e.get("node", "")), text, colour)

    def _generic(self, e: Mapping[str, Any]) -> str:
        """A tidy line for an event this view has no words for: its name and short fields."""
        try:
            level = str(e.get("level", "info"))
            fields = " ".join(
                f"{clean(k, limit=40)}={clean(v, limit=160)}"
                for k, v in e.items()
                if k not in _NOISE
            )
            text = f"{clean(e.get('event'), limit=60)} {fields}".rstrip()
        except Exception:  # not even the fields can be shown: say so, in one line
            level, text = "error", "(a log event that could not be shown)"
        if level in ("error", "critical"):
            return self._line(self._marks.failed, "", text, RED)
        if level == "warning":
            return self._line(self._marks.warning, "", text, YELLOW)
        return self._line(self._marks.info, "", text, "")


def _quiet(_: ConsoleRenderer, __: EventDict) -> str:
    return ""


_HANDLERS: dict[str, Callable[[ConsoleRenderer, EventDict], str]] = {
    "txn.begin": ConsoleRenderer._begin,
    "step.begin": ConsoleRenderer._step_begin,
    "step.end": ConsoleRenderer._step_end,
    "step.failed": ConsoleRenderer._step_failed,
    "compensate.begin": ConsoleRenderer._compensate_begin,
    "compensate.end": _quiet,
    "compensate.failed": ConsoleRenderer._compensate_failed,
    "txn.rolled_back": ConsoleRenderer._rolled_back,
    "txn.recovered": ConsoleRenderer._recovered,
    "txn.committed": ConsoleRenderer._committed,
    "txn.converged": ConsoleRenderer._converged,
    "txn.end": ConsoleRenderer._end,
    **dict.fromkeys(_ERRORS, ConsoleRenderer._error),
    **dict.fromkeys(WARNING, ConsoleRenderer._warning),
    **dict.fromkeys(_PUSH, ConsoleRenderer._node),
}
