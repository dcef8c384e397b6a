"""``txsetup status``: the last or unfinished transaction, from the journal alone.

The same summary of the last transaction (:func:`last_transaction`) is what
``--resume`` reports, so a master that lost a run's result (a push timed
out) learns from the node what it ended with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.txn.journal import FINISHED_STATES, Record, TxnState, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.revertable import Revertable, read_revertable

__all__ = ["describe_last_transaction", "last_transaction", "read_last_transaction"]

# The step a transaction is in (or stopped in) once it has reached a state.
_STEP_OF_STATE: dict[str, str] = {
    TxnState.BEGUN: "stage",
    TxnState.PREPARED: "commit",
    TxnState.DECIDED: "commit",
    TxnState.COMMITTED: DAEMON.step,
    DAEMON.state: DAEMON.step,
    SSHD.state: SSHD.step,
    TxnState.ROLLING_BACK: "compensate",
}
# Each program's step after commit (the journal's first record names the command).
_AFTER_COMMIT = {"node-daemon-setup": DAEMON.step, "ssh-setup": SSHD.step}
_STOPPED = "killed, or the node went down"


def _step_of(state: object, command: object) -> str | None:
    """The step a transaction of ``command`` was in when its journal reached ``state``."""
    if state == TxnState.COMMITTED:
        return _AFTER_COMMIT.get(str(command), _STEP_OF_STATE[TxnState.COMMITTED])
    return _STEP_OF_STATE.get(str(state))


def _merged(records: Sequence[Record]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for record in records:
        merged.update(record.data)
    return merged


def _reason(last: Record, merged: Mapping[str, Any]) -> dict[str, Any] | None:
    """Why the transaction did not simply commit: ``step``, ``error_code``, ``error``.

    From the ``cause`` its end record keeps (the step that failed and its
    error, or where a killed run stopped and who finished it); from the bare
    ``reason`` words of a journal that predates ``cause``; or, while it is
    unfinished, the step it is in.
    """
    command = merged.get("command")
    cause = merged.get("cause")
    if isinstance(cause, Mapping):
        step = cause.get("step") or _step_of(cause.get("state"), command)
        error = cause.get("error")
        if not error:
            by = cause.get("by") or "recovery"
            if cause.get("error_code") == "aborted":
                error = f"undone by {by}" + (f" (it had stopped in {step})" if step else "")
            else:
                done = "finished" if last.state is TxnState.DONE else "undone"
                error = f"the run stopped in {step or 'a step'} ({_STOPPED}); {done} by {by}"
        return {"step": step, "error_code": cause.get("error_code"), "error": error}
    if last.state not in FINISHED_STATES:
        step = _step_of(last.state, command)
        return {
            "step": step,
            "error_code": "unfinished",
            "error": f"unfinished in {step}: still running, or stopped ({_STOPPED}); "
            "--resume finishes or undoes it",
        }
    reason = merged.get("reason")
    if last.state is TxnState.ROLLED_BACK and isinstance(reason, str):
        return {"step": None, "error_code": None, "error": reason}
    if merged.get("reverts") and isinstance(reason, str):
        code = "not_confirmed" if reason == "not confirmed" else "reverted"
        return {"step": None, "error_code": code, "error": f"reverted: {reason}"}
    return None


def last_transaction(
    records: Sequence[Record], kept: Revertable | None = None
) -> dict[str, Any] | None:
    """The last transaction in brief: txid, program, outcome, times, reason. No secrets.

    ``outcome`` is the end record's (``committed``, ``converged``,
    ``resumed``, ``reverted``), ``rolled_back``, ``aborted``, ``in_doubt``
    (held by ``--prepare``), ``unconfirmed`` (``kept`` says its commit waits
    for ``txsetup confirm``) or ``unfinished``; ``reason`` is None for a
    plain commit or convergence. A revert names the commit it reverted
    (``reverts``).
    """
    if not records:
        return None
    last, merged = records[-1], _merged(records)
    finished = last.state in FINISHED_STATES
    if last.state is TxnState.DONE:
        outcome = str(merged.get("outcome"))
        if kept is not None and kept.txid == last.txid and kept.unconfirmed is not None:
            outcome = "unconfirmed"
    elif last.state is TxnState.ROLLED_BACK:
        aborted = _held(records) and _decision(records) != "commit"
        outcome = "aborted" if aborted else "rolled_back"
    else:
        outcome = "in_doubt" if _held(records) and _decision(records) is None else "unfinished"
    return {
        "txid": last.txid,
        "program": merged.get("command"),
        "outcome": outcome,
        "started_at": merged.get("started_at"),
        "ended_at": merged.get("ended_at") if finished else None,
        "reason": _reason(last, merged),
        **({"reverts": merged["reverts"]} if merged.get("reverts") else {}),
    }


def _held(records: Sequence[Record]) -> bool:
    """Prepared with ``--prepare`` (its ``prepared`` record keeps a hold)."""
    return any(r.state is TxnState.PREPARED and r.data.get("hold") for r in records)


def _decision(records: Sequence[Record]) -> str | None:
    """A held transaction's decision (``commit`` or ``abort``), once journaled."""
    decided = [r for r in records if r.state is TxnState.DECIDED]
    return str(decided[-1].data.get("decision")) if decided else None


def read_last_transaction(layout: Layout) -> dict[str, Any] | None:
    """:func:`last_transaction` of the node's journal (None when there is none)."""
    return last_transaction(read_journal(layout.journal), read_revertable(layout))


def _revertable(kept: Revertable | None) -> dict[str, Any] | None:
    """Which commit ``txsetup revert`` can undo, and whether it waits for its confirmation."""
    if kept is None:
        return None
    unconfirmed = None
    if kept.unconfirmed is not None:
        unconfirmed = {**kept.unconfirmed, "passed": kept.deadline_passed()}
    return {
        "txid": kept.txid,
        "command": kept.command,
        "kept_at": kept.kept_at,
        "unconfirmed": unconfirmed,
    }


def describe_last_transaction(layout: Layout) -> dict[str, Any]:
    """A JSON-ready description: txid, state, step, files, times. No secrets.

    The journal holds paths, modes, sizes and inode numbers only, so nothing
    read from it can carry key material (error texts in it were refused if
    they held any).
    """
    records = read_journal(layout.journal)
    kept = read_revertable(layout)
    if not records:
        return {
            "txid": None,
            "state": "none",
            "finished": True,
            "files": [],
            "revertable": _revertable(kept),
            "last_transaction": None,
        }
    last, merged = records[-1], _merged(records)
    files = [
        {
            "path": c["path"],
            "action": "remove"
            if c.get("staged", "") is None
            else "replace"
            if c["old"]
            else "create",
            "old_mode": c["old"]["mode"] if c["old"] else None,
        }
        for c in merged.get("changes", [])
    ]
    finished = last.state in FINISHED_STATES
    return {
        "txid": last.txid,
        "state": str(last.state),
        "finished": finished,
        "step": None if finished else _step_of(last.state, merged.get("command")),
        "command": merged.get("command"),
        "started_at": merged.get("started_at"),
        "ended_at": merged.get("ended_at") if finished else None,
        "outcome": merged.get("outcome") if finished else None,
        "reason": merged.get("reason"),
        # Staged or hold copies a recovery removed that no unfinished
        # transaction of the journal named (a crash, a power loss).
        "leftovers_removed": merged.get("leftovers_removed", 0),
        "leftovers_of": merged.get("leftovers_of", []),
        "files": files,
        "states": [str(r.state) for r in records],
        # A prepared transaction held for its coordinator's decision: who and which id.
        "hold": merged.get("hold") if _held(records) else None,
        # The last commit whose earlier files are kept (``txsetup revert``), and its deadline.
        "revertable": _revertable(kept),
        "last_transaction": last_transaction(records, kept),
    }
