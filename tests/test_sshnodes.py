"""The sshd node harness itself: real sshd, ssh and scp processes on loopback, no mocks.

Push's tests and benchmarks trust :mod:`txsetup.demo.sshnodes` to give every
node its own root, carry stdin, copy with scp and clean up after itself; these
tests pin exactly that, so a failure elsewhere is not the harness's.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from txsetup.demo.sshd_config import HOST
from txsetup.demo.sshnodes import SshNodes, start_ssh_nodes

pytestmark = pytest.mark.system

DEMO_VALUE = 'two words "quoted" \\ #not-a-comment $HOME'


@pytest.fixture(autouse=True)
def _openssh() -> None:
    """Skip (or fail under TXSETUP_SYSTEM_TESTS=1) without the OpenSSH tools."""
    for tool in ("sshd", "ssh", "ssh-keygen", "scp"):
        require_tool(tool)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshNodes]:
    """Three nodes shared by the read-mostly tests, with one extra session variable."""
    for tool in ("sshd", "ssh", "ssh-keygen", "scp"):
        require_tool(tool)
    workdir = tmp_path_factory.mktemp("sshnodes")
    with start_ssh_nodes(3, workdir, env={"TXSETUP_DEMO": DEMO_VALUE}) as nodes:
        yield nodes


def run_on(
    cluster: SshNodes, index: int, command: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` on node ``index`` and insist that it succeeded."""
    proc = subprocess.run(
        cluster.ssh_argv(cluster.nodes[index], command),
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for init is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in "ZX"


def sshd_processes(workdir: Path) -> list[int]:
    """Live processes whose command line names a file under ``workdir`` (our sshds)."""
    marker = os.fsencode(workdir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and marker in cmdline and b"sshd" in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def refuses(port: int) -> bool:
    """Whether connecting to ``port`` on loopback is refused (nothing listens)."""
    try:
        with socket.create_connection((HOST, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_each_node_session_sees_its_own_root(cluster: SshNodes) -> None:
    """Every node's sessions get TXSETUP_ROOT set to that node's own, empty 0755 root."""
    roots = set()
    for index, node in enumerate(cluster.nodes):
        assert node.spec == f"{node.spec.partition('@')[0]}@{HOST}:{node.port}"
        assert node.root.is_dir()
        assert node.root.stat().st_mode & 0o777 == 0o755
        assert run_on(cluster, index, "printenv TXSETUP_ROOT").stdout == f"{node.root}\n".encode()
        roots.add(node.root)
    assert len(roots) == len({node.port for node in cluster.nodes}) == 3


def test_env_values_with_spaces_and_quotes_reach_sessions(cluster: SshNodes) -> None:
    """An ``env`` value with spaces, quotes, a backslash, ``#`` and ``$`` arrives verbatim."""
    assert run_on(cluster, 1, "printenv TXSETUP_DEMO").stdout == f"{DEMO_VALUE}\n".encode()


def test_payload_on_stdin_lands_in_the_node_root(cluster: SshNodes) -> None:
    """Bytes written to ssh's stdin reach the remote command unchanged, as push's payload does."""
    payload = bytes(range(256)) * 512 + b"no trailing newline"
    run_on(cluster, 0, 'cat > "$TXSETUP_ROOT/x"', stdin=payload)
    assert (cluster.nodes[0].root / "x").read_bytes() == payload
    assert not (cluster.nodes[1].root / "x").exists()


def test_scp_copies_files_into_a_node_root(cluster: SshNodes, tmp_path: Path) -> None:
    """``scp_argv`` copies several local files into a node's root with the same options."""
    first, second = tmp_path / "a.bin", tmp_path / "b name.txt"
    first.write_bytes(os.urandom(4096))
    second.write_text("second file\n")
    node = cluster.nodes[2]
    proc = subprocess.run(
        cluster.scp_argv(node, [first, second], node.root),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert (node.root / "a.bin").read_bytes() == first.read_bytes()
    assert (node.root / "b name.txt").read_text() == "second file\n"


def test_exit_stops_every_sshd_and_frees_its_port(tmp_path: Path) -> None:
    """Leaving the context ends and reaps every sshd, and their ports refuse connections."""
    with start_ssh_nodes(2, tmp_path) as nodes:
        assert all(alive(node.pid) for node in nodes.nodes)
        assert sorted(sshd_processes(tmp_path)) == sorted(node.pid for node in nodes.nodes)
    for node in nodes.nodes:
        assert not alive(node.pid)
        assert refuses(node.port)
    assert sshd_processes(tmp_path) == []


def test_exit_ends_sessions_still_running(tmp_path: Path) -> None:
    """A session still running on a node at exit is ended too, not orphaned."""
    with start_ssh_nodes(1, tmp_path) as nodes:
        client = subprocess.Popen(
            nodes.ssh_argv(nodes.nodes[0], "echo $$; exec sleep 300"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert client.stdout is not None
            remote = int(client.stdout.readline())
            assert alive(remote)
        except BaseException:
            client.kill()
            client.wait()
            raise
    try:
        assert not alive(remote)
        assert client.wait(timeout=30) != 0
    finally:
        client.kill()
        client.wait()
        assert client.stdout is not None
        client.stdout.close()


def test_failed_start_raises_and_leaves_no_sshd(tmp_path: Path) -> None:
    """A node whose given port is taken fails the start with its log, and no sshd survives."""
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with (
            pytest.raises(RuntimeError, match="Address already in use"),
            start_ssh_nodes(3, tmp_path, ports=[0, taken, 0]),
        ):
            pytest.fail("the start should have failed")
        assert sshd_processes(tmp_path) == []


def test_env_that_sshd_would_misread_is_refused(tmp_path: Path) -> None:
    """Overriding TXSETUP_ROOT, a bad name or a newline in a value raises before any start."""
    refused = [
        ({"TXSETUP_ROOT": "/"}, "each node's own root"),
        ({"A-B": "x"}, "not an environment variable name"),
        ({"A": "two\nlines"}, "cannot hold a newline"),
    ]
    for env, message in refused:
        with pytest.raises(ValueError, match=message), start_ssh_nodes(1, tmp_path, env=env):
            pytest.fail("the start should have been refused")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_root_host_key_kind_is_refused(tmp_path: Path) -> None:
    """A kind that would name a file sshd cannot load raises before anything is made."""
    with (
        pytest.raises(ValueError, match="unknown host key kinds: ed448"),
        start_ssh_nodes(1, tmp_path, root_host_keys=["ecdsa", "ed448"]),
    ):
        pytest.fail("the start should have been refused")
    assert list(tmp_path.iterdir()) == []


def test_launcher_starts_sshd_in_place_and_its_sessions_inherit_it(tmp_path: Path) -> None:
    """sshd runs through the launcher, exec'd in place, and sessions inherit what it set."""
    wanted = os.nice(0) + 7
    with start_ssh_nodes(1, tmp_path, launcher=["nice", "-n", "7"]) as nodes:
        node = nodes.nodes[0]
        assert Path(f"/proc/{node.pid}/exe").resolve().name == "sshd"
        proc = subprocess.run(
            nodes.ssh_argv(node, "cut -d' ' -f19 /proc/$$/stat"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert int(proc.stdout) == wanted
