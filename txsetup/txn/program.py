"""A program is a declaration; a transaction's steps share one context.

A program (``node-daemon-setup``, ``ssh-setup``) says only what is its own:
how it decodes its document, the checks it runs, the files it wants, the
service it restarts or reloads and what the journal keeps for it. The
builder (:mod:`txsetup.txn.steps`) makes its step table, dry run included,
and :func:`txsetup.txn.run.run_transaction` runs it. A third program is a
third declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, Generic, TypeVar

from filelock import FileLock
from structlog.typing import FilteringBoundLogger

from txsetup.errors import InternalError
from txsetup.txn.engine import Step
from txsetup.txn.hooks import CommitLock, Hooks
from txsetup.txn.journal import Journal
from txsetup.txn.layout import Layout
from txsetup.txn.pending import PendingTxn
from txsetup.txn.plan import Action, DesiredFile, PlannedFile
from txsetup.txn.service import Service

__all__ = ["Program", "TxnContext"]

D = TypeVar("D")  # the program's decoded document
F = TypeVar("F")  # what its checks find, for planning and its words


def _no_result(_ctx: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, kw_only=True)
class Program(Generic[D, F]):
    """One command, declared: everything that is its own, nothing the engine does.

    Attributes:
        command: its name (``node-daemon-setup``), as the journal and results say it.
        decode: reads and validates the document on stdin.
        describe_document: the ``decode`` step's words.
        facts: a fresh, empty record of what its checks find.
        checks: its verify steps, in order (none writes).
        wanted: every file it wants, from the document and the facts (the plan).
            Material made on the node (a client certificate, a key pair) is
            made here, once the checks have passed.
        service: the service applied after the commit, as configured.
        service_details: what the ``prepared`` record keeps for the service
            (and for ``status``): whether to apply it, what it served before.
        describe_service: the service step's words.
        dir_modes: modes of the directories it may create (default 0755).
        sweep_dirs: where its staged and hold copies live.
        commit_lock: a lock it holds while its files are renamed, if any.
        result: what a successful result adds (``root_public_keys``).
    """

    command: str
    decode: Callable[[BinaryIO], D]
    describe_document: Callable[[D], str]
    facts: Callable[[], F]
    checks: tuple[Step[TxnContext[D, F]], ...]
    wanted: Callable[[TxnContext[D, F]], list[DesiredFile]]
    service: Service
    service_details: Callable[[TxnContext[D, F]], dict[str, Any]]
    describe_service: Callable[[TxnContext[D, F]], str]
    dir_modes: Mapping[str, int] = field(default_factory=dict)
    sweep_dirs: tuple[str, ...] = ()
    commit_lock: CommitLock | None = None
    result: Callable[[TxnContext[D, F]], dict[str, Any]] = _no_result


@dataclass(kw_only=True)
class TxnContext(Generic[D, F]):
    """What the steps of one transaction share: handed in, then filled in as they go.

    Attributes:
        program: the program whose steps run.
        layout, txid, stdin, log: where, which transaction, its document, its log.
        recovery: every program's hooks: the lock step finishes any program's
            unfinished transaction, and an undo restores any service touched.
        lock_timeout: how long to wait for a lock.
        now: the time the checks judge validity at (the run's start).
        facts: what the checks found (the program's own record).
        document: the decoded document (set by ``decode``).
        lock: the transaction lock, while held.
        recovered: what the lock step's recovery did.
        plan: every wanted file compared with the disk.
        txn: the transaction, from its commit point on.
        failure: why the run is undone (set before compensation).
        hold: set by ``--prepare``: who prepared it (``by``, ``coordinator``); the
            ``prepared`` record keeps it and the node is then held.
        confirm_within: ``--confirm-within``: seconds the commit waits for
            ``txsetup confirm`` before it is reverted (the ``prepared`` record keeps it).
        unconfirmed: such a commit's deadline and timer, once it committed.
    """

    program: Program[D, F]
    layout: Layout
    txid: str
    stdin: BinaryIO
    log: FilteringBoundLogger
    recovery: Hooks
    facts: F
    lock_timeout: float = 60.0
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    document: D | None = None
    lock: FileLock | None = None
    recovered: list[dict[str, str]] = field(default_factory=list)
    plan: list[PlannedFile] = field(default_factory=list)
    txn: PendingTxn | None = None
    failure: dict[str, str] | None = None
    hold: Mapping[str, Any] | None = None
    confirm_within: float | None = None
    unconfirmed: dict[str, Any] | None = None

    @property
    def journal(self) -> Journal:
        """This transaction's journal writer."""
        return Journal(self.layout.journal, self.txid)

    @property
    def changed_paths(self) -> list[str]:
        """Root-relative paths this transaction changes."""
        return [p.desired.relpath for p in self.plan if p.action is not Action.UNCHANGED]

    def need_document(self) -> D:
        """The decoded document (the ``decode`` step has run)."""
        if self.document is None:
            raise InternalError("decode must run before the steps that use the document")
        return self.document
