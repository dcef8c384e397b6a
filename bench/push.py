"""``txsetup push`` against real sshd nodes: the master side's figures of docs/benchmarks.md.

``python -m bench.push [--quick]`` starts real OpenSSH ``sshd`` "nodes" on
loopback (:mod:`txsetup.demo.sshnodes`), builds a realistic master root (the
ssconf of a 1,000-node cluster, ``server.pem``, ``hmac.key``) and measures,
in one run:

1. one node: ``txsetup push`` against copying the same files with one ``scp``
   each (the seed's "before"), plus the parts of a push (a bare ``ssh true``,
   the node-side run without ssh) to show where its time goes;
2. 16 nodes with ``--parallel 8`` against one node, and 16 single-node pushes
   one after another against one 16-node push;
3. 64 nodes with ``--parallel 8``: nodes per second against the machine's
   limit, its cores divided by the CPU seconds of one node-side run;
4. an atomic push (``--atomic``) to 16 nodes against a plain push to the
   same 16.

Variants of a figure alternate (A B A B ...) so that drift in the machine's
load hits all of them alike; every figure is a ratio of variants from the
same run, reported as the median with min and max. Timings are wall clock;
CPU time is counted for our own children (``RUSAGE_CHILDREN``: the push
process with its ssh clients, the scp clients, a local node-side run) and,
on the node side, for each sshd's reaped sessions (``cutime``/``cstime`` in
``/proc/PID/stat``: sshd, the session shell and the remote ``txsetup``). What
the whole machine spent beyond that is reported as other load, because the
machine is shared and a busy neighbour inflates absolute times. The result
is written to ``bench/results.md``. Standard library and the project only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench.pushparts import PARTS, parts_of, stamped_command
from txsetup import __version__
from txsetup.demo.certs import generate_node_certificate
from txsetup.demo.sshnodes import SshNode, SshNodes, start_ssh_nodes
from txsetup.master.payload import build_payload
from txsetup.node.files import GANETI_DIR, ssconf_content
from txsetup.node.ganeti_fields import SSCONF_KEYS

__all__ = ["main", "ssconf_values", "write_master"]

CLUSTER: Final = "cluster.example.com"
CLUSTER_NODES: Final = 1000
FULL_REPS: Final = 7
QUICK_REPS: Final = 3
PARALLEL: Final = 8
MANY: Final = 16
MOST: Final = 64
QUICK_MANY: Final = 8  # --quick: a smoke run in about two minutes
QUICK_MOST: Final = 16
SCP_TARGET: Final = 20.0  # push at least this many times faster than one scp per file
SPREAD_TARGET: Final = 2.5  # 16 nodes in at most this many times one node's wall time
ATOMIC_TARGET: Final = 1.5  # an atomic push in at most this many times a plain push's wall
NODE_TIMEOUT: Final = 300.0
SETTLE_WAIT: Final = 5.0
OTHER_LOAD_NOTE: Final = 0.05  # mention other load above this share of the machine
RESULTS: Final = Path(__file__).with_name("results.md")
_TICK: Final = os.sysconf("SC_CLK_TCK")


# --- the master's files ------------------------------------------------------------------------


def ssconf_values(nodes: int = CLUSTER_NODES) -> dict[str, str]:
    """Every ssconf key of Ganeti's set, as a cluster of ``nodes`` nodes holds them.

    The per-node keys carry one line per node, in the formats Ganeti writes
    (``name ip``, ``name=True``, ``uuid=digest``...), so the document has the
    size a master of that cluster really sends (about 0.4 MB for 1,000 nodes);
    the others hold small values, some empty as on a cluster without instances.

    Raises:
        RuntimeError: the values do not cover the ssconf key set exactly (the
            set changed and this benchmark would silently stop being realistic).
    """
    names = [f"node{i:04d}.{CLUSTER}" for i in range(nodes)]
    primary = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(nodes)]
    secondary = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(nodes)]
    uuids = [str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) for name in names]
    digests = [hashlib.sha256(name.encode()).hexdigest() for name in names]
    group = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"default.{CLUSTER}"))
    per_node = {
        "node_list": names,
        "online_nodes": names,
        "master_candidates": names,
        "node_primary_ips": [f"{n} {ip}" for n, ip in zip(names, primary, strict=True)],
        "node_secondary_ips": [f"{n} {ip}" for n, ip in zip(names, secondary, strict=True)],
        "master_candidates_ips": primary,
        "master_candidates_certs": [f"{u}={d}" for u, d in zip(uuids, digests, strict=True)],
        "node_vm_capable": [f"{n}=True" for n in names],
        "ssh_ports": [f"{n}=22" for n in names],
    }
    small = {
        "cluster_name": CLUSTER,
        "cluster_tags": "",
        "file_storage_dir": "/srv/ganeti/file-storage",
        "shared_file_storage_dir": "/srv/ganeti/shared-file-storage",
        "gluster_storage_dir": "/var/run/ganeti/gluster",
        "master_ip": "192.0.2.1",
        "master_netdev": "br0",
        "master_netmask": "24",
        "master_node": names[0],
        "offline_nodes": "",
        "primary_ip_family": "2",
        "instance_list": "",
        "release_version": "3.0.2",
        "hypervisor_list": "kvm",
        "maintain_node_health": "False",
        "uid_pool": "",
        "nodegroups": f"{group} default",
        "networks": "",
        "enabled_user_shutdown": "False",
        "hvparams_chroot": "init_script=/ganeti-chroot",
        "hvparams_lxc": "cpu_mask=all\nlxc_cgroup_use=",
        "hvparams_fake": "migration_mode=live",
        "hvparams_xen-hvm": "boot_order=cd\nkernel_path=/usr/lib/xen/boot/hvmloader",
        "hvparams_kvm": "boot_order=disk\nkernel_path=\nmachine_version=\nsecurity_model=none",
        "hvparams_xen-pvm": "bootloader_path=\nkernel_path=/boot/vmlinuz-3-xenU",
    }
    values = {key: "\n".join(lines) for key, lines in per_node.items()} | small
    if set(values) != SSCONF_KEYS:
        raise RuntimeError(f"ssconf keys differ from Ganeti's: {sorted(set(values) ^ SSCONF_KEYS)}")
    return values


def write_master(root: Path, pem: str) -> list[Path]:
    """A master root as Ganeti keeps it; returns its files (what per-file scp copies).

    ``hmac.key`` is random hex, as Ganeti generates it; both secrets are 0400
    as on a master, which changes nothing for root reading them.
    """
    ganeti = root / GANETI_DIR
    ganeti.mkdir(parents=True)
    for key, value in ssconf_values().items():
        (ganeti / f"ssconf_{key}").write_bytes(ssconf_content(value))
    for name, text in (("server.pem", pem), ("hmac.key", secrets.token_hex(32) + "\n")):
        (ganeti / name).write_text(text)
        (ganeti / name).chmod(0o400)
    return sorted(ganeti.iterdir())


# --- measuring ----------------------------------------------------------------------------------


def _own_children_cpu() -> float:
    """CPU seconds of every child we have reaped so far, with their own reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reaped_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` has reaped: an sshd's finished sessions.

    A node's sessions are sshd's children, not ours, so ``RUSAGE_CHILDREN``
    never sees them; ``cutime``/``cstime`` of the listener does, once it has
    reaped them (each session waits for its shell, the shell for txsetup).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) / _TICK


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (every process, all cores)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / _TICK


def _settle(pids: Sequence[int]) -> None:
    """Wait until each sshd has reaped its sessions, so their CPU time is counted.

    A client can exit a moment before the node's session process does.
    """
    deadline = time.monotonic() + SETTLE_WAIT
    for pid in pids:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if not children.exists():
            time.sleep(0.2)  # kernels without the file: a session ends within this
            continue
        while children.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.01)


@dataclass(frozen=True)
class Sample:
    """One timed run of one variant.

    Attributes:
        wall: Wall-clock seconds.
        local_cpu: CPU seconds of our own children: the push process and its
            ssh clients, the scp or ssh clients, or a local node-side run.
        node_cpu: CPU seconds of the nodes' sshd sessions (sshd, shell, the
            remote node-side run).
        other_cpu: What the rest of the machine spent meanwhile: a neighbour's
            load, which inflates our wall time.
        node_ms: Each node's ``duration_ms`` as push reported it (ssh included).
    """

    wall: float
    local_cpu: float
    node_cpu: float
    other_cpu: float
    node_ms: tuple[int, ...] = ()

    @property
    def cpu(self) -> float:
        """All CPU seconds this run cost, on both sides."""
        return self.local_cpu + self.node_cpu


def measure(action: Callable[[], tuple[int, ...]], listeners: Sequence[int]) -> Sample:
    """Time ``action`` and count the CPU it cost, locally and in the given sshds."""
    busy, local = _machine_busy(), _own_children_cpu()
    node = sum(_reaped_cpu(pid) for pid in listeners)
    started = time.perf_counter()
    node_ms = action()
    wall = time.perf_counter() - started
    busy = _machine_busy() - busy
    _settle(listeners)
    local = _own_children_cpu() - local
    node = sum(_reaped_cpu(pid) for pid in listeners) - node
    return Sample(wall, local, node, max(0.0, busy - local - node), node_ms)


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: an untimed preparation, then the timed action."""

    name: str
    prepare: Callable[[], None]
    action: Callable[[], tuple[int, ...]]
    listeners: tuple[int, ...] = ()


def alternate(reps: int, variants: Sequence[Variant], label: str) -> dict[str, list[Sample]]:
    """Run the variants in turn, ``reps`` rounds (A B C A B C ...); samples by name.

    Alternating rather than running all A then all B spreads any drift of the
    machine's load (a neighbour's job starting, thermal throttling) over every
    variant instead of biasing one.
    """
    samples: dict[str, list[Sample]] = {variant.name: [] for variant in variants}
    for rep in range(reps):
        line = []
        for variant in variants:
            variant.prepare()
            sample = measure(variant.action, variant.listeners)
            samples[variant.name].append(sample)
            line.append(f"{variant.name} {sample.wall:.2f}s")
        _progress(f"{label} {rep + 1}/{reps}: " + ", ".join(line))
    return samples


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- what is measured ---------------------------------------------------------------------------


def _txsetup() -> str:
    """The installed console script next to this interpreter, as an absolute path.

    Absolute because the nodes' sessions run it too, with sshd's default PATH.
    """
    beside = Path(sys.executable).with_name("txsetup")
    found = str(beside) if beside.exists() else shutil.which("txsetup")
    if found is None:
        raise RuntimeError("the txsetup console script is not installed")
    return str(Path(found).absolute())


def _fresh(root: Path) -> None:
    """Empty a node root and lay out a new node's directories (Ganeti's package made them)."""
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (root / GANETI_DIR).mkdir(parents=True)
    (root / "var/lock").mkdir()


@dataclass
class Bench:
    """The running nodes, the master root, and the commands the variants run."""

    cluster: SshNodes
    master: Path
    files: list[Path]
    local_root: Path
    document: bytes
    txsetup: str = field(default_factory=_txsetup)

    def fresh(self, nodes: Sequence[SshNode]) -> Callable[[], None]:
        """A preparation that gives ``nodes`` empty roots: every run adds new nodes."""

        def prepare() -> None:
            for node in nodes:
                _fresh(node.root)

        return prepare

    def push(
        self,
        nodes: Sequence[SshNode],
        breakdowns: list[dict[str, float]] | None = None,
        *,
        atomic: bool = False,
    ) -> tuple[int, ...]:
        """One ``txsetup push`` to ``nodes`` (``--atomic``: prepare, decide, commit); every
        node must commit.

        With ``breakdowns`` (one node), the node's shell also prints when it
        started, and where the push's time went is appended to the list
        (:mod:`bench.pushparts`).

        Raises:
            RuntimeError: push failed or a node did not commit (stderr's tail).
        """
        ssh_options = [arg for opt in self.cluster.ssh_options for arg in ("--ssh-option", opt)]
        command = f"{shlex.quote(self.txsetup)} node-daemon-setup"
        argv = [
            self.txsetup,
            "push",
            "--log-format",
            "json",
            "--from-root",
            str(self.master),
            "--remote-command",
            command if breakdowns is None else stamped_command(command),
            *ssh_options,
            "--parallel",
            str(PARALLEL),
            "--timeout",
            str(NODE_TIMEOUT),
            "--no-start-node-daemon",
            *(["--atomic", "--remote-txsetup", shlex.quote(self.txsetup)] if atomic else []),
            *(node.spec for node in nodes),
        ]
        spawned = time.time()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        exited = time.time()
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        results = [r for r in lines if "node" in r]  # an atomic push's fleet line aside
        committed = [r for r in results if r.get("outcome") == "committed"]
        if proc.returncode != 0 or len(committed) != len(nodes):
            raise RuntimeError(f"push exited {proc.returncode}: {proc.stderr[-3000:]}")
        if breakdowns is not None:
            breakdowns.append(parts_of(proc.stderr, spawned, exited))
        return tuple(int(r["duration_ms"]) for r in results)

    def push_each(self, nodes: Sequence[SshNode]) -> tuple[int, ...]:
        """One single-node push after another: a script looping over nodes."""
        return tuple(ms for node in nodes for ms in self.push([node]))

    def scp_each(self, node: SshNode) -> tuple[int, ...]:
        """Copy every master file with its own ``scp`` run: one SSH connection per file.

        Raises:
            RuntimeError: an scp failed.
        """
        for path in self.files:
            argv = self.cluster.scp_argv(node, [path], node.root / GANETI_DIR)
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"scp of {path.name} exited {proc.returncode}: {proc.stderr}")
        return ()

    def ssh_true(self, node: SshNode) -> tuple[int, ...]:
        """A bare SSH connection running ``true``: what each connection costs by itself."""
        subprocess.run(self.cluster.ssh_argv(node, "true"), capture_output=True, check=True)
        return ()

    def local_run(self) -> tuple[int, ...]:
        """The node-side run alone, no ssh: ``txsetup node-daemon-setup`` on a local root.

        Raises:
            RuntimeError: the run did not commit.
        """
        argv = [self.txsetup, "node-daemon-setup", "--root", str(self.local_root)]
        proc = subprocess.run(argv, input=self.document, capture_output=True, check=False)
        outcome = json.loads(proc.stdout or b"{}").get("outcome")
        if proc.returncode != 0 or outcome != "committed":
            raise RuntimeError(f"node-daemon-setup exited {proc.returncode}: {proc.stderr!r}")
        return ()

    def local_variant(self) -> Variant:
        """The node-side run on a fresh local root."""
        return Variant("local", lambda: _fresh(self.local_root), self.local_run)


@contextlib.contextmanager
def started_bench(work: Path, nodes: int) -> Iterator[Bench]:
    """Write the master root, start ``nodes`` sshd nodes; stop them on exit.

    The sessions get ``SHLVL=1`` so bash skips root's ``~/.bashrc``: a
    machine's rc files would otherwise add their own start-up to every
    connection, push's one and each scp's alike.
    """
    master = work / "master"
    files = write_master(master, generate_node_certificate(CLUSTER, key_type="ec"))
    # exactly the bytes push sends a node on 127.0.0.1: its node_name is the host
    document = build_payload(master, start_node_daemon=False).for_node("127.0.0.1")
    local_root = work / "local-root"
    local_root.mkdir()
    with start_ssh_nodes(nodes, work / "nodes", env={"SHLVL": "1"}) as cluster:
        yield Bench(cluster, master, files, local_root, document)


# --- the figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Median with min and max of one quantity over the repetitions."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))

    def text(self, unit: str = "s", digits: int = 2) -> str:
        """``1.23 s [1.10-1.40]``."""
        d = digits
        return f"{self.median:.{d}f}{unit} [{self.low:.{d}f}-{self.high:.{d}f}]"

    def percent(self) -> str:
        """``48% [40%-63%]``."""
        return f"{self.median:.0%} [{self.low:.0%}-{self.high:.0%}]"


def _ratios(top: Sequence[Sample], bottom: Sequence[Sample]) -> Spread:
    """Per-repetition ratios of wall times, top over bottom, paired as they alternated."""
    return Spread.of([a.wall / b.wall for a, b in zip(top, bottom, strict=True)])


def _walls(samples: Sequence[Sample]) -> Spread:
    return Spread.of([s.wall for s in samples])


@dataclass
class Report:
    """Everything results.md says, filled figure by figure."""

    command: str
    reps: int
    many: int
    most: int
    machine: list[str]
    summary: list[tuple[str, str, str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)
    ssh_cpu: tuple[float, float] = (0.0, 0.0)  # a bare connection: client, sshd (figure 1)

    def note_load(self, samples: dict[str, list[Sample]]) -> None:
        """Keep each sample's share of the machine that other processes used."""
        cores = _cores()
        self.other_load += [
            s.other_cpu / (s.wall * cores) for runs in samples.values() for s in runs
        ]


def _cores() -> int:
    """Cores this process may run on (what the nodes and the master share here)."""
    return len(os.sched_getaffinity(0))


def _mint_key() -> tuple[int, ...]:
    """client.pem's key as the node makes it (RSA 2048), in this process: the mint's cost."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ()


def _breakdown_rows(breakdowns: Sequence[Mapping[str, float]], push_wall: float) -> list[str]:
    """The parts of the push's wall time, each its median [min-max] over the repetitions."""
    names = list(dict.fromkeys(name for parts in breakdowns for name in parts))
    names = list(PARTS[:3]) + [n for n in names if n.startswith("step ")] + list(PARTS[3:])
    lines = []
    for name in names:
        spread = Spread.of([parts.get(name, 0.0) for parts in breakdowns])
        label = _PART_WORDS.get(name, f"node: step `{name.removeprefix('step ')}`")
        lines.append(f"| {label} | {spread.text()} | {spread.median / push_wall:.0%} |")
    total = Spread.of([sum(parts.values()) for parts in breakdowns])
    return [*lines, f"| all parts | {total.text()} | {total.median / push_wall:.0%} |"]


_PART_WORDS: Final = {
    "master start-up": "master: start-up (Python, imports, payload read, built and checked)",
    "ssh": "ssh: TCP, key exchange, authentication, session, login shell",
    "node start-up": "node: start-up (Python, imports, reading the document)",
    "step verify_cert": "node: step `verify_cert` (node certificate checked)",
    "step stage": "node: step `stage` (client.pem minted, 37 files written and fsynced,"
    " journal `prepared`)",
    "step commit": "node: step `commit` (renames into place, directory fsync)",
    "node, between steps": "node: between steps (journal records, lock release, result)",
    "node exit, ssh close": "node: exit, ssh session closed",
    "master exit": "master: results printed, exit",
}


def figure_one(bench: Bench, reps: int, report: Report) -> None:
    """Push vs one scp per file on one node, and where push's time goes, from the same run."""
    node = bench.cluster.nodes[0]
    pids = (node.pid,)
    breakdowns: list[dict[str, float]] = []
    variants = [
        Variant("push", bench.fresh([node]), lambda: bench.push([node], breakdowns), pids),
        Variant("scp", bench.fresh([node]), lambda: bench.scp_each(node), pids),
        Variant("ssh", lambda: None, lambda: bench.ssh_true(node), pids),
        bench.local_variant(),
        Variant("mint", lambda: None, _mint_key),
    ]
    samples = alternate(reps, variants, "1. push vs scp per file")
    # the key is made in this process, whose CPU the load accounting counts as other load
    report.note_load({name: runs for name, runs in samples.items() if name != "mint"})
    push, scp, ssh, local, mint = (samples[v.name] for v in variants)
    med = statistics.median
    report.ssh_cpu = (med(s.local_cpu for s in ssh), med(s.node_cpu for s in ssh))
    ratio = _ratios(scp, push)
    met = ratio.median >= SCP_TARGET
    n = len(bench.files)
    report.summary.append(
        (
            f"1. one node: {n} files by one `scp` each ÷ one `txsetup push`",
            f"push **{ratio.median:.1f}x** faster [{ratio.low:.1f}-{ratio.high:.1f}]",
            f"≥ {SCP_TARGET:g}x",
            _met(met, full=True),
        )
    )
    push_wall = med(s.wall for s in push)
    per_file = med(s.wall / n for s in scp)
    part = {name: med(parts.get(name, 0.0) for parts in breakdowns) for name in breakdowns[0]}
    rows = [
        ("`txsetup push`, whole command", _walls(push).text(), _cpu(push)),
        (f"{n} x `scp` (one per file)", _walls(scp).text(), _cpu(scp)),
        ("one of those scp runs", Spread.of([s.wall / n for s in scp]).text(), "—"),
        ("bare connection: `ssh node true`", _walls(ssh).text(), _cpu(ssh)),
        ("node-side run alone, no ssh", _walls(local).text(), _cpu(local)),
        ("client.pem's RSA 2048 key alone (in the bench process)", _walls(mint).text(), "—"),
    ]
    report.sections.append(
        "\n".join(
            [
                "## 1. One node: push vs one scp per file",
                "",
                f"A fresh node root before every push and every scp series (a node being added);"
                f" the master holds {n} files ({_size(bench.files)}). Ratio = scp series ÷ push,"
                " per repetition.",
                "",
                "| run | wall, median [min-max] | CPU s median: ours + nodes' sshd |",
                "| --- | --- | --- |",
                *(f"| {a} | {b} | {c} |" for a, b, c in rows),
                "",
                "Where the push's wall time goes, measured inside each timed push (see"
                " `bench/pushparts.py`): the timestamps of push's own events, of the node's"
                " log lines and of the node's login shell starting, all on this machine's clock;"
                " shares of the push's median wall time:",
                "",
                "| part | seconds, median [min-max] | share |",
                "| --- | --- | --- |",
                *_breakdown_rows(breakdowns, push_wall),
                "",
                *_cpu_parts(push, 1, med(s.local_cpu for s in local), report.ssh_cpu),
            ]
        )
    )
    if not met:
        python = part["master start-up"] + part["node start-up"]
        node_work = sum(v for k, v in part.items() if k.startswith("step ")) + part.get(
            "node, between steps", 0.0
        )
        report.unmet.append(
            f"**1. push vs scp per file: {ratio.median:.1f}x, target ≥ {SCP_TARGET:g}x.**"
            f" The scp series is {n} SSH connections of {per_file:.2f} s each, {n * per_file:.1f}"
            f" s in all; 20x would need a push of {n * per_file / SCP_TARGET:.2f} s. One push is"
            f" {push_wall:.2f} s: its one connection {part['ssh']:.2f} s, the start-up of the"
            f" two Python processes (master with its payload, node with the document)"
            f" {python:.2f} s, the node's steps {node_work:.2f} s (of which client.pem's RSA key"
            f" about {med(s.wall for s in mint):.2f} s and the durable writes), the exits"
            f" {part['node exit, ssh close'] + part['master exit']:.2f} s. The ratio is bounded"
            " by files x one connection ÷ (one connection + both start-ups + the node's work);"
            " a cheaper connection (same options for both) lowers it."
        )


def figure_two(bench: Bench, reps: int, report: Report) -> None:
    """16 nodes at --parallel 8 vs one node, and 16 pushes in a row vs one 16-node push."""
    count = report.many
    nodes = bench.cluster.nodes[:count]
    first = nodes[:1]
    pids = tuple(node.pid for node in nodes)
    variants = [
        Variant("one", bench.fresh(first), lambda: bench.push(first), (first[0].pid,)),
        Variant(f"{count}", bench.fresh(nodes), lambda: bench.push(nodes), pids),
        Variant("sequential", bench.fresh(nodes), lambda: bench.push_each(nodes), pids),
    ]
    samples = alternate(reps, variants, f"2. {count} nodes vs 1")
    report.note_load(samples)
    one, many, each = (samples[v.name] for v in variants)
    spread, speedup = _ratios(many, one), _ratios(each, many)
    met = spread.median <= SPREAD_TARGET
    report.summary += [
        (
            f"2a. {count} nodes (`--parallel {PARALLEL}`) ÷ 1 node, wall",
            f"**{spread.median:.2f}x** [{spread.low:.2f}-{spread.high:.2f}]",
            f"≤ {SPREAD_TARGET:g}x",
            _met(met, full=count == MANY),
        ),
        (
            f"2b. {count} single-node pushes in a row ÷ one {count}-node push",
            f"**{speedup.median:.2f}x** [{speedup.low:.2f}-{speedup.high:.2f}]",
            "—",
            "—",
        ),
    ]
    cores = _cores()
    per_node = statistics.median(s.cpu / count for s in many)
    floor = count * per_node / cores
    one_wall = statistics.median(s.wall for s in one)
    busy = statistics.median(s.cpu / (s.wall * cores) for s in many)
    other = statistics.median(s.other_cpu / (s.wall * cores) for s in many)
    rows = [
        ("1 node", _walls(one).text(), _cpu(one)),
        (f"{count} nodes, one push, `--parallel {PARALLEL}`", _walls(many).text(), _cpu(many)),
        (f"{count} single-node pushes in a row", _walls(each).text(), _cpu(each)),
    ]
    report.sections.append(
        "\n".join(
            [
                f"## 2. {count} nodes vs one",
                "",
                "Fresh node roots before every run. Every node is an sshd on this machine,"
                f" so the {count} node-side runs share its {cores} cores with the master.",
                "",
                "| run | wall, median [min-max] | CPU s median: ours + nodes' sshd |",
                "| --- | --- | --- |",
                *(f"| {a} | {b} | {c} |" for a, b, c in rows),
                "",
                f"CPU per node in the {count}-node push (master, ssh, sshd, node-side run):"
                f" {per_node:.2f} s; the push kept the cores {busy:.0%} busy, other processes"
                f" {other:.0%}. With {cores}"
                f" cores, {count} nodes cannot take less than {floor:.2f} s here ="
                f" {floor / one_wall:.2f}x one node's wall.",
            ]
        )
    )
    if not met and count == MANY:
        report.unmet.append(
            f"**2a. {count} nodes ÷ 1 node: {spread.median:.2f}x, target ≤ {SPREAD_TARGET:g}x.**"
            f" Here all {count} nodes are processes on one {cores}-core machine: each node costs"
            f" {per_node:.2f} CPU s (the node-side run, sshd, the ssh client and a share of the"
            f" master), so the CPU alone puts {count} nodes at ≥ {floor:.2f} s,"
            f" {floor / one_wall:.2f}x one node's {one_wall:.2f} s, and the push kept the"
            f" cores {busy:.0%} busy (other processes {other:.0%}). On a"
            " cluster each node-side run and sshd use that node's own CPUs; only the master's"
            " part (push and the ssh clients) would share one machine."
        )


def figure_four(bench: Bench, reps: int, report: Report) -> None:
    """An atomic push to 16 nodes vs a plain push to the same 16, side by side."""
    count = report.many
    nodes = bench.cluster.nodes[:count]
    pids = tuple(node.pid for node in nodes)
    variants = [
        Variant("plain", bench.fresh(nodes), lambda: bench.push(nodes), pids),
        Variant("atomic", bench.fresh(nodes), lambda: bench.push(nodes, atomic=True), pids),
    ]
    samples = alternate(reps, variants, f"4. atomic vs plain, {count} nodes")
    report.note_load(samples)
    plain, atomic = (samples[v.name] for v in variants)
    ratio = _ratios(atomic, plain)
    met = ratio.median <= ATOMIC_TARGET
    report.summary.append(
        (
            f"4. `--atomic` ÷ plain push, {count} nodes, wall",
            f"**{ratio.median:.2f}x** [{ratio.low:.2f}-{ratio.high:.2f}]",
            f"≤ {ATOMIC_TARGET:g}x",
            _met(met, full=count == MANY),
        )
    )
    report.sections.append(
        "\n".join(
            [
                f"## 4. An atomic push vs a plain push, {count} nodes",
                "",
                "Fresh node roots before every run, `--no-start-node-daemon`. The atomic push"
                " runs three commands per node (prepare, commit, and nothing more without"
                " `--confirm-within`) and writes its record (one fdatasync per step and per"
                " node's answer); all of a node's commands share its one ssh connection, so"
                " the handshakes are paid once, as in the plain push.",
                "",
                "| run | wall, median [min-max] | CPU s median: ours + nodes' sshd |",
                "| --- | --- | --- |",
                f"| plain push | {_walls(plain).text()} | {_cpu(plain)} |",
                f"| `--atomic` | {_walls(atomic).text()} | {_cpu(atomic)} |",
            ]
        )
    )
    if not met and count == MANY:
        report.unmet.append(
            f"**4. atomic ÷ plain: {ratio.median:.2f}x, target ≤ {ATOMIC_TARGET:g}x.**"
        )


def figure_three(bench: Bench, reps: int, report: Report) -> None:
    """The most nodes at --parallel 8: nodes per second against cores ÷ node-side CPU."""
    nodes = bench.cluster.nodes[: report.most]
    count = len(nodes)
    pids = tuple(node.pid for node in nodes)
    variants = [
        Variant(f"{count}", bench.fresh(nodes), lambda: bench.push(nodes), pids),
        bench.local_variant(),
    ]
    samples = alternate(reps, variants, f"3. {count} nodes")
    report.note_load(samples)
    many, local = samples[f"{count}"], samples["local"]
    cores = _cores()
    rate = Spread.of([count / s.wall for s in many])
    limit = Spread.of([cores / s.local_cpu for s in local])
    pairs = zip(many, local, strict=True)
    share = Spread.of([count / a.wall / (cores / b.local_cpu) for a, b in pairs])
    full = Spread.of([cores / (s.cpu / count) for s in many])
    med = statistics.median
    busy = med(s.cpu / (s.wall * cores) for s in many)
    other = med(s.other_cpu / (s.wall * cores) for s in many)
    node_cpu = Spread.of([s.local_cpu for s in local])
    report.summary.append(
        (
            f"3. {count} nodes, `--parallel {PARALLEL}`: nodes/s ÷ limit (cores ÷ node-side CPU s)",
            f"{rate.median:.2f} of {limit.median:.2f} nodes/s = **{share.median:.0%}**"
            f" [{share.low:.0%}-{share.high:.0%}]",
            "—",
            "—",
        )
    )
    rows = [
        (f"wall time of the {count}-node push", _walls(many).text()),
        ("nodes per second", rate.text(" nodes/s")),
        ("node-side run, CPU s (local, no ssh)", node_cpu.text()),
        (f"limit: {cores} cores ÷ that", limit.text(" nodes/s")),
        ("**fraction of the limit**", share.percent()),
        ("CPU s per node, all of it (master, ssh, sshd, node-side)", _per(many, count).text()),
        (f"limit with all of it: {cores} cores ÷ that", full.text(" nodes/s")),
        ("cores kept busy by the push / by other processes", f"{busy:.0%} / {other:.0%}"),
    ]
    report.sections.append(
        "\n".join(
            [
                f"## 3. {count} nodes at `--parallel {PARALLEL}`",
                "",
                f"`--parallel {PARALLEL}` is push's default. It keeps more node-side runs going"
                f" than this machine has cores ({cores}): each run also waits on its connection"
                " and on fsync, and once the cores are busy a higher value only adds contention.",
                "",
                "| quantity | median [min-max] |",
                "| --- | --- |",
                *(f"| {a} | {b} |" for a, b in rows),
                "",
                *_cpu_parts(many, count, node_cpu.median, report.ssh_cpu),
                "",
                f"The limit counts only the node-side run ({node_cpu.median:.2f} CPU s). Here,"
                " where the nodes and the master share the cores, each node also costs both"
                " ends of a key exchange, sshd's session and the master's share, so the"
                f" reachable rate is about {full.median:.2f} nodes/s; the push reached"
                f" {rate.median:.2f} ({rate.median / full.median:.0%} of that).",
            ]
        )
    )


def _per(samples: Sequence[Sample], count: int) -> Spread:
    """All CPU seconds per node of multi-node runs."""
    return Spread.of([s.cpu / count for s in samples])


def _cpu_parts(
    samples: Sequence[Sample], count: int, local: float, ssh: tuple[float, float]
) -> list[str]:
    """Where one node's CPU seconds go in a multi-node push, as a Markdown table.

    The ssh client's and sshd's own shares are a bare connection's (figure 1);
    the rest of each side is the master process and the remote node-side run.
    """
    med = statistics.median
    client, server = ssh
    master = med(s.local_cpu / count for s in samples)
    node = med(s.node_cpu / count for s in samples)
    total = master + node
    parts = [
        ("master: `txsetup push` itself (start-up, payload; once per push)", master - client),
        ("master: the ssh client (key exchange, authentication)", client),
        ("node: sshd's session (key exchange, authentication)", server),
        (f"node: the node-side run (locally, no ssh: {local:.2f})", node - server),
    ]
    return [
        "CPU seconds per node, medians; less disturbed by other load than wall time (the ssh"
        " and sshd shares are what a bare `ssh true` costs):",
        "",
        "| part | CPU s | share |",
        "| --- | --- | --- |",
        *(f"| {a} | {b:.3f} | {b / total:.0%} |" for a, b in parts),
        f"| all | {total:.3f} | 100% |",
    ]


def _met(met: bool, *, full: bool) -> str:
    """The summary's "met" cell; a smoke run's smaller sizes are not held to the target."""
    if not full:
        return "— (smoke run)"
    return "yes" if met else "**no**"


def _cpu(samples: Sequence[Sample]) -> str:
    med = statistics.median
    return f"{med(s.local_cpu for s in samples):.2f} + {med(s.node_cpu for s in samples):.2f}"


def _size(files: Sequence[Path]) -> str:
    return f"{sum(path.stat().st_size for path in files) / 1024:.0f} KiB"


# --- the report ---------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    """What the figures depend on: cores, OS, Python, OpenSSH, this txsetup."""
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    version = (ssh.stderr or ssh.stdout).strip()
    cores = f"{os.cpu_count()} CPUs ({_cores()} usable)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    # txsetup keeps structlog from importing rich; the node bench's reference writer does not
    rich = "yes" if importlib.util.find_spec("rich") else "no"
    return [
        f"- CPUs: {cores}",
        f"- platform: `{platform.platform()}`",
        f"- Python: {platform.python_version()} ({platform.python_implementation()})",
        f"- OpenSSH: `{version}`",
        f"- txsetup: {__version__}, in `{sys.prefix}`; rich installed: {rich}",
        f"- load average at start: {load}",
    ]


def _smoke_note(report: Report) -> list[str]:
    """A warning above the figures when they come from fewer repetitions or nodes."""
    if report.reps >= FULL_REPS and report.many >= MANY and report.most >= MOST:
        return []
    return [
        f"**Smoke run**: {report.reps} repetitions, {report.many} and {report.most} nodes"
        f" instead of {FULL_REPS}, {MANY} and {MOST}. It shows the harness works; quote the"
        " figures of a full run (`nox -s bench`).",
        "",
    ]


def render(report: Report) -> str:
    """results.md."""
    load = statistics.median(report.other_load) if report.other_load else 0.0
    peak = max(report.other_load, default=0.0)
    lines = [
        "# `txsetup push` benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{report.command}`:"
        f" {report.reps} repetitions, the variants of each figure alternated (A B A B …);"
        " each figure is a ratio of variants from this run, median [min-max] over the"
        " repetitions. Nodes are real OpenSSH sshd processes on loopback, one per node root."
        " See `bench/README.md` for the method. The node-side figures (txsetup against"
        " Ganeti's own node-daemon-setup and a reference writer, fsync counts, resume) are"
        " in [results-node.md](results-node.md).",
        "",
        *_smoke_note(report),
        "Machine:",
        "",
        *report.machine,
        f"- other processes' share of the machine while measuring: median {load:.0%},"
        f" max {peak:.0%}",
        "",
        "## Summary",
        "",
        "| figure | measured | target | met |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in report.summary),
        "",
    ]
    if load > OTHER_LOAD_NOTE:
        lines += [
            f"Other processes used a median {load:.0%} of the machine during the measurements:"
            " absolute times are inflated by that, ratios of alternated variants less so.",
            "",
        ]
    lines += ["## Targets not met", ""]
    lines += [f"- {text}" for text in report.unmet] or ["None."]
    for section in report.sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every figure and write results.md; 0 on success."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.push", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: fewer repetitions and nodes"
    )
    parser.add_argument(
        "--reps", type=int, help="repetitions per figure (default 7, 3 with --quick)"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where to write (bench/results.md)"
    )
    parser.add_argument(
        "--figures",
        default="1234",
        help="which figures to run, e.g. 1 (default 1234: all); results.md holds only those",
    )
    args = parser.parse_args(argv)
    figures = [
        f
        for n, f in (
            ("1", figure_one),
            ("2", figure_two),
            ("3", figure_three),
            ("4", figure_four),
        )
        if n in args.figures
    ]
    reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    many, most = (QUICK_MANY, QUICK_MOST) if args.quick else (MANY, MOST)
    command = " ".join(["python -m bench.push", *(argv if argv is not None else sys.argv[1:])])
    report = Report(command, reps, many, most, machine_lines())
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="txsetup-bench-") as tmp,
        started_bench(Path(tmp), most) as bench,
    ):
        _progress(f"{most} nodes up after {time.monotonic() - started:.1f}s; warming up")
        bench.fresh(bench.cluster.nodes[:1])()
        bench.push(bench.cluster.nodes[:1])
        _fresh(bench.local_root)
        bench.local_run()
        for figure in figures:
            figure(bench, reps, report)
            _progress(f"{time.monotonic() - started:.0f}s so far")
    args.output.write_text(render(report))
    _progress(f"wrote {args.output} after {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
