"""Shared fixtures: run the installed CLI for real, check every log line it writes.

Every stderr line any test sees goes through :func:`check_log_lines`: it must be
JSON, valid against ``docs/log-events.schema.json``, and free of key material;
every result a run prints goes through :func:`check_result`, against
``docs/result.schema.json``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from filelock import FileLock

from txsetup.demo.certs import generate_node_certificate

# --- helper `crash` (issue 16): hypothesis profiles (tests/hypothesis_profiles.py) ---
pytest_plugins = ("tests.hypothesis_profiles",)
# ---

REPO = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO / "docs" / "log-events.schema.json"
RESULT_SCHEMA_PATH = REPO / "docs" / "result.schema.json"
CLUSTER = "cluster.example.com"
SECRET_MARKERS = ("-----BEGIN", "PRIVATE KEY", "hmac-secret-")
SYSTEM_TESTS = os.environ.get("TXSETUP_SYSTEM_TESTS") == "1"
# How long a handshake or a probe of a local server may take: it catches hangs, and is
# never a test of the machine's speed (a loaded machine may need seconds for one).
HANG_SECONDS = 30


def _crash_depth() -> str:
    """How deep the crash matrices go: ``quick``, ``sampled`` or ``full`` (see test_crash.py)."""
    if os.environ.get("TXSETUP_CRASH_FULL") == "1":
        return "full"
    depth = os.environ.get("TXSETUP_CRASH", "quick")
    if depth not in ("quick", "sampled", "full"):
        raise pytest.UsageError(f"TXSETUP_CRASH={depth!r}: expected quick, sampled or full")
    return depth


CRASH_DEPTH = _crash_depth()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` first (in their order), then the rest.

    With parallel workers (``nox -s tests`` runs pytest-xdist with ``--dist
    worksteal``) the long tests are started early, by whichever worker gets
    them, and the short ones fill the gaps, instead of one long test starting
    last and running alone at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def txsetup_exe() -> str:
    """The installed console script next to this interpreter (what a master runs)."""
    exe = Path(sys.executable).with_name("txsetup")
    if not exe.exists():
        found = shutil.which("txsetup")
        assert found, "txsetup console script is not installed"
        return found
    return str(exe)


def require_tool(name: str) -> str:
    """The path of a system tool; skip without it, but fail under TXSETUP_SYSTEM_TESTS=1."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        if SYSTEM_TESTS:
            pytest.fail(f"{name} is required when TXSETUP_SYSTEM_TESTS=1")
        pytest.skip(f"{name} not installed")
    return path


# Ganeti's system accounts, as its ``tools/users-setup`` creates them: every
# group, and each daemon user with the group of its own name as primary group.
GANETI_GROUPS = (
    "gnt-admin",
    "gnt-confd",
    "gnt-daemons",
    "gnt-luxid",
    "gnt-masterd",
    "gnt-metad",
    "gnt-rapi",
)
GANETI_USERS = ("gnt-confd", "gnt-masterd", "gnt-metad", "gnt-rapi")


def require_root(why: str) -> None:
    """Skip unless root; fail instead under TXSETUP_SYSTEM_TESTS=1."""
    if os.geteuid() != 0:
        if SYSTEM_TESTS:
            pytest.fail(f"root is required when TXSETUP_SYSTEM_TESTS=1 ({why})")
        pytest.skip(f"{why} needs root")


def _account_exists(kind: str, name: str) -> bool:
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def ganeti_accounts() -> None:
    """Ganeti's users and groups exist on this machine (created once, idempotently).

    Ganeti's own node-daemon-setup refuses to run without all of them, and
    txsetup gives new secret files to gnt-masterd when it exists. Creating
    them changes the machine for good, as installing Ganeti would: only as
    root, only what is missing. Parallel workers (and other test runs on the
    machine) take turns through a lock file, since groupadd and useradd refuse
    while another holds /etc/group; existence is checked again rather than
    trusting an exit status.
    """
    require_root("creating Ganeti's users and groups")
    with FileLock(Path(tempfile.gettempdir()) / "txsetup-tests-ganeti-accounts.lock"):
        _create_ganeti_accounts()


def _create_ganeti_accounts() -> None:
    """groupadd and useradd for each of Ganeti's accounts that does not exist yet."""
    for group in GANETI_GROUPS:
        if not _account_exists("group", group):
            subprocess.run([require_tool("groupadd"), "--system", group], check=False)
            assert _account_exists("group", group), f"could not create group {group}"
    for user in GANETI_USERS:
        if not _account_exists("user", user):
            subprocess.run(
                [
                    require_tool("useradd"),
                    "--system",
                    "--gid",
                    user,
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ],
                check=False,
            )
            assert _account_exists("user", user), f"could not create user {user}"


def strace_argv(
    syscalls: str,
    inject: str,
    *,
    follow: bool = True,
    path: Path | None = None,
    out: str = "/dev/null",
) -> list[str]:
    """strace arguments that inject ``inject`` (``signal=SIGKILL:when=N``, ``error=EIO``...)
    into ``syscalls``; injection fires only for traced calls, so they are traced too.
    """
    argv = [require_tool("strace"), *(["-f"] if follow else []), "-qq", "-o", out]
    if path is not None:
        argv += ["-P", str(path)]
    return [*argv, "-e", f"trace={syscalls}", "-e", f"inject={syscalls}:{inject}"]


@contextmanager
def tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    """A real tmpfs mounted at ``where`` (created); skip when mounting is denied."""
    where.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


# Python rewriting its byte-code cache would shift syscall counts between runs.
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}


def run_traced(
    root: Path,
    stdin: bytes,
    syscalls: str,
    inject: str,
    *extra: str,
    follow: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """``txsetup node-daemon-setup --root root *extra`` under strace injecting a fault."""
    return subprocess.run(
        [
            *strace_argv(syscalls, inject, follow=follow),
            txsetup_exe(),
            "node-daemon-setup",
            "--root",
            str(root),
            *extra,
        ],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **NO_PYC, **(env or {})},
    )


def start_setup(root: Path, stdin: bytes, *extra: str) -> subprocess.Popen[bytes]:
    """Start node-daemon-setup in the background, its whole document already on stdin."""
    with tempfile.TemporaryFile() as data:
        data.write(stdin)
        data.seek(0)
        return subprocess.Popen(
            [txsetup_exe(), "node-daemon-setup", "--root", str(root), *extra],
            stdin=data,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def read_until_lock_step(proc: subprocess.Popen[bytes]) -> bytes:
    """Read ``proc``'s log until it has begun the lock step (it may be waiting there)."""
    assert proc.stderr is not None
    seen = b""
    while True:
        line = proc.stderr.readline()
        assert line, f"run ended before the lock step: {seen.decode()}"
        seen += line
        event = json.loads(line)
        if event["event"] == "step.begin" and event["step"] == "lock":
            return seen


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@cache
def _result_validators() -> tuple[jsonschema.protocols.Validator, jsonschema.protocols.Validator]:
    """``docs/result.schema.json``: for a whole result, and for its ``last_transaction``."""
    schema = json.loads(RESULT_SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    last = {"$defs": schema["$defs"], "$ref": "#/$defs/last_transaction"}
    return cls(schema), cls(last)


def check_result(result: dict[str, Any]) -> None:
    """A run's result validates against the published schema; ``status``'s
    ``last_transaction`` against the same definition."""
    whole, last = _result_validators()
    if "steps" in result:
        whole.validate(result)
    elif result.get("last_transaction") is not None:
        last.validate(result["last_transaction"])


def check_log_lines(stderr: str) -> list[dict[str, Any]]:
    """Parse stderr as JSON lines, validate each against the schema, refuse secrets."""
    events = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        _validator().validate(event)
        events.append(event)
    return events


def assert_no_secrets(*texts: str) -> None:
    """No key material or test secret anywhere in the given output."""
    for text in texts:
        for marker in SECRET_MARKERS:
            assert marker not in text, f"secret marker {marker!r} leaked"


@dataclass
class Run:
    """A finished CLI run: exit code, the result object, the parsed log events."""

    returncode: int
    result: dict[str, Any]
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def event_names(self) -> list[str]:
        """The ``event`` of every log line, in order."""
        return [e["event"] for e in self.events]


def run_txsetup(
    args: list[str],
    *,
    stdin: bytes | None = b"",
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> Run:
    """Run the installed ``txsetup`` with ``args``; check its output contract."""
    proc = subprocess.run(
        [txsetup_exe(), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def parse_run(returncode: int, stdout: str, stderr: str) -> Run:
    """Check a finished run's output contract: no traceback, no secret, valid log lines,
    one JSON result whose exit code is the process's."""
    assert "Traceback" not in stderr, stderr
    assert_no_secrets(stdout, stderr)
    events = check_log_lines(stderr)
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one result line, got {stdout!r}"
    result = json.loads(lines[0])
    assert result.get("exit_code", 0) == returncode
    check_result(result)
    return Run(returncode, result, events, stdout, stderr)


@dataclass(frozen=True)
class Entry:
    """What one path under the root is: enough to prove "exactly as before"."""

    kind: str
    mode: int
    uid: int
    gid: int
    content: bytes | None = None
    target: str | None = None
    ino: int = field(default=0, compare=False)


def snapshot(
    root: Path, *, skip: tuple[str, ...] = ("var/lock", "var/lib/txsetup")
) -> dict[str, Entry]:
    """Every path under ``root`` (bytes, mode, owner, symlink target), except ``skip``.

    A FIFO or socket is recorded by its type and mode, never read.
    """
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry(
                    "symlink", 0, st.st_uid, st.st_gid, target=os.readlink(path), ino=st.st_ino
                )
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = Entry("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            elif not stat.S_ISREG(st.st_mode):  # a FIFO or socket: reading it would block
                entries[rel] = Entry(
                    "other",
                    stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    ino=st.st_ino,
                )
            else:
                entries[rel] = Entry(
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    content=path.read_bytes(),
                    ino=st.st_ino,
                )
    return entries


def copy_root(source: Path, target: Path) -> None:
    """Copy a node root exactly: bytes, modes, owners, symlinks (``cp -a``).

    ``shutil.copytree`` drops owners, and files now belong to Ganeti's accounts
    when the node has them: a copy must keep them, or "exactly as before" fails.
    """
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def kept_for_revert(root: Path) -> set[str]:
    """The root-relative paths of the last commit's kept set: its manifest and the copies it
    names, read by the documented format (``docs/journal.md``), not by the code under test."""
    manifest = root / "var/lib/txsetup/revertable"
    try:
        files = json.loads(manifest.read_bytes())["files"]
    except (FileNotFoundError, ValueError, KeyError):
        return set()
    return {"var/lib/txsetup/revertable"} | {f["kept"] for f in files if f["kept"]}


def state_dir_leftovers(root: Path) -> list[str]:
    """Files in the state directory other than the journal, the decisions kept and
    the kept set (:func:`kept_for_revert`): staged or hold copies, or a stale kept copy."""
    state = root / "var/lib/txsetup"
    if not state.exists():
        return []
    ours = {"journal", "decisions"}
    kept = {Path(p).name for p in kept_for_revert(root) if p.startswith("var/lib/txsetup/")}
    return sorted(n for n in os.listdir(state) if n not in ours | kept)


@pytest.fixture(scope="session")
def node_pem() -> str:
    """The cluster's node daemon certificate and key (EC, generated once)."""
    return generate_node_certificate(CLUSTER, key_type="ec")


@pytest.fixture(scope="session")
def other_pem() -> str:
    """A second certificate with a different key (a renewed cluster)."""
    return generate_node_certificate(CLUSTER, key_type="ec")


def make_document(
    pem: str, *, cluster: str = CLUSTER, ssconf: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A valid node-daemon-setup document, as a Ganeti master builds it."""
    values = {
        "cluster_name": cluster,
        "master_ip": "192.0.2.1",
        "master_netdev": "br0",
        "node_list": "node1.example.com\nnode2.example.com\n",
        "release_version": "3.0.2",
    }
    values.update(ssconf or {})
    return {
        "cluster_name": cluster,
        "node_daemon_certificate": pem,
        "ssconf": values,
        "start_node_daemon": False,
        **extra,
    }


def encode(document: Mapping[str, Any]) -> bytes:
    """The document as stdin bytes."""
    return json.dumps(document).encode()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A node root as a fresh node has it: ``var/lib`` and ``var/lock``, nothing of ours."""
    path = tmp_path / "root"
    (path / "var/lib").mkdir(parents=True)
    (path / "var/lock").mkdir()
    return path


@pytest.fixture
def setup_run(root: Path) -> Callable[..., Run]:
    """``setup_run(document, *extra_args)``: node-daemon-setup against ``root``."""

    def go(document: Mapping[str, Any] | bytes | None, *extra: str, **kw: Any) -> Run:
        data = document if isinstance(document, bytes | None) else encode(document)
        return run_txsetup(["node-daemon-setup", "--root", str(root), *extra], stdin=data, **kw)

    return go
