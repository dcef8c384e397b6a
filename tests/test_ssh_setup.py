"""ssh-setup end to end through the installed CLI, on real files in a temporary root.

sshd is stood in for by real commands here (a reload that counts its runs,
``health_address = "none"``, so health is the status command);
``test_ssh_sshd.py`` does the same against a real sshd.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import (
    CLUSTER,
    Run,
    encode,
    require_tool,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
)
from tests.sshdoc import (
    counting_reload,
    key_pair,
    pem_pair,
    reload_count,
    ssh_document,
    write_sshd_config,
)
from txsetup.node.sshd import SSHD
from txsetup.node.sshfiles import merge_authorized_keys
from txsetup.txn.journal import read_journal

SshRun = Callable[..., Run]


@pytest.fixture
def node(root: Path) -> Path:
    """A node root whose sshd is a counting reload, healthy while ``status`` exits 0."""
    write_sshd_config(root, reload=counting_reload(root), status=["true"], health_address="none")
    return root


@pytest.fixture
def ssh_run(node: Path) -> SshRun:
    """``ssh_run(document, *extra)``: ``txsetup ssh-setup --root node``."""

    def go(document: dict[str, Any] | bytes, *extra: str, command: str = "ssh-setup") -> Run:
        data = document if isinstance(document, bytes) else encode(document)
        return run_txsetup([command, "--root", str(node), *extra], stdin=data)

    return go


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def problems(run: Run) -> str:
    """The error message of a failed run."""
    return str(run.result.get("error"))


# --- what a run installs -----------------------------------------------------------------


def test_ganeti_30_document_installs_host_keys_and_generates_roots_pair(
    node: Path, ssh_run: SshRun
) -> None:
    """A Ganeti 3.0 document installs the host keys, makes root's pair and reports it."""
    document = ssh_document()
    run = ssh_run(document)
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    for kind, private, public in document["ssh_host_key"]:
        host_key = node / f"etc/ssh/ssh_host_{kind}_key"
        assert host_key.read_text() == private
        assert Path(f"{host_key}.pub").read_text() == public
        assert (mode(host_key), mode(Path(f"{host_key}.pub"))) == (0o600, 0o644)
    root_private = (node / "root/.ssh/id_ed25519").read_bytes()
    assert root_private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    root_key = serialization.load_ssh_private_key(root_private, password=None)
    assert isinstance(root_key, ed25519.Ed25519PrivateKey)
    public = (node / "root/.ssh/id_ed25519.pub").read_text()
    assert run.result["root_public_keys"] == [public.rstrip("\n")]
    assert public.startswith("ssh-ed25519 AAAA")
    assert (mode(node / "root/.ssh/id_ed25519"), mode(node / "root/.ssh/id_ed25519.pub")) == (
        0o600,
        0o644,
    )
    assert (mode(node / "root"), mode(node / "root/.ssh")) == (0o700, 0o700)
    authorized = (node / "root/.ssh/authorized_keys").read_text().splitlines()
    assert authorized == [public.rstrip("\n"), key_pair("ed25519", "master")[2].rstrip("\n")]
    assert mode(node / "root/.ssh/authorized_keys") == 0o600
    assert reload_count(node) == 1
    assert "ssh.root_key_generated" in run.event_names()
    assert state_dir_leftovers(node) == []


def test_identical_rerun_converges_and_keeps_roots_key(node: Path, ssh_run: SshRun) -> None:
    """The same document again writes nothing, does not reload, and keeps root's key."""
    document = ssh_document()
    first = ssh_run(document)
    assert first.returncode == 0, first.stderr
    before = snapshot(node)
    again = ssh_run(document)
    assert again.returncode == 0, again.stderr
    assert again.result["outcome"] == "converged"
    assert again.result["changed"] == []
    assert again.result["root_public_keys"] == first.result["root_public_keys"]
    assert snapshot(node) == before
    assert reload_count(node) == 1
    assert "ssh.root_key_generated" not in again.event_names()


def test_only_authorized_keys_changing_does_not_reload(node: Path, ssh_run: SshRun) -> None:
    """sshd is reloaded only when a host key changes."""
    assert ssh_run(ssh_document()).returncode == 0
    more = {"master-uuid": [key_pair("ed25519", "master")[2], key_pair("ecdsa", "cand")[2]]}
    run = ssh_run(ssh_document(authorized=more))
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] == ["root/.ssh/authorized_keys"]
    assert reload_count(node) == 1
    states = [r.state for r in read_journal(node / "var/lib/txsetup/journal")]
    assert SSHD.state not in states


@pytest.mark.parametrize(
    ("first", "second", "regenerated"),
    [
        (("ecdsa", 256), ("ecdsa", 384), True),
        (("ecdsa", 384), ("ecdsa", 384), False),
        (("rsa", 2048), ("rsa", 3072), True),
    ],
)
def test_roots_key_is_replaced_only_when_type_or_size_differ(
    node: Path,
    ssh_run: SshRun,
    first: tuple[str, int],
    second: tuple[str, int],
    regenerated: bool,
) -> None:
    """A key of the asked type and size is kept; another size is replaced by a fitting one."""
    kind = first[0]
    assert ssh_run(ssh_document(key_type=kind, key_bits=first[1])).returncode == 0
    old = (node / f"root/.ssh/id_{kind}").read_bytes()
    run = ssh_run(ssh_document(key_type=second[0], key_bits=second[1]))
    assert run.returncode == 0, run.stderr
    new = (node / f"root/.ssh/id_{kind}").read_bytes()
    assert (new != old) is regenerated
    key = serialization.load_ssh_private_key(new, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == second[1]
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.key_size == second[1]


def test_another_key_type_adds_a_pair_and_keeps_the_old_one(node: Path, ssh_run: SshRun) -> None:
    """Switching the cluster's key type makes the new pair; the old pair stays in place."""
    assert ssh_run(ssh_document(key_type="ed25519")).returncode == 0
    old = (node / "root/.ssh/id_ed25519").read_bytes()
    run = ssh_run(ssh_document(key_type="ecdsa", key_bits=256))
    assert run.returncode == 0, run.stderr
    assert (node / "root/.ssh/id_ed25519").read_bytes() == old
    assert run.result["root_public_keys"] == [
        (node / "root/.ssh/id_ecdsa.pub").read_text().rstrip("\n")
    ]


def test_ganeti_2x_document_installs_the_given_root_pairs(node: Path, ssh_run: SshRun) -> None:
    """Without ssh_key_type the given root pairs are installed exactly, and reported."""
    pairs = [key_pair("ecdsa", "root-master"), key_pair("rsa", "root-master")]
    run = ssh_run(ssh_document(key_type=None, root_keys=pairs))
    assert run.returncode == 0, run.stderr
    for kind, private, public in pairs:
        assert (node / f"root/.ssh/id_{kind}").read_text() == private
        assert (node / f"root/.ssh/id_{kind}.pub").read_text() == public
    assert run.result["root_public_keys"] == [p[2].rstrip("\n") for p in pairs]
    assert "ssh.root_key_generated" not in run.event_names()


def test_pem_private_keys_are_accepted(node: Path, ssh_run: SshRun) -> None:
    """A PEM (SEC1) private key is as good as an OpenSSH one."""
    document = ssh_document(hosts=())
    document["ssh_host_key"] = [pem_pair("host")]
    run = ssh_run(document)
    assert run.returncode == 0, run.stderr
    assert (node / "etc/ssh/ssh_host_ecdsa_key").read_text() == document["ssh_host_key"][0][1]


def test_authorized_keys_keeps_foreign_lines_and_order(node: Path, ssh_run: SshRun) -> None:
    """Existing lines stay, in order, byte for byte; each new key is added once, at the end."""
    ssh_dir = node / "root/.ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    master = key_pair("ed25519", "master")[2].rstrip("\n")
    foreign = [
        "# the operator's own",
        'command="/usr/bin/backup",no-pty ' + key_pair("ecdsa", "backup")[2].rstrip("\n"),
        key_pair("ed25519", "operator")[2].rstrip("\n"),
        " ".join(master.split()[:2]) + " same-key-other-comment",
    ]
    (ssh_dir / "authorized_keys").write_text("\n".join(foreign))  # no final newline
    (ssh_dir / "authorized_keys").chmod(0o644)
    document = ssh_document(authorized={"a": [master, master], "b": [key_pair("ecdsa", "cand")[2]]})
    run = ssh_run(document)
    assert run.returncode == 0, run.stderr
    lines = (ssh_dir / "authorized_keys").read_text().splitlines()
    root_key = run.result["root_public_keys"][0]
    assert lines == [*foreign, root_key, key_pair("ecdsa", "cand")[2].rstrip("\n")]
    assert mode(ssh_dir / "authorized_keys") == 0o600
    assert ssh_run(document).result["outcome"] == "converged"


def test_merge_authorized_keys_is_idempotent() -> None:
    """Merging the same lines twice gives the same bytes (a re-run converges)."""
    lines = [key_pair("ed25519", "x")[2], key_pair("ecdsa", "y")[2]]
    once = merge_authorized_keys(b"# mine\n", lines)
    assert merge_authorized_keys(once, lines) == once
    assert merge_authorized_keys(None, []) == b""


def test_dry_run_writes_nothing_and_shows_the_plan(node: Path, ssh_run: SshRun) -> None:
    """--dry-run verifies, plans and reports root's key, touching nothing."""
    before = snapshot(node)
    run = ssh_run(ssh_document(), "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "dry_run"
    assert {p["path"] for p in run.result["plan"]} >= {"etc/ssh/ssh_host_ed25519_key"}
    assert len(run.result["root_public_keys"]) == 1
    assert snapshot(node) == before
    assert reload_count(node) == 0


# --- refusals ----------------------------------------------------------------------------


def test_mismatched_halves_are_refused_and_nothing_is_written(node: Path, ssh_run: SshRun) -> None:
    """A private key that is not the public key's half is exit 4; every bad pair is named."""
    before = snapshot(node)
    document = ssh_document()
    document["ssh_host_key"][0] = ["ed25519", key_pair("ed25519", "x")[1], key_pair("ed25519")[2]]
    document["ssh_root_key"] = [["ecdsa", key_pair("ecdsa", "y")[1], key_pair("ecdsa", "z")[2]]]
    run = ssh_run(document)
    assert run.returncode == 4, run.stderr
    assert "$.ssh_host_key[0]: the private key does not match the public key" in problems(run)
    assert "$.ssh_root_key[0]: the private key does not match the public key" in problems(run)
    assert snapshot(node) == before
    assert reload_count(node) == 0


def encrypted_ed25519() -> str:
    """A PKCS#8 private key protected by a passphrase."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


def encrypted_openssh() -> str:
    """An OpenSSH-format private key protected by a passphrase, as ssh-keygen writes it."""
    with tempfile.TemporaryDirectory() as work:
        key = Path(work) / "key"
        keygen = [require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)]
        subprocess.run(keygen, check=True, capture_output=True)
        return key.read_text()


HOSTILE: list[tuple[str, Callable[[dict[str, Any]], None], int, str]] = [
    (
        "pem garbage",
        lambda d: d["ssh_host_key"][0].__setitem__(
            1, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA!!\n-----END OPENSSH PRIVATE KEY-----\n"
        ),
        4,
        "$.ssh_host_key[0]: the private key does not parse",
    ),
    (
        "not a key at all",
        lambda d: d["ssh_host_key"][0].__setitem__(1, "hello"),
        4,
        "$.ssh_host_key[0]: the private key does not parse",
    ),
    (
        "encrypted",
        lambda d: d["ssh_host_key"][0].__setitem__(1, encrypted_ed25519()),
        4,
        "$.ssh_host_key[0]: the private key is encrypted",
    ),
    (
        "encrypted openssh",
        lambda d: d["ssh_host_key"][0].__setitem__(1, encrypted_openssh()),
        4,
        "$.ssh_host_key[0]: the private key is encrypted",
    ),
    (
        "kind says rsa, key is ed25519",
        lambda d: d["ssh_host_key"].__setitem__(0, ["rsa", *key_pair("ed25519", "host-a")[1:]]),
        4,
        "$.ssh_host_key[0]: the private key is not a rsa key",
    ),
    (
        "public garbage",
        lambda d: d["ssh_host_key"][0].__setitem__(2, "ssh-ed25519 !!!! root@x"),
        4,
        "$.ssh_host_key[0]: the public key does not parse",
    ),
    (
        "bad kind",
        lambda d: d["ssh_host_key"][0].__setitem__(0, "dss"),
        3,
        "$.ssh_host_key[0][0]: expected one of rsa, dsa, ecdsa, ed25519",
    ),
    (
        "junk authorized line",
        lambda d: d["authorized_keys"].__setitem__("m", ["not a key"]),
        4,
        "$.authorized_keys.m[0]: no public key in the line",
    ),
    (
        "authorized blob of another type",
        lambda d: d["authorized_keys"].__setitem__(
            "m", ["ssh-rsa " + key_pair("ed25519", "q")[2].split()[1]]
        ),
        4,
        "$.authorized_keys.m[0]: no public key in the line",
    ),
    (
        "ecdsa of 1024 bits",
        lambda d: d.update(ssh_key_type="ecdsa", ssh_key_bits=1024),
        3,
        "$.ssh_key_bits: a ecdsa key must have 256, 384 or 521 bits",
    ),
    (
        "bits as a string",
        lambda d: d.update(ssh_key_bits="2048"),
        3,
        "$.ssh_key_bits: expected integer, got string",
    ),
    (
        "bits without type",
        lambda d: (d.pop("ssh_key_type"), None)[1],
        3,
        "$.ssh_key_bits: given without $.ssh_key_type",
    ),
    (
        "unknown key type",
        lambda d: d.update(ssh_key_type="ed448"),
        3,
        "$.ssh_key_type: expected one of",
    ),
]


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [(change, code, message) for _, change, code, message in HOSTILE],
    ids=[name for name, *_ in HOSTILE],
)
def test_hostile_documents_get_a_clear_error_and_touch_nothing(
    node: Path,
    ssh_run: SshRun,
    change: Callable[[dict[str, Any]], None],
    code: int,
    message: str,
) -> None:
    """Each broken document exits 3 or 4 with its JSON path, quoting no key, writing nothing."""
    before = snapshot(node)
    document = ssh_document()
    change(document)
    run = ssh_run(document)
    assert run.returncode == code, run.stderr
    assert message in problems(run)
    assert snapshot(node) == before


def test_dsa_keys_load_or_are_refused_clearly(node: Path, ssh_run: SshRun) -> None:
    """A DSA host key is installed while cryptography loads it, else refused with exit 4."""
    run = ssh_run(ssh_document(hosts=("dsa",)))
    if run.returncode == 0:
        assert (node / "etc/ssh/ssh_host_dsa_key.pub").read_text().startswith("ssh-dss ")
    else:
        assert run.returncode == 4, run.stderr
        assert "cannot load dsa private keys" in problems(run)
    assert "Warning" not in run.stderr


def test_cluster_name_and_certificate_are_checked(
    node: Path, ssh_run: SshRun, node_pem: str, other_pem: str
) -> None:
    """Another cluster's name, a certificate with its key, or another node key: exit 4."""
    ganeti = node / "var/lib/ganeti"
    ganeti.mkdir(parents=True)
    (ganeti / "ssconf_cluster_name").write_text(CLUSTER + "\n")
    (ganeti / "server.pem").write_text(node_pem)
    cert_only = node_pem[node_pem.index("-----BEGIN CERTIFICATE-----") :]
    other_cert = other_pem[other_pem.index("-----BEGIN CERTIFICATE-----") :]
    before = snapshot(node)
    cases = {
        "differs from this node's": ssh_document(cluster_name="other.example.com"),
        "a private key was given": ssh_document(node_daemon_certificate=node_pem),
        "does not match this node's key": ssh_document(node_daemon_certificate=other_cert),
    }
    for message, document in cases.items():
        run = ssh_run(document)
        assert run.returncode == 4, (message, run.stderr)
        assert message in problems(run)
    assert snapshot(node) == before
    good = ssh_run(ssh_document(node_daemon_certificate=cert_only))
    assert good.returncode == 0, good.stderr


def test_symlink_at_authorized_keys_is_refused(node: Path, ssh_run: SshRun) -> None:
    """A symlink at authorized_keys is refused: replacing it would drop its lines."""
    (node / "root/.ssh").mkdir(parents=True)
    elsewhere = node / "keys"
    elsewhere.write_text(key_pair("ed25519", "operator")[2])
    os.symlink(elsewhere, node / "root/.ssh/authorized_keys")
    before = snapshot(node)
    run = ssh_run(ssh_document())
    assert run.returncode == 4, run.stderr
    assert "root/.ssh/authorized_keys is a symlink, not a regular file" in problems(run)
    assert snapshot(node) == before


# --- failure after changes began ----------------------------------------------------------


def test_failing_reload_restores_the_old_keys(node: Path, ssh_run: SshRun) -> None:
    """A reload command that exits 1 rolls back: old files exactly, reloaded again, exit 6."""
    assert ssh_run(ssh_document(label="old")).returncode == 0
    write_sshd_config(
        node, reload=counting_reload(node, exit_code=1), status=["true"], health_address="none"
    )
    before = snapshot(node)
    run = ssh_run(ssh_document(label="new"))
    assert run.returncode == 6, run.stderr
    assert run.result["outcome"] == "rolled_back"
    failed = [e for e in run.events if e["event"] == "step.failed"]
    assert [e["step"] for e in failed] == ["reload_sshd"]
    assert snapshot(node) == before
    assert reload_count(node) == 1 + 2  # the first run; then the reload and the restoring one
    assert state_dir_leftovers(node) == []
    assert "root_public_keys" not in run.result


def test_unhealthy_sshd_after_reload_rolls_back(node: Path, ssh_run: SshRun) -> None:
    """sshd that is not running after the reload (status exits 1) means exit 6, old files."""
    assert ssh_run(ssh_document(label="old")).returncode == 0
    write_sshd_config(
        node,
        reload=counting_reload(node),
        status=["false"],
        health_address="none",
        health_timeout=1,
    )
    before = snapshot(node)
    run = ssh_run(ssh_document(label="new"))
    assert run.returncode == 6, run.stderr
    assert snapshot(node) == before


def test_status_names_the_command_and_its_steps(node: Path, ssh_run: SshRun) -> None:
    """txsetup status describes an ssh-setup transaction like any other."""
    assert ssh_run(ssh_document()).returncode == 0
    described = run_txsetup(["status", "--root", str(node)], stdin=None).result
    assert described["command"] == "ssh-setup"
    assert described["states"][-1] == "done"
    assert "etc/ssh/ssh_host_ed25519_key" in {f["path"] for f in described["files"]}
