"""Running, timing and tracing one program: the machinery of ``bench/node.py``.

Runs are timed from spawn to exit (wall clock, and CPU with
``RUSAGE_CHILDREN``); variants alternate; a run can happen in a private mount
namespace with fresh tmpfs (``python -m bench.runs --in-namespace SPEC`` is
the part that runs inside it) or under ``strace``. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.push import Spread

__all__ = [
    "FSYNC_CALLS",
    "TMPFS",
    "Call",
    "Run",
    "Sample",
    "Variant",
    "alternate",
    "check",
    "count_fsyncs",
    "cpus",
    "namespaced",
    "parse_calls",
    "progress",
    "ratio",
    "reset",
    "run_timed",
    "traced",
    "walls",
    "writes_under",
]

REPO: Final = Path(__file__).resolve().parent.parent
# tmpfs in every namespaced run: /var/lib holds Ganeti's data dir and txsetup's state dir,
# the others are every directory Ganeti's tool may write (pathutils).
TMPFS: Final = ("/var/lib", "/var/lock", "/var/log/ganeti", "/var/run/ganeti")
FSYNC_CALLS: Final = ("fsync", "fdatasync", "syncfs", "sync_file_range", "msync", "sync")
# Flags with which an open itself changes the file system (the bytes are counted as writes).
_WRITE_FLAGS: Final = ("O_CREAT", "O_TRUNC")
_CALL: Final = re.compile(r"^(?:\d+\s+)?(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<ret>.*)$")
_TICK: Final = os.sysconf("SC_CLK_TCK")


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


def check(run: Run, what: str, outcome: str | None = None) -> Run:
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
        progress(f"{label} {rep + 1}/{reps}: " + ", ".join(line))
    return samples


def progress(message: str) -> None:
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
            "bench.runs",
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

    An open counts when it can create or truncate (``O_CREAT``, ``O_TRUNC``):
    opening for writing changes nothing by itself (filelock opens its
    existing lock file ``O_RDWR`` only to ``flock`` it), and any byte written
    through such a descriptor is counted as a write; a write counts when its
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


if __name__ == "__main__":
    if sys.argv[1:2] != ["--in-namespace"]:
        sys.exit("usage: python -m bench.runs --in-namespace SPEC (bench/node.py runs it)")
    sys.exit(in_namespace(json.loads(sys.argv[2])))
