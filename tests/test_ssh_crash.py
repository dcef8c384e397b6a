"""The crash matrix of ssh-setup: kill -9, EIO and ENOSPC at every file syscall.

The harness is :mod:`tests.crashmatrix`, the same as node-daemon-setup's,
over the same syscall groups and the same faults inside ``--resume``. Here:
the documents, and the matrices on a fresh node and on a re-add. The old node
of a re-add holds document A (Ganeti 3.0: host keys, root's ed25519 pair made
on the node, one authorized key); document B (Ganeti 2.x) brings new host
keys, a given root ecdsa pair and one more authorized key, so seven files
change on a re-add, three of them keys; on a fresh node it creates them all.

sshd is stood in for by ``true`` (health: the status command) so thousands of
runs need no daemon; ``test_ssh_sshd.py`` covers the real reload and a resume
that reloads it. A kill during ``--prepare`` and during ``txsetup commit`` of
B on a re-add (:mod:`tests.crashdecision`) checks that the decision verbs
finish ssh-setup's transactions as they finish node-daemon-setup's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crashdecision import DECISION_GROUPS, Held, Verb, decision_kill_matrix, make_held
from tests.crashmatrix import (
    ERRORS,
    NODE_STATES,
    ROLLBACK_GROUPS,
    SECOND_LEVEL,
    Program,
    Scenario,
    error_in_resume_matrix,
    error_matrix,
    kill_in_resume_matrix,
    kill_in_rollback_matrix,
    kill_matrix,
    make_scenario,
)
from tests.crashtrace import GROUPS, Call
from tests.sshdoc import key_pair, ssh_document, write_sshd_config

pytestmark = [pytest.mark.system, pytest.mark.slow]


def bare_node(root: Path) -> None:
    """A node with no key of ours yet, whose sshd is stood in for by ``true``."""
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()
    write_sshd_config(root, reload=["true"], status=["true"], health_address="none")


SSH_SETUP = Program("ssh-setup", bare_node)


@pytest.fixture(scope="module", params=NODE_STATES)
def ssh_scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    """ssh-setup running B on a fresh node, or on a re-add of A."""
    document_a = ssh_document(label="old")
    document_b = ssh_document(
        label="new",
        key_type=None,
        root_keys=[key_pair("ecdsa", "root-b")],
        authorized={"master": [key_pair("ed25519", "master")[2], key_pair("ecdsa", "cand")[2]]},
    )
    return make_scenario(tmp_path_factory, SSH_SETUP, request.param, document_a, document_b)


@pytest.fixture(scope="module")
def ssh_reference(ssh_scenario: Scenario) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of B."""
    root = ssh_scenario.fresh_root()
    found = ssh_scenario.reference(root, payload=ssh_scenario.payload)
    assert ssh_scenario.which(root) == "new"
    return found


@pytest.mark.parametrize("group", list(GROUPS))
def test_kill_at_every_point_then_resume_is_old_or_new(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 at any file syscall, then ``--resume``: exactly the side the journal calls for."""
    failures = kill_matrix(ssh_scenario, ssh_reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_io_error_at_every_point_rolls_back_or_commits(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], group: str, errno_name: str
) -> None:
    """An injected EIO or ENOSPC exits 6 with the old files or 0 with the new, never a mix."""
    failures = error_matrix(ssh_scenario, ssh_reference, group, errno_name)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
def test_io_error_writing_log_or_result_never_misreports(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], errno_name: str
) -> None:
    """A log line or the result that cannot be written never turns into a traceback or a lie."""
    failures = error_matrix(ssh_scenario, ssh_reference, "write", errno_name, streams=True)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(
    "group",
    list(ROLLBACK_GROUPS),
)
def test_kill_during_the_undo_after_an_io_error_then_resume_is_old_or_new(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], group: str
) -> None:
    """EIO, then a kill -9 during the undo it started, then ``--resume``: the journal's side."""
    failures = kill_in_rollback_matrix(ssh_scenario, ssh_reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_kill_during_resume_then_resume_again_is_old_or_new(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], case: str
) -> None:
    """A kill -9 inside ``--resume`` itself, then ``--resume``: the side the journal calls for."""
    failures = kill_in_resume_matrix(ssh_scenario, ssh_reference, case)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_io_error_during_resume_is_consistent_or_exit_8_and_retried(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], case: str
) -> None:
    """EIO inside ``--resume``: exit 0 with the journal's side, or 8 with the journal kept."""
    failures = error_in_resume_matrix(ssh_scenario, ssh_reference, case)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("ssh_scenario", ["re-add"], indirect=True)
def test_the_old_node_has_roots_generated_key(ssh_scenario: Scenario) -> None:
    """Document A made root's pair on the node; B (Ganeti 2.x) keeps it and adds a given one."""
    assert (ssh_scenario.old_root / "root/.ssh/id_ed25519").exists()
    assert "root/.ssh/id_ecdsa" in ssh_scenario.new
    assert "root/.ssh/id_ecdsa" not in ssh_scenario.old


@pytest.fixture(scope="module")
def ssh_held(ssh_scenario: Scenario) -> Held:
    """B prepared by ssh-setup, on the scenario's node."""
    return make_held(ssh_scenario)


@pytest.fixture(scope="module", params=["prepare", "commit"])
def ssh_verb(request: pytest.FixtureRequest, ssh_held: Held) -> Verb:
    """A prepare of B on the old node, or a commit of the held one."""
    return Verb(ssh_held, request.param)


@pytest.fixture(scope="module")
def ssh_verb_reference(ssh_verb: Verb) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of the verb."""
    return ssh_verb.reference()


@pytest.mark.parametrize("ssh_scenario", ["re-add"], indirect=True)
@pytest.mark.parametrize("group", DECISION_GROUPS)
def test_kill_during_prepare_or_commit_then_finish_is_the_journals_side(
    ssh_scenario: Scenario,
    ssh_verb: Verb,
    ssh_verb_reference: dict[str, list[Call]],
    group: str,
) -> None:
    """A kill -9 in a prepare or commit, then a repeat or ``--resume``: the journal's side."""
    failures = decision_kill_matrix(ssh_verb, ssh_verb_reference, group)
    assert failures == [], "\n".join(failures)
