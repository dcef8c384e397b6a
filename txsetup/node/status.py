"""``txsetup status``: the last or unfinished transaction, from the journal alone."""

from __future__ import annotations

from typing import Any

from txsetup.txn.journal import FINISHED_STATES, TxnState, read_journal
from txsetup.txn.plan import Layout

__all__ = ["describe_last_transaction"]

# The step a transaction is in (or stopped in) once it has reached a state.
_STEP_OF_STATE = {
    TxnState.BEGUN: "stage",
    TxnState.PREPARED: "commit",
    TxnState.COMMITTED: "restart_daemon",
    TxnState.RESTARTING_DAEMON: "restart_daemon",
    TxnState.RELOADING_SSHD: "reload_sshd",
    TxnState.ROLLING_BACK: "compensate",
}
# ssh-setup's step after commit (the journal's first record names the command).
_AFTER_COMMIT = {"ssh-setup": "reload_sshd"}


def describe_last_transaction(layout: Layout) -> dict[str, Any]:
    """A JSON-ready description: txid, state, step, files, times. No secrets.

    The journal holds paths, modes, sizes and inode numbers only, so nothing
    read from it can carry key material.
    """
    records = read_journal(layout.journal)
    if not records:
        return {"txid": None, "state": "none", "finished": True, "files": []}
    last = records[-1]
    merged: dict[str, Any] = {}
    for record in records:
        merged.update(record.data)
    files = [
        {
            "path": c["path"],
            "action": "replace" if c["old"] else "create",
            "old_mode": c["old"]["mode"] if c["old"] else None,
        }
        for c in merged.get("changes", [])
    ]
    finished = last.state in FINISHED_STATES
    step = _STEP_OF_STATE.get(last.state)
    if last.state is TxnState.COMMITTED:
        step = _AFTER_COMMIT.get(str(merged.get("command")), step)
    return {
        "txid": last.txid,
        "state": str(last.state),
        "finished": finished,
        "step": None if finished else step,
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
    }
