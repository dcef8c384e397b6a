"""The one step-table builder: a program's declaration becomes its steps, dry run included.

Every table has the same frame: ``lock``, ``decode``, the program's checks,
``stage`` (the commit point), ``commit``, and the step that applies its
service. The writing steps share one compensation, :func:`undo_transaction`,
which undoes whatever the transaction did so far, whichever step failed.
The dry run is derived by step name: no lock, ``stage`` only plans, nothing
after it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from txsetup.txn import recovery
from txsetup.txn.changeset import commit_changes, make_dirs, missing_dirs, stage_changes
from txsetup.txn.decisions import refuse_if_aborted
from txsetup.txn.engine import Step
from txsetup.txn.finish import finish_undo
from txsetup.txn.journal import TxnState
from txsetup.txn.lock import acquire_lock
from txsetup.txn.pending import PendingTxn, utc_now
from txsetup.txn.plan import Action, PlannedFile, plan_files
from txsetup.txn.program import Program, TxnContext
from txsetup.txn.service import apply_service

__all__ = [
    "DRY_RUN",
    "counted",
    "dry_run_table",
    "named",
    "step_table",
    "take_lock",
    "undo_transaction",
]

Context = TxnContext[Any, Any]


def counted(number: int, noun: str) -> str:
    """``1 file``, ``14 files``: a number with its noun."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def named(text: str, limit: int = 64) -> str:
    """A name from the document, cut short: a log line must not carry megabytes of it."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- lock ---------------------------------------------------------------------------------


def take_lock(ctx: Context) -> bool:
    """Take the transaction lock, then recover whatever a crash left behind.

    A prepare for a coordinator id aborted on this node stops here (exit 4).
    """
    ctx.lock = acquire_lock(ctx.layout, ctx.lock_timeout)
    pending = recovery.recover_pending(
        ctx.layout,
        ctx.log,
        hooks=ctx.recovery,
        abort=False,
        lock_timeout=ctx.lock_timeout,
        by=f"run {ctx.txid}",
    )
    if pending:
        ctx.recovered.append(pending.to_json())
    if ctx.hold is not None:
        refuse_if_aborted(ctx.layout, ctx.hold.get("coordinator"))
    return pending is not None


def release_lock(ctx: Context) -> None:
    """Release the transaction lock (idempotent)."""
    if ctx.lock is not None:
        ctx.lock.release(force=True)
        ctx.lock = None


_RECOVERED = {"rolled_forward": "finished", "rolled_back": "undone"}


def describe_lock(ctx: Context) -> str:
    """The lock step: taken, and what became of an interrupted transaction it found."""
    if not ctx.recovered:
        return "lock taken"
    found = ctx.recovered[-1]
    if found.get("action") == "reverted":
        return f"lock taken; commit {found.get('txid')} reverted: not confirmed in time"
    done = _RECOVERED.get(found.get("action", ""), "recovered")
    return f"lock taken; interrupted transaction {found.get('txid')} {done}"


# --- decode --------------------------------------------------------------------------------


def decode(ctx: Context) -> bool:
    """Read and validate the document on stdin."""
    ctx.document = ctx.program.decode(ctx.stdin)
    return False


def describe_decode(ctx: Context) -> str:
    """The document, in the program's words."""
    return str(ctx.program.describe_document(ctx.need_document()))


# --- plan and stage ------------------------------------------------------------------------


def plan(ctx: Context) -> bool:
    """Compare the wanted files with the disk (the dry run's stage): reads, never writes."""
    ctx.plan = plan_files(ctx.layout, ctx.program.wanted(ctx))
    return False


def _by_action(ctx: Context) -> Counter[Action]:
    return Counter(planned.action for planned in ctx.plan)


def describe_plan(ctx: Context) -> str:
    """The dry run's stage: what a real run would do to each file; nothing is written."""
    actions = _by_action(ctx)
    create, replace = actions[Action.CREATE], actions[Action.REPLACE]
    if not create and not replace:
        return f"plan: nothing to change ({counted(actions[Action.UNCHANGED], 'file')} as wanted)"
    return f"plan: {create} to create, {replace} to replace, {actions[Action.UNCHANGED]} unchanged"


def stage(ctx: Context) -> bool:
    """Plan, then stage every changing file durably and journal the plan: the commit point.

    Nothing to change and a service already serving what is wanted: no
    transaction at all (converged).
    """
    plan(ctx)
    details = ctx.program.service_details(ctx)
    service = ctx.program.service
    if not ctx.changed_paths and not (
        service.kind.wanted(details) and not service.control.is_current(details)
    ):
        return False
    txn = prepare(ctx, ctx.plan, details=details)
    return bool(txn.changes)


def prepare(
    ctx: Context, planned: Sequence[PlannedFile], *, details: Mapping[str, Any]
) -> PendingTxn:
    """Stage ``planned`` and journal it durably: the commit point of every program.

    In order: the ``begun`` record (not durable; it names the directories
    about to be created, for an undo after a crash of the process), the
    missing target directories, the staged copies and hold links; then one
    fsync of each directory whose new entries the commit point depends on
    (the staging directories, the parents of created directories, and the
    journal's own entries the first time); then ``prepared`` with
    ``details``, fdatasync'd. A fresh node costs files + 4 fsyncs in all, a
    re-add files + 3 (``docs/journal.md``).
    """
    layout = ctx.layout
    dirs = missing_dirs(layout, planned)
    target_dirs = sorted({Path(p.desired.relpath).parent.as_posix() for p in planned})
    unsynced = ctx.journal.begin(
        {
            "command": ctx.program.command,
            "started_at": utc_now(),
            "created_dirs": dirs,
            "target_dirs": target_dirs,
        }
    )
    details = {
        **details,
        **({"hold": dict(ctx.hold)} if ctx.hold is not None else {}),
        **({"confirm_within": ctx.confirm_within} if ctx.confirm_within is not None else {}),
    }
    ctx.txn = txn = PendingTxn(
        ctx.txid, [], created_dirs=dirs, target_dirs=target_dirs, details=details
    )
    make_dirs(layout, dirs, modes=ctx.program.dir_modes)
    entries = {layout.path(d).parent for d in dirs}
    if unsynced:
        entries.update((layout.state_dir, layout.state_dir.parent))
    txn.changes = stage_changes(layout, ctx.txid, planned, entries=entries)
    txn.journal_prepared(ctx.journal, {"changes": [c.to_json() for c in txn.changes], **details})
    return txn


def describe_stage(ctx: Context) -> str:
    """The stage step: how many files were staged and journaled (or why none)."""
    if ctx.txn is None:
        return "nothing to change"
    changed = len(ctx.changed_paths)
    if not changed:
        return f"no file to change; journaled for the {ctx.program.service.kind.step} step"
    created = _by_action(ctx)[Action.CREATE]
    return f"{counted(changed, 'file')} staged ({created} new, {changed - created} replaced)"


# --- commit, service, undo -----------------------------------------------------------------


def commit(ctx: Context) -> bool:
    """Rename the staged files into place, under the commit locks their programs hold."""
    if ctx.txn is None or not ctx.txn.changes:
        return False
    changes = ctx.txn.changes
    with ctx.recovery.commit_lock(ctx.layout, changes, ctx.lock_timeout):
        commit_changes(ctx.layout, changes)
    ctx.journal.append(TxnState.COMMITTED, durable=False)
    return True


def describe_commit(ctx: Context) -> str:
    """The commit step: how many files were put in place."""
    if ctx.txn is None or not ctx.txn.changes:
        return "nothing to put in place"
    return f"{counted(len(ctx.txn.changes), 'file')} put in place"


def apply_own_service(ctx: Context) -> bool:
    """Apply the program's service when the transaction wants it (journaled first)."""
    service = ctx.program.service
    if ctx.txn is None or not service.kind.wanted(ctx.txn.details):
        return False
    apply_service(service, ctx.journal, ctx.txn)
    return True


def undo_transaction(ctx: Context) -> None:
    """Undo whatever the transaction did so far: files back, services back, copies gone.

    The compensation of every writing step: it runs once (whichever step
    failed, the transaction is undone as a whole), and after a failure the
    durable ``rolling_back`` record leaves the rest to ``--resume``.
    """
    if ctx.txn is None:
        return
    txn, ctx.txn = ctx.txn, None
    step = ctx.failure.get("step") if ctx.failure else None
    finish_undo(
        ctx.layout,
        txn,
        ctx.journal,
        lock_timeout=ctx.lock_timeout,
        reason=f"step {step} failed" if step else "step failed",
        cause=ctx.failure,
        hooks=ctx.recovery,
    )


# --- the tables ----------------------------------------------------------------------------

LOCK = Step(
    "lock",
    "take the transaction lock; recover an unfinished transaction",
    take_lock,
    release_lock,
    describe=describe_lock,
)
DECODE = Step("decode", "read and validate the document on stdin", decode, describe=describe_decode)
STAGE = Step(
    "stage",
    "write staged copies durably; journal the plan",
    stage,
    undo_transaction,
    writes=True,
    describe=describe_stage,
)
COMMIT = Step(
    "commit",
    "put the staged files in place",
    commit,
    undo_transaction,
    writes=True,
    describe=describe_commit,
)
PLAN = Step("stage", "plan the changes; write nothing", plan, describe=describe_plan)


def step_table(program: Program[Any, Any]) -> tuple[Step[Context], ...]:
    """The program's steps: the common frame around its checks and its service."""
    kind = program.service.kind
    applies = Step(
        kind.step,
        kind.description,
        apply_own_service,
        undo_transaction,
        writes=True,
        describe=program.describe_service,
    )
    return (LOCK, DECODE, *program.checks, STAGE, COMMIT, applies)


DRY_RUN: Mapping[str, Step[Context] | None] = {"lock": None, "stage": PLAN, "commit": None}
"""What the dry run does instead of a step, by name (None: nothing); other steps run as they are."""


def prepare_table(program: Program[Any, Any]) -> tuple[Step[Context], ...]:
    """``--prepare``: every step up to the commit point (``stage``), then the node is held."""
    table = step_table(program)
    end = next(i for i, step in enumerate(table) if step.name == "stage") + 1
    return table[:end]


def dry_run_table(program: Program[Any, Any]) -> tuple[Step[Context], ...]:
    """The dry run: no lock, ``stage`` only plans, nothing after it (it writes nothing)."""
    table = step_table(program)
    end = next(i for i, step in enumerate(table) if step.name == "stage") + 1
    steps = (DRY_RUN.get(step.name, step) for step in table[:end])
    return tuple(step for step in steps if step is not None)
