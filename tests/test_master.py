"""The master's pieces without ssh: node addresses, the payload from a master's files,
results files for --retry-from, and the remote command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import CLUSTER, make_document
from tests.test_push import HMAC, write_master
from txsetup.demo.certs import generate_node_certificate
from txsetup.errors import ExitCode, InvalidInput, UsageError
from txsetup.master import (
    Node,
    Payload,
    PushOptions,
    build_payload,
    nodes_to_retry,
    parse_node,
)
from txsetup.node.payload import decode_node_daemon_setup

VALID_NODES = [
    ("node1", Node("node1", "node1", "root", 22)),
    ("admin@node1.example.com", Node("admin@node1.example.com", "node1.example.com", "admin")),
    ("node1:2222", Node("node1:2222", "node1", "root", 2222)),
    ("u@10.0.0.1:22", Node("u@10.0.0.1:22", "10.0.0.1", "u", 22)),
    ("[::1]:2200", Node("[::1]:2200", "::1", "root", 2200)),
    ("root@[fe80::1]", Node("root@[fe80::1]", "fe80::1", "root", 22)),
    ("  node1  ", Node("node1", "node1", "root", 22)),
]

INVALID_NODES = [
    "",
    "-oProxyCommand=touch /tmp/x",
    "node1 -oProxyCommand=x",
    "-node",
    "@node1",
    "node1:0",
    "node1:65536",
    "node1:port",
    "user@@node1",
    "node1;reboot",
    "$(reboot)",
    "::1",
    "node1:22:22",
]


@pytest.mark.parametrize(("text", "node"), VALID_NODES)
def test_parse_node(text: str, node: Node) -> None:
    """[user@]host[:port] with root and 22 as defaults; IPv6 in brackets."""
    assert parse_node(text) == node


@pytest.mark.parametrize("text", INVALID_NODES)
def test_parse_node_refuses(text: str) -> None:
    """Anything ssh could read as an option or a shell could expand is refused."""
    with pytest.raises(ValueError, match=r"host|port"):
        parse_node(text)


@settings(deadline=None)  # a busy machine may take longer than hypothesis's 200 ms
@given(st.text(max_size=40))
def test_parsed_node_never_starts_an_option(text: str) -> None:
    """Whatever the input, an accepted node's destination cannot be taken for an option."""
    try:
        node = parse_node(text)
    except ValueError:
        return
    assert not node.destination.startswith("-")
    assert not node.host.startswith("-")
    assert 0 < node.port < 65536


def test_remote_call_argv() -> None:
    """One ssh command line: port, BatchMode, each -o, destination, --, command, mode flags."""
    options = PushOptions(
        ssh="ssh -F /etc/cluster/ssh_config",
        ssh_options=("ConnectTimeout=5",),
        remote_command="/usr/lib/ganeti/node-daemon-setup",
        resume=True,
        abort=True,
    )
    argv = options.remote_call().argv(parse_node("admin@node1:2222"))
    assert argv == [
        "ssh",
        "-F",
        "/etc/cluster/ssh_config",
        "-p",
        "2222",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "admin@node1",
        "--",
        "/usr/lib/ganeti/node-daemon-setup",
        "--resume",
        "--abort",
    ]
    assert PushOptions(dry_run=True).remote_call().remote_args == ("--dry-run",)


def test_payload_from_master_files(tmp_path: Path, node_pem: str) -> None:
    """The master's files make a document the node decoder accepts, with ssconf values
    as Ganeti reads them and node_name per node; its repr shows no key."""
    master = write_master(tmp_path, node_pem)
    (master / "var/lib/ganeti/ssconf_not_a_key").write_text("ignored\n")
    payload = build_payload(master, start_node_daemon=False)
    decoded = decode_node_daemon_setup(payload.for_node("node9.example.com"))
    expected = make_document(node_pem)["ssconf"]
    assert dict(decoded.ssconf) == {k: v.rstrip("\n") for k, v in expected.items()}
    assert decoded.cluster_name == CLUSTER
    assert decoded.node_name == "node9.example.com"
    assert decoded.hmac_key == HMAC
    assert decoded.start_node_daemon is False
    assert "BEGIN" not in repr(payload)
    assert "hmac" not in repr(payload)


@pytest.mark.parametrize("name", ["node9.example.com", "127.0.0.1", 'n\u00f6de "9"', ""])
def test_payload_bytes_per_node(tmp_path: Path, node_pem: str, name: str) -> None:
    """Each node gets exactly the JSON of the document with its node_name last, also
    when the document given already holds a node_name."""
    payload = build_payload(write_master(tmp_path, node_pem), start_node_daemon=False)
    assert payload.for_node(name) == json.dumps({**payload.document, "node_name": name}).encode()
    assert payload.for_node("other") != payload.for_node(name)
    named = Payload({"node_name": "old", "cluster_name": CLUSTER})
    assert json.loads(named.for_node(name)) == {"cluster_name": CLUSTER, "node_name": name}
    assert Payload({}).for_node(name) == json.dumps({"node_name": name}).encode()


def test_payload_without_hmac_key(tmp_path: Path, node_pem: str) -> None:
    """hmac.key is optional (older masters have none)."""
    master = write_master(tmp_path, node_pem)
    (master / "var/lib/ganeti/hmac.key").unlink()
    document = json.loads(build_payload(master, start_node_daemon=True).for_node("n"))
    assert "hmac_key" not in document
    assert document["start_node_daemon"] is True


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda g: (g / "ssconf_cluster_name").unlink(), "ssconf_cluster_name is missing"),
        (lambda g: (g / "server.pem").unlink(), "server.pem is missing"),
        (lambda g: (g / "server.pem").write_text("not a pem"), "do not make a valid payload"),
        (lambda g: (g / "ssconf_master_ip").write_bytes(b"\xff\xfe"), "not UTF-8"),
        (lambda g: (g / "ssconf_node_list").write_text("x" * 200_000), "larger than"),
        (lambda g: (g / "ssconf_cluster_name").write_text(""), "do not make a valid payload"),
        (lambda g: ((g / "server.pem").unlink(), (g / "server.pem").mkdir()), "cannot be read"),
    ],
)
def test_unusable_master_files(
    tmp_path: Path, node_pem: str, change: Callable[[Path], object], words: str
) -> None:
    """A master whose files cannot make a payload is refused before any node (exit 3)."""
    master = write_master(tmp_path, node_pem)
    change(master / "var/lib/ganeti")
    with pytest.raises(InvalidInput, match=words) as raised:
        build_payload(master, start_node_daemon=True)
    assert raised.value.exit_code == ExitCode.INVALID_INPUT


def test_expired_master_certificate_is_refused(tmp_path: Path) -> None:
    """The master checks its own certificate as a node would, before any connection."""
    from datetime import UTC, datetime, timedelta

    old = datetime.now(UTC) - timedelta(days=400)
    pem = generate_node_certificate(CLUSTER, not_before=old, not_after=old + timedelta(days=1))
    master = write_master(tmp_path, pem)
    with pytest.raises(InvalidInput, match=r"expired|not valid"):
        build_payload(master, start_node_daemon=True)


def test_nodes_to_retry(tmp_path: Path) -> None:
    """Exactly the nodes whose last result did not exit 0, in file order."""
    lines = [
        {"node": "a", "exit_code": 0, "outcome": "committed"},
        {"node": "b", "exit_code": 4, "outcome": "failed"},
        {"node": "c", "exit_code": 255, "outcome": "unreachable"},
        {"node": "d", "exit_code": None, "outcome": "timed_out"},
        {"node": "c", "exit_code": 0, "outcome": "committed"},
        {"node": "e", "exit_code": None, "outcome": "not_started"},
    ]
    results = tmp_path / "results.json"
    results.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert nodes_to_retry(results) == ["b", "d", "e"]


@pytest.mark.parametrize("text", ["not json\n", '{"exit_code": 0}\n', "[1]\n"])
def test_nodes_to_retry_refuses_other_files(tmp_path: Path, text: str) -> None:
    """A file that is not push results is a usage error naming the line, never a skip."""
    results = tmp_path / "results.json"
    results.write_text(text)
    with pytest.raises(UsageError, match="line 1"):
        nodes_to_retry(results)
    with pytest.raises(UsageError, match="cannot read"):
        nodes_to_retry(tmp_path / "absent.json")
