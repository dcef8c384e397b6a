"""A write-ordering checker for txsetup's durability protocol, over an strace log.

The lesson of ALICE (Pillai et al., "All File Systems Are Not Created Equal",
OSDI '14): crash consistency depends on the *order* in which a program makes
things durable, and that order can be checked from the system calls alone.
This module parses an ``strace -f -y`` log into events (:mod:`tests.stracelog`) and
checks the protocol of ``docs/journal.md`` (:func:`check_events`), returning
every :class:`Violation` as a sentence that names the log line.

Trace with :func:`strace_options` (``-f -y -qq -s 65536`` and the syscalls of
:data:`TRACED_SYSCALLS`; ``-tt`` is optional). ``-y`` shows the path behind
every file descriptor, which is how an ``fsync(4</…/var/lib/ganeti>)`` is
recognised as an fsync of that directory; a large ``-s`` shows the journal
records whole, so the ``prepared`` record is recognised by its
``"state":"prepared"``. With shorter strings a journal record's state is
unknown: the last journal write before a commit rename is then taken to be
``prepared``, and any journal write counts as an outcome record (rule 4).

Words used below:

* a *staged copy* is a file whose name ends in ``.new`` (``<txid>-<i>.new`` in
  the state directory, ``.txsetup-<txid>-<i>.new`` beside its target); a
  *hold* is a name ending in ``.old``; both are *copies*; a *kept copy* ends
  in ``.revert`` (a committed transaction's hold, kept for ``txsetup
  revert``: renaming a hold to it, or removing an earlier one, is no target
  change, for no outcome depends on it);
* a *commit rename* renames a staged copy; a *target change* is a rename whose
  source is a copy (commit or undo), or an unlink of a name that is not a copy
  in a target directory; a *target directory* is the directory of a target
  change's destination, or one the journal records name (``changes[].path``,
  ``target_dirs``);
* the *prepared write* is the journal ``write`` carrying ``"state":"prepared"``;
  a *journal sync* is an ``fsync``/``fdatasync`` of the journal's inode;
* *fsync of D* is an ``fsync`` or ``fdatasync`` whose descriptor is directory
  D; an *fsync of a file* is one on a descriptor of that inode (inodes are
  followed through renames and links, so the name it has at the time does
  not matter);
* a journal *truncation* is an ``open`` of the journal with ``O_TRUNC``, a
  ``creat``, an ``ftruncate`` of it to 0, or a rename over or unlink of it:
  what starts a new transaction and forgets the last one.

The rules (each "before X" means strictly earlier in the trace than X):

1. **Content before rename.** A staged copy written in the trace is fsynced
   after its last write (or its creation, or truncation) and before every
   rename of it.
2. **Everything ``prepared`` names is durable before it is written.** For
   each staged copy created and each hold linked in the trace, before the
   next prepared write: the directory holding the new name is fsynced after
   the name was made, and a staged copy's content is fsynced after its last
   write. (Before the *write*, not its fsync: once written, the kernel may
   put the record on disk at any moment, and a crash would then roll forward
   onto copies that are not there.)
3. **``prepared`` is durable before the first commit rename.** After the
   prepared write and before the next commit rename, a journal sync; and when
   the trace created the journal file (``O_CREAT|O_EXCL``), an fsync of its
   directory after that creation, so the record cannot vanish with its file.
4. **Target directories are durable before the outcome is told.** After each
   target change, its directory is fsynced before the next outcome record
   (``committed``, ``done``, ``rolled_back``, ``restarting_daemon``,
   ``reloading_sshd``, or a journal write whose state is unknown), the next
   journal truncation, or the end of a complete trace, whichever is first.
5. **A new transaction never loses an earlier outcome, and new directories
   are durable before anything depends on them.** (a) Before each journal
   truncation, every target change earlier in the trace (a recovery's
   roll-forward or undo in the same process, say) was followed by an fsync of
   its directory. (b) Each directory the trace creates (``mkdir``) that is the
   state directory, a target directory or an ancestor of one has its parent
   fsynced after the ``mkdir`` and before the next prepared write.

6. **What undo needs is durable before the action it announces.** A
   ``rolling_back``, ``restarting_daemon`` or ``reloading_sshd`` record is
   synced before the next program is started (``execve``: daemons and sshd are
   driven by commands), the next target change, and the next rename or
   unlink of a copy, whichever comes first. (Found missing by the mutation
   test: without it, the ``reloading_sshd`` fdatasync of ssh-setup was needed
   by no rule.)

The rules are the protocol's, not one run's sequence: they do not ask for a
durable ``begun`` record, nor say which fsync covers which name, only that one
does in time. What they do not see: ``sync``/``syncfs``, ``O_SYNC`` writes,
``msync``, and (``-y`` resolving symbolic links) a root reached through one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tests.stracelog import TRACED_SYSCALLS, Event, parse_log, strace_options

__all__ = [
    "JOURNAL_SUFFIX",
    "TRACED_SYSCALLS",
    "Event",
    "Violation",
    "check_events",
    "check_log",
    "parse_log",
    "strace_options",
]

JOURNAL_SUFFIX = "/var/lib/txsetup/journal"
OUTCOME_STATES = frozenset(
    {"committed", "done", "rolled_back", "restarting_daemon", "reloading_sshd"}
)
ANNOUNCING_STATES = frozenset({"rolling_back", "restarting_daemon", "reloading_sshd"})


@dataclass(frozen=True)
class Violation:
    """A broken rule, as a sentence naming the log line."""

    rule: int
    line: int
    message: str

    def __str__(self) -> str:
        return f"rule {self.rule}: line {self.line}: {self.message}"


# --- checking -----------------------------------------------------------------------------


def _is_copy(path: str | None, suffix: str = "") -> bool:
    return path is not None and path.endswith((suffix,) if suffix else (".new", ".old"))


def _is_kept(path: str | None) -> bool:
    return path is not None and path.endswith(".revert")


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _record(data: bytes | None) -> dict[str, object] | None:
    """The JSON object of a journal record line, or None when it cannot be read."""
    if data is None:
        return None
    try:
        obj = json.loads(data.split(b" ", 1)[1])
    except (IndexError, ValueError):
        match = re.search(rb'"state"\s*:\s*"(\w+)"', data)
        return {"state": match.group(1).decode()} if match else None
    return obj if isinstance(obj, dict) else None


@dataclass
class _Trace:
    """The events with what the rules ask of them: inodes, journal records, deadlines."""

    events: Sequence[Event]
    journal: str | None
    inode: list[int | None] = field(default_factory=list)
    states: dict[int, str | None] = field(default_factory=dict)  # journal write → state

    def __post_init__(self) -> None:
        names: dict[str, int] = {}
        counter = iter(range(1, 1 << 62))

        def of(path: str | None) -> int | None:
            if path is None:
                return None
            if path not in names:
                names[path] = next(counter)
            return names[path]

        for index, event in enumerate(self.events):
            if event.call == "open" and event.path and {"O_CREAT", "O_EXCL"} <= event.flags:
                names[event.path] = next(counter)
            self.inode.append(of(event.path))
            if event.call in ("rename", "link") and event.path and event.dest:
                names[event.dest] = names[event.path]
                if event.call == "rename":
                    del names[event.path]
            elif event.call in ("unlink", "rmdir") and event.path:
                names.pop(event.path, None)
            if event.call == "write" and self.is_journal(index):
                record = _record(event.data)
                state = record.get("state") if record else None
                self.states[index] = state if isinstance(state, str) else None

    def is_journal(self, index: int) -> bool:
        return self.journal is not None and self.events[index].path == self.journal

    @property
    def root(self) -> str | None:
        return self.journal.removesuffix(JOURNAL_SUFFIX) if self.journal else None

    def after(self, index: int) -> range:
        return range(index + 1, len(self.events))

    def synced(
        self, lo: int, hi: int, *, path: str | None = None, inode: int | None = None
    ) -> bool:
        """Whether an fsync of ``path`` (or of ``inode``) lies strictly between lo and hi."""
        return any(
            self.events[i].call == "sync"
            and (self.events[i].path == path if path is not None else self.inode[i] == inode)
            for i in range(lo + 1, hi)
        )

    def commit_renames(self) -> list[int]:
        return [
            i for i, e in enumerate(self.events) if e.call == "rename" and _is_copy(e.path, ".new")
        ]

    def prepared_writes(self) -> list[int]:
        known = [i for i, state in self.states.items() if state == "prepared"]
        if known or all(state is not None for state in self.states.values()):
            return sorted(known)
        # Records cut short (a small -s): the last journal write before a commit rename.
        guessed: set[int] = set()
        for rename in self.commit_renames():
            before = [i for i in self.states if i < rename]
            if before:
                guessed.add(before[-1])
        return sorted(guessed)

    def next_of(self, index: int, candidates: Sequence[int]) -> int | None:
        return next((i for i in candidates if i > index), None)

    def target_dirs(self) -> set[str]:
        dirs = {
            os.path.dirname(e.dest)
            for e in self.events
            if e.call == "rename" and _is_copy(e.path) and e.dest and not _is_kept(e.dest)
        }
        dirs |= {
            os.path.dirname(e.path)
            for e in self.events
            if e.path and os.path.basename(e.path).startswith(".txsetup-")
        }
        root = self.root
        for index in self.states:
            record = _record(self.events[index].data) or {}
            changes = record.get("changes")
            named = record.get("target_dirs")
            if root is not None and isinstance(changes, list):
                dirs |= {
                    os.path.dirname(f"{root}/{c['path']}")
                    for c in changes
                    if isinstance(c, dict) and isinstance(c.get("path"), str)
                }
            if root is not None and isinstance(named, list):
                dirs |= {os.path.normpath(f"{root}/{d}") for d in named if isinstance(d, str)}
        return dirs

    def target_changes(self) -> Iterator[tuple[int, str]]:
        """(index, directory) of every rename from a copy, and unlink in a target directory."""
        dirs = self.target_dirs()
        for index, event in enumerate(self.events):
            if event.call == "rename" and _is_copy(event.path) and event.dest:
                if not _is_kept(event.dest):
                    yield index, os.path.dirname(event.dest)
            elif (
                event.call == "unlink"
                and event.path
                and not _is_copy(event.path)
                and not _is_kept(event.path)
                and os.path.dirname(event.path) in dirs
            ):
                yield index, os.path.dirname(event.path)

    def truncations(self) -> list[int]:
        found = []
        for index, event in enumerate(self.events):
            if self.journal is None:
                break
            if (
                (event.call == "open" and event.path == self.journal and "O_TRUNC" in event.flags)
                or (event.call == "truncate" and event.path == self.journal and event.length == 0)
                or (event.call in ("unlink", "rename") and event.path == self.journal)
                or (event.call == "rename" and event.dest == self.journal)
            ):
                found.append(index)
        return found


def _content_events(trace: _Trace, inode: int | None, before: int) -> list[int]:
    """Where a file got its content: creation, truncation, writes (before ``before``)."""
    return [
        i
        for i in range(before)
        if trace.inode[i] == inode
        and (
            trace.events[i].call in ("write", "truncate")
            or (trace.events[i].call == "open" and {"O_CREAT", "O_TRUNC"} & trace.events[i].flags)
        )
    ]


def _rule1(trace: _Trace) -> Iterator[Violation]:
    for rename in trace.commit_renames():
        inode = trace.inode[rename]
        content = _content_events(trace, inode, rename)
        if content and not trace.synced(content[-1], rename, inode=inode):
            event = trace.events[rename]
            yield Violation(
                1,
                event.line,
                f"this {event.syscall} puts the staged copy {event.path} in place, but it was "
                f"not fsynced after its last write (line {trace.events[content[-1]].line})",
            )


def _rule2(trace: _Trace) -> Iterator[Violation]:
    prepared = trace.prepared_writes()
    for index, event in enumerate(trace.events):
        if event.call == "open" and _is_copy(event.path, ".new"):
            created = "O_CREAT" in event.flags
            name, what = event.path, "staged copy"
        elif event.call == "link" and _is_copy(event.dest, ".old"):
            created, name, what = True, event.dest, "hold link"
        else:
            continue
        deadline = trace.next_of(index, prepared)
        if not created or name is None or deadline is None:
            continue
        line = trace.events[deadline].line
        directory = os.path.dirname(name)
        if not trace.synced(index, deadline, path=directory):
            yield Violation(
                2,
                event.line,
                f"the {what} {name} made here was not made durable (no fsync of {directory}) "
                f"before the prepared record was written (line {line})",
            )
        if what == "staged copy":
            content = _content_events(trace, trace.inode[index], deadline)
            last = content[-1] if content else index
            if not trace.synced(last, deadline, inode=trace.inode[index]):
                yield Violation(
                    2,
                    trace.events[last].line,
                    f"the content of the staged copy {name} was not fsynced after this write "
                    f"and before the prepared record was written (line {line})",
                )


def _rule3(trace: _Trace) -> Iterator[Violation]:
    renames = trace.commit_renames()
    created = [
        i
        for i, e in enumerate(trace.events)
        if e.call == "open" and trace.is_journal(i) and {"O_CREAT", "O_EXCL"} <= e.flags
    ]
    for write in trace.prepared_writes():
        rename = trace.next_of(write, renames)
        if rename is None:
            continue
        line = trace.events[rename].line
        if not trace.synced(write, rename, inode=trace.inode[write]):
            yield Violation(
                3,
                trace.events[write].line,
                f"the prepared record written here was not fsynced/fdatasynced before the "
                f"first commit rename (line {line})",
            )
        birth = max((i for i in created if i < write), default=None)
        directory = os.path.dirname(trace.journal or "")
        if birth is not None and not trace.synced(birth, rename, path=directory):
            yield Violation(
                3,
                trace.events[birth].line,
                f"the journal file created here was not made durable (no fsync of {directory}) "
                f"before the first commit rename (line {line}): prepared could vanish with it",
            )


def _rule4(trace: _Trace, *, complete: bool) -> Iterator[Violation]:
    ends = sorted(
        [i for i, state in trace.states.items() if state is None or state in OUTCOME_STATES]
        + trace.truncations()
    )
    unsynced: dict[tuple[str, int | None], int] = {}
    for index, directory in trace.target_changes():
        deadline = trace.next_of(index, ends)
        if deadline is None and not complete:
            continue
        if not trace.synced(
            index, len(trace.events) if deadline is None else deadline, path=directory
        ):
            unsynced[(directory, deadline)] = index
    for (directory, deadline), index in unsynced.items():
        told = (
            "the end of the trace"
            if deadline is None
            else f"{trace.events[deadline].syscall} at line {trace.events[deadline].line}"
        )
        event = trace.events[index]
        yield Violation(
            4,
            event.line,
            f"{directory} was not fsynced after this {event.syscall} and before the "
            f"outcome was recorded ({told})",
        )


def _rule5(trace: _Trace) -> Iterator[Violation]:
    changes = list(trace.target_changes())
    for truncation in trace.truncations():
        last: dict[str, int] = {}
        for index, directory in changes:
            if index < truncation:
                last[directory] = index
        for directory, index in last.items():
            if not trace.synced(index, truncation, path=directory):
                yield Violation(
                    5,
                    trace.events[index].line,
                    f"{directory} was not fsynced after this change and before the journal "
                    f"was truncated for a new transaction (line {trace.events[truncation].line})",
                )
    needed = trace.target_dirs() | ({os.path.dirname(trace.journal)} if trace.journal else set())
    prepared = trace.prepared_writes()
    for index, event in enumerate(trace.events):
        if event.call != "mkdir" or event.path is None:
            continue
        if not any(_inside(d, event.path) for d in needed):
            continue
        deadline = trace.next_of(index, prepared)
        parent = os.path.dirname(event.path)
        if deadline is not None and not trace.synced(index, deadline, path=parent):
            yield Violation(
                5,
                event.line,
                f"{parent} was not fsynced after this mkdir of {event.path} and before the "
                f"prepared record was written (line {trace.events[deadline].line})",
            )


def _rule6(trace: _Trace) -> Iterator[Violation]:
    changes = {index for index, _ in trace.target_changes()}
    actions = [
        i
        for i, e in enumerate(trace.events)
        if e.call == "exec" or i in changes or (e.call in ("rename", "unlink") and _is_copy(e.path))
    ]
    for write, state in trace.states.items():
        if state not in ANNOUNCING_STATES:
            continue
        action = trace.next_of(write, actions)
        if action is not None and not trace.synced(write, action, inode=trace.inode[write]):
            event = trace.events[action]
            yield Violation(
                6,
                trace.events[write].line,
                f"the {state} record written here was not fsynced/fdatasynced before the action "
                f"it announces ({event.syscall} at line {event.line})",
            )


def check_events(
    events: Sequence[Event], *, complete: bool = True, journal: str | None = None
) -> list[Violation]:
    """Every violation of rules 1-6 (module docstring) in ``events``.

    Args:
        events: from :func:`parse_log`.
        complete: the trace ran to the end (not killed): its end then is a
            deadline for rule 4, as the process reports its outcome there.
        journal: the journal's path; by default the first opened path ending
            in ``/var/lib/txsetup/journal``.
    """
    if journal is None:
        journal = next((e.path for e in events if e.path and e.path.endswith(JOURNAL_SUFFIX)), None)
    trace = _Trace(events, journal)
    found = [
        *_rule1(trace),
        *_rule2(trace),
        *_rule3(trace),
        *_rule4(trace, complete=complete),
        *_rule5(trace),
        *_rule6(trace),
    ]
    return sorted(found, key=lambda v: (v.line, v.rule))


def check_log(text: str, *, complete: bool = True, journal: str | None = None) -> list[Violation]:
    """:func:`check_events` of :func:`parse_log` of ``text``."""
    return check_events(parse_log(text), complete=complete, journal=journal)
