"""Targets on another filesystem than the state directory (a tmpfs at ``var/lib/ganeti``).

Staged and hold copies then live beside their targets (``.txsetup-<txid>-<i>``)
so that commit is still a rename; these tests pin that path end to end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    Entry,
    Run,
    encode,
    kept_for_revert,
    make_document,
    run_traced,
    snapshot,
    state_dir_leftovers,
    tmpfs,
)

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"
CHANGED = {"master_ip": "192.0.2.77", "cluster_tags": "new-tag"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def split_root(root: Path) -> Iterator[Path]:
    """A node root whose ``var/lib/ganeti`` is a tmpfs of its own."""
    with tmpfs(root / GANETI):
        yield root


def copies_beside_targets(root: Path) -> list[str]:
    """Staged or hold copies left in the target directory (not the last commit's kept set)."""
    kept = kept_for_revert(root)
    return sorted(
        n
        for n in os.listdir(root / GANETI)
        if n.startswith(".txsetup-") and f"{GANETI}/{n}" not in kept
    )


def installed(split_root: Path, node_pem: str, setup_run: SetupRun) -> dict[str, Entry]:
    """Install the old configuration; its snapshot."""
    run = setup_run(make_document(node_pem))
    assert run.returncode == 0, run.stderr
    assert copies_beside_targets(split_root) == []
    return snapshot(split_root)


def test_install_and_change_across_filesystems(
    split_root: Path, node_pem: str, setup_run: SetupRun
) -> None:
    """Commit works with copies beside the targets, and leaves none of them behind."""
    assert os.stat(split_root / GANETI).st_dev != os.stat(split_root / "var/lib").st_dev
    installed(split_root, node_pem, setup_run)
    run = setup_run(make_document(node_pem, ssconf=CHANGED))
    assert run.returncode == 0, run.stderr
    assert (split_root / GANETI / "ssconf_master_ip").read_text() == "192.0.2.77\n"
    assert copies_beside_targets(split_root) == []
    assert state_dir_leftovers(split_root) == []


def test_failure_across_filesystems_restores_everything(
    split_root: Path, node_pem: str, setup_run: SetupRun
) -> None:
    """EIO at the second commit rename: exit 6, old files exactly, no copies beside them."""
    installed(split_root, node_pem, setup_run)
    before = snapshot(split_root)
    document = make_document(node_pem, ssconf={**CHANGED, "offline_nodes": "x"})
    proc = run_traced(split_root, encode(document), "rename,renameat,renameat2", "error=EIO:when=2")
    assert proc.returncode == 6, proc.stderr.decode()
    assert snapshot(split_root) == before
    assert copies_beside_targets(split_root) == []


@pytest.mark.parametrize(("extra", "outcome"), [((), "resumed"), (("--abort",), "rolled_back")])
def test_kill_at_commit_then_resume_across_filesystems(
    split_root: Path, node_pem: str, setup_run: SetupRun, extra: tuple[str, ...], outcome: str
) -> None:
    """Killed at commit's first rename: --resume finishes (or --abort undoes) exactly."""
    old = installed(split_root, node_pem, setup_run)
    document = make_document(node_pem, ssconf=CHANGED)
    proc = run_traced(
        split_root, encode(document), "rename,renameat,renameat2", "error=EIO:signal=SIGKILL:when=1"
    )
    assert proc.returncode in (-9, 137), proc.stderr.decode()
    assert copies_beside_targets(split_root) != []  # staged beside the targets, not in state
    run = setup_run(None, "--resume", *extra)
    assert (run.returncode, run.result["outcome"]) == (0, outcome), run.stderr
    assert copies_beside_targets(split_root) == []
    assert state_dir_leftovers(split_root) == []
    if extra:
        assert snapshot(split_root) == old
    else:
        assert (split_root / GANETI / "ssconf_master_ip").read_text() == "192.0.2.77\n"
        assert setup_run(document).result["outcome"] == "converged"
