"""The words of the console view: marks, actions, outcomes, and how a value is shown.

Kept apart from the renderer (:mod:`txsetup.console`) so what an operator
reads at 3 a.m. is in one place: the action for each error and warning, the
words for each outcome, and the few events folded into a step's line.
Every value from an event goes through :func:`clean` first: one line, no
terminal escape a document could smuggle in, bounded length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTION",
    "FAILED_AS",
    "OUTCOME",
    "WARNING",
    "Fields",
    "Marks",
    "action_for",
    "changed_words",
    "clean",
    "duration",
    "fact_of",
    "node_line",
    "resume_advice",
]


@dataclass(frozen=True)
class Marks:
    """The status marks; plain ASCII ones for a terminal that cannot show the others."""

    unicode: bool
    done: str
    failed: str
    undone: str
    warning: str
    info: str
    begin: str
    arrow: str
    sep: str

    @classmethod
    def for_terminal(cls, unicode: bool) -> Marks:
        """Unicode marks (✓ ✗ ↺ !), or ASCII ones when the stream's encoding lacks them."""
        if unicode:
            return cls(True, "✓", "✗", "↺", "!", "·", "▸", "→", " · ")
        return cls(False, "+", "x", "<", "!", "-", ">", "->", " | ")


# What to do next, by error_code (and by event for the warnings that call for something).
ACTION = {
    "invalid_input": "fix the document on the master, then run again",
    "refused": "fix the document on the master (or the node file named), then run again",
    "busy": "another run holds the lock: wait for it, or raise --lock-timeout",
    "rolled_back": "read the error above, fix the cause, run again",
    "interrupted": "it was stopped by a signal: run again when ready",
    "recovery_failed": (
        "manual help needed: run `txsetup status`; the journal and backups are kept "
        "in var/lib/txsetup"
    ),
    "environment": (
        "run txsetup as root, on a file system mounted read-write (the error names the path), "
        "then run again"
    ),
    "usage": "fix the command line as the error says (`txsetup --help` lists the options)",
    "internal": "an internal error: keep the JSON log (--log-format json) and report it",
    "config.error:invalid_input": "fix the configuration file (--config), then run again",
    "missing_program": "install the program named, or set its key in the file named; run again",
    "push.error:usage": "see `txsetup push --help`",
    "push.error:invalid_input": "fix the files under --from-root, then push again",
    "cert.expires_soon": "renew the cluster certificate (gnt-cluster renew-crypto)",
    "txn.leftovers_removed": "nothing to do; `txsetup status` shows it",
    "txn.cleanup_deferred": "nothing to do: the next run finishes it",
    "sshd.reload_failed": "checking that sshd still serves the old host keys",
}

# Warnings shown on their own line, with their fields.
WARNING = {
    "cert.expires_soon": "the certificate expires on {not_after} (fingerprint {fingerprint})",
    "txn.leftovers_removed": "removed {count} leftover copies of {txids} (a crash left them)",
    "txn.cleanup_deferred": "cleanup deferred: {error}",
    "sshd.reload_failed": "sshd reload failed while putting the old keys back: {error}",
}

# outcome → (mark, tone, words) of the summary line.
OUTCOME = {
    "committed": ("done", "good", "committed"),
    "converged": ("done", "good", "converged"),
    "dry_run": ("done", "good", "dry run"),
    "resumed": ("done", "good", "resumed: the interrupted transaction is finished"),
    "nothing_to_resume": ("done", "good", "nothing to resume: no unfinished transaction"),
    "rolled_back": ("undone", "undone", "rolled back"),
    "failed": ("failed", "bad", "failed"),
}

# A failed run's outcome word, by exit code: what kind of failure.
FAILED_AS = {
    1: "internal error",
    2: "usage error",
    3: "invalid input",
    4: "refused",
    5: "busy",
    7: "refused by the node's environment",
    8: "needs manual help",
}

_BY_EXIT = {
    2: "usage",
    3: "invalid_input",
    4: "refused",
    5: "busy",
    6: "rolled_back",
    7: "environment",
    8: "recovery_failed",
}


def action_for(code: object) -> str:
    """The action for an ``error_code`` or exit code (an unknown one reads as internal)."""
    if isinstance(code, int) and not isinstance(code, bool):
        code = _BY_EXIT.get(code, "internal")
    return ACTION.get(str(code), ACTION["internal"])


def resume_advice(command: object) -> str:
    """Exit 8's next step: the ``--resume`` command line given, to finish or to undo."""
    resume = clean(command)
    return (
        f"remove the cause, then run `{resume}` to finish it, or `{resume} --abort` "
        "to undo it (`txsetup status` shows where it stopped)"
    )


def clean(value: object, *, limit: int = 300) -> str:
    """A value as one printable line: escapes for control characters, at most ``limit``.

    A cluster name or error text comes from a document or a command's output;
    a newline there would forge a line, an escape sequence would drive the
    operator's terminal. Neither gets through.
    """
    if value is None:
        text = "-"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes):
        text = ", ".join(clean(v, limit=limit) for v in list(value)[:20])
    else:
        text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def duration(ms: object) -> str:
    """``160 ms`` or ``1.4 s``; ``?`` for a value that is not a duration."""
    if not isinstance(ms, int | float) or isinstance(ms, bool) or not ms >= 0:
        return "?"
    return f"{int(ms)} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def changed_words(changed: Sequence[str]) -> str:
    """What changed: the paths when three or fewer, else counted."""
    if not changed:
        return "nothing changed"
    if len(changed) > 3:
        return f"{len(changed)} files changed"
    return "changed " + ", ".join("/" + path.lstrip("/") for path in changed)


class Fields(dict[str, str]):
    """``str.format_map`` over an event's fields, cleaned; a missing field reads ``?``."""

    def __init__(self, e: Mapping[str, Any]) -> None:
        super().__init__({str(k): clean(v) for k, v in e.items()})
        n = e.get("attempts")
        count = f"{n} attempt{'' if n == 1 else 's'}" if isinstance(n, int) else "? attempts"
        self["attempts"] = f"{count}, {duration(e.get('duration_ms'))}"

    def __missing__(self, key: str) -> str:
        return "?"


# Events folded into the line of the step, undo or recovery they happen in.
_FACTS = {
    "daemon.healthy": "daemon healthy after {attempts}",
    "daemon.unhealthy": "daemon not healthy after {attempts}: {error}",
    "sshd.healthy": "sshd serves the {kind} host key after {attempts}",
    "sshd.unhealthy": "sshd does not serve the {kind} host key after {attempts}: {error}",
    "ssh.root_key_generated": "new {kind} key pair for root",
}
_COMMANDS = {
    "daemon.restart": "daemon restarted",
    "daemon.stop": "daemon stopped",
    "sshd.reload": "sshd reloaded",
}


def fact_of(event: str, e: Mapping[str, Any], *, in_step: bool) -> str | None:
    """The words an event adds to the line of its step or undo, or None to show it alone.

    A command inside a step adds nothing (the step's summary, or its error,
    says it); during an undo or a recovery it says what was done to the daemon.
    """
    if event in _COMMANDS:
        if in_step:
            return ""  # the step's own line says it, failed or not
        if e.get("timed_out"):
            return f"{event.replace('.', ' ')} timed out"
        if e.get("returncode") not in (0, None):
            return f"{event.replace('.', ' ')} exited {clean(e.get('returncode'))}"
        return _COMMANDS[event]
    template = _FACTS.get(event)
    return template.format_map(Fields(e)) if template is not None else None


def node_line(e: Mapping[str, Any]) -> tuple[str, str, bool]:
    """A push event as (mark, words, failed)."""
    event = e.get("event")
    if event == "push.begin":
        return "begin", f"pushing to {clean(e.get('nodes'))} node(s)", False
    if event == "node.begin":
        return "info", f"connecting to {clean(e.get('host'))}", False
    if event == "node.output":
        return "info", f"| {clean(e.get('line'))}", False
    if event == "node.end":
        outcome, code = clean(e.get("outcome")), e.get("exit_code")
        words = f"{outcome} · txid {clean(e.get('txid'))} · {duration(e.get('duration_ms'))}"
        if code == 0:
            return "done", words, False
        return "failed", f"{words} · {clean(e.get('error'), limit=600)}", True
    counts = e.get("counts")
    shown = counts if isinstance(counts, Mapping) else {}
    words = ", ".join(f"{clean(n)} {clean(o)}" for o, n in sorted(shown.items(), key=str)) or "none"
    bad = bool(e.get("interrupted")) or any(OUTCOME.get(o, ("", ""))[1] != "good" for o in shown)
    tail = " (interrupted)" if e.get("interrupted") else ""
    after = f" · next: {clean(e['next_command'], limit=2000)}" if e.get("next_command") else ""
    text = f"{words}{tail} · {duration(e.get('duration_ms'))}{after}"
    return ("failed" if bad else "done"), text, bad
