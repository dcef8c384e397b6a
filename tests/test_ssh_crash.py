"""The crash matrix over ssh-setup: kill -9 and EIO at file syscalls, then ``--resume``.

The machinery is :mod:`tests.test_crash`'s, run with the ``ssh-setup``
command. The old node holds document A (Ganeti 3.0: host keys, root's
ed25519 pair made on the node, one authorized key); document B (Ganeti 2.x)
brings new host keys, a given root ecdsa pair and one more authorized key,
so seven files change, three of them keys. Occurrences of ``write`` (of files
and the journal, not log lines), ``fsync``, ``rename`` and ``unlink`` are hit
(a few spread over the run by default, every third at ``TXSETUP_CRASH=sampled``,
every one at ``full``: see :mod:`tests.test_crash`), and the node must end
exactly old or exactly new — bytes, mode, owner — after ``--resume``, then
converge on a re-run.

sshd is stood in for by ``true`` (health: the status command) so thousands of
runs need no daemon; ``test_ssh_sshd.py`` covers the real reload and a resume
that reloads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CRASH_DEPTH, copy_root, encode, require_tool, run_txsetup, snapshot
from tests.sshdoc import key_pair, ssh_document, write_sshd_config
from tests.test_crash import (
    Call,
    Scenario,
    check_error_point,
    converges,
    points,
    resumed_consistently,
    run_matrix,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

GROUPS = ("write", "fsync", "rename", "unlink")
STRIDE = 1 if CRASH_DEPTH == "full" else 3  # the quick depth spreads a few points instead


@pytest.fixture(scope="module")
def ssh_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The old node (A applied), the new state (B applied to a copy), warmed byte-code."""
    strace = require_tool("strace")
    work = tmp_path_factory.mktemp("ssh-crash")
    env = {"PYTHONPYCACHEPREFIX": str(work / "pycache")}
    traced_env = {**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"}
    old_root = work / "old"
    (old_root / "var/lib").mkdir(parents=True)
    write_sshd_config(old_root, reload=["true"], status=["true"], health_address="none")
    first = run_txsetup(
        ["ssh-setup", "--root", str(old_root)], stdin=encode(ssh_document(label="old")), env=env
    )
    assert first.returncode == 0, first.stderr
    document_b = ssh_document(
        label="new",
        key_type=None,
        root_keys=[key_pair("ecdsa", "root-b")],
        authorized={"master": [key_pair("ed25519", "master")[2], key_pair("ecdsa", "cand")[2]]},
    )
    payload = encode(document_b)
    new_root = work / "new"
    copy_root(old_root, new_root)
    applied = run_txsetup(["ssh-setup", "--root", str(new_root)], stdin=payload, env=env)
    assert applied.result["outcome"] == "committed", applied.stderr
    assert len(applied.result["changed"]) == 7
    run_txsetup(["ssh-setup", "--resume", "--root", str(new_root)], env=env)
    run_txsetup(["ssh-setup", "--root", str(new_root)], stdin=b"{}", env=env)
    scenario = Scenario(
        work,
        old_root,
        snapshot(old_root),
        snapshot(new_root),
        payload,
        env,
        traced_env,
        strace,
        command="ssh-setup",
    )
    assert scenario.old != scenario.new
    return scenario


@pytest.fixture(scope="module")
def ssh_reference(ssh_scenario: Scenario) -> dict[str, list[Call]]:
    """The in-scope occurrences of each syscall in a clean traced run of B."""
    root = ssh_scenario.fresh_root()
    found = ssh_scenario.reference(root, payload=ssh_scenario.payload)
    assert ssh_scenario.which(root) == "new"
    return found


@pytest.mark.parametrize("group", GROUPS)
def test_kill_at_sampled_points_then_resume_is_old_or_new(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], group: str
) -> None:
    """A kill -9 at a sampled file syscall of ssh-setup, then ``--resume``: exactly old or new."""

    def check(call: Call) -> list[str]:
        root = ssh_scenario.fresh_root()
        traced = ssh_scenario.traced(
            root, call.name, f"signal=SIGKILL:when={call.ordinal}", payload=ssh_scenario.payload
        )
        if not traced.killed:
            return [f"the injection did not fire (exit {traced.returncode})"]
        state, problems = resumed_consistently(ssh_scenario, root)
        return problems or converges(ssh_scenario, root, state)

    # Log lines are left out: a kill while writing one is a kill between two
    # file operations, which the neighbouring points already are.
    calls = points(ssh_reference, group, keep=lambda c: c.fd not in (1, 2), stride=STRIDE)
    failures = run_matrix(check, calls)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("group", GROUPS)
def test_eio_at_sampled_points_rolls_back_or_commits(
    ssh_scenario: Scenario, ssh_reference: dict[str, list[Call]], group: str
) -> None:
    """EIO at a sampled file syscall of ssh-setup: exit 6 with the old files or 0 with the new."""
    calls = points(ssh_reference, group, keep=lambda c: c.fd not in (1, 2), stride=STRIDE)
    failures = run_matrix(lambda call: check_error_point(ssh_scenario, call, "EIO"), calls)
    assert failures == [], "\n".join(failures)


def test_the_old_node_has_roots_generated_key(ssh_scenario: Scenario) -> None:
    """Document A made root's pair on the node; B (Ganeti 2.x) keeps it and adds a given one."""
    old: Path = ssh_scenario.old_root
    assert (old / "root/.ssh/id_ed25519").exists()
    assert "root/.ssh/id_ecdsa" in ssh_scenario.new
    assert "root/.ssh/id_ecdsa" not in ssh_scenario.old
