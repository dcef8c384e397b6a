"""Stopping sshd daemons and the sessions they detached, found through ``/proc``.

Linux only. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["stop_all"]

_STOP_WAIT: Final = 5.0
_FREEZE_WAIT: Final = 1.0
_POLL_INTERVAL: Final = 0.02


def stop_all(started: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate every sshd and its sessions; SIGKILL what outlives the wait.

    Our sshd processes are reaped; their sessions, no children of ours, are
    only made to exit (init reaps them).
    """
    live = [proc for proc in started if proc.poll() is None]
    tree = _freeze_tree([proc.pid for proc in live]) if live else {}
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    for pid in tree:
        _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + _STOP_WAIT
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    others = {pid: start for pid, start in tree.items() if pid not in {p.pid for p in started}}
    while time.monotonic() < deadline and any(_still_there(*item) for item in others.items()):
        time.sleep(_POLL_INTERVAL)
    for pid, start in others.items():
        if _still_there(pid, start):
            _signal(pid, signal.SIGKILL)
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a live process, None when gone or a zombie.

    The start time tells a process from a later one that reused its pid.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold ") "
    state = fields[0]
    if state in "ZX":
        return None
    return state, int(fields[1]), int(fields[19])


def _children() -> dict[int, list[int]]:
    """Every live process's children, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            children.setdefault(info[1], []).append(int(entry))
    return children


def _signal(pid: int, signum: signal.Signals) -> None:
    """Send a signal to a process that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _freeze_tree(roots: Sequence[int]) -> dict[int, int]:
    """Stop ``roots`` and all their descendants; return ``{pid: start time}``.

    sshd's per-connection processes detach into sessions of their own and
    outlive the listener, so they are found through the process tree. Each
    generation is stopped before its children are listed, so no process can
    fork a child the walk misses, nor die and orphan one to init.
    """
    frozen: dict[int, int] = {}
    generation = list(roots)
    while generation:
        for pid in generation:
            _signal(pid, signal.SIGSTOP)
        deadline = time.monotonic() + _FREEZE_WAIT
        for pid in generation:
            while (info := _stat(pid)) is not None and info[0] not in "tT":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            if info is not None:
                frozen[pid] = info[2]
        children = _children()
        generation = [c for p in frozen for c in children.get(p, ()) if c not in frozen]
        generation = [pid for pid in generation if _stat(pid) is not None]
    return frozen


def _still_there(pid: int, start: int) -> bool:
    """Whether the process that had ``pid`` at ``start`` is still alive."""
    info = _stat(pid)
    return info is not None and info[2] == start
