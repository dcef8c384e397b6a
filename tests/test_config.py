"""The TOML configuration: defaults, every key, and a precise error for every mistake."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from txsetup.errors import ExitCode, InvalidInput, UsageError
from txsetup.node.config import (
    DEFAULT_CONFIG_PATH,
    ClientPemProfile,
    Config,
    DaemonConfig,
    FilesConfig,
    HealthTarget,
    Ownership,
    SshdConfig,
    resolve_ownership,
)
from txsetup.node.config_file import load_config

DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"

FULL = """
[daemon]
restart = [["python3", "-m", "txsetup.demo.noded", "restart", "--root", "/R", "--port", "18111"]]
stop = ["python3", "-m", "txsetup.demo.noded", "stop", "--root", "/R", "--port", "18111"]
status = ["python3", "-m", "txsetup.demo.noded", "status", "--root", "/R", "--port", "18111"]
health_url = "tls://127.0.0.1:18111"
health_timeout = 5
command_timeout = 12.5

[files]
server_pem_owner = "root"
server_pem_group = "gnt-masterd"
hmac_key_owner = 0
hmac_key_group = "root"
client_pem_owner = "gnt-noded"
client_pem_group = "gnt-noded"
client_pem_key = "like-node"
client_pem_days = 365

[sshd]
reload = [["systemctl", "reload", "sshd"], ["true"]]
status = ["systemctl", "is-active", "sshd"]
health_address = "tcp://[::1]:2222"
health_timeout = 4
command_timeout = 9.5
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write a configuration file and return its path."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> str:
    """Load ``text`` expecting invalid input; return the whole message."""
    with pytest.raises(InvalidInput) as caught:
        load_config(write(tmp_path, text), root=tmp_path)
    assert caught.value.exit_code == ExitCode.INVALID_INPUT
    return str(caught.value)


def test_no_file_gives_ganeti_defaults(tmp_path: Path) -> None:
    """Without a configuration file the node behaves like stock Ganeti."""
    config = load_config(None, root=tmp_path)
    assert config == Config()
    assert config.daemon.restart == (
        (DAEMON_UTIL, "stop-all"),
        (DAEMON_UTIL, "start", "ganeti-noded"),
    )
    assert config.daemon.stop == ((DAEMON_UTIL, "stop-all"),)
    assert config.daemon.status == (DAEMON_UTIL, "check", "ganeti-noded")
    assert config.daemon.health_url == HealthTarget("127.0.0.1", 1811)
    assert config.daemon.health_timeout == 30.0
    assert config.daemon.command_timeout == 60.0
    assert config.files == FilesConfig(Ownership(), Ownership(), Ownership())
    assert config.files.client_pem_profile == ClientPemProfile(key="rsa-2048", days=1825)
    assert config.sshd.reload == ((DAEMON_UTIL, "reload-ssh-keys"),)
    assert config.sshd.health_address == HealthTarget("127.0.0.1", 22)
    assert config.sshd.health_timeout == 30.0


def test_default_path_under_root_is_read(tmp_path: Path) -> None:
    """With no --config, <root>/etc/txsetup/config.toml is used when it exists."""
    path = tmp_path / DEFAULT_CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.write_text("[daemon]\nhealth_timeout = 7\n")
    assert load_config(None, root=tmp_path).daemon.health_timeout == 7.0


def test_full_file(tmp_path: Path) -> None:
    """Every key is read, and one argv and a list of argvs both give a command list."""
    config = load_config(write(tmp_path, FULL), root=tmp_path)
    noded = ("python3", "-m", "txsetup.demo.noded")
    where = ("--root", "/R", "--port", "18111")
    assert config.daemon == DaemonConfig(
        restart=((*noded, "restart", *where),),
        stop=((*noded, "stop", *where),),
        status=(*noded, "status", *where),
        health_url=HealthTarget("127.0.0.1", 18111),
        health_timeout=5.0,
        command_timeout=12.5,
    )
    assert config.files == FilesConfig(
        server_pem=Ownership("root", "gnt-masterd"),
        hmac_key=Ownership("0", "root"),
        client_pem=Ownership("gnt-noded", "gnt-noded"),
        client_pem_profile=ClientPemProfile(key="like-node", days=365),
    )
    assert config.sshd == SshdConfig(
        reload=(("systemctl", "reload", "sshd"), ("true",)),
        status=("systemctl", "is-active", "sshd"),
        health_address=HealthTarget("::1", 2222),
        health_timeout=4.0,
        command_timeout=9.5,
    )


def test_partial_table_keeps_other_defaults(tmp_path: Path) -> None:
    """Keys left out of a table keep their defaults."""
    config = load_config(write(tmp_path, '[daemon]\nrestart = ["/bin/true"]\n'), root=tmp_path)
    assert config.daemon.restart == (("/bin/true",),)
    assert config.daemon.stop == DaemonConfig().stop


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[daemon]\nrestrat = []\n", "[daemon].restrat: unknown key"),
        ("[files]\nserver_pem_mode = 1\n", "[files].server_pem_mode: unknown key"),
        ("[sshd]\nport = 22\n", "[sshd].port: unknown key"),
        ("[deamon]\nrestart = []\n", "[deamon]: unknown table"),
        ("health_url = 'none'\n", "config.toml: health_url: unknown key"),
        ("[daemon.extra]\n", "[daemon].extra: unknown key"),
    ],
)
def test_unknown_table_or_key_is_named(tmp_path: Path, text: str, named: str) -> None:
    """An unknown table or key is invalid input naming exactly it."""
    assert named in problems_of(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("daemon = 5\n", "[daemon]: expected a table, got integer"),
        ("[daemon]\nrestart = 'restart-noded'\n", "[daemon].restart: expected a non-empty"),
        ("[daemon]\nrestart = []\n", "[daemon].restart: expected a non-empty"),
        ("[daemon]\nrestart = [[]]\n", "[daemon].restart[0]: expected a non-empty"),
        ("[daemon]\nrestart = [['a'], 'b']\n", "[daemon].restart: mixes strings and arrays"),
        ("[daemon]\nrestart = [['a'], ['b', 1]]\n", "[daemon].restart[1][1]: expected a string"),
        ("[daemon]\nstop = ['', 'x']\n", "[daemon].stop[0]: the program name is empty"),
        ("[daemon]\nstatus = [['check']]\n", "[daemon].status[0]: expected a string, got array"),
        ('[daemon]\nstatus = ["a\\u0000b"]\n', "[daemon].status[0]: contains a NUL"),
        ("[daemon]\nhealth_timeout = '30'\n", "[daemon].health_timeout: expected a number"),
        ("[daemon]\nhealth_timeout = true\n", "[daemon].health_timeout: expected a number"),
        ("[daemon]\nhealth_timeout = 0\n", "[daemon].health_timeout: expected a positive"),
        ("[daemon]\ncommand_timeout = -1.5\n", "[daemon].command_timeout: expected a positive"),
        ("[daemon]\ncommand_timeout = inf\n", "[daemon].command_timeout: expected a positive"),
        ("[daemon]\nhealth_timeout = nan\n", "[daemon].health_timeout: expected a positive"),
        ("[daemon]\nhealth_url = 1811\n", "[daemon].health_url: expected a string, got integer"),
        ("[files]\nserver_pem_owner = true\n", "[files].server_pem_owner: expected a user"),
        ("[files]\nhmac_key_group = ''\n", "[files].hmac_key_group: expected a user"),
        ("[files]\nclient_pem_owner = -1\n", "[files].client_pem_owner: expected a user"),
        ("[files]\nclient_pem_key = 'rsa-1024'\n", "[files].client_pem_key: expected one of"),
        ("[files]\nclient_pem_key = 2048\n", "[files].client_pem_key: expected one of"),
        ("[files]\nclient_pem_days = '1825'\n", "[files].client_pem_days: expected a whole"),
        ("[files]\nclient_pem_days = 365.5\n", "[files].client_pem_days: expected a whole"),
        ("[files]\nclient_pem_days = true\n", "[files].client_pem_days: expected a whole"),
        ("[files]\nclient_pem_days = 0\n", "[files].client_pem_days: expected 1 to 36500"),
        ("[files]\nclient_pem_days = 36501\n", "[files].client_pem_days: expected 1 to 36500"),
        ("[sshd]\nreload = 'systemctl'\n", "[sshd].reload: expected a non-empty array"),
        ("[sshd]\nhealth_address = 22\n", "[sshd].health_address: expected a string"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, text: str, named: str) -> None:
    """A value of the wrong type or range is invalid input naming its key."""
    assert named in problems_of(tmp_path, text)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1811",
        "127.0.0.1:1811",
        "tls://127.0.0.1",
        "tls://:1811",
        "tls://127.0.0.1:0",
        "tls://127.0.0.1:65536",
        "tls://127.0.0.1:18x1",
        "tls://127.0.0.1:1811/path",
        "tls://::1:1811",
        "tls://[::1]",
        "tls://[127.0.0.1]:1811",
        "tls://user@host:1811",
        "None",
        "",
    ],
)
def test_bad_health_url(tmp_path: Path, url: str) -> None:
    """A health URL that is not tls://HOST:PORT or "none" is invalid input."""
    message = problems_of(tmp_path, f'[daemon]\nhealth_url = "{url}"\n')
    assert "[daemon].health_url: expected" in message


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("none", None),
        ("tls://node1.example.com:1811", HealthTarget("node1.example.com", 1811)),
        ("tls://[::1]:1811", HealthTarget("::1", 1811)),
        ("tls://[fe80::1%eth0]:443", HealthTarget("fe80::1%eth0", 443)),
    ],
)
def test_good_health_url(tmp_path: Path, url: str, target: HealthTarget | None) -> None:
    """``none`` disables the health check; IPv6 addresses are given in brackets."""
    config = load_config(write(tmp_path, f'[daemon]\nhealth_url = "{url}"\n'), root=tmp_path)
    assert config.daemon.health_url == target


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:2222", HealthTarget("127.0.0.1", 2222)),
        ("tcp://[::1]:22", HealthTarget("::1", 22)),
        ("none", None),
    ],
)
def test_sshd_health_address(tmp_path: Path, address: str, target: HealthTarget | None) -> None:
    """The sshd health address is HOST:PORT, optionally tcp://, or ``none``."""
    text = f'[sshd]\nhealth_address = "{address}"\n'
    assert load_config(write(tmp_path, text), root=tmp_path).sshd.health_address == target


def test_sshd_health_address_refuses_tls(tmp_path: Path) -> None:
    """The sshd address takes no tls:// scheme (sshd does not speak TLS)."""
    text = '[sshd]\nhealth_address = "tls://127.0.0.1:22"\n'
    assert "[sshd].health_address: expected" in problems_of(tmp_path, text)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    """Every problem of a file is reported in one error, each naming its key."""
    text = "[daemon]\nrestrat = 1\nhealth_timeout = 'x'\n[files]\nowner = 'root'\n"
    with pytest.raises(InvalidInput) as caught:
        load_config(write(tmp_path, text), root=tmp_path)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 3
    for named in ("[daemon].restrat", "[daemon].health_timeout", "[files].owner"):
        assert named in problems


def test_error_names_the_file(tmp_path: Path) -> None:
    """A problem names the configuration file it was found in."""
    assert f"{tmp_path / 'config.toml'}: [daemon].x: unknown key" in problems_of(
        tmp_path, "[daemon]\nx = 1\n"
    )


def test_syntax_error_is_invalid_input(tmp_path: Path) -> None:
    """A file that is not TOML is invalid input, with the parser's position."""
    assert "not valid TOML" in problems_of(tmp_path, "[daemon\nrestart = \n")


def test_not_utf8_is_invalid_input(tmp_path: Path) -> None:
    """A file that is not UTF-8 is invalid input."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"[daemon]\n# \xff\xfe\n")
    with pytest.raises(InvalidInput, match="not valid TOML: 'utf-8' codec can't decode"):
        load_config(path, root=tmp_path)


def test_unreadable_file_is_invalid_input(tmp_path: Path) -> None:
    """A configuration path that cannot be read (here a directory) is invalid input."""
    with pytest.raises(InvalidInput, match="cannot read"):
        load_config(tmp_path, root=tmp_path)


def test_dangling_default_symlink_is_invalid_input(tmp_path: Path) -> None:
    """A default config path that is a dangling symlink is an error, not silently defaults."""
    path = tmp_path / DEFAULT_CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.symlink_to(tmp_path / "missing.toml")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_config(None, root=tmp_path)


def test_missing_explicit_file_is_usage_error(tmp_path: Path) -> None:
    """An explicitly given --config file that does not exist is a usage error."""
    with pytest.raises(UsageError, match="not found") as caught:
        load_config(tmp_path / "nope.toml", root=tmp_path)
    assert caught.value.exit_code == ExitCode.USAGE


def test_resolve_ownership_leaves_unset_as_is() -> None:
    """Unset owner and group resolve to -1, which fchown leaves unchanged."""
    assert resolve_ownership(Ownership()) == (-1, -1)


def test_resolve_ownership_names_and_ids() -> None:
    """Names resolve through the user and group databases; unknown digits are ids."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert resolve_ownership(Ownership(user, group)) == (os.getuid(), os.getgid())
    assert resolve_ownership(Ownership("4242", None)) == (4242, -1)
    assert resolve_ownership(Ownership(None, "4343")) == (-1, 4343)


@pytest.mark.parametrize(
    ("ownership", "kind"),
    [(Ownership("no-such-user-txsetup", None), "user"), (Ownership(None, "no-such-grp"), "group")],
)
def test_resolve_ownership_unknown_name(ownership: Ownership, kind: str) -> None:
    """A user or group this node does not know is invalid input."""
    with pytest.raises(InvalidInput, match=f"no such {kind}"):
        resolve_ownership(ownership)
