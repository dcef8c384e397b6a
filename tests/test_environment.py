"""Errors of the node's environment: one clear line, a documented code, nothing changed.

A real non-root user (``runuser``) against a root-owned tree, a real
read-only mount in a private mount namespace (``unshare -m``), a real pty on
stdin, and a ``--root`` that is missing or a file. Permission denied and a
read-only file system before anything changed are exit 7 (``environment``);
the command line's mistakes are exit 2 (``usage``); never "internal error".
"""

from __future__ import annotations

import os
import pty
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import txsetup
from tests.conftest import (
    Run,
    encode,
    make_document,
    parse_run,
    require_root,
    require_tool,
    run_traced,
    run_txsetup,
    snapshot,
    txsetup_exe,
)
from tests.test_transaction import immutable
from txsetup.console_words import ACTION
from txsetup.errors import InvalidInput

USER = "txsetup-test"
# A run may not even write byte-code caches as the test user: none are tried.
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="session")
def test_user() -> str:
    """An unprivileged system user for the tests (created once, idempotently, as root)."""
    require_root("running txsetup as another user")
    useradd = require_tool("useradd")
    if subprocess.run(["id", "-u", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent", USER],
            capture_output=True,
            check=False,
        )
    found = subprocess.run(["id", "-u", USER], capture_output=True, check=False)
    assert found.returncode == 0, f"could not create the user {USER}"
    assert int(found.stdout) != 0
    return USER


def _blocking_dirs(paths: list[Path]) -> list[Path]:
    """The directories above ``paths`` that others may not search (``/root`` for pyenv)."""
    blocking = set()
    for path in paths:
        for parent in path.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                blocking.add(parent)
    return sorted(blocking)


@pytest.fixture(scope="session")
def as_user(test_user: str) -> Iterator[list[str]]:
    """``runuser`` argv for the test user, who can reach the installed txsetup.

    The interpreter may live under a directory others may not search (pyenv
    in ``/root``): for the session those directories get the search bit for
    others (not the read bit), and get their modes back after.
    """
    runuser = require_tool("runuser")
    needed = [
        Path(txsetup_exe()),
        Path(sys.executable),
        Path(sys.executable).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(txsetup.__file__).resolve(),
    ]
    blocking = {d: stat.S_IMODE(os.stat(d).st_mode) for d in _blocking_dirs(needed)}
    for directory, mode in blocking.items():
        os.chmod(directory, mode | stat.S_IXOTH)
    try:
        argv = [runuser, "-u", test_user, "--"]
        check = subprocess.run(
            [*argv, txsetup_exe(), "--version"], capture_output=True, check=False
        )
        assert check.returncode == 0, check.stderr.decode()
        yield argv
    finally:
        for directory, mode in blocking.items():
            os.chmod(directory, mode)


@pytest.fixture
def node(tmp_path: Path, node_pem_doc: bytes) -> Iterator[Path]:
    """A root-owned node tree with txsetup's files installed, that others may search."""
    require_root("a root-owned tree")
    base = Path(tempfile.mkdtemp(prefix="txsetup-env-"))
    os.chmod(base, 0o755)  # noqa: S103 - others must reach the tree to be refused by it
    root = base / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=node_pem_doc)
    assert run.returncode == 0, run.stderr
    yield root
    shutil.rmtree(base)


@pytest.fixture(scope="session")
def node_pem_doc(node_pem: str) -> bytes:
    """A valid document, encoded."""
    return encode(make_document(node_pem))


@pytest.fixture(scope="session")
def second_doc(node_pem: str) -> bytes:
    """A valid document that changes the installed ssconf files."""
    return encode(make_document(node_pem, ssconf={"master_ip": "192.0.2.99"}))


def leave_pending(root: Path, document: bytes) -> None:
    """Kill a run at its first rename (after the commit point): a prepared transaction stays."""
    proc = run_traced(root, document, "rename,renameat,renameat2", "signal=SIGKILL:when=1")
    assert proc.returncode != 0
    status = run_txsetup(["status", "--root", str(root)], stdin=None)
    assert status.result["finished"] is False


def run_as(argv: list[str], args: list[str], *, stdin: bytes | None = b"") -> Run:
    """The installed txsetup, run through ``argv`` (``runuser`` or ``unshare``)."""
    proc = subprocess.run(
        [*argv, txsetup_exe(), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **NO_PYC},
        check=False,
    )
    return parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def assert_environment_error(run: Run, *, action: str, path: Path) -> str:
    """Exit 7, error_code environment, one line naming the path and the action."""
    assert run.returncode == 7, run.stderr
    assert run.result["error_code"] == "environment"
    error = str(run.result["error"])
    assert "\n" not in error
    assert action in error
    assert str(path) in error
    assert "internal" not in run.stderr
    assert "report it" not in run.stderr
    return error


# --- a user who is not root --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["node-daemon-setup", "ssh-setup"])
def test_non_root_run_is_exit_7_and_changes_nothing(
    as_user: list[str], node: Path, second_doc: bytes, command: str
) -> None:
    """A run as a user who is not root: exit 7 at the lock, one line saying run it as root."""
    before = snapshot(node, skip=())
    run = run_as(as_user, [command, "--root", str(node)], stdin=second_doc)
    error = assert_environment_error(run, action="run it as root", path=node / "var/lock")
    assert f"user {USER}" in error
    failed = [e for e in run.events if e["event"] == "step.failed"]
    assert [(e["step"], e["error_code"]) for e in failed] == [("lock", "environment")]
    assert snapshot(node, skip=()) == before


def test_non_root_alias_is_exit_7(as_user: list[str], node: Path, second_doc: bytes) -> None:
    """Ganeti's drop-in name, run by a user who is not root, is exit 7 too."""
    alias = str(Path(txsetup_exe()).with_name("node-daemon-setup"))
    before = snapshot(node, skip=())
    proc = subprocess.run(
        [*as_user, alias, "--root", str(node)],
        input=second_doc,
        capture_output=True,
        timeout=120,
        env={**os.environ, **NO_PYC},
        check=False,
    )
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert_environment_error(run, action="run it as root", path=node)
    assert snapshot(node, skip=()) == before


def test_non_root_resume_leaves_a_pending_transaction_alone(
    as_user: list[str], node: Path, second_doc: bytes
) -> None:
    """--resume as a user who is not root: exit 7; the unfinished transaction stays as it was."""
    leave_pending(node, second_doc)
    before = snapshot(node, skip=())
    run = run_as(as_user, ["node-daemon-setup", "--resume", "--root", str(node)], stdin=None)
    assert_environment_error(run, action="run it as root", path=node)
    assert "environment.error" in run.event_names()
    assert snapshot(node, skip=()) == before
    finished = run_txsetup(["node-daemon-setup", "--resume", "--root", str(node)], stdin=None)
    assert (finished.returncode, finished.result["outcome"]) == (0, "resumed")


def test_non_root_status_of_a_journal_it_may_not_read_is_exit_7(
    as_user: list[str], node: Path
) -> None:
    """status as a user who may not read the journal: exit 7 naming it, not an internal error."""
    before = snapshot(node, skip=())
    proc = subprocess.run(
        [*as_user, txsetup_exe(), "status", "--root", str(node)],
        capture_output=True,
        timeout=120,
        env={**os.environ, **NO_PYC},
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    described = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode()).result
    assert described["error_code"] == "environment"
    assert str(node / "var/lib/txsetup") in described["error"]
    assert "run it as root" in described["error"]
    assert snapshot(node, skip=()) == before


# --- a read-only file system -------------------------------------------------------------------


def read_only(root: Path) -> list[str]:
    """argv prefix: ``root`` bind-mounted read-only onto itself, in a private mount namespace."""
    unshare = require_tool("unshare")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return [unshare, "-m", "--propagation", "private", "sh", "-c", script, str(root)]


def test_read_only_root_run_is_exit_7(node: Path, second_doc: bytes) -> None:
    """A run on a read-only file system: exit 7, naming the mount to remount, nothing changed."""
    before = snapshot(node, skip=())
    run = run_as(read_only(node), ["node-daemon-setup", "--root", str(node)], stdin=second_doc)
    error = assert_environment_error(run, action=f"remount {node} read-write", path=node)
    assert error.startswith("lock: read-only file system")
    assert snapshot(node, skip=()) == before


def test_read_only_root_resume_is_exit_7(node: Path, second_doc: bytes) -> None:
    """--resume on a read-only file system: exit 7, the unfinished transaction left for later."""
    leave_pending(node, second_doc)
    before = snapshot(node, skip=())
    args = ["node-daemon-setup", "--resume", "--root", str(node)]
    run = run_as(read_only(node), args, stdin=None)
    assert_environment_error(run, action=f"remount {node} read-write", path=node)
    assert snapshot(node, skip=()) == before


def test_read_only_status_still_reads(node: Path) -> None:
    """status only reads: on a read-only file system it describes the last transaction, exit 0."""
    proc = subprocess.run(
        [*read_only(node), txsetup_exe(), "status", "--root", str(node)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert parse_run(0, proc.stdout.decode(), proc.stderr.decode()).result["state"] == "done"


def test_console_view_says_what_to_do(node: Path, second_doc: bytes) -> None:
    """The console view's failed lock line and summary give the action, never "report it"."""
    argv = [*read_only(node), txsetup_exe(), "node-daemon-setup", "--root", str(node)]
    proc = subprocess.run(
        [*argv, "--log-format", "console"],
        input=second_doc,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 7
    lines = proc.stderr.decode().splitlines()
    failed = next(line for line in lines if "lock" in line and "read-only" in line)
    assert f"remount {node} read-write" in failed
    assert ACTION["environment"] in failed
    assert "refused by the node's environment" in lines[-1]
    assert "nothing changed" in lines[-1]
    assert "report it" not in proc.stderr.decode()


def test_eperm_after_changes_began_rolls_back_with_clear_words(
    node: Path, second_doc: bytes
) -> None:
    """Denied after changes began is still exit 6 (undone); the message names the action."""
    target = node / "var/lib/ganeti/ssconf_master_ip"
    before = snapshot(node)
    with immutable(target):
        run = run_txsetup(["node-daemon-setup", "--root", str(node)], stdin=second_doc)
    assert run.returncode == 6, run.stderr
    assert run.result["error_code"] == "rolled_back"
    assert "even to root: check its attributes (lsattr -d)" in run.result["error"]
    assert snapshot(node) == before


# --- the command line: --root and stdin ----------------------------------------------------------


@pytest.mark.parametrize("command", ["node-daemon-setup", "ssh-setup", "status"])
def test_missing_root_is_exit_2_and_is_not_created(tmp_path: Path, command: str) -> None:
    """A --root that does not exist is a usage error naming it, and is never created."""
    missing = tmp_path / "typo" / "path"
    run = run_txsetup([command, "--root", str(missing)], stdin=b"{}")
    assert run.returncode == 2
    assert run.result["error_code"] == "usage"
    assert f"--root {missing} does not exist" in run.result["error"]
    assert run.events[0]["event"] == "usage.error"
    assert not (tmp_path / "typo").exists()


def test_missing_root_resume_is_exit_2(tmp_path: Path) -> None:
    """--resume with a --root that does not exist is exit 2 too, creating nothing."""
    run = run_txsetup(["node-daemon-setup", "--resume", "--root", str(tmp_path / "x")], stdin=None)
    assert (run.returncode, run.result["error_code"]) == (2, "usage")
    assert os.listdir(tmp_path) == []


def test_root_that_is_a_file_is_exit_2(tmp_path: Path) -> None:
    """A --root that is a regular file is a usage error, and the file is left as it was."""
    path = tmp_path / "file"
    path.write_bytes(b"not a tree")
    run = run_txsetup(["node-daemon-setup", "--root", str(path)], stdin=b"{}")
    assert (run.returncode, run.result["error_code"]) == (2, "usage")
    assert f"--root {path} is not a directory" in run.result["error"]
    assert path.read_bytes() == b"not a tree"
    assert os.listdir(tmp_path) == ["file"]


def run_on_pty(args: list[str]) -> Run:
    """The installed txsetup with a real pty on stdin (stdout and stderr are pipes)."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [txsetup_exe(), *args],
            stdin=terminal,
            capture_output=True,
            timeout=60,  # catches a hang only: the refusal is immediate
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    return parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
@pytest.mark.parametrize("command", ["node-daemon-setup", "ssh-setup"])
def test_terminal_on_stdin_is_refused_before_the_lock(
    root: Path, command: str, extra: list[str]
) -> None:
    """A terminal on stdin is exit 2 at once, before the lock: no lock file, no state dir."""
    run = run_on_pty([command, "--root", str(root), *extra])
    assert (run.returncode, run.result["error_code"]) == (2, "usage")
    assert run.result["error"] == (
        f"stdin is a terminal: txsetup {command} expects the JSON document on stdin: "
        f"txsetup {command} < payload.json"
    )
    assert "step.begin" not in run.event_names()
    assert not (root / "var/lock/txsetup.lock").exists()
    assert not (root / "var/lib/txsetup").exists()


def test_terminal_on_stdin_is_fine_for_resume_and_status(root: Path) -> None:
    """--resume and status read no document: a terminal on stdin does not stop them."""
    resumed = run_on_pty(["node-daemon-setup", "--resume", "--root", str(root)])
    assert (resumed.returncode, resumed.result["outcome"]) == (0, "nothing_to_resume")
    assert run_on_pty(["status", "--root", str(root)]).result["state"] == "none"


def test_resume_with_dry_run_is_logged_as_a_usage_error(root: Path) -> None:
    """--resume --dry-run is a usage error (usage.error), not a configuration error."""
    run = run_txsetup(["node-daemon-setup", "--resume", "--dry-run", "--root", str(root)])
    assert (run.returncode, run.result["error_code"]) == (2, "usage")
    assert run.event_names() == ["usage.error", "txn.end"]


def test_invalid_input_counts_its_problems_in_words() -> None:
    """One problem is "1 problem", two are "2 problems": never "problem(s)"."""
    assert InvalidInput.at(["$.a: bad"]).message == "invalid input (1 problem)"
    assert InvalidInput.at(["$.a: bad", "$.b: bad"]).message == "invalid input (2 problems)"
