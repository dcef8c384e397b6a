"""``txsetup node-daemon-setup`` on the node: the node-side figures of SPEC §9.

``python -m bench.node [--quick]`` (as root, from the repository root) builds
the document a master of a 1,000-node cluster sends (``bench.push``'s master
root, :func:`txsetup.master.payload.build_payload`, ``start_node_daemon``
false) and measures, in one run:

1. txsetup's apply against **Ganeti 3.0's own** ``node-daemon-setup`` on the
   same document, each in a private mount namespace with the same tmpfs
   layout (a new node every time, and a re-add with one ssconf value
   changed);
2. the same apply against a minimal reference writer
   (``bench/reference_writer.py``): bare, after importing txsetup's three
   libraries (the floor of this stack), and also minting client.pem; with
   ``-X importtime`` and the per-step ``duration_ms`` of txsetup's own log to
   show where the rest goes;
3. fsync-family calls per apply (strace), fresh node and re-add;
4. a document with its ssconf values at the 128 KiB cap against the
   1,000-node one, per byte;
5. ``--resume`` of a prepared transaction (made by killing a run at its first
   commit rename) and a converged re-run, and whether that re-run writes
   anything under the root (strace).

Variants of a figure alternate (A B A B ...); each figure is a ratio of
variants from the same repetition, reported as median [min-max]. Results go
to ``bench/results-node.md``. Standard library and the project only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.push import (
    CLUSTER,
    Spread,
    machine_lines,
    write_master,
)
from txsetup.demo.certs import generate_node_certificate
from txsetup.master.payload import build_payload
from txsetup.node.payload import MAX_SSCONF_VALUE_BYTES
from txsetup.txn.journal import read_journal

__all__ = ["main"]

REPO: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = Path(__file__).with_name("results-node.md")
REFERENCE_WRITER: Final = Path(__file__).with_name("reference_writer.py")
NODE_NAME: Final = f"node0001.{CLUSTER}"
FULL_REPS: Final = 7
QUICK_REPS: Final = 3
GANETI_LIB: Final = Path("/usr/share/ganeti/3.0")
GANETI_TOOL: Final = GANETI_LIB / "node-daemon-setup"
SYSTEM_PYTHON: Final = "/usr/bin/python3"
# tmpfs in every namespaced run: /var/lib holds Ganeti's data dir and txsetup's state dir,
# the others are every directory Ganeti's tool may write (pathutils).
TMPFS: Final = ("/var/lib", "/var/lock", "/var/log/ganeti", "/var/run/ganeti")
GANETI_TARGET: Final = 0.35
FLOOR_TARGET: Final = 1.2
FRESH_FSYNC_SLACK: Final = 4  # fresh node: at most files + 4 fsync-family calls
READD_FSYNC_SLACK: Final = 3  # re-add: at most files + 3
FSYNC_CALLS: Final = ("fsync", "fdatasync", "syncfs", "sync_file_range", "msync", "sync")
# Everything that can change a file or directory (checked on a converged re-run).
MUTATING_CALLS: Final = (
    "write,pwrite64,writev,pwritev,pwritev2,open,openat,openat2,creat,rename,renameat,renameat2,"
    "unlink,unlinkat,link,linkat,symlink,symlinkat,mkdir,mkdirat,rmdir,truncate,ftruncate,"
    "chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,fallocate,utimensat,setxattr,fsetxattr"
)
_WRITE_FLAGS: Final = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
_CALL: Final = re.compile(r"^(?:\d+\s+)?(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<ret>.*)$")
_TICK: Final = os.sysconf("SC_CLK_TCK")
IMPORT_ROWS: Final = 15


# --- the documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Documents:
    """The documents every variant reads, as files (stdin of the runs)."""

    full: Path  # a 1,000-node cluster, as push sends it
    readd: Path  # the same with one ssconf value changed
    cap: Path  # every ssconf value at the 128 KiB cap (but cluster_name)
    client_pem: Path  # a client.pem txsetup minted for ``full`` (the bare writer copies it)

    def size(self, which: Path) -> int:
        """Bytes of one document."""
        return which.stat().st_size


def make_documents(work: Path) -> Documents:
    """Write the documents under ``work``; the node certificate is RSA 2048, as Ganeti's."""
    master = work / "master"
    write_master(master, generate_node_certificate(CLUSTER, key_type="rsa"))
    document = json.loads(build_payload(master, start_node_daemon=False).for_node(NODE_NAME))
    readd = {**document, "ssconf": {**document["ssconf"], "maintain_node_health": "True"}}
    at_cap = "x" * (MAX_SSCONF_VALUE_BYTES - 1)  # the file, with its newline, is 128 KiB
    cap_ssconf = dict.fromkeys(document["ssconf"], at_cap) | {"cluster_name": CLUSTER}
    cap = {**document, "ssconf": cap_ssconf}
    docs = Documents(work / "full.json", work / "readd.json", work / "cap.json", work / "client")
    for path, content in ((docs.full, document), (docs.readd, readd), (docs.cap, cap)):
        path.write_text(json.dumps(content))
    return docs


# --- running and timing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished run: its wall and CPU seconds, and what it printed."""

    wall: float
    cpu: float
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""

    def result(self) -> dict[str, Any]:
        """txsetup's JSON result (its stdout), or empty for other programs."""
        try:
            found = json.loads(self.stdout or b"{}")
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def events(self, name: str) -> list[dict[str, Any]]:
        """txsetup's JSON log lines of one event."""
        found = []
        for line in self.stderr.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return sum(fields[:3] + fields[5:7]) / _TICK


def run_timed(
    argv: Sequence[str], stdin: Path | None, *, env: Mapping[str, str] | None = None
) -> Run:
    """Run ``argv``, stdin from a file; its wall time and the CPU it and its children used."""
    cpu = _children_cpu()
    with open(stdin or os.devnull, "rb") as source:
        started = time.perf_counter()
        proc = subprocess.run(
            argv, stdin=source, capture_output=True, env=env, timeout=300, check=False
        )
        wall = time.perf_counter() - started
    return Run(wall, _children_cpu() - cpu, proc.returncode, proc.stdout, proc.stderr)


def _check(run: Run, what: str, outcome: str | None = None) -> Run:
    """``run`` when it exited 0 (and had ``outcome``); else stop the bench with its stderr."""
    if run.returncode != 0 or (outcome is not None and run.result().get("outcome") != outcome):
        raise RuntimeError(
            f"{what}: exit {run.returncode}, result {run.stdout[-500:]!r}: {run.stderr[-3000:]!r}"
        )
    return run


@dataclass(frozen=True)
class Sample:
    """One timed run of one variant, with the other load on the machine meanwhile."""

    run: Run
    other: float  # share of the machine other processes used while it ran

    @property
    def wall(self) -> float:
        """Wall seconds of the measured program itself."""
        return self.run.wall


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: an untimed preparation, then the run."""

    name: str
    prepare: Callable[[], None]
    action: Callable[[], Run]


def alternate(reps: int, variants: Sequence[Variant], label: str) -> dict[str, list[Sample]]:
    """Run the variants in turn, ``reps`` rounds (A B C A B C ...); samples by name.

    Alternating spreads any drift of the machine's load over every variant
    instead of biasing the one that ran last.
    """
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    cores = len(os.sched_getaffinity(0))
    for rep in range(reps):
        line = []
        for variant in variants:
            variant.prepare()
            busy, own, started = _machine_busy(), _children_cpu(), time.perf_counter()
            run = variant.action()
            outer = time.perf_counter() - started
            other = (_machine_busy() - busy) - (_children_cpu() - own)
            samples[variant.name].append(Sample(run, max(0.0, other) / (outer * cores)))
            line.append(f"{variant.name} {run.wall:.3f}s")
        _progress(f"{label} {rep + 1}/{reps}: " + ", ".join(line))
    return samples


def _progress(message: str) -> None:
    print(f"[bench.node] {message}", file=sys.stderr, flush=True)


def ratio(top: Sequence[Sample], bottom: Sequence[Sample]) -> Spread:
    """Per-repetition wall-time ratios, top over bottom, paired as they alternated."""
    return Spread.of([a.wall / b.wall for a, b in zip(top, bottom, strict=True)])


def walls(samples: Sequence[Sample]) -> Spread:
    """Wall seconds, median [min-max]."""
    return Spread.of([s.wall for s in samples])


def cpus(samples: Sequence[Sample]) -> Spread:
    """CPU seconds, median [min-max]."""
    return Spread.of([s.run.cpu for s in samples])


def reset(root: Path, seed: Path | None = None) -> None:
    """A node root as a Ganeti package leaves it (``seed``: a copy of an earlier node root)."""
    if root.exists():
        shutil.rmtree(root)
    if seed is None:
        (root / "var/lib/ganeti").mkdir(parents=True)
        (root / "var/lock").mkdir()
    else:
        subprocess.run(["cp", "-a", str(seed), str(root)], check=True)


# --- namespaces ---------------------------------------------------------------------------------


def in_namespace(spec: Mapping[str, Any]) -> int:
    """Inside ``unshare --mount``: fresh tmpfs, seed, run and time the program, copy out.

    Prints the run as JSON on stdout. Only the program is timed; the mounts
    and copies are not.
    """
    for directory in TMPFS:
        Path(directory).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory], check=True)
    if spec["seed"]:
        subprocess.run(["cp", "-a", f"{spec['seed']}/.", "/var/lib/"], check=True)
    Path("/var/lib/ganeti").mkdir(mode=0o755, exist_ok=True)
    run = run_timed(spec["argv"], Path(spec["stdin"]), env=spec["env"])
    if spec["copy_out"]:
        Path(spec["copy_out"]).mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "/var/lib/.", spec["copy_out"]], check=True)
    record = {
        "wall": run.wall,
        "cpu": run.cpu,
        "returncode": run.returncode,
        "stdout": run.stdout.decode(errors="replace"),
        "stderr": run.stderr.decode(errors="replace")[-20000:],
    }
    print(json.dumps(record))
    return 0


def namespaced(
    argv: Sequence[str],
    stdin: Path,
    *,
    env: Mapping[str, str],
    seed: Path | None = None,
    copy_out: Path | None = None,
) -> Run:
    """Run ``argv`` in a private mount namespace (fresh tmpfs over :data:`TMPFS`).

    ``seed`` is copied into ``/var/lib`` first (a node set up before);
    ``copy_out`` receives ``/var/lib`` afterwards. Nothing outside the
    namespace is touched: the real ``/var/lib/ganeti`` is never seen.
    """
    spec = {
        "argv": list(argv),
        "stdin": str(stdin),
        "env": dict(env),
        "seed": str(seed) if seed else None,
        "copy_out": str(copy_out) if copy_out else None,
    }
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "bench.node",
            "--in-namespace",
            json.dumps(spec),
        ],
        capture_output=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"namespace run failed ({proc.returncode}): {proc.stderr[-3000:]!r}")
    record = json.loads(proc.stdout)
    return Run(
        record["wall"],
        record["cpu"],
        record["returncode"],
        record["stdout"].encode(),
        record["stderr"].encode(),
    )


# --- strace -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One complete syscall of an strace log."""

    name: str
    args: str
    ret: str

    @property
    def text(self) -> str:
        """As strace printed it (without the pid)."""
        return f"{self.name}({self.args}) = {self.ret}"


def parse_calls(text: str) -> list[Call]:
    """Every complete call of an strace log (``-f``: lines start with the pid)."""
    found = []
    for line in text.splitlines():
        match = _CALL.match(line.strip())
        if match is not None:
            found.append(Call(match["name"], match["args"], match["ret"]))
    return found


def traced(
    argv: Sequence[str],
    stdin: Path | None,
    calls: str,
    *,
    out: Path,
    inject: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Run, list[Call]]:
    """Run ``argv`` under ``strace -f -y`` tracing ``calls``; the run and its complete calls.

    ``-y`` names the file behind every descriptor, so a write can be told
    from a log line; ``-s 0`` leaves the data out (paths are always shown).
    """
    strace = ["strace", "-f", "-y", "-qq", "-s", "0", "-o", str(out), "-e", f"trace={calls}"]
    strace += ["-e", f"inject={inject}"] if inject else []
    run = run_timed([*strace, *argv], stdin, env=env)
    calls_made = parse_calls(out.read_text(errors="replace"))
    out.unlink()
    return run, calls_made


def count_fsyncs(calls: Sequence[Call]) -> int:
    """fsync-family calls, wherever they went."""
    return sum(1 for call in calls if call.name in FSYNC_CALLS)


def writes_under(calls: Sequence[Call], root: Path) -> tuple[list[str], list[str]]:
    """The calls that write under ``root`` (what a converged run must not make), and those
    that tried and failed (``-1``: they changed nothing).

    An open counts when its flags could write or create (``O_WRONLY``,
    ``O_RDWR``, ``O_CREAT``, ``O_TRUNC``, ``O_APPEND``); a write when its
    descriptor is a file under the root (log lines go to fd 2, a pipe);
    anything else in :data:`MUTATING_CALLS` when it names a path under the root.
    """
    prefix = str(root).rstrip("/") + "/"
    found: list[str] = []
    failed: list[str] = []
    for call in calls:
        if call.name.startswith("write") or call.name.startswith("pwrite"):
            target = call.args.split(",", 1)[0]
            mutating = f"<{prefix}" in target
        elif call.name in ("open", "openat", "openat2", "creat"):
            named = f'"{prefix}' in call.args or f"<{prefix}" in call.args
            mutating = named and (
                call.name == "creat" or any(flag in call.args for flag in _WRITE_FLAGS)
            )
        else:
            mutating = prefix in call.args
        if mutating:
            (failed if call.ret.startswith("-1") else found).append(call.text)
    return found, failed


# --- the bench ----------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """This environment without what would redirect a run (``TXSETUP_ROOT``, ``PYTHONPATH``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TXSETUP_ROOT", "PYTHONPATH")}
    return env | extra


def _script(name: str) -> str:
    """A console script installed next to this interpreter (absolute)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"the {name} console script is not installed")
    return str(Path(found).absolute())


@dataclass
class Bench:
    """The documents, the local node root, its seeds, and the commands the variants run."""

    work: Path
    docs: Documents
    root: Path = field(init=False)
    seeds: Path = field(init=False)
    txsetup: str = field(default_factory=lambda: _script("txsetup"))
    alias: str = field(default_factory=lambda: _script("node-daemon-setup"))

    def __post_init__(self) -> None:
        self.root = self.work / "root"
        self.seeds = self.work / "seeds"
        self.seeds.mkdir()

    def apply(
        self, document: Path | None, *extra: str, env: Mapping[str, str] | None = None
    ) -> Run:
        """``txsetup node-daemon-setup --root ROOT`` on ``document`` (None: no stdin)."""
        argv = [self.txsetup, "node-daemon-setup", "--root", str(self.root), *extra]
        return run_timed(argv, document, env=env or _env())

    def reference(self, *mode: str) -> Run:
        """The reference writer on the full document (``--stack``, ``--mint`` or bare)."""
        argv = [sys.executable, str(REFERENCE_WRITER), "--root", str(self.root)]
        argv += ["--client-pem", str(self.docs.client_pem), *mode]
        return _check(run_timed(argv, self.docs.full, env=_env()), f"reference writer {mode}")

    def seed(self, name: str) -> Path:
        """Keep the local root as it is now, as seed ``name``."""
        kept = self.seeds / name
        subprocess.run(["cp", "-a", str(self.root), str(kept)], check=True)
        return kept

    def trace_file(self) -> Path:
        """A new file for an strace log."""
        return Path(tempfile.mkstemp(dir=self.work, suffix=".strace")[1])


def make_prepared(bench: Bench) -> tuple[Path, str]:
    """A node root with a prepared transaction: a new-node run killed at its first commit rename.

    A traced run finds which rename that is (the first into ``var/lib/ganeti``);
    a second run on a new root is killed there by strace (``SIGKILL``), after
    its ``prepared`` record and before any file is in place. Returns the seed
    and the call the kill met.

    Raises:
        RuntimeError: the journal does not end in ``prepared``.
    """
    renames = "rename,renameat,renameat2"
    reset(bench.root)
    argv = [bench.txsetup, "node-daemon-setup", "--root", str(bench.root)]
    env = _env(PYTHONDONTWRITEBYTECODE="1")
    run, calls = traced(argv, bench.docs.full, renames, out=bench.trace_file(), env=env)
    _check(run, "reference trace", "committed")
    target = f"{bench.root}/var/lib/ganeti/"
    first = next(call for call in calls if target in call.args)
    ordinal = sum(1 for call in calls[: calls.index(first) + 1] if call.name == first.name)
    reset(bench.root)
    inject = f"{first.name}:signal=SIGKILL:when={ordinal}"
    killed, _ = traced(
        argv, bench.docs.full, renames, out=bench.trace_file(), inject=inject, env=env
    )
    records = read_journal(bench.root / "var/lib/txsetup/journal")
    state = records[-1].state if records else None
    if killed.returncode >= 0 or state != "prepared":
        raise RuntimeError(f"no prepared transaction (exit {killed.returncode}, journal {state})")
    return bench.seed("prepared"), f"{first.name} #{ordinal}"


def import_times(bench: Bench) -> list[tuple[int, str]]:
    """``-X importtime`` of one fresh-node run: (cumulative µs, module) by cost, and the total."""
    reset(bench.root)
    run = bench.apply(bench.docs.full, env=_env(PYTHONPROFILEIMPORTTIME="1"))
    _check(run, "importtime run", "committed")
    rows = []
    for line in run.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cumulative, name = (
            part.rstrip() for part in re.split(r"[:|]", line, maxsplit=3)
        )
        del self_us
        rows.append((int(cumulative), name.removeprefix(" ")))
    total = sum(us for us, name in rows if not name.startswith(" "))
    return [(total, "all imports (top-level modules' cumulative sum)"), *sorted(rows, reverse=True)]


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything results-node.md says, filled figure by figure."""

    command: str
    reps: int
    machine: list[str]
    summary: list[tuple[str, str, str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)  # a new-node apply, ms
    import_total_ms: float = 0.0
    floor_wall: float = 0.0  # the floor's median wall seconds (section 2)

    def note_load(self, samples: Mapping[str, Sequence[Sample]]) -> None:
        """Keep each sample's share of the machine that other processes used."""
        self.other_load += [s.other for runs in samples.values() for s in runs]

    def row(self, figure: str, measured: str, target: str = "—", met: bool | None = None) -> None:
        """One line of the summary table."""
        shown = "—" if met is None else "yes" if met else "**no**"
        self.summary.append((figure, measured, target, shown))


def _x(spread: Spread) -> str:
    return f"**{spread.median:.2f}x** [{spread.low:.2f}-{spread.high:.2f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def ganeti_missing() -> str | None:
    """Why Ganeti's tool cannot run here, or None when it can."""
    if not (GANETI_TOOL.exists() and (GANETI_LIB / "ganeti/tools/node_daemon_setup.py").exists()):
        return f"Ganeti 3.0 is not installed ({GANETI_LIB})"
    if os.geteuid() != 0:
        return "mounting tmpfs in a private namespace needs root"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    return None


def figure_ganeti(bench: Bench, reps: int, report: Report) -> None:
    """1. txsetup's apply against Ganeti 3.0's node-daemon-setup, in private namespaces."""
    missing = ganeti_missing()
    if missing is not None:
        report.row("1. txsetup ÷ Ganeti 3.0 node-daemon-setup", f"not measured: {missing}")
        report.unmet.append(f"**1. vs Ganeti 3.0: not measured.** {missing}.")
        return
    docs = bench.docs
    ours = [bench.alias]  # what a Ganeti master runs: <pkglibdir>/node-daemon-setup
    theirs = [SYSTEM_PYTHON, str(GANETI_TOOL)]
    ours_env, their_env = _env(), _env(PYTHONPATH=str(GANETI_LIB))
    seeds = {"txsetup": bench.seeds / "ns-txsetup", "ganeti": bench.seeds / "ns-ganeti"}
    # Warm-up, and the node each re-add starts from; both must write the same files.
    for name, argv, env in (("txsetup", ours, ours_env), ("ganeti", theirs, their_env)):
        warm = namespaced(argv, docs.full, env=env, copy_out=seeds[name])
        _check(warm, f"{name} in a namespace", "committed" if name == "txsetup" else None)
    names = [sorted(os.listdir(seeds[name] / "ganeti")) for name in seeds]
    if names[0] != names[1]:
        raise RuntimeError(f"txsetup and Ganeti wrote different files: {names}")

    def run(argv: list[str], env: dict[str, str], document: Path, seed: Path | None) -> Run:
        done = namespaced(argv, document, env=env, seed=seed)
        return _check(done, " ".join(argv[-1:]), "committed" if argv == ours else None)

    variants = [
        Variant("txsetup", lambda: None, lambda: run(ours, ours_env, docs.full, None)),
        Variant("ganeti", lambda: None, lambda: run(theirs, their_env, docs.full, None)),
        Variant(
            "txsetup re-add",
            lambda: None,
            lambda: run(ours, ours_env, docs.readd, seeds["txsetup"]),
        ),
        Variant(
            "ganeti re-add",
            lambda: None,
            lambda: run(theirs, their_env, docs.readd, seeds["ganeti"]),
        ),
    ]
    samples = alternate(reps, variants, "1. vs Ganeti")
    report.note_load(samples)
    fresh = ratio(samples["txsetup"], samples["ganeti"])
    readd = ratio(samples["txsetup re-add"], samples["ganeti re-add"])
    cpu = Spread.of(
        [a.run.cpu / b.run.cpu for a, b in zip(samples["txsetup"], samples["ganeti"], strict=True)]
    )
    target = f"≤ {GANETI_TARGET:g}x"
    report.row(
        "1a. new node: txsetup ÷ Ganeti 3.0 node-daemon-setup, wall",
        _x(fresh),
        target,
        fresh.median <= GANETI_TARGET,
    )
    report.row(
        "1b. re-add (one ssconf value changed): txsetup ÷ Ganeti, wall",
        _x(readd),
        target,
        readd.median <= GANETI_TARGET,
    )
    rows = [(name, walls(runs).text(), cpus(runs).text()) for name, runs in samples.items()]
    gap = statistics.median(s.wall for s in samples["txsetup"]) - statistics.median(
        s.wall for s in samples["ganeti"]
    )
    report.sections.append(
        "\n".join(
            [
                "## 1. txsetup vs Ganeti 3.0's own node-daemon-setup",
                "",
                "Each run in its own mount namespace (`unshare --mount`) with fresh tmpfs over"
                f" {', '.join(f'`{d}`' for d in TMPFS)}: a new node every time; a re-add starts"
                " from what the same program wrote for the full document, and gets it with one"
                " ssconf value changed. txsetup runs as Ganeti's master runs it"
                f" (`{Path(bench.alias).name}`, no arguments, `--root` /); Ganeti's tool runs"
                f" with `{SYSTEM_PYTHON}` and `PYTHONPATH={GANETI_LIB}`. Only the program is"
                " timed (not the mounts). tmpfs makes fsync free: this compares the work, not"
                " the disk.",
                "",
                *_table(("variant", "wall s, median [min-max]", "CPU s"), rows),
                "",
                f"CPU ratio, new node: {_x(cpu)}. Both wrote the same {len(names[0])} files.",
            ]
        )
    )
    parts = ", ".join(f"{name} {ms:.0f} ms" for name, ms in report.steps if ms >= 10)
    allowed = GANETI_TARGET * walls(samples["ganeti"]).median
    limit = (
        f" 0.35x of Ganeti is {allowed:.2f} s, less than the floor ({report.floor_wall:.2f} s:"
        " Python, txsetup's three libraries and the writes, section 2): no change to txsetup's"
        " own code can meet this target with this stack."
        if report.floor_wall > allowed
        else ""
    )
    for label, spread in (("1a. new node", fresh), ("1b. re-add", readd)):
        if spread.median > GANETI_TARGET:
            report.unmet.append(
                f"**{label}: txsetup ÷ Ganeti = {spread.median:.2f}x, target ≤"
                f" {GANETI_TARGET:g}x.** Both are one Python process writing the same 37 files"
                " and minting the same RSA 2048 client.pem (new node); Ganeti's tool checks"
                " little, journals nothing and loads its own modules and pyOpenSSL, txsetup"
                " loads structlog, cryptography and filelock, verifies, journals and logs. On"
                f" a new node txsetup took {abs(gap) * 1000:.0f} ms"
                f" {'more' if gap > 0 else 'less'} than Ganeti's tool (medians). Where"
                f" txsetup's time goes (section 2, local root): {parts}.{limit}"
            )


def _steps(samples: Sequence[Sample]) -> list[tuple[str, float]]:
    """Median ``duration_ms`` of each step (``step.end``), then start-up and the end."""
    per_step: dict[str, list[float]] = {}
    before_main = []
    for sample in samples:
        for event in sample.run.events("step.end"):
            per_step.setdefault(str(event["step"]), []).append(float(event["duration_ms"]))
        ends = sample.run.events("txn.end")
        if ends:
            before_main.append(sample.wall * 1000 - float(ends[-1]["duration_ms"]))
    rows = [(f"step `{name}`", statistics.median(ms)) for name, ms in per_step.items()]
    if before_main:
        rows.insert(
            0,
            (
                "before `main` (interpreter, imports of `txsetup.cli`)",
                statistics.median(before_main),
            ),
        )
    return rows


def figure_local(bench: Bench, reps: int, report: Report) -> None:
    """2, 4 and 5: against the reference writer, at the cap, re-add, converged and resume.

    One alternation for all of them, on one local node root (this machine's
    disk, so fsync costs what it costs here).
    """
    docs = bench.docs
    reset(bench.root)
    _check(bench.apply(docs.full), "warm-up", "committed")
    shutil.copyfile(bench.root / "var/lib/ganeti/client.pem", docs.client_pem)
    committed = bench.seed("committed")
    prepared, killed_at = make_prepared(bench)
    fresh = lambda: reset(bench.root)  # noqa: E731
    variants = [
        Variant("txsetup", fresh, lambda: _check(bench.apply(docs.full), "apply", "committed")),
        Variant("bare writer", fresh, bench.reference),
        Variant("floor", fresh, lambda: bench.reference("--stack")),
        Variant("floor + mint", fresh, lambda: bench.reference("--mint")),
        Variant("cap", fresh, lambda: _check(bench.apply(docs.cap), "cap", "committed")),
        Variant(
            "re-add",
            lambda: reset(bench.root, committed),
            lambda: _check(bench.apply(docs.readd), "re-add", "committed"),
        ),
        Variant(
            "converged",
            lambda: reset(bench.root, committed),
            lambda: _check(bench.apply(docs.full), "converged", "converged"),
        ),
        Variant(
            "resume",
            lambda: reset(bench.root, prepared),
            lambda: _check(bench.apply(None, "--resume"), "resume", "resumed"),
        ),
    ]
    samples = alternate(reps, variants, "2, 4, 5 local")
    report.note_load(samples)
    apply = samples["txsetup"]
    bare, floor = ratio(apply, samples["bare writer"]), ratio(apply, samples["floor"])
    minted = ratio(apply, samples["floor + mint"])
    report.row("2a. txsetup ÷ bare reference writer", _x(bare))
    report.row(
        "2b. txsetup ÷ floor (reference writer + cryptography, filelock, structlog imported)",
        _x(floor),
        f"≤ {FLOOR_TARGET:g}x",
        floor.median <= FLOOR_TARGET,
    )
    report.row("2c. txsetup ÷ floor that also mints client.pem (RSA 2048)", _x(minted))
    full_size, cap_size = docs.size(docs.full), docs.size(docs.cap)
    per_byte = Spread.of(
        [
            (c.wall / cap_size) / (a.wall / full_size)
            for c, a in zip(samples["cap"], apply, strict=True)
        ]
    )
    report.row(
        f"4. per-byte cost: cap document ({cap_size / 2**20:.1f} MiB) ÷ 1,000-node"
        f" ({full_size / 2**10:.0f} KiB)",
        _x(per_byte),
    )
    for name in ("re-add", "converged", "resume"):
        report.row(f"5. {name} ÷ new-node apply", _x(ratio(samples[name], apply)))
    rows = [(name, walls(runs).text(), cpus(runs).text()) for name, runs in samples.items()]
    steps = _steps(apply)
    report.sections.append(
        "\n".join(
            [
                "## 2, 4, 5. On a local node root: reference writer, cap, re-add, converged,"
                " resume",
                "",
                "One alternation of all these variants, on a node root on this machine's disk"
                " (so fsync costs what it costs here), each from a fresh root (a new node) or"
                " from a copy of a node set up before (untimed). `txsetup` is"
                " `txsetup node-daemon-setup --root ROOT` with the 1,000-node document. The"
                " reference writer (`bench/reference_writer.py`) reads the same document and"
                " writes the same 37 files durably (final mode, write, fsync, rename; the"
                " directory fsynced once), no checks: *bare* copies a client.pem minted"
                " earlier, *floor* first imports cryptography (x509 and the hazmat modules"
                " txsetup uses), filelock and structlog, *floor + mint* also mints client.pem"
                " (RSA 2048 signed by the node key, as Ganeti does). *cap*: every ssconf value"
                " at the 128 KiB cap but `cluster_name`. *re-add*: one ssconf value changed."
                " *converged*: the same document again. *resume*: `--resume` of a transaction"
                f" killed at its first commit rename ({killed_at}), after `prepared`.",
                "",
                *_table(("variant", "wall s, median [min-max]", "CPU s"), rows),
                "",
                "### Where a new-node apply's time goes",
                "",
                "Median `duration_ms` of each `step.end` in txsetup's own JSON log; \"before"
                " `main`\" is the wall time minus `txn.end`'s `duration_ms` (interpreter"
                " start-up and the imports of `txsetup.cli`). A step's time includes the"
                " imports it triggers (`verify_cluster` loads cryptography).",
                "",
                *_table(("part", "ms"), [(name, f"{ms:.0f}") for name, ms in steps]),
            ]
        )
    )
    report.steps = steps
    report.floor_wall = walls(samples["floor"]).median
    if floor.median > FLOOR_TARGET:
        report.unmet.append(
            f"**2b. txsetup ÷ floor = {floor.median:.2f}x, target ≤ {FLOOR_TARGET:g}x.**"
            " The floor writes the same files after loading the same libraries; what txsetup"
            " does beyond it is in section 2's step table and import list. The largest single"
            " part is client.pem: a new RSA 2048 key on every new node (the floor that also"
            f" mints it is {minted.median:.2f}x away), then verification, the journal and"
            " the log."
        )


def figure_fsync(bench: Bench, report: Report) -> None:
    """3. fsync-family calls per apply (strace), new node, re-add, converged."""
    calls = ",".join(FSYNC_CALLS)
    env = _env(PYTHONDONTWRITEBYTECODE="1")
    committed = bench.seeds / "committed"
    cases = [
        ("new node", None, bench.docs.full, FRESH_FSYNC_SLACK),
        ("re-add, one ssconf value changed", committed, bench.docs.readd, READD_FSYNC_SLACK),
        ("converged re-run", committed, bench.docs.full, None),
    ]
    rows = []
    for name, seed, document, slack in cases:
        reset(bench.root, seed)
        argv = [bench.txsetup, "node-daemon-setup", "--root", str(bench.root)]
        run, found = traced(argv, document, calls, out=bench.trace_file(), env=env)
        _check(run, f"fsync count, {name}")
        files = len(run.result().get("changed", []))
        count = count_fsyncs(found)
        by_name = ", ".join(
            f"{n} {sum(1 for c in found if c.name == n)}"
            for n in FSYNC_CALLS
            if any(c.name == n for c in found)
        )
        if slack is None:
            rows.append((name, str(files), str(count), by_name or "none", "—", "—"))
            continue
        met = count <= files + slack
        rows.append(
            (
                name,
                str(files),
                str(count),
                by_name,
                f"≤ files + {slack}",
                "yes" if met else "**no**",
            )
        )
        report.row(
            f"3. fsync-family calls, {name}",
            f"**{count}** for {files} files (files + {count - files})",
            f"≤ files + {slack}",
            met,
        )
        if not met:
            report.unmet.append(
                f"**3. fsync calls, {name}: {count} for {files} changed files = files +"
                f" {count - files}, target ≤ files + {slack}.** Counted as made ({by_name});"
                " which of them the engine could drop is in docs/benchmarks.md."
            )
    ganeti = _ganeti_fsyncs(bench)
    report.sections.append(
        "\n".join(
            [
                "## 3. fsync-family calls per apply",
                "",
                f"`strace -f -e trace={calls}` around one run of `txsetup node-daemon-setup"
                " --root ROOT` on a local root (files = the files the run changed, from its"
                " result).",
                "",
                *_table(("run", "files", "calls", "by call", "target", "met"), rows),
                "",
                ganeti,
            ]
        )
    )


def _ganeti_fsyncs(bench: Bench) -> str:
    """Ganeti's own count on a new node, for comparison (in a namespace, under strace)."""
    if ganeti_missing() is not None:
        return "Ganeti's tool was not traced here."
    out = bench.trace_file()
    strace = ["strace", "-f", "-qq", "-o", str(out), "-e", f"trace={','.join(FSYNC_CALLS)}"]
    run = namespaced(
        [*strace, SYSTEM_PYTHON, str(GANETI_TOOL)],
        bench.docs.full,
        env=_env(PYTHONPATH=str(GANETI_LIB)),
    )
    _check(run, "Ganeti under strace")
    count = count_fsyncs(parse_calls(out.read_text(errors="replace")))
    out.unlink()
    return f"For comparison, Ganeti 3.0's own tool makes {count} on a new node (same 37 files)."


def figure_converged(bench: Bench, report: Report) -> None:
    """5. Does a converged re-run write anything under the root? (strace -f -y)"""
    reset(bench.root, bench.seeds / "committed")
    argv = [bench.txsetup, "node-daemon-setup", "--root", str(bench.root)]
    env = _env(PYTHONDONTWRITEBYTECODE="1")
    run, calls = traced(argv, bench.docs.full, MUTATING_CALLS, out=bench.trace_file(), env=env)
    _check(run, "converged re-run under strace", "converged")
    found, failed = writes_under(calls, bench.root)
    clean = not found
    report.row(
        "5. converged re-run makes no write syscall under the root",
        "yes" if clean else f"**no**: {len(found)} call(s)",
        "yes",
        clean,
    )
    shown = "\n".join(f"    {text}" for text in dict.fromkeys(found)) or "    (none)"
    tried = "\n".join(f"    {text}" for text in dict.fromkeys(failed)) or "    (none)"
    report.sections.append(
        "\n".join(
            [
                "## 5. What a converged re-run writes",
                "",
                "The same document again on a node that holds it, under `strace -f -y -e"
                " trace=` every call that can change a file or directory (write family, opens,"
                " renames, links, unlinks, mkdir/rmdir, truncate, chmod/chown, fallocate,"
                " utimensat, setxattr). Counted: an open of a path under the root with a flag"
                " that can write or create, a write to a descriptor of a file under the root,"
                " any other such call naming a path under the root. Log lines (fd 2) and the"
                " result (fd 1) are pipes and do not count. Calls that succeeded (distinct):",
                "",
                shown,
                "",
                "Calls that failed, so changed nothing (not counted):",
                "",
                tried,
            ]
        )
    )
    if not clean:
        report.unmet.append(
            f"**5. the converged re-run is not write-free: {len(found)} call(s) under the"
            f" root** ({_brief(found, bench.root)}). Where they come from and the proposed"
            " fix (engine code, `txn/`) are in docs/benchmarks.md."
        )


def _brief(texts: Sequence[str], root: Path) -> str:
    """``openat var/lock/txsetup.lock, chmod var/lib/txsetup``: calls by name and path."""
    prefix = str(root).rstrip("/") + "/"
    shown = []
    for text in dict.fromkeys(texts):
        where = re.search(re.escape(prefix) + r'([^"<>]*)', text)
        shown.append(f"`{text.split('(', 1)[0]}` {where[1] if where else '?'}")
    return ", ".join(shown)


def import_section(bench: Bench, report: Report) -> None:
    """The top entries of ``-X importtime`` for one new-node apply."""
    rows = import_times(bench)
    total = rows[0][0]
    shown = [
        (
            f"`{name.strip()}`" if i else name,
            f"{us / 1000:.0f}",
            "  " * ((len(name) - len(name.lstrip())) // 2),
        )
        for i, (us, name) in enumerate(rows[: IMPORT_ROWS + 1])
    ]
    report.sections.append(
        "\n".join(
            [
                "### Imports of one new-node apply (`PYTHONPROFILEIMPORTTIME=1`)",
                "",
                "The most expensive imports by cumulative time (a module's includes the"
                " modules it imports, so rows nest; `-X importtime` itself adds overhead, so"
                " read these as shares, not exact times). Depth shows the nesting.",
                "",
                *_table(
                    ("module", "cumulative ms", "depth"),
                    [(a, b, str(len(c) // 2)) for a, b, c in shown],
                ),
            ]
        )
    )
    report.import_total_ms = total / 1000


def _ganeti_version() -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "ganeti-3.0"],
        capture_output=True,
        text=True,
        check=False,
    )
    system = subprocess.run(
        [SYSTEM_PYTHON, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"- Ganeti: ganeti-3.0 {proc.stdout.strip() or 'not installed'}, run by {system}"


def render(report: Report) -> str:
    """results-node.md."""
    load = statistics.median(report.other_load) if report.other_load else 0.0
    peak = max(report.other_load, default=0.0)
    smoke = (
        [
            f"**Smoke run**: {report.reps} repetitions instead of {FULL_REPS}. It shows the"
            " harness works; quote the figures of a full run (`nox -s bench`).",
            "",
        ]
        if report.reps < FULL_REPS
        else []
    )
    lines = [
        "# `txsetup node-daemon-setup` benchmark (node side)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{report.command}`:"
        f" {report.reps} repetitions, the variants of each figure alternated (A B A B …);"
        " each figure is a ratio of variants from this run, median [min-max] over the"
        " repetitions. The master side (`txsetup push`) is in [results.md](results.md);"
        " the method in [docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        *smoke,
        "Machine:",
        "",
        *report.machine,
        _ganeti_version(),
        f"- other processes' share of the machine while measuring: median {load:.0%},"
        f" max {peak:.0%}",
        "",
        "## Summary",
        "",
        *_table(("figure", "measured", "target", "met"), report.summary),
        "",
        "## Targets not met",
        "",
    ]
    lines += [f"- {text}" for text in report.unmet] or ["None."]
    for section in report.sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every node-side figure and write results-node.md; 0 on success."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--in-namespace"]:
        return in_namespace(json.loads(args_list[1]))
    parser = argparse.ArgumentParser(
        prog="python -m bench.node", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repetitions")
    parser.add_argument(
        "--reps", type=int, help="repetitions per figure (default 7, 3 with --quick)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write")
    args = parser.parse_args(args_list)
    reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    report = Report(" ".join(["python -m bench.node", *args_list]), reps, machine_lines())
    started = time.monotonic()
    # A node installs a wheel, whose modules pip byte-compiles; an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would compile txsetup from source in every run instead.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "txsetup")], check=True)
    with tempfile.TemporaryDirectory(prefix="txsetup-bench-node-") as tmp:
        work = Path(tmp)
        bench = Bench(work, make_documents(work))
        figure_local(bench, reps, report)
        import_section(bench, report)
        figure_fsync(bench, report)
        figure_converged(bench, report)
        figure_ganeti(bench, reps, report)
    args.output.write_text(render(report))
    _progress(f"wrote {args.output} after {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
