"""Parse an ``strace -f -y`` log into file-system events (for :mod:`tests.writeorder`).

``-y`` prints the path behind each file descriptor (``fsync(5</r/var/lib/ganeti>)``)
and a large ``-s`` the bytes each ``write`` carried; :func:`strace_options`
asks for both. Lines split by ``-f`` (``<unfinished ...>`` / ``<... resumed>``)
are joined; signals, exits and failed calls are left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TRACED_SYSCALLS", "Event", "parse_log", "strace_options"]

TRACED_SYSCALLS = (
    "openat,open,creat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,"
    "link,linkat,unlink,unlinkat,mkdir,mkdirat,ftruncate,close,execve"
)


def strace_options(out: Path, *, follow: bool = True) -> list[str]:
    """strace options (without the ``strace`` itself) that record what the checker reads."""
    return [
        *(["-f"] if follow else []),
        "-y",
        "-tt",
        "-qq",
        "-s",
        "65536",
        "-o",
        str(out),
        "-e",
        f"trace={TRACED_SYSCALLS}",
    ]


@dataclass(frozen=True)
class Event:
    """One traced system call, reduced to what the rules need.

    ``call`` is the family (``open``, ``write``, ``sync``, ``rename``, ``link``,
    ``unlink``, ``rmdir``, ``mkdir``, ``truncate``, ``exec``); ``path`` what it acts on
    (the descriptor's file, or a rename's or link's source); ``done`` is False
    for a call that began but shows no result (the process was killed in it),
    which is kept: the program issued it in that order.
    """

    line: int
    pid: int
    call: str
    syscall: str
    text: str
    path: str | None = None
    dest: str | None = None
    flags: frozenset[str] = frozenset()
    data: bytes | None = None
    length: int | None = None
    done: bool = True


_PREFIX = re.compile(r"^(?:(?P<pid>\d+)\s+)?(?:\d{2}:\d{2}:\d{2}(?:\.\d+)?\s+)?(?P<rest>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\(")
_FD = re.compile(r"^(?:-?\d+|AT_FDCWD)<(?P<path>.*)>(?P<deleted>\(deleted\))?$")
_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "e": 27}
_CALLS = {
    "open": "open",
    "openat": "open",
    "creat": "open",
    "write": "write",
    "pwrite64": "write",
    "fsync": "sync",
    "fdatasync": "sync",
    "rename": "rename",
    "renameat": "rename",
    "renameat2": "rename",
    "link": "link",
    "linkat": "link",
    "unlink": "unlink",
    "unlinkat": "unlink",
    "mkdir": "mkdir",
    "mkdirat": "mkdir",
    "ftruncate": "truncate",
    "execve": "exec",
}


def _split_args(text: str, start: int) -> tuple[list[str], str] | None:
    """The top-level arguments of a call whose ``(`` is just before ``start``, and the rest."""
    args: list[str] = []
    depth, i, begin = 0, start, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif char == "<" and i > 0 and text[i - 1].isalnum():  # -y: 4</path>
            close = text.find(">", i)
            i = close if close >= 0 else len(text)
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                args.append(text[begin:i].strip())
                return args, text[i + 1 :]
            depth -= 1
        elif char == "," and depth == 0:
            args.append(text[begin:i].strip())
            begin = i + 1
        i += 1
    return None


def _c_string(arg: str) -> bytes | None:
    """The bytes of a quoted strace string; None when strace cut it short (``"…"...``)."""
    if not arg.startswith('"'):
        return None
    out = bytearray()
    i = 1
    while i < len(arg) and arg[i] != '"':
        if arg[i] != "\\":
            out.append(ord(arg[i]) & 0xFF)
            i += 1
            continue
        code = arg[i + 1]
        if code == "x":
            out.append(int(arg[i + 2 : i + 4], 16))
            i += 4
        elif code in "01234567":
            digits = re.match(r"[0-7]{1,3}", arg[i + 1 :])
            assert digits is not None
            out.append(int(digits.group(), 8) & 0xFF)
            i += 1 + len(digits.group())
        else:
            out.append(_ESCAPES.get(code, ord(code)))
            i += 2
    return None if arg[i + 1 :].startswith("...") else bytes(out)


def _fd_path(arg: str) -> str | None:
    match = _FD.match(arg)
    if match is None or match.group("deleted") or match.group("path").endswith(" (deleted)"):
        return None
    return match.group("path")


def _resolve(base: str | None, arg: str) -> str | None:
    name = _c_string(arg)
    if name is None:
        return None
    path = os.fsdecode(name)
    if not path.startswith("/"):
        if base is None:
            return None
        path = f"{base}/{path}"
    return os.path.normpath(path)


def _event(line: int, pid: int, text: str, cwd: dict[int, str]) -> Event | None:  # noqa: PLR0911
    match = _CALL.match(text)
    if match is None or match.group("name") not in _CALLS:
        return None
    syscall = match.group("name")
    split = _split_args(text, match.end())
    if split is None:
        return None
    args, rest = split
    result = rest.strip().removeprefix("=").strip()
    if result.startswith("-1 ") or not result:
        return None  # failed: changed nothing
    for arg in args:
        if arg.startswith("AT_FDCWD<"):
            cwd[pid] = _fd_path(arg) or cwd.get(pid, "")
    at = syscall.endswith("at") or syscall == "renameat2"

    def base(index: int) -> str | None:
        return _fd_path(args[index]) if at else cwd.get(pid)

    event = Event(line, pid, _CALLS[syscall], syscall, text, done=not result.startswith("?"))
    if event.call == "open":
        name = 1 if syscall == "openat" else 0
        flags = (
            frozenset({"O_CREAT", "O_WRONLY", "O_TRUNC"})
            if syscall == "creat"
            else frozenset(args[name + 1].split("|"))
        )
        path = _fd_path(result) or _resolve(base(0), args[name])
        return Event(line, pid, "open", syscall, text, path=path, flags=flags, done=event.done)
    if event.call == "write":
        return Event(line, pid, "write", syscall, text, _fd_path(args[0]), data=_c_string(args[1]))
    if event.call in ("sync", "truncate"):
        length = int(args[1]) if event.call == "truncate" and args[1].isdigit() else None
        return Event(line, pid, event.call, syscall, text, _fd_path(args[0]), length=length)
    if event.call in ("rename", "link"):
        old, new = (
            (_resolve(base(0), args[1]), _resolve(base(2), args[3]))
            if at
            else (
                _resolve(base(0), args[0]),
                _resolve(base(0), args[1]),
            )
        )
        return Event(line, pid, event.call, syscall, text, old, new, done=event.done)
    if event.call == "exec":
        return Event(line, pid, "exec", syscall, text, _resolve(cwd.get(pid), args[0]))
    index = 1 if at else 0
    call = "rmdir" if syscall == "unlinkat" and "AT_REMOVEDIR" in args[2] else event.call
    return Event(line, pid, call, syscall, text, _resolve(base(0), args[index]), done=event.done)


def parse_log(text: str) -> list[Event]:
    """The file-system events of an ``strace -f -y`` log, in the order they took effect.

    A call split by another process (``<unfinished ...>`` / ``<... resumed>``)
    counts where it returned; one that never returned (a kill) where it began.
    Failed calls (``= -1 E…``) change nothing and are left out; so is every
    line that is not a call (signals, exits).
    """
    events: list[Event] = []
    pending: dict[int, tuple[str, int]] = {}
    cwd: dict[int, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        match = _PREFIX.match(raw)
        if match is None:
            continue
        pid = int(match.group("pid") or 0)
        rest = match.group("rest")
        line = number
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (rest.removesuffix("<unfinished ...>").rstrip(), number)
            continue
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            head, _ = pending.pop(pid, ("", number))
            rest = head + resumed.group("tail")
        event = _event(line, pid, rest, cwd)
        if event is not None:
            events.append(event)
    for pid, (head, number) in pending.items():
        event = _event(number, pid, head + ") = ?", cwd)
        if event is not None:
            events.append(event)
    return sorted(events, key=lambda e: e.line)
