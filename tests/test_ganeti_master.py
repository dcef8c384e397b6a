"""A real Ganeti 3.0 master, unchanged, adds a node whose setup tools are txsetup's.

``gnt-node add`` (``client/gnt_node.py``, ``AddNode``) runs two tools on the
new node over ssh, each with a JSON document on stdin:

* ``_SetupSSH`` builds the SSH document (the master's ``/etc/ssh`` host keys,
  the master candidates' keys from ``ganeti_pub_keys``, the cluster's
  ``ssh_key_type``/``ssh_key_bits``) and runs ``/usr/lib/ganeti/prepare-node-join``;
  then it reads root's new public key back over a second connection
  (``cat ~root/.ssh/id_<type>.pub``) and records it with ``ssh.AddPublicKey``.
* ``bootstrap.SetupNodeDaemon`` builds the node daemon document from the
  master's own files and runs::

    /bin/sh -c 'test -d /usr/lib/ganeti/3.0 && ln -s -f -T /usr/lib/ganeti/3.0
    /etc/ganeti/lib && ln -s -f -T /usr/share/ganeti/3.0 /etc/ganeti/share &&
    /usr/lib/ganeti/node-daemon-setup [--debug] [--verbose]'

Here that code runs for real (``tests/ganeti_master_driver.py``, with the
system Python and Ganeti on its path) against a real sshd node from
:mod:`txsetup.demo.sshnodes`, on which ``/usr/lib/ganeti/node-daemon-setup``
and ``/usr/lib/ganeti/prepare-node-join`` are symlinks to txsetup's console
scripts, installed as ``docs/ganeti.md`` says. Ganeti's paths and inputs are
set up; its ssh command lines are its own.

Both sides live in one private mount namespace, so this machine's own files
are never touched. In it:

* ``/usr/lib/ganeti`` is a directory holding ``3.0/`` (what the version check
  tests for) and the two symlinks; with ``TXSETUP_DEB_INSTALLED=1`` (``nox -s
  deb_check``, after installing the Debian packages) it is the machine's own,
  where the two tools are the ``txsetup-ganeti`` package's, run by the system
  Python from the ``txsetup`` package;
* ``/etc/ganeti`` is an empty tmpfs, where the version check links ``lib``
  and ``share``;
* ``/var/lib/ganeti`` is the master's directory: ssconf files, ``server.pem``,
  ``hmac.key``, ``ganeti_pub_keys`` (prepare-node-join's tests), and
  ``known_hosts`` with the node's host key under the cluster's name (Ganeti's
  ``HostKeyAlias`` for node-daemon-setup) and under the node's name and port
  (what prepare-node-join's connections check);
* ``/etc/passwd`` is this machine's with root's home moved to the node
  root's ``root/``, whose ``.ssh/id_ed25519`` the node accepts (ssh finds
  root's key through the password database, not ``$HOME``); the node's
  sessions start there too, away from root's rc files. Master and node are
  one machine here, and Ganeti reads the node's new key back at the path of
  root's key on the master, so that path is where txsetup writes it;
* ``/etc/hosts`` resolves the node's name to loopback.

The master's ``/etc/ssh`` host keys are the one input not taken from its
usual place: the driver points ``constants.SSH_DAEMON_KEYFILES`` at keys the
test makes, and answers ``_SetupSSH``'s two luxi queries itself (no master
daemon runs). The node's sshd loads its ecdsa and rsa host keys from
``<node root>/etc/ssh``, and its ``[sshd]`` configuration reloads it with
``kill -HUP`` and checks the served keys with ssh-keyscan.

A keeper process (``unshare``) holds the namespace; sshd enters it through
the harness's ``launcher`` (``nsenter``) and so does the driver. The node's
sessions find the node root in ``TXSETUP_ROOT``, and its configuration drives
the demo daemon, so the restart and the TLS health check are real.

Needs root, ``unshare``, ``nsenter``, OpenSSH and Debian's ``ganeti-3.0``:
skipped without them, failed under ``TXSETUP_SYSTEM_TESTS=1``. The empty
mount points ``/etc/ganeti`` and ``/var/lib/ganeti`` are created on this
machine when missing, as installing Ganeti would; nothing is mounted outside
the namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import (
    CLUSTER,
    HANG_SECONDS,
    SYSTEM_TESTS,
    Run,
    make_document,
    parse_run,
    require_root,
    require_tool,
    snapshot,
)
from tests.sshdoc import fingerprint
from txsetup.demo.__main__ import free_port, pem_fingerprint, write_config
from txsetup.demo.certs import split_pem
from txsetup.demo.noded import NOT_RUNNING
from txsetup.demo.sshnodes import SshNode, SshNodes, start_ssh_nodes
from txsetup.node.config import HealthTarget
from txsetup.node.daemon import probe_tls
from txsetup.node.files import ssconf_content

pytestmark = pytest.mark.system

GANETI_LIB = Path("/usr/share/ganeti/3.0")
SYSTEM_PYTHON = "/usr/bin/python3"
# Set by `nox -s deb_check`: the node runs the tools the Debian packages installed.
DEB_INSTALLED = os.environ.get("TXSETUP_DEB_INSTALLED") == "1"
DRIVER = Path(__file__).with_name("ganeti_master_driver.py")
PKGLIBDIR = Path("/usr/lib/ganeti")  # pathutils.PKGLIBDIR
NODE_DAEMON_SETUP = PKGLIBDIR / "node-daemon-setup"  # pathutils.NODE_DAEMON_SETUP
PREPARE_NODE_JOIN = PKGLIBDIR / "prepare-node-join"  # pathutils.PREPARE_NODE_JOIN
# What a Ganeti 3.0 cluster sends by default (SSH_DEFAULT_KEY_TYPE, _BITS): root's
# pair is made on the node. Ganeti 3.0 knows dsa, ecdsa and rsa only (SSHK_ALL).
SSH_KEY_TYPE, SSH_KEY_BITS = "rsa", 2048
# The host keys Ganeti sends: those of SSH_DAEMON_KEYFILES that exist on the master.
HOST_KEY_KINDS = ("ecdsa", "rsa")
CANDIDATE = "3b9f1c2e-master-uuid"  # the master's UUID in ganeti_pub_keys
NODE_NAME = "node1.cluster.example.com"
OTHER_CLUSTER = "other-cluster.example.com"

# The keeper: prepares the namespace, says so, and holds it until its stdin closes.
_KEEPER = r"""
set -e
pkglib=$1 master=$2 passwd=$3 hosts=$4
if [ -n "$pkglib" ]; then mount --bind "$pkglib" /usr/lib/ganeti; fi
mount -t tmpfs -o mode=0755 tmpfs /etc/ganeti
mount --bind "$master" /var/lib/ganeti
mount --bind "$passwd" /etc/passwd
mount --bind "$hosts" /etc/hosts
echo ready
exec cat >/dev/null
"""

# What the namespace covers, and so what must look the same on the machine afterwards.
_COVERED = (PKGLIBDIR, Path("/etc/ganeti"), Path("/var/lib/ganeti"))
_COVERED_FILES = (Path("/etc/passwd"), Path("/etc/hosts"))


@dataclass(frozen=True)
class Namespace:
    """The private mount namespace both the master and the node run in."""

    nsenter: str
    keeper: int

    def enter(self) -> list[str]:
        """The words that run a command in this namespace (exec'd in place)."""
        return [self.nsenter, f"--mount=/proc/{self.keeper}/ns/mnt", "--"]

    def readlink(self, path: Path) -> str | None:
        """Where the symlink ``path`` points, as seen in the namespace (None: no symlink)."""
        proc = subprocess.run(
            [*self.enter(), "readlink", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None


@dataclass(frozen=True)
class MasterRun:
    """What ``SetupNodeDaemon`` did: what it raised, and what reached the operator."""

    raised: dict[str, str] | None
    waited_for: list[str]
    stdout: str
    stderr: str
    ganeti_log: str

    def node_run(self, exit_code: int) -> Run:
        """The node's txsetup run as the operator saw it, its output contract checked."""
        return parse_run(exit_code, self.stdout, self.stderr)


@dataclass(frozen=True)
class Master:
    """A Ganeti master and the node it is about to add."""

    namespace: Namespace
    pkglib: Path | None  # None: the machine's own /usr/lib/ganeti (DEB_INSTALLED)
    master_dir: Path
    node: SshNode
    daemon_port: int
    pem: str
    hmac_key: str
    work: Path

    def gnt_node_add(self, *flags: str) -> MasterRun:
        """Run Ganeti's ``SetupNodeDaemon`` for this node, with gnt-node's ``flags``."""
        return self._drive(*flags)

    def setup_ssh(self, master_ssh: Path) -> MasterRun:
        """Run Ganeti's ``_SetupSSH`` for this node, the master's host keys in ``master_ssh``."""
        return self._drive(
            f"--prepare-node-join={master_ssh}",
            f"--candidate={CANDIDATE}",
            f"--ssh-key-type={SSH_KEY_TYPE}",
            f"--ssh-key-bits={SSH_KEY_BITS}",
        )

    def _drive(self, *flags: str) -> MasterRun:
        """Run the driver in the namespace with ``flags``; what Ganeti did and printed."""
        report, log = self.work / "report.json", self.work / "ganeti.log"
        report.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        argv = [SYSTEM_PYTHON, str(DRIVER), str(report), str(log), NODE_NAME, str(self.node.port)]
        proc = subprocess.run(
            [*self.namespace.enter(), *argv, *flags],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "PYTHONPATH": str(GANETI_LIB)},
        )
        assert proc.returncode == 0, f"the driver failed:\n{proc.stderr[-3000:]}"
        outcome = json.loads(report.read_text())
        return MasterRun(
            outcome["raised"], outcome["waited_for"], proc.stdout, proc.stderr, log.read_text()
        )

    def noded(self, action: str) -> subprocess.CompletedProcess[str]:
        """Control the node's demo daemon directly (status, stop)."""
        argv = [sys.executable, "-m", "txsetup.demo.noded", action, "--root", str(self.node.root)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def require_ganeti() -> None:
    """Skip without Debian's ganeti-3.0; fail instead under TXSETUP_SYSTEM_TESTS=1."""
    if not (GANETI_LIB / "ganeti/bootstrap.py").exists() or not PKGLIBDIR.is_dir():
        if SYSTEM_TESTS:
            pytest.fail(f"Ganeti 3.0 ({GANETI_LIB}) is required when TXSETUP_SYSTEM_TESTS=1")
        pytest.skip(f"Ganeti 3.0 not installed ({GANETI_LIB})")


def check_installed_tools() -> None:
    """/usr/lib/ganeti's two tools are txsetup-ganeti's aliases, run from the txsetup package."""
    for tool in (NODE_DAEMON_SETUP, PREPARE_NODE_JOIN):
        diverter = subprocess.run(
            ["dpkg-divert", "--listpackage", str(tool)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        assert diverter == "txsetup-ganeti", f"{tool} is diverted by {diverter or 'nobody'}"
        script = Path("/usr/bin") / tool.name
        assert tool.resolve() == script
        assert script.read_text().splitlines()[0] == f"#!{SYSTEM_PYTHON}"
    # What the node's sessions import: no variable of this process's points elsewhere.
    where = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import txsetup; print(txsetup.__file__)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={},
        cwd="/",
    ).stdout.strip()
    assert where == "/usr/lib/python3/dist-packages/txsetup/__init__.py"


def machine_state() -> dict[str, Any]:
    """What the namespace covers, as this machine has it outside: to prove it is untouched."""
    state: dict[str, Any] = {}
    for directory in _COVERED:
        state[str(directory)] = sorted(os.listdir(directory)) if directory.exists() else None
    for path in _COVERED_FILES:
        state[str(path)] = path.read_bytes()
    return state


def passwd_with_root_home(home: Path) -> str:
    """This machine's password database, root's home moved to ``home``."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) == 7:
            fields[5] = str(home)
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def write_master_files(master: Path, pem: str, hmac_key: str) -> None:
    """The files ``SetupNodeDaemon`` reads from a master's ``/var/lib/ganeti``."""
    ssconf = make_document(
        pem, ssconf={"primary_ip_family": "2", "master_node": f"master.{CLUSTER}"}
    )["ssconf"]
    for key, value in ssconf.items():
        (master / f"ssconf_{key}").write_bytes(ssconf_content(value))
    (master / "server.pem").write_text(pem)
    (master / "hmac.key").write_text(hmac_key)


def install_client_files(cluster: SshNodes, master: Path, home: Path) -> None:
    """Give the master what Ganeti's ssh needs to reach the node: root's key, the host key.

    Ganeti checks the node's host key in its own ``known_hosts``: under the
    cluster's name (``HostKeyAlias``) for node-daemon-setup, under the node's
    name and port for prepare-node-join and the read-back of root's key (an
    operator accepts it at ``gnt-node add``'s prompt). ssh offers root's
    default key, which the node accepts.

    Root's home, ``home``, is the node root's ``root/``: master and node are
    one machine here, and Ganeti reads the node's new public key back at the
    path of root's key *on the master* (``~root/.ssh/id_<type>.pub``), which
    on a real cluster is the same path on the node. So the path Ganeti reads
    is where txsetup writes it.
    """
    (home / ".ssh").mkdir(mode=0o700, parents=True)
    home.chmod(0o700)
    key = home / ".ssh/id_ed25519"
    key.touch(mode=0o600)
    key.write_bytes(cluster.client_key.read_bytes())
    (known,) = (o.partition("=")[2] for o in cluster.ssh_options if o.startswith("UserKnownHosts"))
    _, key_type, host_key = Path(known).read_text().split()[:3]
    port = cluster.nodes[0].port
    (master / "known_hosts").write_text(
        f"{CLUSTER} {key_type} {host_key}\n[{NODE_NAME}]:{port} {key_type} {host_key}\n"
    )


@pytest.fixture
def master(tmp_path: Path, node_pem: str) -> Iterator[Master]:
    """A Ganeti master and a fresh sshd node, in one private mount namespace (see above).

    The node root has ``var/lib`` and ``var/lock`` and a configuration that
    drives the demo daemon on a free port; the daemon is stopped afterwards,
    and the machine's own Ganeti paths are checked to be as they were.
    """
    require_ganeti()
    require_root("mounting in a private namespace")
    unshare, nsenter = require_tool("unshare"), require_tool("nsenter")
    for tool in ("sshd", "ssh", "ssh-keygen"):
        require_tool(tool)
    for mount_point in _COVERED:
        mount_point.mkdir(parents=True, exist_ok=True)
    before = machine_state()

    pkglib: Path | None = None
    if DEB_INSTALLED:
        check_installed_tools()
    else:
        console_script = Path(sys.executable).with_name("node-daemon-setup")
        for script in (console_script, console_script.with_name("prepare-node-join")):
            assert script.exists(), f"the {script.name} console script is not installed"
        pkglib = tmp_path / "usr-lib-ganeti"
        (pkglib / "3.0").mkdir(parents=True)
        (pkglib / "node-daemon-setup").symlink_to(console_script)
        (pkglib / "prepare-node-join").symlink_to(console_script.with_name("prepare-node-join"))
    master_dir = tmp_path / "var-lib-ganeti"
    master_dir.mkdir()
    hmac_key = secrets.token_hex(20) + "\n"  # utils.GenerateSecret(), as bootstrap.py makes it
    write_master_files(master_dir, node_pem, hmac_key)
    # Root's home is the node root's root/: see install_client_files.
    node_root = (tmp_path / "nodes").resolve() / "node0/root"
    home = node_root / "root"
    passwd, hosts = tmp_path / "passwd", tmp_path / "hosts"
    passwd.write_text(passwd_with_root_home(home))
    hosts.write_text(f"127.0.0.1\tlocalhost {NODE_NAME}\n::1\tlocalhost\n")

    keeper_argv = [unshare, "--mount", "--propagation", "private", "sh", "-c", _KEEPER, "sh"]
    with subprocess.Popen(
        [*keeper_argv, str(pkglib or ""), str(master_dir), str(passwd), str(hosts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as keeper:
        assert keeper.stdin is not None
        assert keeper.stdout is not None
        try:
            if keeper.stdout.readline() != b"ready\n":  # unshare or mount was denied
                _, error = keeper.communicate(timeout=30)
                why = f"cannot prepare a private mount namespace: {error.decode().strip()}"
                if SYSTEM_TESTS:
                    pytest.fail(why)
                pytest.skip(why)
            namespace = Namespace(nsenter, keeper.pid)
            with start_ssh_nodes(
                1, tmp_path / "nodes", launcher=namespace.enter(), root_host_keys=HOST_KEY_KINDS
            ) as cluster:
                node = cluster.nodes[0]
                assert node.root == node_root
                install_client_files(cluster, master_dir, home)
                (node.root / "var/lib").mkdir(parents=True)
                (node.root / "var/lock").mkdir()
                daemon_port = free_port()
                write_config(node.root, daemon_port)
                setup = Master(
                    namespace, pkglib, master_dir, node, daemon_port, node_pem, hmac_key, tmp_path
                )
                try:
                    yield setup
                finally:
                    setup.noded("stop")
        finally:
            keeper.stdin.close()
            keeper.wait(timeout=30)
    assert machine_state() == before


def served_fingerprint(port: int) -> str:
    """The SHA-256 fingerprint of what the daemon presents in a real TLS handshake."""
    return probe_tls(HealthTarget("127.0.0.1", port), timeout=HANG_SECONDS)


def client_common_name(pem: bytes) -> list[str]:
    """The common name(s) of the certificate in a ``client.pem``."""
    cert = x509.load_pem_x509_certificate(split_pem(pem.decode())[1].encode())
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


@pytest.mark.parametrize("flags", [(), ("--debug", "--verbose")], ids=["plain", "debug-verbose"])
def test_gnt_node_add_sets_up_the_node_through_txsetup(
    master: Master, flags: tuple[str, ...]
) -> None:
    """Ganeti's SetupNodeDaemon, flags and version check included, returns: txsetup installed
    the master's files and restarted a daemon that serves the new certificate."""
    run = master.gnt_node_add(*flags)
    assert run.raised is None, run.stderr[-3000:]
    assert run.waited_for == [NODE_NAME]  # Ganeti went on, as after its own tool

    # What Ganeti ran: the version check, then <pkglibdir>/node-daemon-setup with its flags.
    assert f"Ensure correct Ganeti version: {[str(NODE_DAEMON_SETUP), *flags]}" in run.ganeti_log
    assert " ".join([str(NODE_DAEMON_SETUP), *flags]) + "'" in run.ganeti_log  # and nothing else
    assert f"test -d {PKGLIBDIR}/3.0 && ln -s -f -T" in run.ganeti_log
    assert master.namespace.readlink(Path("/etc/ganeti/lib")) == f"{PKGLIBDIR}/3.0"
    assert master.namespace.readlink(Path("/etc/ganeti/share")) == f"{GANETI_LIB}"

    # What txsetup did, as the operator saw it: one result line and JSON log lines.
    node_run = run.node_run(0)
    assert node_run.result["outcome"] == "committed"
    begin = next(event for event in node_run.events if event["event"] == "txn.begin")
    assert begin["root"] == str(master.node.root)  # TXSETUP_ROOT reached the alias
    assert [s["name"] for s in node_run.result["steps"]][-1] == "restart_daemon"
    assert master.hmac_key.strip() not in run.stdout + run.stderr + run.ganeti_log

    master_dir, node_dir = master.master_dir, master.node.root / "var/lib/ganeti"
    ssconf = sorted(path.name for path in master_dir.glob("ssconf_*"))
    assert sorted(os.listdir(node_dir)) == sorted([*ssconf, "client.pem", "hmac.key", "server.pem"])
    for name in [*ssconf, "server.pem", "hmac.key"]:
        assert (node_dir / name).read_bytes() == (master_dir / name).read_bytes(), name
    assert client_common_name((node_dir / "client.pem").read_bytes()) == [NODE_NAME]
    assert served_fingerprint(master.daemon_port) == pem_fingerprint(master.pem)


def test_node_of_another_cluster_refuses_and_ganeti_raises(master: Master) -> None:
    """A node set up for another cluster refuses Ganeti's document (exit 4, cluster name):
    SetupNodeDaemon raises, the operator sees txsetup's reason, and the node is unchanged."""
    node_dir = master.node.root / "var/lib/ganeti"
    node_dir.mkdir()
    (node_dir / "ssconf_cluster_name").write_bytes(ssconf_content(OTHER_CLUSTER))
    (node_dir / "ssconf_cluster_name").chmod(0o444)
    before = snapshot(master.node.root)

    run = master.gnt_node_add()
    assert run.raised is not None
    assert run.raised["type"] == "OpExecError"
    assert run.raised["message"].endswith("failed: exited with exit code 4")
    assert run.waited_for == []

    node_run = run.node_run(4)
    assert node_run.result["outcome"] == "failed"
    assert "cluster name verification failed" in node_run.result["error"]
    assert OTHER_CLUSTER in node_run.result["error"]
    failed = [e for e in node_run.events if e["event"] == "step.failed"]
    assert [e["step"] for e in failed] == ["verify_cluster"]
    assert snapshot(master.node.root) == before
    assert master.noded("status").returncode == NOT_RUNNING


@pytest.mark.skipif(DEB_INSTALLED, reason="/usr/lib/ganeti/3.0 is the installed ganeti-3.0's")
def test_version_check_stops_a_node_without_this_ganeti_version(master: Master) -> None:
    """Without /usr/lib/ganeti/3.0 on the node, Ganeti's version check fails before
    node-daemon-setup runs: Ganeti raises, and txsetup never touched the node."""
    assert master.pkglib is not None
    shutil.rmtree(master.pkglib / "3.0")
    before = snapshot(master.node.root, skip=())

    run = master.gnt_node_add()
    assert run.raised is not None
    assert run.raised["type"] == "OpExecError"
    assert run.raised["message"].endswith("failed: exited with exit code 1")
    assert run.waited_for == []
    assert (run.stdout, run.stderr) == ("", "")
    assert snapshot(master.node.root, skip=()) == before
    assert master.namespace.readlink(Path("/etc/ganeti/lib")) is None


@dataclass(frozen=True)
class Joining:
    """A master about to run prepare-node-join on a node whose sshd serves its own keys."""

    master: Master
    master_ssh: Path
    master_root_key: str

    @property
    def pub_keys(self) -> Path:
        """The master's record of root's public keys (``pathutils.SSH_PUB_KEYS``)."""
        return self.master.master_dir / "ganeti_pub_keys"

    def host_key(self, kind: str) -> str:
        """The master's public ``kind`` host key line."""
        return (self.master_ssh / f"ssh_host_{kind}_key.pub").read_text()


Keygen = Callable[[Path, str, str], str]


@pytest.fixture(scope="session")
def keygen(tmp_path_factory: pytest.TempPathFactory) -> Keygen:
    """``keygen(key, kind, comment)``: an OpenSSH key pair at ``key``; its public line.

    ssh-keygen makes each pair once per session (per worker): an RSA key takes
    seconds on a busy machine. A pair is told apart by its kind, comment and
    file name, so the master's and the node's keys still differ.
    """
    made = tmp_path_factory.mktemp("ssh-keys")

    def copy_of(key: Path, kind: str, comment: str) -> str:
        source = made / f"{kind}-{comment}-{key.name}"
        if not source.exists():
            bits = ["-b", "2048"] if kind == "rsa" else []
            argv = ["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", comment]
            subprocess.run([*argv, "-f", str(source)], check=True, capture_output=True, timeout=120)
        for suffix in ("", ".pub"):
            shutil.copy2(f"{source}{suffix}", f"{key}{suffix}")
        return Path(f"{key}.pub").read_text()

    return copy_of


def served_host_key(port: int, kind: str) -> str | None:
    """The fingerprint of the ``kind`` host key the node's sshd presents, via ssh-keyscan."""
    argv = ["ssh-keyscan", "-T", str(HANG_SECONDS), "-p", str(port), "-t", kind, "127.0.0.1"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=4 * HANG_SECONDS, check=False
    ).stdout
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    return fingerprint(" ".join(lines[0].split()[1:])) if lines else None


@pytest.fixture
def joining(master: Master, tmp_path: Path, keygen: Keygen) -> Joining:
    """The master's host keys and root key; the node's own host keys, served by its sshd.

    The node's sshd loads ``<root>/etc/ssh/ssh_host_{ecdsa,rsa}_key`` (see the
    ``master`` fixture), and its ``[sshd]`` configuration reloads that very
    sshd with ``kill -HUP`` and checks the keys it serves with ssh-keyscan.
    """
    require_tool("ssh-keyscan")
    node = master.node
    master_ssh = tmp_path / "master-etc-ssh"
    master_ssh.mkdir()
    (node.root / "etc/ssh").mkdir(parents=True)
    for kind in HOST_KEY_KINDS:
        keygen(master_ssh / f"ssh_host_{kind}_key", kind, "root@master")
        keygen(node.root / f"etc/ssh/ssh_host_{kind}_key", kind, f"root@{NODE_NAME}")
    master_root_key = keygen(tmp_path / "master_id_rsa", "rsa", "root@master").strip()
    (master.master_dir / "ganeti_pub_keys").write_text(f"{CANDIDATE} {master_root_key}\n")
    with (node.root / "etc/txsetup/config.toml").open("a") as config:
        config.write(
            "\n[sshd]\n"
            f'reload = ["kill", "-HUP", "{node.pid}"]\n'
            f'status = ["kill", "-0", "{node.pid}"]\n'
            f'health_address = "127.0.0.1:{node.port}"\n'
            "health_timeout = 60\n"  # sshd serves the keys at once: this catches hangs
        )
    for kind in HOST_KEY_KINDS:
        own = (node.root / f"etc/ssh/ssh_host_{kind}_key.pub").read_text()
        assert served_host_key(node.port, kind) == fingerprint(own)
    return Joining(master, master_ssh, master_root_key)


def test_prepare_node_join_installs_ssh_keys_through_txsetup(joining: Joining) -> None:
    """Ganeti's _SetupSSH returns: txsetup installed the master's host keys (sshd, reloaded,
    serves them), made root's pair, authorized the master's key; Ganeti read the new key back."""
    master, root = joining.master, joining.master.node.root
    run = master.setup_ssh(joining.master_ssh)
    assert run.raised is None, run.stderr[-3000:]
    # Ganeti's own command lines: prepare-node-join (no version check, no flags), then
    # the read-back of root's new public key.
    commands = [line.rpartition(f"root@{NODE_NAME} ")[2] for line in run.ganeti_log.splitlines()]
    home = root / "root"
    assert commands == [
        f"'/bin/sh -c {PREPARE_NODE_JOIN}'",
        f"'cat {home}/.ssh/id_{SSH_KEY_TYPE}.pub'",
    ]

    node_run = run.node_run(0)
    assert node_run.result["outcome"] == "committed"
    begin = next(event for event in node_run.events if event["event"] == "txn.begin")
    assert begin["root"] == str(root)
    reloads = [e for e in node_run.events if e["event"] == "sshd.reload"]
    assert [(e["argv"], e["returncode"]) for e in reloads] == [
        (["kill", "-HUP", str(master.node.pid)], 0)
    ]
    healthy = [e["kind"] for e in node_run.events if e["event"] == "sshd.healthy"]
    assert sorted(healthy) == sorted(HOST_KEY_KINDS)

    # The master's /etc/ssh host keys, as Ganeti read and sent them, and served.
    for kind in HOST_KEY_KINDS:
        for suffix in ("", ".pub"):
            name = f"ssh_host_{kind}_key{suffix}"
            sent = (joining.master_ssh / name).read_bytes()
            assert (root / "etc/ssh" / name).read_bytes() == sent, name
        assert served_host_key(master.node.port, kind) == fingerprint(joining.host_key(kind))

    # Root's pair of the cluster's type, made on the node, and authorized_keys.
    ssh_dir = root / "root/.ssh"
    public = (ssh_dir / f"id_{SSH_KEY_TYPE}.pub").read_text().strip()
    assert node_run.result["root_public_keys"] == [public]
    length = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(ssh_dir / f"id_{SSH_KEY_TYPE}")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()[0]
    assert int(length) == SSH_KEY_BITS
    assert (ssh_dir / f"id_{SSH_KEY_TYPE}").stat().st_mode & 0o777 == 0o600
    assert (ssh_dir / "authorized_keys").read_text().splitlines() == [
        public,
        joining.master_root_key,
    ]

    # Ganeti read root's new public key back over ssh and recorded it under the node's
    # name, as it read it: the public line's own newline plus the one it adds.
    assert joining.pub_keys.read_text() == (
        f"{CANDIDATE} {joining.master_root_key}\n{NODE_NAME} {public}\n\n"
    )


def test_prepare_node_join_on_a_node_of_another_cluster_refuses(joining: Joining) -> None:
    """A node set up for another cluster refuses Ganeti's SSH document (exit 4): _SetupSSH
    raises, nothing on the node changes, and sshd still serves the node's own host keys."""
    master, root = joining.master, joining.master.node.root
    node_dir = root / "var/lib/ganeti"
    node_dir.mkdir()
    (node_dir / "ssconf_cluster_name").write_bytes(ssconf_content(OTHER_CLUSTER))
    (node_dir / "ssconf_cluster_name").chmod(0o444)
    before = snapshot(root)
    pub_keys = joining.pub_keys.read_bytes()

    run = master.setup_ssh(joining.master_ssh)
    assert run.raised is not None
    assert run.raised["type"] == "OpExecError"
    assert run.raised["message"].endswith("failed: exited with exit code 4")
    assert str(PREPARE_NODE_JOIN) in run.raised["message"]

    node_run = run.node_run(4)
    assert node_run.result["outcome"] == "failed"
    assert "cluster name verification failed" in node_run.result["error"]
    assert OTHER_CLUSTER in node_run.result["error"]
    failed = [e for e in node_run.events if e["event"] == "step.failed"]
    assert [e["step"] for e in failed] == ["verify_cluster"]
    assert "sshd.reload" not in node_run.event_names()
    assert snapshot(root) == before
    assert joining.pub_keys.read_bytes() == pub_keys  # Ganeti stopped at the refusal
    for kind in HOST_KEY_KINDS:
        own = (root / f"etc/ssh/ssh_host_{kind}_key.pub").read_text()
        assert served_host_key(master.node.port, kind) == fingerprint(own)
