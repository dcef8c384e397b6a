"""The recovery rules table: what ``--resume`` and ``--resume --abort`` do per journal.

The table in ``txsetup/txn/rules.py`` is both what recovery applies and
what the documentation shows, so it must say exactly what
``docs/journal.md`` states: before the commit point roll back, after it roll
forward unless aborted, and an undo once begun is always finished.
"""

from __future__ import annotations

import itertools

import pytest

from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.txn.journal import FINISHED_STATES, TxnState
from txsetup.txn.rules import (
    RECOVERY_RULES,
    WAITING_RULES,
    RecoveryAction,
    decide,
    decide_waiting,
)

BACK = RecoveryAction.ROLLED_BACK
FORWARD = RecoveryAction.ROLLED_FORWARD
# The generic states, and the states the services declare.
LATER: list[str] = [s for s in TxnState if s not in FINISHED_STATES and s is not TxnState.BEGUN]
LATER += [DAEMON.state, SSHD.state]


def journals() -> list[frozenset[str]]:
    """Every set of states an unfinished journal can have reached (``begun`` always first)."""
    found = []
    for size in range(len(LATER) + 1):
        for others in itertools.combinations(LATER, size):
            found.append(frozenset({TxnState.BEGUN, *others}))
    return found


@pytest.mark.parametrize("states", journals(), ids=lambda s: "+".join(sorted(s)))
def test_decide_follows_the_documented_rules(states: frozenset[str]) -> None:
    """Undo without ``prepared`` or once ``rolling_back``; else forward, unless aborted."""
    prepared = TxnState.PREPARED in states
    rolling_back = TxnState.ROLLING_BACK in states
    assert decide(states, abort=True) is BACK
    assert decide(states, abort=False) is (FORWARD if prepared and not rolling_back else BACK)


def test_every_rule_is_reachable_and_only_prepared_rolls_forward() -> None:
    """Each rule decides some journal; only the commit point's rule rolls forward."""
    used = {next(r for r in RECOVERY_RULES if r.state in states).state for states in journals()}
    assert used == {rule.state for rule in RECOVERY_RULES}
    assert [r.state for r in RECOVERY_RULES if r.resume is FORWARD] == [TxnState.PREPARED]
    assert all(rule.why for rule in RECOVERY_RULES)


def test_a_decided_transaction_goes_as_recovery_sends_a_prepared_one() -> None:
    """The waiting rules for ``decided`` are the state rules with the decision as ``--abort``;
    only a held transaction and a commit before its deadline are left alone (exit 5)."""
    decided = frozenset({TxnState.BEGUN, TxnState.PREPARED, TxnState.DECIDED})
    assert decide_waiting("decided: commit", abort=False) is decide(decided, abort=False)
    assert decide_waiting("decided: abort", abort=False) is decide(decided, abort=True)
    assert decide_waiting("decided: commit", abort=True) is decide(decided, abort=True)
    assert [r.condition for r in WAITING_RULES if r.resume is None] == ["held", "unconfirmed"]
    assert all(rule.why and rule.journal for rule in WAITING_RULES)
