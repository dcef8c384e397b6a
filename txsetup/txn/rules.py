"""The recovery rules: roll an unfinished transaction forward or back, from its journal.

* no ``prepared`` record → undo (remove copies and created directories);
* ``prepared`` and not ``rolling_back`` → roll forward (unless ``--abort``);
* ``rolling_back`` → finish the undo;
* last record ``done`` or ``rolled_back`` → nothing to do.

They are data (:data:`RECOVERY_RULES`): :func:`decide` applies them, and the
documentation's transaction page is generated from them.

Before them come the transactions that wait for a decision made elsewhere
(:data:`WAITING_RULES`): one prepared with ``--prepare`` and not decided
yet (held: recovery never decides it, only ``--resume --abort`` overrides),
one whose decision is journaled (``decided``: recovery goes the way it
says), and a commit waiting for its confirmation (no action before its
deadline, a revert after it). :func:`decide_waiting` applies them in
:func:`~txsetup.txn.recovery.recover_pending`, and the page shows them.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from enum import StrEnum

from txsetup.txn.journal import TxnState

__all__ = [
    "RECOVERY_RULES",
    "WAITING_RULES",
    "RecoveryAction",
    "RecoveryRule",
    "WaitingRule",
    "decide",
    "decide_waiting",
]


class RecoveryAction(StrEnum):
    """What recovery did (``txn.recovered``'s ``action``)."""

    ROLLED_FORWARD = "rolled_forward"
    ROLLED_BACK = "rolled_back"
    REVERTED = "reverted"  # a commit not confirmed by its deadline (or overridden)


@dataclass(frozen=True)
class RecoveryRule:
    """What recovery does with an unfinished transaction that reached ``state``.

    Attributes:
        state: the journal state that decides (the first rule whose state the
            journal reached applies).
        resume: the action of ``--resume`` and of the recovery at the start of a run.
        abort: the action of ``--resume --abort``.
        why: the reason, as the documentation states it.
    """

    state: TxnState
    resume: RecoveryAction
    abort: RecoveryAction
    why: str


RECOVERY_RULES: tuple[RecoveryRule, ...] = (
    RecoveryRule(
        TxnState.ROLLING_BACK,
        resume=RecoveryAction.ROLLED_BACK,
        abort=RecoveryAction.ROLLED_BACK,
        why="an undo had begun and may have removed staged copies: it is finished, never reversed",
    ),
    RecoveryRule(
        TxnState.PREPARED,
        resume=RecoveryAction.ROLLED_FORWARD,
        abort=RecoveryAction.ROLLED_BACK,
        why="the commit point was reached: every new file is staged durably",
    ),
    RecoveryRule(
        TxnState.BEGUN,
        resume=RecoveryAction.ROLLED_BACK,
        abort=RecoveryAction.ROLLED_BACK,
        why="before the commit point no target was touched: copies and new directories go",
    ),
)


def decide(states: Set[str], *, abort: bool) -> RecoveryAction:
    """Roll an unfinished transaction forward or back, from the states its journal reached.

    A roll-forward can still turn into an undo when what follows the commit
    fails (:class:`txsetup.txn.finish.ForwardFailed`); that is the caller's part.
    """
    rule = next((r for r in RECOVERY_RULES if r.state in states), RECOVERY_RULES[-1])
    return rule.abort if abort else rule.resume


@dataclass(frozen=True)
class WaitingRule:
    """What recovery does with a transaction that waits for a decision made elsewhere.

    Attributes:
        condition: the situation, as the documentation names it.
        journal: how the journal (or the kept set's manifest) shows it.
        resume: the action of ``--resume`` and of the recovery at the start of
            a run; None when it takes none and the run is refused (exit 5, held).
        abort: the action of ``--resume --abort`` (the operator's override
            where ``resume`` is None, logged as ``txn.override``).
        why: the reason, as the documentation states it.
    """

    condition: str
    journal: str
    resume: RecoveryAction | None
    abort: RecoveryAction
    why: str


WAITING_RULES: tuple[WaitingRule, ...] = (
    WaitingRule(
        "held",
        journal="`prepared` with `hold`, no `decided`",
        resume=None,
        abort=RecoveryAction.ROLLED_BACK,
        why="in doubt: only its coordinator decides (`txsetup commit` or `abort`); "
        "`--resume --abort` overrides, and keeps its coordinator id as aborted",
    ),
    WaitingRule(
        "decided: commit",
        journal="`decided` with `decision: commit`",
        resume=RecoveryAction.ROLLED_FORWARD,
        abort=RecoveryAction.ROLLED_BACK,
        why="the decision is on disk before it acts: it is finished as decided",
    ),
    WaitingRule(
        "decided: abort",
        journal="`decided` with `decision: abort`",
        resume=RecoveryAction.ROLLED_BACK,
        abort=RecoveryAction.ROLLED_BACK,
        why="the decision is on disk before it acts: it is finished as decided",
    ),
    WaitingRule(
        "unconfirmed",
        journal="`done`; the kept set's `unconfirmed.deadline` is still ahead",
        resume=None,
        abort=RecoveryAction.REVERTED,
        why="the commit waits for `txsetup confirm`; `--resume --abort` reverts it at once",
    ),
    WaitingRule(
        "not confirmed",
        journal="`done`; the kept set's `unconfirmed.deadline` has passed",
        resume=RecoveryAction.REVERTED,
        abort=RecoveryAction.REVERTED,
        why="no confirmation came in time: the commit is reverted (`reverted: not confirmed`)",
    ),
)


def decide_waiting(condition: str, *, abort: bool) -> RecoveryAction | None:
    """What recovery does in a waiting ``condition``: None means no action (exit 5, held)."""
    rule = next(r for r in WAITING_RULES if r.condition == condition)
    return rule.abort if abort else rule.resume
