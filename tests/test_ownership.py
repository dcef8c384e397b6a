"""Owners and groups of installed files (SPEC §4, ``[files]`` in the configuration)."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Run, make_document, snapshot

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def write_config(root: Path, text: str) -> Path:
    """A configuration file under the node root."""
    path = root / "etc/txsetup/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_configured_group_owns_the_secret_files(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """[files] server_pem_group and hmac_key_owner are applied to the new files (by name)."""
    group = grp.getgrnam("daemon").gr_gid
    user = pwd.getpwnam("daemon").pw_uid
    write_config(root, '[files]\nserver_pem_group = "daemon"\nhmac_key_owner = "daemon"\n')
    run = setup_run(make_document(node_pem, hmac_key="hmac-secret-own"))
    assert run.returncode == 0, run.stderr
    pem = (root / GANETI / "server.pem").stat()
    assert (pem.st_uid, pem.st_gid, pem.st_mode & 0o777) == (0, group, 0o440)
    key = (root / GANETI / "hmac.key").stat()
    assert (key.st_uid, key.st_gid) == (user, 0)
    assert (root / GANETI / "ssconf_master_ip").stat().st_gid == 0


def test_replaced_file_keeps_its_owner_unless_configured(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """An existing file's owner and group survive a replace when [files] says nothing."""
    assert setup_run(make_document(node_pem)).returncode == 0
    nobody = pwd.getpwnam("nobody")
    for name in ("ssconf_master_ip", "server.pem"):
        os.chown(root / GANETI / name, nobody.pw_uid, nobody.pw_gid)
    run = setup_run(make_document(node_pem, ssconf={"master_ip": "192.0.2.55"}))
    assert run.returncode == 0, run.stderr
    st = (root / GANETI / "ssconf_master_ip").stat()
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert (root / GANETI / "ssconf_master_ip").read_text() == "192.0.2.55\n"


def test_group_change_alone_is_a_change(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """Configuring a group for an installed, byte-identical server.pem rewrites only that file."""
    assert setup_run(make_document(node_pem)).returncode == 0
    write_config(root, '[files]\nserver_pem_group = "daemon"\n')
    run = setup_run(make_document(node_pem))
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] == [f"{GANETI}/server.pem"]
    assert (root / GANETI / "server.pem").stat().st_gid == grp.getgrnam("daemon").gr_gid
    assert setup_run(make_document(node_pem)).result["outcome"] == "converged"


def test_unknown_group_is_invalid_input_before_any_write(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A group the node does not know is exit 3, and nothing is written."""
    assert setup_run(make_document(node_pem)).returncode == 0
    write_config(root, '[files]\nserver_pem_group = "no-such-group-here"\n')
    before = snapshot(root)
    run = setup_run(make_document(node_pem, ssconf={"master_ip": "192.0.2.56"}))
    assert run.returncode == 3, run.stderr
    assert "no-such-group-here" in run.result["error"]
    assert snapshot(root) == before
