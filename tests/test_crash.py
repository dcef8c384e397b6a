"""The crash matrix of node-daemon-setup: kill -9, EIO and ENOSPC at every file syscall.

The harness is :mod:`tests.crashmatrix` (how points are chosen, how deep
``TXSETUP_CRASH`` goes, and how the side ``--resume`` must leave is read from
the journal). Here: the documents, and the matrices on a fresh node and on a
re-add. Document A is the old configuration of a re-add; document B changes
four ssconf values, adds one and adds ``hmac_key``, so on a fresh node it
creates ``var/lib/ganeti`` and every file in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import encode, make_document
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

pytestmark = [pytest.mark.system, pytest.mark.slow]


def bare_node(root: Path) -> None:
    """A node as a fresh node has it: ``var/lib`` and ``var/lock``, nothing of ours."""
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()


NODE_DAEMON_SETUP = Program("node-daemon-setup", bare_node)


def document_a(pem: str) -> dict[str, Any]:
    """The old configuration."""
    return make_document(pem, ssconf={"master_netdev": "eth0", "offline_nodes": ""})


def document_b(pem: str) -> dict[str, Any]:
    """The new configuration: four values changed, one added, an HMAC key added."""
    return make_document(
        pem,
        ssconf={
            "master_netdev": "eth0",
            "offline_nodes": "",
            "master_ip": "192.0.2.99",
            "node_list": "node1.example.com\nnode2.example.com\nnode3.example.com\n",
            "release_version": "3.1.0",
            "cluster_tags": "tag-a\ntag-b",
            "master_netmask": "24",
        },
        hmac_key="hmac-secret-0123456789abcdef",
    )


@pytest.fixture(scope="module", params=NODE_STATES)
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, node_pem: str
) -> Scenario:
    """node-daemon-setup running B on a fresh node, or on a re-add of A."""
    node = request.param
    return make_scenario(
        tmp_path_factory, NODE_DAEMON_SETUP, node, document_a(node_pem), document_b(node_pem)
    )


@pytest.fixture(scope="module")
def reference(scenario: Scenario) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of B."""
    root = scenario.fresh_root()
    found = scenario.reference(root, payload=scenario.payload)
    assert scenario.which(root) == "new"
    return found


@pytest.mark.parametrize("group", list(GROUPS))
def test_kill_at_every_point_then_resume_is_old_or_new(
    scenario: Scenario, reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 at any file syscall, then ``--resume``: exactly the side the journal calls for."""
    failures = kill_matrix(scenario, reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_io_error_at_every_point_rolls_back_or_commits(
    scenario: Scenario, reference: dict[str, list[Call]], group: str, errno_name: str
) -> None:
    """An injected EIO or ENOSPC exits 6 with the old files or 0 with the new, never a mix."""
    failures = error_matrix(scenario, reference, group, errno_name)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("errno_name", ERRORS)
def test_io_error_writing_log_or_result_never_misreports(
    scenario: Scenario, reference: dict[str, list[Call]], errno_name: str
) -> None:
    """A log line or the result that cannot be written never turns into a traceback or a lie."""
    failures = error_matrix(scenario, reference, "write", errno_name, streams=True)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(
    "group",
    list(ROLLBACK_GROUPS),
)
def test_kill_during_the_undo_after_an_io_error_then_resume_is_old_or_new(
    scenario: Scenario, reference: dict[str, list[Call]], group: str
) -> None:
    """EIO, then a kill -9 during the undo it started, then ``--resume``: the journal's side."""
    failures = kill_in_rollback_matrix(scenario, reference, group)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_kill_during_resume_then_resume_again_is_old_or_new(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> None:
    """A kill -9 inside ``--resume`` itself, then ``--resume``: the side the journal calls for."""
    failures = kill_in_resume_matrix(scenario, reference, case)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("case", list(SECOND_LEVEL))
def test_io_error_during_resume_is_consistent_or_exit_8_and_retried(
    scenario: Scenario, reference: dict[str, list[Call]], case: str
) -> None:
    """EIO inside ``--resume``: exit 0 with the journal's side, or 8 with the journal kept."""
    failures = error_in_resume_matrix(scenario, reference, case)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("scenario", ["re-add"], indirect=True)
@pytest.mark.parametrize("local_file", ["server.pem", "ssconf_cluster_name"])
def test_unreadable_local_file_never_skips_verification(
    scenario: Scenario, other_pem: str, node_pem: str, local_file: str
) -> None:
    """An I/O error reading the local key or cluster name refuses the run, never skips the check."""
    refused = {
        # A certificate whose key is not the local one.
        "server.pem": make_document(other_pem, ssconf={"master_ip": "192.0.2.7"}),
        # The local key, but another cluster's name.
        "ssconf_cluster_name": make_document(node_pem, cluster="other.example.com"),
    }[local_file]
    plain = scenario.fresh_root()
    run = scenario.run(plain, payload=encode(refused))
    assert run.returncode == 4, run.result

    root = scenario.fresh_root()
    target = root / "var/lib/ganeti" / local_file
    traced = scenario.traced(
        root, ("openat", "error=EIO:when=1"), payload=encode(refused), path=target
    )
    assert "(INJECTED)" in traced.trace
    assert "Traceback" not in traced.stderr, traced.stderr
    result = json.loads(traced.stdout)
    assert traced.returncode not in (0, 6), result
    assert result["outcome"] == "failed", result
    assert scenario.which(root) == "old"
