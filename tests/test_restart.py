"""The ``restart_daemon`` step end to end: the installed CLI, the real demo daemon, real TLS.

Every test runs ``txsetup`` as a master would, with a ``--config`` whose
``[daemon]`` commands drive ``python -m txsetup.demo.noded`` under the test's
root on a free loopback port. What the daemon serves is observed the way the
health check observes it: a TLS handshake and the SHA-256 of the certificate
presented. A restart fails for a real reason by installing an ``hmac.key``
that the demo daemon refuses to start with.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import (
    HANG_SECONDS,
    Entry,
    Run,
    encode,
    make_document,
    run_traced,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
)
from txsetup.demo.certs import split_pem
from txsetup.demo.noded import NOT_RUNNING
from txsetup.node.config import HealthTarget
from txsetup.node.cryptocompat import valid_from, valid_until
from txsetup.node.daemon import probe_tls

Argv = Sequence[str]
GOOD_HMAC = "0123456789abcdef0123456789abcdef\n"
BAD_HMAC = "short"  # the demo daemon refuses to start with it
NEW_SSCONF = {"master_ip": "192.0.2.77"}
PIDFILE = "var/run/txsetup-demo-noded.pid"
JOURNAL = "var/lib/txsetup/journal"
# The daemon's own pidfile and log change with every restart; they are not txsetup's files.
SKIP = ("var/lock", "var/lib/txsetup", "var/run", "var/log")


def fingerprint(pem: str) -> str:
    """SHA-256 of the DER certificate in ``pem`` (lowercase hex), as cryptography computes it."""
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def renewed(pem: str) -> str:
    """``pem``'s key with a new certificate for it: same key, different fingerprint."""
    key_pem, cert_pem = split_pem(pem)
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    old = x509.load_pem_x509_certificate(cert_pem.encode())
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from(old))
        .not_valid_after(valid_until(old) + timedelta(days=30))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(key, hashes.SHA256())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def toml_array(items: Sequence[Any]) -> str:
    """A TOML array of strings or of string arrays (JSON strings are TOML basic strings)."""
    inner = (toml_array(i) if isinstance(i, list) else json.dumps(i) for i in items)
    return "[" + ", ".join(inner) + "]"


class Node:
    """A test root, its demo daemon's port, and the ``--config`` that drives both."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config
        self.port = free_port()
        self.target = HealthTarget("127.0.0.1", self.port)

    def noded_argv(self, action: str) -> list[str]:
        """The demo daemon's command line for ``action`` under this root."""
        port = ["--port", str(self.port)] if action in ("start", "restart") else []
        return [sys.executable, "-m", "txsetup.demo.noded", action, "--root", str(self.root), *port]

    def write_config(
        self,
        path: Path | None = None,
        *,
        restart: list[list[str]] | None = None,
        health_port: int | None = None,
        health_timeout: float = 60,  # a healthy daemon answers at once: this catches hangs
    ) -> Path:
        """Write a ``[daemon]`` table for the demo daemon (or the given overrides); its path."""
        path = path or self.config
        commands = restart if restart is not None else [self.noded_argv("restart")]
        path.write_text(
            "[daemon]\n"
            f"restart = {toml_array(commands)}\n"
            f"stop = {toml_array([self.noded_argv('stop')])}\n"
            f"status = {toml_array(self.noded_argv('status'))}\n"
            f'health_url = "tls://127.0.0.1:{health_port or self.port}"\n'
            f"health_timeout = {health_timeout}\n"
            "command_timeout = 20\n"
        )
        return path

    def noded(self, action: str) -> subprocess.CompletedProcess[str]:
        """Run the demo daemon's ``action`` directly (not through txsetup)."""
        return subprocess.run(
            self.noded_argv(action), capture_output=True, text=True, timeout=60, check=False
        )

    def setup(self, document: dict[str, Any], config: Path | None = None) -> Run:
        """``txsetup node-daemon-setup`` with ``document`` on stdin."""
        return run_txsetup(
            ["node-daemon-setup", "--root", str(self.root), "--config", str(config or self.config)],
            stdin=encode(document),
        )

    def resume(self, *, abort: bool = False, config: Path | None = None) -> Run:
        """``txsetup node-daemon-setup --resume [--abort]``."""
        args = ["node-daemon-setup", "--resume", "--root", str(self.root)]
        args += ["--config", str(config or self.config), *(["--abort"] if abort else [])]
        return run_txsetup(args, stdin=None)

    def status(self) -> dict[str, Any]:
        """``txsetup status``'s description of the last transaction."""
        run = run_txsetup(["status", "--root", str(self.root)])
        assert run.returncode == 0, run.stderr
        return run.result

    def running(self) -> bool:
        """Whether the demo daemon runs (its status exits 0; 3 means stopped)."""
        code = self.noded("status").returncode
        assert code in (0, NOT_RUNNING)
        return code == 0

    def served(self) -> str:
        """The fingerprint of the certificate the daemon presents in a real handshake."""
        return probe_tls(self.target, timeout=HANG_SECONDS)

    def pid(self) -> int:
        """The running daemon's pid, from its pidfile."""
        return int((self.root / PIDFILE).read_text())

    def files(self) -> dict[str, Entry]:
        """Every path under the root txsetup manages: bytes, mode, owner."""
        return snapshot(self.root, skip=SKIP)


@pytest.fixture
def node(root: Path, tmp_path: Path) -> Iterator[Node]:
    """A node root with a demo-daemon config; the daemon is always stopped afterwards."""
    node = Node(root, tmp_path / "config.toml")
    node.write_config()
    try:
        yield node
    finally:
        node.noded("stop")


@pytest.fixture(scope="module")
def new_pem(node_pem: str) -> str:
    """A renewed certificate for the cluster's key: accepted by the node, new fingerprint."""
    return renewed(node_pem)


def old_document(pem: str, *, start: bool = True) -> dict[str, Any]:
    """The first install: certificate A, a valid hmac key."""
    return make_document(pem, start_node_daemon=start, hmac_key=GOOD_HMAC)


def new_document(pem: str, *, hmac_key: str = GOOD_HMAC) -> dict[str, Any]:
    """An update: renewed certificate, a changed ssconf value, the given hmac key."""
    return make_document(pem, start_node_daemon=True, hmac_key=hmac_key, ssconf=NEW_SSCONF)


def install_old(node: Node, pem: str, *, running: bool) -> dict[str, Entry]:
    """Install the old document (with the daemon running on it or not); the files it left."""
    run = node.setup(old_document(pem, start=running))
    assert (run.returncode, run.result["outcome"]) == (0, "committed"), run.stdout
    assert node.running() is running
    if running:
        assert node.served() == fingerprint(pem)
    return node.files()


def assert_old_state(node: Node, old: dict[str, Entry], pem: str, *, running: bool) -> None:
    """Exactly the old files, no copies left, and the daemon as it was (serving ``pem``)."""
    assert node.files() == old
    assert state_dir_leftovers(node.root) == []
    assert node.running() is running
    if running:
        assert node.served() == fingerprint(pem)


def test_start_on_empty_root_commits_serves_new_cert_and_rerun_converges(
    node: Node, node_pem: str
) -> None:
    """start_node_daemon on an empty root serves the new cert; a re-run converges, no restart."""
    run = node.setup(old_document(node_pem))
    assert (run.returncode, run.result["outcome"]) == (0, "committed"), run.stdout
    assert node.running()
    assert node.served() == fingerprint(node_pem)
    names = run.event_names()
    assert names.index("daemon.restart") < names.index("daemon.healthy")
    healthy = next(e for e in run.events if e["event"] == "daemon.healthy")
    assert healthy["fingerprint"] == fingerprint(node_pem)

    files, journal, pid = node.files(), (node.root / JOURNAL).read_bytes(), node.pid()
    again = node.setup(old_document(node_pem))
    assert (again.returncode, again.result["outcome"], again.result["changed"]) == (
        0,
        "converged",
        [],
    ), again.stdout
    assert "daemon.restart" not in again.event_names()
    assert node.files() == files
    # The journal now holds the converged run's summary, and nothing else changed.
    assert (node.root / JOURNAL).read_bytes() != journal
    assert node.status()["last_transaction"]["txid"] == again.result["txid"]
    assert node.pid() == pid
    assert node.served() == fingerprint(node_pem)


def test_converged_files_with_stopped_daemon_restart_it(node: Node, node_pem: str) -> None:
    """When the files are right but the daemon is down, the run restarts it and writes no file."""
    install_old(node, node_pem, running=True)
    assert node.noded("stop").returncode == 0
    files = node.files()

    run = node.setup(old_document(node_pem))
    assert (run.returncode, run.result["outcome"], run.result["changed"]) == (
        0,
        "committed",
        [],
    ), run.stdout
    assert "daemon.restart" in run.event_names()
    assert node.files() == files
    assert state_dir_leftovers(node.root) == []
    assert node.running()
    assert node.served() == fingerprint(node_pem)


def test_restart_failing_on_new_files_rolls_back_to_old_daemon(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A daemon that refuses the new files is rolled back: old files, old cert served, exit 6."""
    old = install_old(node, node_pem, running=True)
    old_pid = node.pid()

    run = node.setup(new_document(new_pem, hmac_key=BAD_HMAC))
    assert (run.returncode, run.result["outcome"]) == (6, "rolled_back"), run.stdout
    assert "hmac.key" in run.result["error"]
    steps = {s["name"]: s["state"] for s in run.result["steps"]}
    assert steps["restart_daemon"] == "failed"
    assert_old_state(node, old, node_pem, running=True)
    assert node.pid() != old_pid  # restarted on the old files, not merely left alone
    described = node.status()
    assert (described["state"], described["finished"]) == ("rolled_back", True)


def test_failing_restart_command_with_stopped_daemon_exits_6(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A restart command that exits non-zero rolls back; a daemon that was stopped stays stopped."""
    old = install_old(node, node_pem, running=False)
    node.write_config(restart=[["false"]])

    run = node.setup(new_document(new_pem))
    assert (run.returncode, run.result["outcome"]) == (6, "rolled_back"), run.stdout
    assert "false exited 1" in run.result["error"]
    assert_old_state(node, old, node_pem, running=False)


def test_failing_restart_command_with_running_daemon_exits_8(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A restart failing again in the undo exits 8, though the daemon still serves the old cert."""
    old = install_old(node, node_pem, running=True)
    pid = node.pid()
    node.write_config(restart=[["false"]])

    run = node.setup(new_document(new_pem))
    assert (run.returncode, run.result["outcome"]) == (8, "failed"), run.stdout
    assert str(node.root / "var/lib/txsetup") in run.result["error"]
    assert node.files() == old
    assert node.pid() == pid
    assert node.served() == fingerprint(node_pem)


def test_failed_undo_restores_the_daemon_once(node: Node, node_pem: str, new_pem: str) -> None:
    """An undo that cannot restore the daemon tries once, not once per step that shares it."""
    install_old(node, node_pem, running=True)
    node.write_config(restart=[["false"]])

    run = node.setup(new_document(new_pem))
    assert run.returncode == 8, run.stdout
    assert run.event_names().count("daemon.restart") == 2  # the step's, and the undo's


def test_health_timeout_with_stopped_daemon_rolls_back_and_stops_it(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A daemon not healthy on health_url within health_timeout is rolled back and stopped again."""
    old = install_old(node, node_pem, running=False)
    node.write_config(health_port=free_port(), health_timeout=1)

    run = node.setup(new_document(new_pem))
    assert (run.returncode, run.result["outcome"]) == (6, "rolled_back"), run.stdout
    assert "not healthy within 1s" in run.result["error"]
    assert "daemon.unhealthy" in run.event_names()
    assert_old_state(node, old, node_pem, running=False)


def test_health_timeout_with_running_daemon_exits_8_until_resumed_with_fixed_config(
    node: Node, node_pem: str, new_pem: str, tmp_path: Path
) -> None:
    """An unverifiable undo exits 8 with the journal kept, until --resume with a fixed config."""
    old = install_old(node, node_pem, running=True)
    good_config = node.write_config(tmp_path / "good.toml")
    node.write_config(health_port=free_port(), health_timeout=1)

    run = node.setup(new_document(new_pem))
    assert (run.returncode, run.result["outcome"]) == (8, "failed"), run.stdout
    assert f"journal and backups kept in {node.root / 'var/lib/txsetup'}" in run.result["error"]
    assert node.files() == old  # the files are back; only the daemon's health is unproven
    described = node.status()
    assert (described["state"], described["finished"]) == ("rolling_back", False)

    still_bad = node.resume(abort=True)
    assert (still_bad.returncode, still_bad.result["outcome"]) == (8, "failed"), still_bad.stdout
    assert node.files() == old

    fixed = node.resume(abort=True, config=good_config)
    assert (fixed.returncode, fixed.result["outcome"]) == (0, "rolled_back"), fixed.stdout
    assert_old_state(node, old, node_pem, running=True)
    assert node.status()["state"] == "rolled_back"


def test_new_files_failing_with_stopped_daemon_leave_it_stopped(
    node: Node, node_pem: str, new_pem: str
) -> None:
    """A stopped daemon that cannot start on the new files ends stopped, on the old files."""
    old = install_old(node, node_pem, running=False)

    run = node.setup(new_document(new_pem, hmac_key=BAD_HMAC))
    assert (run.returncode, run.result["outcome"]) == (6, "rolled_back"), run.stdout
    assert_old_state(node, old, node_pem, running=False)
    assert node.noded("status").returncode == NOT_RUNNING


def killed_at_spawn(node: Node, document: dict[str, Any], spawn: int) -> None:
    """Run node-daemon-setup under strace, SIGKILLed as it spawns its ``spawn``-th command.

    Only txsetup itself is traced (no ``-f``): its commands and the daemon
    they start run untraced, and the kill lands on txsetup's own ``vfork``.
    """
    proc = run_traced(
        node.root,
        encode(document),
        "vfork,clone,clone3",
        f"signal=SIGKILL:when={spawn}",
        "--config",
        str(node.config),
        follow=False,
        timeout=60,
    )
    assert proc.returncode in (-9, 137), proc.stderr.decode()
    assert proc.stdout == b""


# The restart is two commands (stop, then start), so txsetup spawns: 1 status, 2 stop, 3 start.
KILL_POINTS = {
    1: "before the daemon state is journaled",
    2: "before the restart, daemon still old",
    3: "between stop and start",
}


@pytest.mark.system
@pytest.mark.parametrize("abort", [False, True], ids=["resume", "abort"])
@pytest.mark.parametrize("spawn", sorted(KILL_POINTS), ids=KILL_POINTS.values())
def test_kill_during_restart_then_resume_or_abort_agrees(
    node: Node, node_pem: str, new_pem: str, spawn: int, abort: bool
) -> None:
    """Killed mid-restart, --resume serves new files and cert; --resume --abort the old ones."""
    node.write_config(restart=[node.noded_argv("stop"), node.noded_argv("start")])
    old = install_old(node, node_pem, running=True)
    new_root_files = {"ssconf_master_ip": NEW_SSCONF["master_ip"] + "\n", "server.pem": new_pem}

    killed_at_spawn(node, new_document(new_pem), spawn)
    assert node.running() is (spawn < 3)
    for name, content in new_root_files.items():
        assert (node.root / "var/lib/ganeti" / name).read_text() == content
    described = node.status()
    journaled = "committed" if spawn == 1 else "restarting_daemon"
    assert (described["state"], described["step"]) == (journaled, "restart_daemon")

    run = node.resume(abort=abort)
    assert run.returncode == 0, run.stdout
    if abort:
        assert run.result["outcome"] == "rolled_back"
        assert_old_state(node, old, node_pem, running=True)
    else:
        assert run.result["outcome"] == "resumed"
        assert state_dir_leftovers(node.root) == []
        for name, content in new_root_files.items():
            assert (node.root / "var/lib/ganeti" / name).read_text() == content
        assert node.running()
        assert node.served() == fingerprint(new_pem)
    again = node.resume()
    assert (again.returncode, again.result["outcome"]) == (0, "nothing_to_resume")


def test_unknown_config_key_exits_3_and_touches_nothing(node: Node, node_pem: str) -> None:
    """A config with an unknown key is invalid input naming the key; no file, no daemon touched."""
    node.config.write_text(node.config.read_text() + "restrat = ['true']\n")
    before = snapshot(node.root, skip=())

    run = node.setup(old_document(node_pem))
    assert (run.returncode, run.result["outcome"]) == (3, "failed"), run.stdout
    assert "[daemon].restrat: unknown key" in run.result["error"]
    assert snapshot(node.root, skip=()) == before
    assert not node.running()


def test_missing_config_file_is_a_usage_error(node: Node, node_pem: str, tmp_path: Path) -> None:
    """--config naming a file that does not exist exits 2 and touches nothing."""
    before = snapshot(node.root, skip=())
    run = node.setup(old_document(node_pem), config=tmp_path / "absent.toml")
    assert (run.returncode, run.result["outcome"]) == (2, "failed"), run.stdout
    assert "absent.toml" in run.result["error"]
    assert snapshot(node.root, skip=()) == before
    assert not node.running()
