"""Owners and groups of installed files (``[files]`` in the configuration)."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Run, make_document, snapshot
from txsetup.node.config import FilesConfig, Ownership
from txsetup.node.daemon_setup import resolve_owners
from txsetup.node.files import FileOwner, ganeti_owners

SetupRun = Callable[..., Run]
GANETI = "var/lib/ganeti"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def owner(path: Path) -> tuple[str, str]:
    """A file's owner and group, by name."""
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


def write_config(root: Path, text: str) -> Path:
    """A configuration file under the node root."""
    path = root / "etc/txsetup/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@needs_root
@pytest.mark.usefixtures("ganeti_accounts")
def test_new_files_get_ganeti_owners(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """Without [files], new server.pem and hmac.key belong to gnt-masterd, the rest to root."""
    document = make_document(node_pem, hmac_key="hmac-secret-own", node_name="node3.example.com")
    run = setup_run(document)
    assert run.returncode == 0, run.stderr
    assert owner(root / GANETI / "server.pem") == ("gnt-masterd", "gnt-masterd")
    assert owner(root / GANETI / "hmac.key") == ("gnt-masterd", "gnt-masterd")
    assert owner(root / GANETI / "client.pem") == ("root", "root")
    assert owner(root / GANETI / "ssconf_master_ip") == ("root", "root")
    assert setup_run(document).result["outcome"] == "converged"


@needs_root
@pytest.mark.usefixtures("ganeti_accounts")
def test_configured_owners_win_over_ganeti_defaults(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """[files] server_pem_group and hmac_key_owner apply (by name); the unset halves default."""
    write_config(root, '[files]\nserver_pem_group = "daemon"\nhmac_key_owner = "daemon"\n')
    run = setup_run(make_document(node_pem, hmac_key="hmac-secret-own"))
    assert run.returncode == 0, run.stderr
    assert owner(root / GANETI / "server.pem") == ("gnt-masterd", "daemon")
    assert (root / GANETI / "server.pem").stat().st_mode & 0o777 == 0o440
    assert owner(root / GANETI / "hmac.key") == ("daemon", "gnt-masterd")
    assert owner(root / GANETI / "ssconf_master_ip") == ("root", "root")


@needs_root
@pytest.mark.usefixtures("ganeti_accounts")
def test_existing_secret_file_keeps_its_owner_over_the_default(
    node_pem: str, root: Path, setup_run: SetupRun
) -> None:
    """A replaced hmac.key keeps the owner it had; the Ganeti default is for new files only."""
    assert setup_run(make_document(node_pem, hmac_key="hmac-secret-1")).returncode == 0
    os.chown(root / GANETI / "hmac.key", 0, grp.getgrnam("daemon").gr_gid)
    run = setup_run(make_document(node_pem, hmac_key="hmac-secret-2"))
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] == [f"{GANETI}/hmac.key"]
    assert owner(root / GANETI / "hmac.key") == ("root", "daemon")
    assert (root / GANETI / "hmac.key").read_text() == "hmac-secret-2"


def test_ganeti_owners_are_masterd_for_server_pem_and_hmac_key() -> None:
    """Ganeti's accounts give server.pem and hmac.key to gnt-masterd; client.pem stays root's."""
    ids = {"gnt-masterd": 4001}
    owners = ganeti_owners(uid_of=ids.get, gid_of={"gnt-masterd": 4002}.get)
    assert owners == {
        "server.pem": (4001, 4002),
        "hmac.key": (4001, 4002),
        "client.pem": (-1, -1),
    }


def test_ganeti_owners_fall_back_to_root_without_the_accounts() -> None:
    """A node without gnt-masterd (user, group or both) leaves that half to the process."""
    none: dict[str, int] = {}
    assert set(ganeti_owners(uid_of=none.get, gid_of=none.get).values()) == {(-1, -1)}
    only_group = ganeti_owners(uid_of=none.get, gid_of={"gnt-masterd": 4002}.get)
    assert only_group["server.pem"] == (-1, 4002)


def test_resolve_owners_puts_configuration_over_defaults() -> None:
    """A configured owner or group is kept apart from the default, which is for new files."""
    files = FilesConfig(server_pem=Ownership(None, "4343"), client_pem=Ownership("4242", None))
    defaults = {"server.pem": (7, 8), "hmac.key": (7, 8)}
    assert resolve_owners(files, defaults=defaults) == {
        "server.pem": FileOwner(-1, 4343, 7, 8),
        "hmac.key": FileOwner(-1, -1, 7, 8),
        "client.pem": FileOwner(4242, -1, -1, -1),
    }


@needs_root
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


@needs_root
def test_group_change_alone_is_a_change(node_pem: str, root: Path, setup_run: SetupRun) -> None:
    """Configuring a group for an installed, byte-identical server.pem rewrites only that file."""
    assert setup_run(make_document(node_pem)).returncode == 0
    write_config(root, '[files]\nserver_pem_group = "daemon"\n')
    run = setup_run(make_document(node_pem))
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] == [f"{GANETI}/server.pem"]
    assert (root / GANETI / "server.pem").stat().st_gid == grp.getgrnam("daemon").gr_gid
    assert setup_run(make_document(node_pem)).result["outcome"] == "converged"


@needs_root
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
