"""The recovery rules: roll an unfinished transaction forward or back, from its journal.

* no ``prepared`` record → undo (remove copies and created directories);
* ``prepared`` and not ``rolling_back`` → roll forward (unless ``--abort``);
* ``rolling_back`` → finish the undo;
* last record ``done`` or ``rolled_back`` → nothing to do.

They are data (:data:`RECOVERY_RULES`): :func:`decide` applies them, and the
documentation's transaction page is generated from them.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from enum import StrEnum

from txsetup.txn.journal import TxnState

__all__ = ["RECOVERY_RULES", "RecoveryAction", "RecoveryRule", "decide"]


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
