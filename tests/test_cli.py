"""End to end through the installed CLI: exit codes, results, logs, nothing touched on refusal."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    CLUSTER,
    Run,
    encode,
    make_document,
    parse_run,
    run_txsetup,
    snapshot,
    txsetup_exe,
)
from txsetup.demo.certs import generate_node_certificate, split_pem
from txsetup.txn.journal import read_journal

SetupRun = Callable[..., Run]


def _doc(pem: str, **changes: Any) -> dict[str, Any]:
    return {**make_document(pem), **changes}


INVALID: list[tuple[str, Callable[[str], bytes], str]] = [
    ("empty stdin", lambda pem: b"", "$"),
    ("not json", lambda pem: b"{nope", "$"),
    ("invalid utf-8", lambda pem: b'{"cluster_name": "\xff"}', "$"),
    ("top level array", lambda pem: b"[]", "$"),
    ("unknown key", lambda pem: encode(_doc(pem, colour="blue")), "$.colour"),
    ("cluster_name number", lambda pem: encode(_doc(pem, cluster_name=1)), "$.cluster_name"),
    ("cluster_name empty", lambda pem: encode(_doc(pem, cluster_name="")), "$.cluster_name"),
    (
        "cert missing",
        lambda pem: encode({k: v for k, v in _doc(pem).items() if k != "node_daemon_certificate"}),
        "$.node_daemon_certificate",
    ),
    (
        "cert null",
        lambda pem: encode(_doc(pem, node_daemon_certificate=None)),
        "$.node_daemon_certificate",
    ),
    ("ssconf array", lambda pem: encode(_doc(pem, ssconf=[])), "$.ssconf"),
    ("ssconf empty", lambda pem: encode(_doc(pem, ssconf={})), "$.ssconf"),
    (
        "ssconf value number",
        lambda pem: encode(_doc(pem, ssconf={"cluster_name": CLUSTER, "master_ip": 1})),
        "$.ssconf.master_ip",
    ),
    (
        "ssconf traversal key",
        lambda pem: encode(_doc(pem, ssconf={"cluster_name": CLUSTER, "../../etc/passwd": "x"})),
        "$.ssconf",
    ),
    (
        "ssconf absolute key",
        lambda pem: encode(_doc(pem, ssconf={"cluster_name": CLUSTER, "/etc/shadow": "x"})),
        "$.ssconf",
    ),
    (
        "ssconf value too long",
        lambda pem: encode(
            _doc(pem, ssconf={"cluster_name": CLUSTER, "node_list": "n" * (128 * 1024 + 1)})
        ),
        "$.ssconf.node_list",
    ),
    (
        "start_node_daemon string",
        lambda pem: encode(_doc(pem, start_node_daemon="yes")),
        "$.start_node_daemon",
    ),
    ("hmac_key empty", lambda pem: encode(_doc(pem, hmac_key="")), "$.hmac_key"),
    ("node_name number", lambda pem: encode(_doc(pem, node_name=7)), "$.node_name"),
    ("17 MiB", lambda pem: b" " * (17 * 1024 * 1024), "$"),
]


@pytest.mark.parametrize(("name", "make", "path"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_exits_3_and_touches_nothing(
    name: str,
    make: Callable[[str], bytes],
    path: str,
    node_pem: str,
    root: Path,
    setup_run: SetupRun,
) -> None:
    """Every invalid document is exit 3 with a message naming its JSON path, and no change."""
    before = snapshot(root)
    run = setup_run(make(node_pem))
    assert run.returncode == 3, run.stderr
    assert run.result["outcome"] == "failed"
    assert path in run.result["error"]
    assert snapshot(root) == before
    failed = [e for e in run.events if e["event"] == "step.failed"]
    assert failed
    assert failed[0]["step"] == "decode"
    assert failed[0]["error_code"] == "invalid_input"


def test_ganeti_master_document_is_accepted(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """The exact document a Ganeti master builds (hmac_key, node_name) commits."""
    run = setup_run(
        make_document(
            node_pem,
            hmac_key="hmac-secret-1\n",
            node_name="node3.example.com",
            start_node_daemon=False,
        )
    )
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "committed"
    ganeti = root / "var/lib/ganeti"
    assert (ganeti / "server.pem").read_text() == node_pem
    assert (ganeti / "hmac.key").read_text() == "hmac-secret-1\n"
    assert (ganeti / "ssconf_master_ip").read_text() == "192.0.2.1\n"
    assert (ganeti / "ssconf_node_list").read_text() == "node1.example.com\nnode2.example.com\n"
    assert (ganeti / "server.pem").stat().st_mode & 0o777 == 0o440
    assert (ganeti / "ssconf_master_ip").stat().st_mode & 0o777 == 0o444
    assert (ganeti / "client.pem").stat().st_mode & 0o777 == 0o440
    assert (root / "var/lib/txsetup").stat().st_mode & 0o777 == 0o700
    names = run.event_names()
    assert names[0] == "txn.begin"
    assert names[-1] == "txn.end"
    assert "txn.committed" in names
    assert {e["step"] for e in run.events if e["event"] == "step.end"} == {
        "lock",
        "decode",
        "verify_cluster",
        "verify_cert",
        "stage",
        "commit",
        "restart_daemon",
    }
    assert all(e.get("txid") == run.result["txid"] for e in run.events)


def test_rerun_converges_and_writes_nothing(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """The same document twice: the second run is converged and changes no inode; only the
    journal's content changes (its summary, in place), so that its txid is findable."""
    document = make_document(node_pem, hmac_key="hmac-secret-2", node_name="n1.example.com")
    assert setup_run(document).returncode == 0
    skip = ("var/lock", "var/lib/txsetup/journal")
    before = {k: (v, v.ino) for k, v in snapshot(root, skip=skip).items()}
    journal = root / "var/lib/txsetup/journal"
    inode = journal.stat().st_ino
    run = setup_run(document)
    assert run.result["outcome"] == "converged"
    assert run.result["changed"] == []
    assert "txn.converged" in run.event_names()
    assert {k: (v, v.ino) for k, v in snapshot(root, skip=skip).items()} == before
    assert journal.stat().st_ino == inode
    assert {r.txid for r in read_journal(journal)} == {run.result["txid"]}


def test_empty_ssconf_value_gets_no_newline(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """An empty value is written empty; a value ending in a newline gets no second one."""
    run = setup_run(make_document(node_pem, ssconf={"cluster_tags": "", "node_list": "a\n"}))
    assert run.returncode == 0, run.stderr
    assert (root / "var/lib/ganeti/ssconf_cluster_tags").read_bytes() == b""
    assert (root / "var/lib/ganeti/ssconf_node_list").read_bytes() == b"a\n"


def test_dry_run_prints_the_plan_and_touches_nothing(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """--dry-run reports create/replace/unchanged with sizes and modes, and writes nothing."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root, skip=())
    run = setup_run(
        make_document(node_pem, ssconf={"master_ip": "192.0.2.9", "cluster_tags": "x"}), "--dry-run"
    )
    assert run.returncode == 0
    assert run.result["outcome"] == "dry_run"
    plan = {p["path"]: p for p in run.result["plan"]}
    assert plan["var/lib/ganeti/ssconf_master_ip"]["action"] == "replace"
    assert plan["var/lib/ganeti/ssconf_master_ip"]["old_size"] == len("192.0.2.1\n")
    assert plan["var/lib/ganeti/ssconf_master_ip"]["new_size"] == len("192.0.2.9\n")
    assert plan["var/lib/ganeti/ssconf_cluster_tags"]["action"] == "create"
    assert plan["var/lib/ganeti/ssconf_cluster_tags"]["new_mode"] == "0444"
    assert plan["var/lib/ganeti/server.pem"]["action"] == "unchanged"
    assert snapshot(root, skip=()) == before


def test_dry_run_on_empty_root_creates_nothing(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A dry run creates no lock, state directory or target directory."""
    before = snapshot(root, skip=())
    run = setup_run(make_document(node_pem), "--dry-run")
    assert run.returncode == 0
    assert snapshot(root, skip=()) == before


def test_dry_run_refusal_exits_as_the_real_run(
    other_pem: str, node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A dry run of a document the node refuses exits 4, like the real run."""
    assert setup_run(make_document(node_pem)).returncode == 0
    run = setup_run(make_document(other_pem), "--dry-run")
    assert run.returncode == 4


def _expired(now: datetime) -> str:
    return generate_node_certificate(
        CLUSTER, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )


def _future(now: datetime) -> str:
    return generate_node_certificate(
        CLUSTER, not_before=now + timedelta(days=1), not_after=now + timedelta(days=10)
    )


REFUSED: list[tuple[str, Callable[[str, str], dict[str, Any]]]] = [
    (
        "cluster name differs from ssconf",
        lambda pem, other: make_document(pem, ssconf={"cluster_name": "other.example.com"}),
    ),
    ("mismatched key", lambda pem, other: make_document(split_pem(pem)[1] + split_pem(other)[0])),
    ("certificate without key", lambda pem, other: make_document(split_pem(pem)[1])),
    ("key without certificate", lambda pem, other: make_document(split_pem(pem)[0])),
    ("broken pem", lambda pem, other: make_document(pem.replace("M", "!", 5))),
    ("expired", lambda pem, other: make_document(_expired(datetime.now(UTC)))),
    ("not yet valid", lambda pem, other: make_document(_future(datetime.now(UTC)))),
    (
        "rsa with ec key",
        lambda pem, other: make_document(
            split_pem(generate_node_certificate(CLUSTER, key_type="rsa"))[1] + split_pem(pem)[0]
        ),
    ),
]


@pytest.mark.parametrize(("name", "make"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_documents_exit_4_and_touch_nothing(
    name: str,
    make: Callable[[str, str], dict[str, Any]],
    node_pem: str,
    other_pem: str,
    root: Path,
    setup_run: SetupRun,
) -> None:
    """Documents the node refuses are exit 4, name no key material, and change nothing."""
    before = snapshot(root)
    run = setup_run(make(node_pem, other_pem))
    assert run.returncode == 4, run.stderr
    assert run.result["error_code"] == "refused"
    assert snapshot(root) == before


def test_local_cluster_name_mismatch_is_refused(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A node already in another cluster refuses to join this one."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root)
    other = "other.example.com"
    run = setup_run(make_document(node_pem, cluster=other, ssconf={"cluster_name": other}))
    assert run.returncode == 4
    assert "cluster" in run.result["error"]
    assert snapshot(root) == before


def test_different_local_key_is_refused(
    node_pem: str, other_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A certificate that does not match the node's existing key is refused."""
    assert setup_run(make_document(node_pem)).returncode == 0
    before = snapshot(root)
    run = setup_run(make_document(other_pem))
    assert run.returncode == 4
    assert snapshot(root) == before


def test_rsa_certificate_installs(root: Path, setup_run: SetupRun) -> None:
    """An RSA node certificate is accepted as well as EC."""
    pem = generate_node_certificate(CLUSTER, key_type="rsa")
    run = setup_run(make_document(pem))
    assert run.returncode == 0, run.stderr
    assert (root / "var/lib/ganeti/server.pem").read_text() == pem


def test_expiring_soon_warns_but_installs(root: Path, setup_run: SetupRun) -> None:
    """A certificate expiring within 30 days is installed with a warning event."""
    now = datetime.now(UTC)
    pem = generate_node_certificate(
        CLUSTER, not_before=now - timedelta(days=1), not_after=now + timedelta(days=10)
    )
    run = setup_run(make_document(pem))
    assert run.returncode == 0
    assert "cert.expires_soon" in run.event_names()


@pytest.mark.parametrize(
    "args",
    [
        ["--abort"],
        ["--resume", "--dry-run"],
        ["--bogus"],
        ["--lock-timeout", "soon"],
        ["--log-format", "xml"],
    ],
)
def test_usage_errors_exit_2(args: list[str], root: Path, setup_run: SetupRun) -> None:
    """Wrong options are exit 2 with a JSON result, not a traceback."""
    run = setup_run(b"", *args)
    assert run.returncode == 2
    assert run.result["outcome"] == "failed"


def test_unknown_command_exits_2() -> None:
    """An unknown subcommand is a usage error."""
    assert run_txsetup(["frobnicate"]).returncode == 2


def test_help_lists_the_options() -> None:
    """--help documents the options every run command shares (argparse prints it and exits 0)."""
    import subprocess

    from tests.conftest import txsetup_exe

    out = subprocess.run(
        [txsetup_exe(), "node-daemon-setup", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--root",
        "--dry-run",
        "--resume",
        "--abort",
        "--lock-timeout",
        "--log-format",
        "--debug",
        "--verbose",
    ):
        assert option in out


def test_alias_runs_node_daemon_setup(node_pem: str, root: Path) -> None:
    """``node-daemon-setup --debug --verbose`` is the drop-in alias Ganeti's master runs."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("node-daemon-setup"))
    proc = subprocess.run(
        [exe, "--debug", "--verbose"],
        input=encode(make_document(node_pem)),
        capture_output=True,
        env={"TXSETUP_ROOT": str(root)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "committed"
    assert (root / "var/lib/ganeti/server.pem").exists()


def test_debug_log_never_shows_the_payload(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """At debug level too, no key material or hmac key reaches stderr or stdout."""
    run = setup_run(make_document(node_pem, hmac_key="hmac-secret-3"), "--debug")
    assert run.returncode == 0  # run_txsetup asserts no secret marker in either stream


def test_status_reports_last_transaction(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """status shows the committed transaction's id, state and files."""
    run = setup_run(make_document(node_pem))
    status = run_txsetup(["status", "--root", str(root)])
    assert status.result["txid"] == run.result["txid"]
    assert status.result["state"] == "done"


@pytest.mark.parametrize("name", ["server.pem", "ssconf_cluster_name"])
def test_unreadable_local_file_is_refused_not_skipped(
    name: str, node_pem: str, tmp_path: Path, root: Path, setup_run: SetupRun
) -> None:
    """A symlink where a local file verification reads is refused (exit 4), never ignored."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("anything\n")
    ganeti = root / "var/lib/ganeti"
    ganeti.mkdir()
    (ganeti / name).symlink_to(elsewhere)
    before = snapshot(root)
    run = setup_run(make_document(node_pem))
    assert run.returncode == 4, run.stderr
    assert name in run.result["error"]
    assert snapshot(root) == before
    assert elsewhere.read_text() == "anything\n"


def test_closed_stdin_is_invalid_input(root: Path) -> None:
    """A node whose stdin is closed (descriptor 0 gone) refuses with exit 3, touching nothing."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$0" node-daemon-setup --root "$1" <&-', txsetup_exe(), str(root)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.returncode == 3
    assert "empty document" in run.result["error"]
    assert not (root / "var/lib/ganeti").exists()


def test_dropped_stdin_midway_is_invalid_input(node_pem: str, root: Path) -> None:
    """A document cut off by a dropped connection is not JSON: exit 3, nothing written."""
    data = encode(make_document(node_pem))
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=data[: len(data) // 2])
    assert run.returncode == 3
    assert "not JSON" in run.result["error"]
    assert not (root / "var/lib/ganeti").exists()
