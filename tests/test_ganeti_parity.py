"""Parity with Ganeti 3.0's own node-daemon-setup: same document, same files (docs/ganeti.md).

Ganeti's tool runs for real, as root, in a private mount namespace in which
``/var/lib/ganeti``, ``/var/lock``, ``/var/log/ganeti`` and ``/var/run/ganeti``
are fresh tmpfs mounts, so it never touches this machine's own files. What it
wrote is copied out with ``cp -a`` (bytes, modes, owners) and compared with
what txsetup writes under a temporary root for the same document. Needs
root, ``unshare`` and Debian's ``ganeti-3.0``; Ganeti's users and groups are
created when missing (``ganeti_accounts``), since Ganeti refuses to run
without them.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bench.push import ssconf_values
from tests.conftest import (
    CLUSTER,
    REPO,
    SYSTEM_TESTS,
    encode,
    make_document,
    require_root,
    require_tool,
    run_txsetup,
    snapshot,
)
from tests.parity_documents import Variant, build_variants
from txsetup.demo.certs import generate_node_certificate, split_pem
from txsetup.node.cryptocompat import check_issued_by, valid_from, valid_until

pytestmark = pytest.mark.system

GANETI_LIB = Path("/usr/share/ganeti/3.0")
GANETI_TOOL = GANETI_LIB / "node-daemon-setup"  # what <pkglibdir>/node-daemon-setup runs
SYSTEM_PYTHON = "/usr/bin/python3"
# Every directory Ganeti's tool may write (pathutils: DATA_DIR, LOCK_DIR, LOG_DIR, RUN_DIR).
PRIVATE_DIRS = ("lib/ganeti", "lock", "log/ganeti", "run/ganeti")
NODE_NAME = "node1000.cluster.example.com"
GANETI_VALIDITY = timedelta(days=1825)  # constants.X509_CERT_DEFAULT_VALIDITY
MAX_SSCONF = 128 * 1024

# Run inside the namespace: $1 is where to copy the result, $2 a directory to
# seed /var/lib/ganeti from (or ""), the rest the command. Exits as the command.
_IN_NAMESPACE = r"""
set -e
out=$1 seed=$2
shift 2
for dir in lib/ganeti lock log/ganeti run/ganeti; do
    mount -t tmpfs -o mode=0755 tmpfs "/var/$dir"
done
if [ -n "$seed" ]; then cp -a "$seed/." /var/lib/ganeti/; fi
status=0
"$@" || status=$?
for dir in lib/ganeti lock log/ganeti run/ganeti; do
    mkdir -p "$out/$dir"
    cp -a "/var/$dir/." "$out/$dir/"
done
exit $status
"""

# Ganeti's own reader of an ssconf file (what every daemon and tool uses).
_READ_SSCONF = "import sys; from ganeti import ssconf; ssconf.ReadSsconfFile(sys.argv[1])"


@dataclass(frozen=True)
class Ganeti:
    """Ganeti's tool, runnable in a private mount namespace."""

    unshare: str

    def run(
        self, argv: list[str], out: Path, *, stdin: bytes = b"", seed: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` with Ganeti's Python path in a private namespace; copy what it
        wrote to ``out``/{lib/ganeti,lock,log/ganeti,run/ganeti}."""
        return subprocess.run(
            [
                self.unshare,
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                _IN_NAMESPACE,
                "sh",
                str(out),
                str(seed or ""),
                *argv,
            ],
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONPATH": str(GANETI_LIB)},
        )

    def node_daemon_setup(
        self, document: bytes, out: Path, *args: str, seed: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Ganeti's node-daemon-setup on ``document``; its files end up under ``out``."""
        return self.run([SYSTEM_PYTHON, str(GANETI_TOOL), *args], out, stdin=document, seed=seed)

    def can_read_ssconf(self, path: Path, out: Path) -> bool:
        """Whether Ganeti's ReadSsconfFile accepts the file at ``path``."""
        return self.run([SYSTEM_PYTHON, "-c", _READ_SSCONF, str(path)], out).returncode == 0


@pytest.fixture(scope="module")
def ganeti(request: pytest.FixtureRequest) -> Ganeti:
    """Ganeti's node-daemon-setup, its accounts, and the mount points it needs.

    Skips without Ganeti, ``unshare`` or root, and fails instead under
    TXSETUP_SYSTEM_TESTS=1. The empty mount points are created on this
    machine when missing; nothing is ever mounted outside the namespace.
    """
    if not (GANETI_TOOL.exists() and (GANETI_LIB / "ganeti/tools/node_daemon_setup.py").exists()):
        if SYSTEM_TESTS:
            pytest.fail(f"Ganeti 3.0 ({GANETI_LIB}) is required when TXSETUP_SYSTEM_TESTS=1")
        pytest.skip(f"Ganeti 3.0 not installed ({GANETI_LIB})")
    unshare = require_tool("unshare")
    require_root("mounting in a private namespace")
    request.getfixturevalue("ganeti_accounts")
    for directory in PRIVATE_DIRS:
        Path("/var", directory).mkdir(parents=True, exist_ok=True)
    return Ganeti(unshare)


@dataclass(frozen=True)
class Written:
    """One file as a node holds it: what the comparison looks at."""

    mode: int
    owner: str
    group: str
    content: bytes = b""

    def __repr__(self) -> str:  # the content is secret and long: show its size
        return f"Written({self.mode:04o}, {self.owner}:{self.group}, {len(self.content)} bytes)"


def written(directory: Path) -> dict[str, Written]:
    """Every entry of ``directory`` (regular files only), by name."""
    found = {}
    for path in sorted(directory.iterdir()):
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
        owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
        found[path.name] = Written(stat.S_IMODE(st.st_mode), owner, group, path.read_bytes())
    return found


def client_facts(pem: bytes, signer: x509.Certificate) -> dict[str, Any]:
    """What must hold of a client.pem minted afresh: key, name, issuer, signature, validity."""
    key_text, cert_text = split_pem(pem.decode())
    key = serialization.load_pem_private_key(key_text.encode(), password=None)
    cert = x509.load_pem_x509_certificate(cert_text.encode())
    check_issued_by(cert, signer)  # the signature verifies with the node key
    public = cert.public_key()
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    validity = valid_until(cert) - valid_from(cert)
    hash_algorithm = cert.signature_hash_algorithm
    return {
        "rsa_bits": public.key_size if isinstance(public, rsa.RSAPublicKey) else None,
        "rsa_exponent": public.public_numbers().e if isinstance(public, rsa.RSAPublicKey) else None,
        "own_key": key.public_key().public_bytes(der, spki) == public.public_bytes(der, spki),
        "not_the_node_key": public.public_bytes(der, spki)
        != signer.public_key().public_bytes(der, spki),
        "common_name": [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
        "issuer_is_node_subject": cert.issuer == signer.subject,
        "signature_hash": hash_algorithm.name if hash_algorithm else None,
        "validity_5_years": abs(validity - GANETI_VALIDITY) <= timedelta(seconds=1),
    }


def realistic_document(pem: str) -> dict[str, Any]:
    """A document as a Ganeti master of a 1,000-node cluster builds it (bootstrap.py)."""
    return {
        "cluster_name": CLUSTER,
        "node_daemon_certificate": pem,
        "hmac_key": secrets.token_hex(20) + "\n",  # utils.GenerateSecret(), as in bootstrap.py
        "ssconf": ssconf_values(),  # read with SimpleStore.ReadAll(): no trailing newlines
        "start_node_daemon": False,
        "node_name": NODE_NAME,
    }


def node_certificate(pem: str) -> x509.Certificate:
    """The certificate of a server.pem text."""
    return x509.load_pem_x509_certificate(split_pem(pem)[1].encode())


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_same_files_as_ganetis_node_daemon_setup(
    ganeti: Ganeti, tmp_path: Path, root: Path, key_type: Literal["rsa", "ec"]
) -> None:
    """After one realistic document, txsetup's files equal Ganeti's: bytes, modes, owners;
    client.pem, minted afresh by each, has the same properties."""
    pem = generate_node_certificate(CLUSTER, key_type=key_type)
    document = realistic_document(pem)
    theirs_dir = tmp_path / "ganeti"
    proc = ganeti.node_daemon_setup(encode(document), theirs_dir, "--debug")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    run = run_txsetup(["node-daemon-setup", "--root", str(root), "--debug"], stdin=encode(document))
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"

    theirs, ours = written(theirs_dir / "lib/ganeti"), written(root / "var/lib/ganeti")
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == len(document["ssconf"]) + 3
    for name in sorted(theirs.keys() - {"client.pem"}):
        assert ours[name] == theirs[name], name
    assert theirs["server.pem"].owner == theirs["server.pem"].group == "gnt-masterd"
    assert theirs["hmac.key"].owner == theirs["hmac.key"].group == "gnt-masterd"

    signer = node_certificate(pem)
    client_theirs, client_ours = theirs.pop("client.pem"), ours.pop("client.pem")
    assert (client_ours.mode, client_ours.owner, client_ours.group) == (0o440, "root", "root")
    assert (client_theirs.mode, client_theirs.owner, client_theirs.group) == (0o440, "root", "root")
    expected = {
        "rsa_bits": 2048,
        "rsa_exponent": 65537,
        "own_key": True,
        "not_the_node_key": True,
        "common_name": [NODE_NAME],
        "issuer_is_node_subject": True,
        "signature_hash": "sha256",
        "validity_5_years": True,
    }
    assert client_facts(client_theirs.content, signer) == expected
    assert client_facts(client_ours.content, signer) == expected

    # Ganeti wrote nothing else anywhere; its debug log carries the payload, ours never does.
    assert [os.listdir(theirs_dir / d) for d in ("log/ganeti", "run/ganeti")] == [[], []]
    assert os.listdir(theirs_dir / "lock") == ["ganeti-ssconf.lock"]
    assert document["hmac_key"].strip() in proc.stderr.decode()
    assert "PRIVATE KEY" in proc.stderr.decode()
    assert document["hmac_key"].strip() not in run.stderr + run.stdout


SSCONF_CAP_CASES = [
    pytest.param("a" * (MAX_SSCONF - 1), True, True, id="ascii-file-at-cap"),
    pytest.param("a" * (MAX_SSCONF - 1) + "\n", True, True, id="ascii-own-newline-at-cap"),
    pytest.param("a" * MAX_SSCONF, False, None, id="ascii-newline-over-cap"),
    pytest.param("é" * (MAX_SSCONF // 2), True, False, id="utf8-over-cap-in-bytes"),
]


@pytest.mark.parametrize(("value", "ganeti_writes", "ganeti_reads"), SSCONF_CAP_CASES)
def test_ssconf_cap_is_what_a_ganeti_node_can_read(
    ganeti: Ganeti,
    node_pem: str,
    tmp_path: Path,
    root: Path,
    value: str,
    ganeti_writes: bool,
    ganeti_reads: bool | None,
) -> None:
    """txsetup accepts an ssconf value exactly when Ganeti's nodes can read the file it makes."""
    document = make_document(
        node_pem, ssconf={"node_list": value}, hmac_key="hmac-secret-cap\n", node_name=NODE_NAME
    )
    theirs_dir = tmp_path / "ganeti"
    proc = ganeti.node_daemon_setup(encode(document), theirs_dir)
    assert (proc.returncode == 0) == ganeti_writes, proc.stderr.decode()[-2000:]
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(document))
    node_list = theirs_dir / "lib/ganeti/ssconf_node_list"
    if ganeti_writes:
        assert ganeti.can_read_ssconf(node_list, tmp_path / "read") == ganeti_reads
    if ganeti_reads:
        assert run.returncode == 0, run.stderr
        assert (root / "var/lib/ganeti/ssconf_node_list").read_bytes() == node_list.read_bytes()
    else:
        assert run.returncode == 3, run.stderr
        assert "$.ssconf.node_list: value of" in run.result["error"]
        assert not (root / "var/lib/ganeti").exists()


def test_dry_run_writes_nothing_where_ganetis_replaces_client_pem(
    ganeti: Ganeti, node_pem: str, tmp_path: Path, root: Path
) -> None:
    """Ganeti's --dry-run fails on a fresh node and rewrites client.pem on a set-up one;
    txsetup's writes nothing either way."""
    document = encode(make_document(node_pem, hmac_key="hmac-secret-dry\n", node_name=NODE_NAME))
    fresh = ganeti.node_daemon_setup(document, tmp_path / "fresh", "--dry-run")
    assert fresh.returncode != 0
    assert b"signing certificate" in fresh.stderr
    set_up = tmp_path / "set-up"
    assert ganeti.node_daemon_setup(document, set_up).returncode == 0
    again = ganeti.node_daemon_setup(
        document, tmp_path / "again", "--dry-run", seed=set_up / "lib/ganeti"
    )
    assert again.returncode == 0, again.stderr.decode()
    after = written(tmp_path / "again/lib/ganeti")
    assert after["client.pem"] != written(set_up / "lib/ganeti")["client.pem"]
    assert any(name.startswith("client.pem.backup-") for name in after)

    before = snapshot(root, skip=())
    run = run_txsetup(["node-daemon-setup", "--root", str(root), "--dry-run"], stdin=document)
    assert (run.returncode, run.result["outcome"]) == (0, "dry_run")
    assert snapshot(root, skip=()) == before
    assert run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=document).returncode == 0
    before = snapshot(root)
    run = run_txsetup(["node-daemon-setup", "--root", str(root), "--dry-run"], stdin=document)
    assert (run.returncode, run.result["outcome"]) == (0, "dry_run")
    assert snapshot(root) == before


# The side-by-side set: many documents, each through both tools (docs/ganeti.md).

# Run inside one namespace: $1 holds a directory per document (stdin, seed/),
# $2 is an empty directory. Ganeti's daemon-util is replaced, in the namespace
# only, by one that records its arguments, so a restart is seen and harmless.
_BATCH = r"""
set -e
cases=$1 orig=$2
shift 2
mount --bind /usr/lib/ganeti "$orig"
mount -t tmpfs -o mode=0755 tmpfs /usr/lib/ganeti
printf '#!/bin/sh\necho "$*" >> "$DAEMON_UTIL_CALLS"\n' > /usr/lib/ganeti/daemon-util
chmod 0755 /usr/lib/ganeti/daemon-util
for entry in "$orig"/*; do  # the rest as links; never one through which to write the real files
    [ -e "/usr/lib/ganeti/${entry##*/}" ] || [ ! -e "$entry" ] || ln -s "$entry" /usr/lib/ganeti/
done
for case in "$cases"/*/; do
    for dir in lib/ganeti lock log/ganeti run/ganeti; do
        mount -t tmpfs -o mode=0755 tmpfs "/var/$dir"
    done
    if [ -d "$case/seed" ]; then cp -a "$case/seed/." /var/lib/ganeti/; fi
    status=0
    DAEMON_UTIL_CALLS="$case/daemon-util" "$@" < "$case/stdin" > "$case/stdout" 2> "$case/stderr" \
        || status=$?
    echo "$status" > "$case/exit"
    for dir in lib/ganeti lock log/ganeti run/ganeti; do
        mkdir -p "$case/after/$dir"
        cp -a "/var/$dir/." "$case/after/$dir/"
        umount "/var/$dir"
    done
done
"""

TABLE_HEADING = "### Every deliberate difference"
SIDE_BY_SIDE = "side by side"


@dataclass(frozen=True)
class Verdict:
    """How a tool ended on one document."""

    exit_code: int
    restarted: bool  # it (re)started the node daemon
    changed: bool  # /var/lib/ganeti differs from before the run
    files: dict[str, Written]
    error: str = ""  # the last line it wrote to stderr, for the report

    @property
    def accepted(self) -> bool:
        return self.exit_code == 0


def ganeti_batch(ganeti: Ganeti, variants: list[Variant], work: Path) -> subprocess.Popen[bytes]:
    """Start Ganeti's tool on every variant, one after another, in one private namespace."""
    cases = work / "cases"
    for index, variant in enumerate(variants):
        case = cases / f"{index:03d}"
        (case / "seed").mkdir(parents=True)
        (case / "stdin").write_bytes(variant.stdin)
        seed_files(case / "seed", variant.seed)
    (work / "orig").mkdir()
    argv = [SYSTEM_PYTHON, str(GANETI_TOOL)]
    return subprocess.Popen(
        [
            *(ganeti.unshare, "--mount", "--propagation", "private", "sh", "-c", _BATCH, "sh"),
            *(str(cases), str(work / "orig"), *argv),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(GANETI_LIB)},
    )


def seed_files(directory: Path, seed: Mapping[str, str]) -> None:
    """The node's files before a run, as Ganeti's tool would have left them."""
    for name, text in seed.items():
        path = directory / name
        path.write_text(text)
        if name == "server.pem":
            os.chown(path, pwd.getpwnam("gnt-masterd").pw_uid, grp.getgrnam("gnt-masterd").gr_gid)
            path.chmod(0o440)
        else:
            path.chmod(0o444)


def ganeti_verdict(case: Path) -> Verdict:
    """What Ganeti's tool did on the document in ``case`` (after the batch): its data
    directory against the seed it started from, and anything in its log and run directories."""
    after = written(case / "after/lib/ganeti")
    elsewhere = [
        name for d in ("log/ganeti", "run/ganeti") for name in os.listdir(case / "after" / d)
    ]
    return Verdict(
        int((case / "exit").read_text()),
        (case / "daemon-util").exists(),
        after != written(case / "seed") or bool(elsewhere),
        after,
        ((case / "stderr").read_text(errors="replace").strip().splitlines() or [""])[-1][-160:],
    )


def txsetup_verdict(variant: Variant, root: Path) -> Verdict:
    """Run txsetup on the variant in a fresh root; a refusal must change nothing."""
    ganeti_dir = root / "var/lib/ganeti"
    ganeti_dir.mkdir(parents=True)
    seed_files(ganeti_dir, variant.seed)
    (root / "var/lock").mkdir()
    config = root / "etc/txsetup/config.toml"
    config.parent.mkdir(parents=True)
    true = require_tool("true")
    config.write_text(
        f'[daemon]\nrestart = ["{true}"]\nstop = ["{true}"]\nstatus = ["{true}"]\n'
        'health_url = "none"\n'
    )
    before = snapshot(root)
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=variant.stdin)
    after = snapshot(root)
    if run.returncode != 0:
        assert after == before, f"{variant.id}: txsetup's refusal changed files"
    return Verdict(
        run.returncode,
        "daemon.restart" in run.event_names(),
        after != before,
        written(ganeti_dir),
    )


@dataclass(frozen=True)
class Row:
    """One row of docs/ganeti.md's table of deliberate differences."""

    input: str
    ganeti: str
    txsetup: str
    why: str
    shown_by: str


def difference_rows() -> dict[str, Row]:
    """The table under TABLE_HEADING in docs/ganeti.md, by its first column."""
    text = (REPO / "docs/ganeti.md").read_text()
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]
    rows: dict[str, Row] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| input ", "| ---")):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, f"a row of five cells expected: {line}"
        assert cells[0] not in rows, f"two rows for {cells[0]}"
        rows[cells[0]] = Row(*cells)
    return rows


def differences(ganeti: Verdict, ours: Verdict) -> list[str]:
    """How the two tools ended differently on one document (empty when alike)."""
    found = []
    if ganeti.accepted != ours.accepted:
        found.append("verdict")
    if ganeti.restarted != ours.restarted:
        found.append("restart")
    if not ganeti.accepted and ganeti.changed:
        found.append("ganeti changed files before refusing")
    if ganeti.accepted and ours.accepted:
        theirs = {k: w for k, w in ganeti.files.items() if not k.startswith("client.pem")}
        mine = {k: w for k, w in ours.files.items() if k != "client.pem"}
        if theirs != mine:
            found.append("files")
    return found


def describe(verdict: Verdict) -> str:
    """A verdict in the words of the table's cells."""
    if verdict.accepted:
        return "accepts" + (" and restarts" if verdict.restarted else "")
    return f"refuses (exit {verdict.exit_code})" + (", after writing" if verdict.changed else "")


@pytest.mark.slow
def test_side_by_side_with_ganeti(
    ganeti: Ganeti, node_pem: str, other_pem: str, tmp_path: Path
) -> None:
    """On every document both tools end alike, or as a row of docs/ganeti.md's table says;
    txsetup's refusals change nothing, and every row is shown by some document."""
    rows = difference_rows()
    variants = build_variants(node_pem, other_pem, tmp_path / "certificates")
    batch = ganeti_batch(ganeti, variants, tmp_path / "ganeti")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:  # each run is its own process
            roots = [tmp_path / "ours" / f"{i:03d}" for i in range(len(variants))]
            ours = list(pool.map(txsetup_verdict, variants, roots))
    finally:
        out, err = batch.communicate(timeout=600)
    assert batch.returncode == 0, (out + err).decode()[-3000:]
    report, shown = [], set()
    for index, (variant, mine) in enumerate(zip(variants, ours, strict=True)):
        theirs = ganeti_verdict(tmp_path / "ganeti/cases" / f"{index:03d}")
        found = differences(theirs, mine)
        line = (
            f"{variant.id}: Ganeti {describe(theirs)}, txsetup {describe(mine)} {found}"
            f" (Ganeti: {theirs.error})"
        )
        report.append(line)
        if not found:
            if variant.row is not None:
                report.append(f"  ^ expected the difference {variant.row!r}")
            continue
        row = rows.get(variant.row or "")
        if row is None:
            report.append(f"  ^ not a row of the table: {variant.row!r}")
            continue
        shown.add(row.input)
        expect_ganeti = "accepts" if theirs.accepted else "refuses"
        expect_ours = "accepts" if mine.accepted else f"refuses (exit {mine.exit_code})"
        if not row.ganeti.startswith(expect_ganeti) or not row.txsetup.startswith(expect_ours):
            report.append(f"  ^ the row says Ganeti {row.ganeti!r}, txsetup {row.txsetup!r}")
        if ("after writing" in row.ganeti) != (not theirs.accepted and theirs.changed):
            report.append("  ^ the row's Ganeti cell and 'after writing' disagree")
    bad = [line for line in report if line.startswith("  ^")]
    assert not bad, "\n".join(report)
    for row in rows.values():
        if row.shown_by == SIDE_BY_SIDE:
            assert row.input in shown, f"no document shows the row {row.input!r}"
        else:  # `tests/test_x.py::test_name`: that test exists
            path, _, name = row.shown_by.strip("`").partition("::")
            assert f"def {name}(" in (REPO / path).read_text(), row.shown_by
