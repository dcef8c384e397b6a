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

Standard library only, Linux only (it reads ``/proc`` to clean up sessions).
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

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

__all__ = ["HOST", "SshNode", "SshNodes", "sshd_path", "start_ssh_nodes"]

HOST: Final = "127.0.0.1"
ROOT_VARIABLE: Final = "TXSETUP_ROOT"
_PRIVSEP_DIR: Final = Path("/run/sshd")
_START_WAIT: Final = 10.0
_STOP_WAIT: Final = 5.0
_FREEZE_WAIT: Final = 1.0
_POLL_INTERVAL: Final = 0.02
_PROBE_TIMEOUT: Final = 2.0
_LOG_TAIL: Final = 2000
_PORT_TAKEN: Final = b"Address already in use"
_NO_ENV: Final[Mapping[str, str]] = MappingProxyType({})
_HOST_KEY_KINDS: Final = frozenset({"dsa", "ecdsa", "ed25519", "rsa"})
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def _quote(value: str | Path) -> str:
    """One sshd_config argument, double-quoted so spaces, ``#`` and quotes survive.

    sshd splits config lines like a shell would for quoting: inside double
    quotes a backslash escapes ``\\`` and ``"``. A line cannot hold a newline.
    """
    text = str(value)
    if any(char in text for char in "\0\r\n"):
        raise ValueError(f"sshd_config cannot hold a newline or NUL: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _checked_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The caller's session variables, refusing what sshd would misread or drop.

    Raises:
        ValueError: A name is not a plain shell variable name, a value holds a
            newline, or the caller tries to set ``TXSETUP_ROOT`` (sshd keeps the
            first value of a variable, so the node's root would silently win).
    """
    items = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if name == ROOT_VARIABLE:
            raise ValueError(f"{ROOT_VARIABLE} is each node's own root; it cannot be set")
        _quote(value)
        items.append((name, value))
    return items


def _free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct loopback ports nothing is bound to right now.

    All probe sockets stay bound until every port is chosen, so the kernel
    cannot hand out the same port twice; they are closed (never listened on,
    so no TIME_WAIT) before sshd binds. Another process may still take a port
    in between, which is why a node is retried once on a fresh port.
    """
    taken = set(avoid)
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            probe = stack.enter_context(socket.socket())
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
            if port not in taken:
                taken.add(port)
                ports.append(port)
    return ports


def _generate_keys(keygen: str, keys: Sequence[Path]) -> None:
    """Create ed25519 keys without passphrase, all ssh-keygen runs in parallel.

    Parallel because a suite may start dozens of nodes, one host key each.
    Every started ssh-keygen is waited for, even when a later one fails to start.

    Raises:
        RuntimeError: An ssh-keygen run failed (its output is in the message).
    """
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    failures = []
    try:
        for key in keys:
            comment = f"txsetup-{key.parent.name}-{key.name}"
            argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            running.append((key, proc))
    finally:
        for key, proc in running:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"{key}: {output.decode(errors='replace').strip()}")
    if failures:
        raise RuntimeError("ssh-keygen failed: " + "; ".join(failures))


def _supports_penalty_switch(sshd: str, host_key: Path) -> bool:
    """Whether this sshd knows ``PerSourcePenalties`` (OpenSSH 9.8 and later).

    Those versions refuse a source for a while after failed or abandoned logins,
    and every node here is reached from 127.0.0.1: readiness probes and tests of
    failing logins would lock the suite out. Older versions reject the keyword,
    so it is only written when ``sshd -t`` accepts it.
    """
    probe = [sshd, "-t", "-f", os.devnull, "-o", f"HostKey={host_key}"]
    run = subprocess.run(
        [*probe, "-o", "PerSourcePenalties=no"], capture_output=True, check=False, timeout=30
    )
    return run.returncode == 0


def _ensure_privsep_dir() -> None:
    """Create sshd's privilege separation directory, which root's sshd requires.

    Packages create it at boot through tmpfiles.d; containers often lack it.
    """
    with contextlib.suppress(FileExistsError):
        _PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        _PRIVSEP_DIR.chmod(0o755)


def _probe(port: int) -> bool:
    """Whether an SSH server answers on ``port``: connect and read its banner.

    The probe answers with an identification line of its own before hanging
    up: sshd logs an abandoned identification exchange as an error, which
    would litter the log whose tail explains real failures.
    """
    try:
        with (
            socket.create_connection((HOST, port), timeout=_PROBE_TIMEOUT) as conn,
            conn.makefile("rb") as reader,
        ):
            banner = reader.readline(256)
            conn.sendall(b"SSH-2.0-txsetup-sshnodes-probe\r\n")
            return banner.startswith(b"SSH-")
    except OSError:
        return False


@dataclass(frozen=True)
class _Settings:
    """What every node's sshd_config and command line share within one start."""

    sshd: str
    launcher: tuple[str, ...]
    authorized_keys: Path
    env: tuple[tuple[str, str], ...]
    extra_lines: tuple[str, ...]
    root_host_keys: tuple[str, ...] = ()


class _Daemon:
    """One node's sshd while it starts: mutable until ready, then an :class:`SshNode`."""

    def __init__(self, index: int, workdir: Path, port: int) -> None:
        self.name = f"node{index}"
        self.dir = workdir / self.name
        self.root = self.dir / "root"
        self.config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.pidfile = self.dir / "sshd.pid"
        self.log = self.dir / "sshd.log"
        self.port = port
        self.auto_port = port == 0
        self.retried = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.deadline = 0.0

    def write_config(self, settings: _Settings) -> None:
        """Write this node's sshd_config for its current port.

        All variables go on one ``SetEnv`` line: sshd ignores every ``SetEnv``
        line after the first. ``%`` is doubled in ``AuthorizedKeysFile``, which
        expands ``%``-tokens.
        """
        variables = [(ROOT_VARIABLE, str(self.root)), *settings.env]
        setenv = " ".join(_quote(f"{name}={value}") for name, value in variables)
        lines = [
            f"ListenAddress {HOST}",
            f"Port {self.port}",
            f"HostKey {_quote(self.host_key)}",
            *(
                f"HostKey {_quote(self.root / f'etc/ssh/ssh_host_{kind}_key')}"
                for kind in settings.root_host_keys
            ),
            f"PidFile {_quote(self.pidfile)}",
            f"AuthorizedKeysFile {_quote(str(settings.authorized_keys).replace('%', '%%'))}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PermitUserRC no",
            f"SetEnv {setenv}",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LogLevel ERROR",
            *settings.extra_lines,
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def spawn(self, settings: _Settings, started: list[subprocess.Popen[bytes]]) -> None:
        """Start sshd in the foreground, logging to this node's log file.

        sshd stays in the caller's process group, so a runner that kills the
        group on a timeout takes the daemons with it. A launcher (see
        :func:`start_ssh_nodes`) goes in front of sshd's own argv.
        """
        self.pidfile.unlink(missing_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *settings.launcher,
                    settings.sshd,
                    "-D",
                    "-e",
                    "-f",
                    str(self.config),
                    "-E",
                    str(self.log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        started.append(self.proc)
        self.deadline = time.monotonic() + _START_WAIT

    @property
    def started(self) -> subprocess.Popen[bytes]:
        """The current attempt's sshd; only asked for after :meth:`spawn`."""
        if self.proc is None:
            raise RuntimeError(f"sshd of {self.name} was never started")
        return self.proc

    def state(self) -> str:
        """``ready``, ``pending``, ``port-taken``, ``exited`` or ``timeout``.

        Ready needs the pid file holding this sshd's pid (written only after it
        bound its port) *and* an SSH banner on the port: either alone could be
        another process that grabbed the port.
        """
        if self.started.poll() is not None:
            return "port-taken" if _PORT_TAKEN in self.log_text() else "exited"
        if self._pidfile_is_ours() and _probe(self.port):
            return "ready"
        return "timeout" if time.monotonic() > self.deadline else "pending"

    def _pidfile_is_ours(self) -> bool:
        """Whether sshd wrote its pid file yet (it does so after binding)."""
        try:
            return int(self.pidfile.read_text().strip()) == self.started.pid
        except (OSError, ValueError):
            return False

    def log_text(self) -> bytes:
        """What sshd logged during the current attempt."""
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_offset)
                return log.read()
        except OSError:
            return b""

    def failure(self, why: str) -> str:
        """A start-up failure message with the tail of the log, for the RuntimeError."""
        tail = self.log_text()[-_LOG_TAIL:].decode(errors="replace").strip()
        return f"sshd of {self.name} on {HOST}:{self.port} {why}; {self.log}:\n{tail}"


def _wait_ready(
    daemons: Sequence[_Daemon], settings: _Settings, started: list[subprocess.Popen[bytes]]
) -> None:
    """Wait until every sshd serves, retrying a node once if its port was taken.

    Raises:
        RuntimeError: An sshd exited or did not serve within the wait.
    """
    pending = list(daemons)
    while pending:
        still = []
        for daemon in pending:
            state = daemon.state()
            if state == "pending":
                still.append(daemon)
            elif state == "port-taken" and daemon.auto_port and not daemon.retried:
                daemon.retried = True
                daemon.port = _free_ports(1, avoid=(d.port for d in daemons))[0]
                daemon.write_config(settings)
                daemon.spawn(settings, started)
                still.append(daemon)
            elif state == "timeout":
                raise RuntimeError(daemon.failure(f"did not serve within {_START_WAIT:g} s"))
            elif state != "ready":
                code = daemon.started.returncode
                raise RuntimeError(daemon.failure(f"exited with {code}"))
        pending = still
        if pending:
            time.sleep(_POLL_INTERVAL)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a live process, None when gone or a zombie.

    The start time tells a process from a later one that reused its pid.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold ") "
    state = fields[0]
    if state in "ZX":
        return None
    return state, int(fields[1]), int(fields[19])


def _children() -> dict[int, list[int]]:
    """Every live process's children, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            children.setdefault(info[1], []).append(int(entry))
    return children


def _signal(pid: int, signum: signal.Signals) -> None:
    """Send a signal to a process that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _freeze_tree(roots: Sequence[int]) -> dict[int, int]:
    """Stop ``roots`` and all their descendants; return ``{pid: start time}``.

    sshd's per-connection processes detach into sessions of their own and
    outlive the listener, so they are found through the process tree. Each
    generation is stopped before its children are listed, so no process can
    fork a child the walk misses, nor die and orphan one to init.
    """
    frozen: dict[int, int] = {}
    generation = list(roots)
    while generation:
        for pid in generation:
            _signal(pid, signal.SIGSTOP)
        deadline = time.monotonic() + _FREEZE_WAIT
        for pid in generation:
            while (info := _stat(pid)) is not None and info[0] not in "tT":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            if info is not None:
                frozen[pid] = info[2]
        children = _children()
        generation = [c for p in frozen for c in children.get(p, ()) if c not in frozen]
        generation = [pid for pid in generation if _stat(pid) is not None]
    return frozen


def _still_there(pid: int, start: int) -> bool:
    """Whether the process that had ``pid`` at ``start`` is still alive."""
    info = _stat(pid)
    return info is not None and info[2] == start


def _stop(started: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate every sshd and its sessions; SIGKILL what outlives the wait.

    Our sshd processes are reaped; their sessions, no children of ours, are
    only made to exit (init reaps them).
    """
    live = [proc for proc in started if proc.poll() is None]
    tree = _freeze_tree([proc.pid for proc in live]) if live else {}
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    for pid in tree:
        _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + _STOP_WAIT
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    others = {pid: start for pid, start in tree.items() if pid not in {p.pid for p in started}}
    while time.monotonic() < deadline and any(_still_there(*item) for item in others.items()):
        time.sleep(_POLL_INTERVAL)
    for pid, start in others.items():
        if _still_there(pid, start):
            _signal(pid, signal.SIGKILL)
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


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
    sshd = sshd_path()
    keygen = shutil.which("ssh-keygen")
    if sshd is None or keygen is None:
        raise RuntimeError("OpenSSH sshd and ssh-keygen must be installed")
    wanted = list(ports) if ports is not None else [0] * count
    if len(wanted) != count:
        raise ValueError(f"{len(wanted)} ports given for {count} nodes")
    variables = _checked_env(env)
    unknown = sorted(set(root_host_keys) - _HOST_KEY_KINDS)
    if unknown:
        raise ValueError(f"unknown host key kinds: {', '.join(unknown)}")
    if os.geteuid() == 0:
        _ensure_privsep_dir()
    user = pwd.getpwuid(os.geteuid()).pw_name
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    daemons = [_Daemon(index, workdir, port) for index, port in enumerate(wanted)]
    for daemon in daemons:
        daemon.dir.mkdir()
        daemon.root.mkdir()
        daemon.root.chmod(0o755)
    client_key = workdir / "client_ed25519"
    authorized_keys = workdir / "authorized_keys"
    known_hosts = workdir / "known_hosts"
    _generate_keys(keygen, [client_key, *(daemon.host_key for daemon in daemons)])
    authorized_keys.write_bytes(Path(f"{client_key}.pub").read_bytes())
    auto = [daemon for daemon in daemons if daemon.auto_port]
    taken = [daemon.port for daemon in daemons if not daemon.auto_port]
    for daemon, port in zip(auto, _free_ports(len(auto), avoid=taken), strict=True):
        daemon.port = port
    penalties = daemons and _supports_penalty_switch(sshd, daemons[0].host_key)
    settings = _Settings(
        sshd=sshd,
        launcher=tuple(launcher),
        authorized_keys=authorized_keys,
        env=tuple(variables),
        extra_lines=("PerSourcePenalties no",) if penalties else (),
        root_host_keys=tuple(root_host_keys),
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        for daemon in daemons:
            daemon.write_config(settings)
            daemon.spawn(settings, started)
        _wait_ready(daemons, settings, started)
        known_hosts.write_text(
            "".join(
                f"[{HOST}]:{d.port} {Path(f'{d.host_key}.pub').read_text().strip()}\n"
                for d in daemons
            )
        )
        nodes = []
        for daemon in daemons:
            spec = f"{user}@{HOST}:{daemon.port}"
            nodes.append(SshNode(spec, daemon.port, daemon.root, daemon.started.pid))
        yield SshNodes(
            nodes=tuple(nodes),
            ssh_options=(
                f"IdentityFile={client_key}",
                "IdentitiesOnly=yes",
                f"UserKnownHostsFile={known_hosts}",
                "StrictHostKeyChecking=yes",
                "LogLevel=ERROR",
            ),
            client_key=client_key,
        )
    finally:
        _stop(started)
