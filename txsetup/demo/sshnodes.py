"""Real OpenSSH ``sshd`` processes on loopback, posing as cluster nodes.

``txsetup push`` reaches its nodes only through the system ``ssh`` client, so the
tests, the benchmarks and the demo drive it against real ``sshd`` daemons rather
than a stand-in: key exchange, authentication, the remote shell and stdin
forwarding then behave exactly as they do on a cluster. Each node is one
foreground ``sshd`` on ``127.0.0.1`` with its own host key, port and *node root*;
sessions find that root in ``TXSETUP_ROOT``, so one machine can host many
"nodes" side by side::

    with start_ssh_nodes(3, tmp_path) as cluster:
        for node in cluster.nodes:
            subprocess.run(cluster.ssh_argv(node, 'ls "$TXSETUP_ROOT"'), check=True)

Standard library only, Linux only (:mod:`txsetup.demo.proctree` reads ``/proc`` to
clean up sessions). The sshd_config, the keys and the sshd processes are in
:mod:`~txsetup.demo.sshd_config`, :mod:`~txsetup.demo.sshd_keys` and
:mod:`~txsetup.demo.sshd_process`.
Things worth knowing about the sessions these daemons run:

* The remote command goes through the user's login shell, and Debian's bash
  reads ``~/.bashrc`` for commands started by sshd. Root's rc files may prepend
  to ``PATH`` (pyenv shims, cargo...) and add seconds of start-up per
  connection; run remote programs by absolute path. Passing ``SHLVL=1`` in
  ``env`` makes bash skip ``~/.bashrc`` (it only reads it at shell level 1).
* Without PAM, ``/etc/environment`` is not read: ``PATH`` is sshd's built-in
  default unless ``env`` sets it (and then rc files may still prepend to it).
* ``scp`` speaks SFTP by default since OpenSSH 9.0, so the daemons enable the
  ``internal-sftp`` subsystem.
* Without PAM, sshd refuses an account whose shadow password is locked
  (``!...``) even for key logins, and says so only at log level INFO: a bare
  "Permission denied (publickey)" with an empty ``sshd.log`` usually means that.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from txsetup.demo.proctree import stop_all
from txsetup.demo.sshd_config import (
    HOST,
    SshdSettings,
    checked_env,
    ensure_privsep_dir,
    supports_penalty_switch,
)
from txsetup.demo.sshd_keys import generate_keys, write_known_hosts
from txsetup.demo.sshd_process import SshdProcess, free_ports, wait_ready

__all__ = ["SshNode", "SshNodes", "sshd_path", "start_ssh_nodes"]

_NO_ENV: Final[Mapping[str, str]] = MappingProxyType({})
_HOST_KEY_KINDS: Final = frozenset({"dsa", "ecdsa", "ed25519", "rsa"})
_CLIENT_KEY: Final = "client_ed25519"


@dataclass(frozen=True)
class SshNode:
    """One running node: where to reach it and which directory it calls its root.

    Attributes:
        spec: ``user@127.0.0.1:PORT``, the form ``txsetup push`` takes as NODE.
        port: The loopback port sshd listens on.
        root: The node root; sshd sets ``TXSETUP_ROOT`` to it in every session.
        pid: sshd's pid, so callers can check it is gone after the context exits.
    """

    spec: str
    port: int
    root: Path
    pid: int


@dataclass(frozen=True)
class SshNodes:
    """Running nodes plus the client settings needed to log in to them.

    Attributes:
        nodes: The nodes, in the order they were requested.
        ssh_options: ``-o`` values every client needs (key, pinned host keys,
            quiet logging), exactly what a caller passes to ``txsetup push``.
        client_key: The private key the nodes accept.
    """

    nodes: tuple[SshNode, ...]
    ssh_options: tuple[str, ...]
    client_key: Path

    def _option_args(self) -> list[str]:
        """``-o`` arguments, BatchMode first: a test must fail, never prompt."""
        args = ["-o", "BatchMode=yes"]
        for option in self.ssh_options:
            args += ["-o", option]
        return args

    def ssh_argv(self, node: SshNode, *remote: str) -> list[str]:
        """The command line that runs ``remote`` on ``node``, shaped like push's.

        Args:
            node: One of :attr:`nodes`.
            *remote: The remote command; ssh joins the words with spaces and the
                node's login shell interprets the result.

        Returns:
            ``ssh -p PORT -o BatchMode=yes -o ... user@127.0.0.1 -- REMOTE...``.
        """
        ssh = shutil.which("ssh") or "ssh"
        return [ssh, "-p", str(node.port), *self._option_args(), _destination(node), "--", *remote]

    def scp_argv(
        self, node: SshNode, sources: Iterable[str | os.PathLike[str]], dest_dir: str | Path
    ) -> list[str]:
        """The command line that copies local ``sources`` into ``dest_dir`` on ``node``.

        The baseline the benchmarks compare push with. Sources are made absolute
        so a local name containing ``:`` is never mistaken for a remote one.

        Args:
            node: One of :attr:`nodes`.
            sources: Local files to copy.
            dest_dir: A directory on the node (an absolute path, taken literally).

        Returns:
            ``scp -P PORT -o BatchMode=yes -o ... SOURCES... user@127.0.0.1:DEST_DIR``.
        """
        scp = shutil.which("scp") or "scp"
        files = [str(Path(source).absolute()) for source in sources]
        target = f"{_destination(node)}:{dest_dir}"
        return [scp, "-P", str(node.port), *self._option_args(), *files, target]


def _destination(node: SshNode) -> str:
    """``user@host`` of a node spec: ssh takes the port separately, as ``-p``."""
    return node.spec.rpartition(":")[0]


def sshd_path() -> str | None:
    """Where sshd is installed, as an absolute path, or None when it is not.

    Absolute because sshd re-executes itself for every connection and refuses to
    start from a relative path.
    """
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return None


@contextmanager
def start_ssh_nodes(
    count: int,
    workdir: Path,
    *,
    env: Mapping[str, str] = _NO_ENV,
    ports: Sequence[int] | None = None,
    launcher: Sequence[str] = (),
    root_host_keys: Sequence[str] = (),
) -> Iterator[SshNodes]:
    """Start ``count`` sshd nodes on loopback; stop them all on exit.

    Everything lives under ``workdir``: the client key and ``authorized_keys``,
    ``known_hosts``, and per node ``node<i>/`` with its host key, sshd_config,
    pid file, ``sshd.log`` and the empty node root ``node<i>/root``. All
    daemons are started before any is waited for, so dozens start in about the
    time of one. Nodes log in as the current user: an unprivileged sshd can
    only serve the user it runs as.

    Args:
        count: How many nodes.
        workdir: An empty directory the caller owns and removes.
        env: More session variables, set by sshd next to ``TXSETUP_ROOT``.
        ports: One port per node; 0 picks a free one. By default all are picked,
            and a node whose port was taken meanwhile is retried once elsewhere.
        launcher: Words put in front of every sshd command line, so the daemons
            and all their sessions run in a context the caller prepares — for
            example ``nsenter --mount=/proc/PID/ns/mnt --`` to serve from a
            private mount namespace, where a path such as Ganeti's
            ``/usr/lib/ganeti/node-daemon-setup`` can lead elsewhere than on
            the machine. The launcher must ``exec`` sshd in place: readiness
            compares sshd's pid file with the pid that was started.
        root_host_keys: Key kinds (``ecdsa``, ``rsa``...) whose host key sshd
            also loads from the node root, ``<root>/etc/ssh/ssh_host_<kind>_key``,
            as a node's sshd loads ``/etc/ssh``'s: so what ``txsetup ssh-setup``
            installs there is what the node serves once sshd reads its keys
            again. sshd skips a file that is missing (it always has the node's
            own ed25519 key), so the root can start empty.

    Yields:
        The running nodes and the client options to reach them.

    Raises:
        RuntimeError: sshd or ssh-keygen is missing, or a node failed to start
            (the message holds the tail of its log). No sshd is left running.
        ValueError: ``ports`` has the wrong length, ``env`` cannot be passed,
            or a ``root_host_keys`` kind is not one OpenSSH knows.
    """
    workdir, daemons, settings = _prepare(
        count, workdir, env=env, ports=ports, launcher=launcher, root_host_keys=root_host_keys
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        for daemon in daemons:
            daemon.write_config(settings)
            daemon.spawn(settings, started)
        wait_ready(daemons, settings, started)
        yield _running(daemons, workdir)
    finally:
        stop_all(started)


def _openssh() -> tuple[str, str]:
    """sshd and ssh-keygen, or a RuntimeError saying they must be installed."""
    sshd = sshd_path()
    keygen = shutil.which("ssh-keygen")
    if sshd is None or keygen is None:
        raise RuntimeError("OpenSSH sshd and ssh-keygen must be installed")
    return sshd, keygen


def _wanted_ports(count: int, ports: Sequence[int] | None) -> list[int]:
    """One port per node, 0 where one is to be picked."""
    wanted = list(ports) if ports is not None else [0] * count
    if len(wanted) != count:
        raise ValueError(f"{len(wanted)} ports given for {count} nodes")
    return wanted


def _prepare(
    count: int,
    workdir: Path,
    *,
    env: Mapping[str, str],
    ports: Sequence[int] | None,
    launcher: Sequence[str],
    root_host_keys: Sequence[str],
) -> tuple[Path, list[SshdProcess], SshdSettings]:
    """Check the request, then make each node's directory, root, host key and port.

    Returns:
        ``workdir`` resolved, the nodes' sshd processes to start, and their settings.
    """
    sshd, keygen = _openssh()
    wanted = _wanted_ports(count, ports)
    variables = checked_env(env)
    unknown = sorted(set(root_host_keys) - _HOST_KEY_KINDS)
    if unknown:
        raise ValueError(f"unknown host key kinds: {', '.join(unknown)}")
    if os.geteuid() == 0:
        ensure_privsep_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    daemons = [SshdProcess(index, workdir, port) for index, port in enumerate(wanted)]
    for daemon in daemons:
        daemon.dir.mkdir()
        daemon.root.mkdir()
        daemon.root.chmod(0o755)
    client_key = workdir / _CLIENT_KEY
    generate_keys(keygen, [client_key, *(daemon.host_key for daemon in daemons)])
    (workdir / "authorized_keys").write_bytes(Path(f"{client_key}.pub").read_bytes())
    auto = [daemon for daemon in daemons if daemon.auto_port]
    taken = [daemon.port for daemon in daemons if not daemon.auto_port]
    for daemon, port in zip(auto, free_ports(len(auto), avoid=taken), strict=True):
        daemon.port = port
    penalties = daemons and supports_penalty_switch(sshd, daemons[0].host_key)
    settings = SshdSettings(
        sshd=sshd,
        launcher=tuple(launcher),
        authorized_keys=workdir / "authorized_keys",
        env=tuple(variables),
        extra_lines=("PerSourcePenalties no",) if penalties else (),
        root_host_keys=tuple(root_host_keys),
    )
    return workdir, daemons, settings


def _running(daemons: Sequence[SshdProcess], workdir: Path) -> SshNodes:
    """The nodes once every sshd serves, with the client options that reach them."""
    known_hosts = workdir / "known_hosts"
    write_known_hosts(known_hosts, [(daemon.port, daemon.host_key) for daemon in daemons])
    user = pwd.getpwuid(os.geteuid()).pw_name
    nodes = tuple(
        SshNode(f"{user}@{HOST}:{daemon.port}", daemon.port, daemon.root, daemon.started.pid)
        for daemon in daemons
    )
    return SshNodes(
        nodes=nodes,
        ssh_options=(
            f"IdentityFile={workdir / _CLIENT_KEY}",
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={known_hosts}",
            "StrictHostKeyChecking=yes",
            "LogLevel=ERROR",
        ),
        client_key=workdir / _CLIENT_KEY,
    )
