"""The crash matrix of node-daemon-setup's participant verbs: ``--prepare``, ``commit``, ``abort``.

The harness is :mod:`tests.crashdecision` (built on :mod:`tests.crashmatrix`):
a kill -9 at a file syscall of each verb, then the side the journal it left
calls for — held, new or old — checked by every way there is to finish it.
Documents A and B are the kill matrix's (:mod:`tests.test_crash`), on a
fresh node and on a re-add.
"""

from __future__ import annotations

import pytest

from tests.conftest import CRASH_DEPTH
from tests.crashdecision import (
    DECISION_GROUPS,
    ENDS,
    VERBS,
    Held,
    Verb,
    decision_error_matrix,
    decision_kill_matrix,
    make_held,
)
from tests.crashmatrix import ERRORS, NODE_STATES, make_scenario
from tests.crashtrace import Call
from tests.test_crash import NODE_DAEMON_SETUP, document_a, document_b

pytestmark = [pytest.mark.system, pytest.mark.slow]

QUICK = CRASH_DEPTH == "quick"
# At quick a fresh node's commit is left out (it creates what a re-add's renames over, and
# its abort shows the directory it made removed), and so are its I/O errors.
KILL_CASES = [
    (node, verb)
    for node in NODE_STATES
    for verb in VERBS
    if not QUICK or node == "re-add" or verb != "commit"
]
ERROR_NODE_STATES = ("re-add",) if QUICK else NODE_STATES


@pytest.fixture(scope="module", params=NODE_STATES)
def held(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, node_pem: str
) -> Held:
    """B prepared on a fresh node, or on a re-add of A."""
    scenario = make_scenario(
        tmp_path_factory,
        NODE_DAEMON_SETUP,
        request.param,
        document_a(node_pem),
        document_b(node_pem),
    )
    return make_held(scenario)


@pytest.fixture(scope="module", params=VERBS)
def verb(request: pytest.FixtureRequest, held: Held) -> Verb:
    """A prepare of B on the old node, or a commit or abort of the held one."""
    return Verb(held, request.param)


@pytest.fixture(scope="module")
def verb_reference(verb: Verb) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of the verb."""
    return verb.reference()


@pytest.mark.parametrize(("held", "verb"), KILL_CASES, indirect=True)
@pytest.mark.parametrize("group", DECISION_GROUPS)
def test_kill_during_prepare_commit_or_abort_then_finish_is_the_journals_side(
    verb: Verb, verb_reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 in a verb, then a repeat or ``--resume``: held, new or old as its journal says."""
    failures = decision_kill_matrix(verb, verb_reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
@pytest.mark.parametrize("group", DECISION_GROUPS)
@pytest.mark.parametrize("verb", list(ENDS), indirect=True)
@pytest.mark.parametrize("held", ERROR_NODE_STATES, indirect=True)
def test_io_error_during_commit_or_abort_leaves_its_side_or_a_journal_to_finish(
    verb: Verb, verb_reference: dict[str, list[Call]], group: str, errno_name: str
) -> None:
    """EIO or ENOSPC in a decision: its side, or a held or decided journal a repeat finishes."""
    failures = decision_error_matrix(verb, verb_reference, group, errno_name)
    assert failures == [], "\n".join(failures)
