"""Journals the version before the program declarations wrote still read and resume.

The fixtures in ``tests/journals/v2`` were written by that version (txsetup
0.1.0 as of the Debian packaging): node-daemon-setup and ssh-setup runs that
restarted or reloaded their service, one whose restart failed, and one of
each killed (``kill -9``) during the restart or reload. Their service states
(``restarting_daemon``, ``reloading_sshd``) are now declared by the services
themselves, so these pin that the declarations read the records as written.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from txsetup.log import get_logger
from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.node.status import last_transaction
from txsetup.txn.hooks import Hooks
from txsetup.txn.journal import Record, TxnState, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn
from txsetup.txn.recovery import recover_pending
from txsetup.txn.rules import RecoveryAction, decide
from txsetup.txn.service import Service, ServiceKind

FIXTURES = Path(__file__).parent / "journals" / "v2"

# name: (program, the last transaction's outcome, its service)
CASES = {
    "daemon-restarted": ("node-daemon-setup", "committed", DAEMON),
    "daemon-restart-failed": ("node-daemon-setup", "unfinished", DAEMON),
    "daemon-killed-in-restart": ("node-daemon-setup", "unfinished", DAEMON),
    "sshd-reloaded": ("ssh-setup", "committed", SSHD),
    "sshd-reload-failed": ("ssh-setup", "rolled_back", SSHD),
    "sshd-killed-in-reload": ("ssh-setup", "unfinished", SSHD),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_record_reads_and_the_service_finds_its_own(name: str) -> None:
    """Each line of each fixture is a record; status reads the outcome; the service
    declared for the program finds the record it journaled and reads its details."""
    program, outcome, kind = CASES[name]
    path = FIXTURES / f"{name}.journal"
    records = read_journal(path)
    assert len(records) == len(path.read_bytes().splitlines())
    found = last_transaction(records)
    assert found is not None
    assert (found["program"], found["outcome"]) == (program, outcome)
    txn = PendingTxn.from_records(records)
    assert kind.wanted(txn.details)
    assert [r.state for r in records].count(kind.state) == 1
    assert set(kind.earlier(txn.details)) <= {"old_fingerprint", "old_host_keys"}


@dataclass
class _Control:
    """The service's process boundary: what recovery asked of it."""

    running: bool = True
    applied: list[Mapping[str, Any]] = field(default_factory=list)
    restored: list[Mapping[str, Any]] = field(default_factory=list)

    def is_running(self) -> bool:
        return self.running

    def is_current(self, details: Mapping[str, Any]) -> bool:
        return False

    def apply(self, details: Mapping[str, Any]) -> None:
        self.applied.append(details)

    def restore(self, earlier: Mapping[str, Any]) -> None:
        self.restored.append(earlier)


def _as_written_here(records: list[Record], root: Path) -> bytes:
    """The fixture's records, with each committed file made under ``root`` and its
    inode number put where the killed run's journal had the original one."""
    lines = []
    for record in records:
        data = dict(record.data)
        if record.state == TxnState.PREPARED:
            changes = []
            for change in data["changes"]:
                target = root / change["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"new\n")
                changes.append({**change, "new_ino": os.lstat(target).st_ino})
            data["changes"] = changes
        lines.append(Record(record.txid, record.state, data).encode())
    return b"".join(lines)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("daemon-killed-in-restart", DAEMON), ("sshd-killed-in-reload", SSHD)],
)
def test_a_run_killed_in_its_service_step_resumes_forward(
    name: str, kind: ServiceKind, tmp_path: Path
) -> None:
    """``--resume``'s recovery rolls a killed run forward: the service is applied again
    with the details the old version journaled, and not journaled a second time."""
    records = read_journal(FIXTURES / f"{name}.journal")
    assert decide({r.state for r in records}, abort=False) is RecoveryAction.ROLLED_FORWARD
    layout = Layout(tmp_path)
    layout.state_dir.mkdir(parents=True)
    layout.journal.write_bytes(_as_written_here(records, tmp_path))
    control = _Control()
    hooks = Hooks(services=(Service(kind=kind, control=control),))
    found = recover_pending(
        layout, get_logger(), hooks=hooks, abort=False, lock_timeout=5, by="--resume"
    )
    assert found is not None
    assert found.action is RecoveryAction.ROLLED_FORWARD
    prepared = PendingTxn.from_records(records).details
    assert [dict(applied) for applied in control.applied] == [prepared]
    after = [r.state for r in read_journal(layout.journal)]
    assert after.count(kind.state) == 1
    assert after[-1] == TxnState.DONE


def test_the_journal_refuses_a_state_no_service_could_declare() -> None:
    """A checksummed record whose state is neither generic nor named like a service's
    (``<doing>ing_<service>``) is no record: a service cannot declare such a state."""
    body = b'{"state":"nope","txid":"t"}'
    assert Record.decode(b"%08x %s\n" % (zlib.crc32(body), body)) is None
    with pytest.raises(ValueError, match="names what is done"):
        ServiceKind(step="x", description="x", state="nope", noun="x", wanted=lambda _d: True)
