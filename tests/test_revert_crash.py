"""The crash matrix of a revert and of a commit to be confirmed (node-daemon-setup).

The harness is :mod:`tests.crashrevert` (built on :mod:`tests.crashmatrix`):
a kill -9 at a file syscall of ``txsetup revert TXID``, of a run with
``--confirm-within`` and of ``txsetup confirm TXID``, then the side the
journal it left calls for, checked by every way there is to finish it.
Documents A and B are the kill matrix's (:mod:`tests.test_crash`), on a
re-add (A installed, then B) and, for a revert, on a fresh node too (B's
revert removes every file and the directory B created).
"""

from __future__ import annotations

import pytest

from tests.conftest import CRASH_DEPTH
from tests.crashmatrix import NODE_STATES, Scenario
from tests.crashrevert import (
    REVERT_GROUPS,
    VERBS,
    Verb,
    finish,
    revert_kill_matrix,
    systemd_scenario,
    warm,
)
from tests.crashtrace import Call
from tests.test_crash import document_a, document_b

pytestmark = [pytest.mark.system, pytest.mark.slow]

QUICK = CRASH_DEPTH == "quick"

# At quick a fresh node is left to the test of its revert's last call below.
KILL_CASES = [
    (node, verb) for node in NODE_STATES for verb in VERBS if not QUICK or node == "re-add"
]


@pytest.fixture(scope="module", params=NODE_STATES)
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, node_pem: str
) -> Scenario:
    """node-daemon-setup with B on a fresh node or a re-add of A; systemd as init, no timer."""
    found = systemd_scenario(
        tmp_path_factory, request.param, document_a(node_pem), document_b(node_pem)
    )
    warm(found)
    return found


@pytest.fixture(scope="module", params=VERBS)
def verb(request: pytest.FixtureRequest, scenario: Scenario) -> Verb:
    """A revert of B, a run of B to be confirmed, or the confirm of one."""
    return Verb(scenario, request.param)


@pytest.fixture(scope="module")
def verb_reference(verb: Verb) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of the verb."""
    return verb.reference()


@pytest.mark.parametrize(("scenario", "verb"), KILL_CASES, indirect=True)
@pytest.mark.parametrize("group", REVERT_GROUPS)
def test_kill_during_revert_commit_confirmed_or_confirm_then_finish(
    verb: Verb, verb_reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 in a revert, a commit to be confirmed or a confirm, then each way to finish
    it: the journal's side, no copy, and the kept set as that side needs it."""
    failures = revert_kill_matrix(verb, verb_reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(("scenario", "verb"), [("fresh", "revert")], indirect=True)
@pytest.mark.parametrize("way", ["--resume", "revert"])
def test_a_revert_killed_after_removing_the_directory_its_commit_made_is_finished(
    verb: Verb, verb_reference: dict[str, list[Call]], way: str
) -> None:
    """A revert of a first install killed at its end record, after it removed the directory
    the commit created: --resume and the revert repeated roll it forward to the bare node."""
    last = verb.points(verb_reference, "any")[-1]
    assert "var/lib/ganeti" in verb.scenario.new
    assert "var/lib/ganeti" not in verb.scenario.old
    failures = finish(verb, last, way)
    assert failures == [], "\n".join(failures)
