"""``txsetup node-daemon-setup`` on the node: the node-side figures of docs/benchmarks.md.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench.push import CLUSTER, Spread, machine_lines, write_master
from bench.runs import (
    FSYNC_CALLS,
    TMPFS,
    Run,
    Sample,
    Variant,
    alternate,
    check,
    count_fsyncs,
    cpus,
    namespaced,
    parse_calls,
    progress,
    ratio,
    reset,
    run_timed,
    traced,
    walls,
    writes_under,
)
from txsetup.demo.certs import generate_node_certificate
from txsetup.master.payload import build_payload
from txsetup.node.ganeti_fields import MAX_SSCONF_VALUE_BYTES
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
GANETI_TARGET: Final = 0.35
FLOOR_TARGET: Final = 1.2
FRESH_FSYNC_SLACK: Final = 4  # fresh node: at most files + 4 fsync-family calls
READD_FSYNC_SLACK: Final = 3  # re-add: at most files + 3
# Everything that can change a file or directory (checked on a converged re-run).
MUTATING_CALLS: Final = (
    "write,pwrite64,writev,pwritev,pwritev2,open,openat,openat2,creat,rename,renameat,renameat2,"
    "unlink,unlinkat,link,linkat,symlink,symlinkat,mkdir,mkdirat,rmdir,truncate,ftruncate,"
    "chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,fallocate,utimensat,setxattr,fsetxattr"
)
IMPORT_ROWS: Final = 15
OTHER_LOAD_NOTE: Final = 0.05  # say so above this share of the machine used by others


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
        return check(run_timed(argv, self.docs.full, env=_env()), f"reference writer {mode}")

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
    check(run, "reference trace", "committed")
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
    check(run, "importtime run", "committed")
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
        check(warm, f"{name} in a namespace", "committed" if name == "txsetup" else None)
    names = [sorted(os.listdir(seeds[name] / "ganeti")) for name in seeds]
    if names[0] != names[1]:
        raise RuntimeError(f"txsetup and Ganeti wrote different files: {names}")

    def run(argv: list[str], env: dict[str, str], document: Path, seed: Path | None) -> Run:
        done = namespaced(argv, document, env=env, seed=seed)
        return check(done, " ".join(argv[-1:]), "committed" if argv == ours else None)

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
    if fresh.median > GANETI_TARGET:
        report.unmet.append(
            f"**1a. new node: txsetup ÷ Ganeti = {fresh.median:.2f}x, target ≤"
            f" {GANETI_TARGET:g}x.** Both are one Python process writing the same 37 files"
            " and minting the same RSA 2048 client.pem; Ganeti's tool checks little, journals"
            " nothing and loads its own modules and pyOpenSSL, txsetup loads structlog,"
            f" cryptography and filelock, verifies, journals and logs. txsetup took"
            f" {abs(gap) * 1000:.0f} ms {'more' if gap > 0 else 'less'} than Ganeti's tool"
            f" (medians; CPU ratio {cpu.median:.2f}x). Where txsetup's time goes (section 2,"
            f" local root): {parts}.{limit}"
        )
    if readd.median > GANETI_TARGET:
        report.unmet.append(
            f"**1b. re-add: txsetup ÷ Ganeti = {readd.median:.2f}x, target ≤"
            f" {GANETI_TARGET:g}x.** Ganeti's tool rewrites every file and mints a new"
            " client.pem on a re-add; txsetup changes one file and keeps client.pem, but still"
            " loads the same stack and checks the node key and client.pem's key (each proved"
            " by a signature its certificate verifies). The same floor as 1a applies."
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
    check(bench.apply(docs.full), "warm-up", "committed")
    shutil.copyfile(bench.root / "var/lib/ganeti/client.pem", docs.client_pem)
    committed = bench.seed("committed")
    prepared, killed_at = make_prepared(bench)
    fresh = lambda: reset(bench.root)  # noqa: E731
    variants = [
        Variant("txsetup", fresh, lambda: check(bench.apply(docs.full), "apply", "committed")),
        Variant("bare writer", fresh, bench.reference),
        Variant("floor", fresh, lambda: bench.reference("--stack")),
        Variant("floor + mint", fresh, lambda: bench.reference("--mint")),
        Variant("cap", fresh, lambda: check(bench.apply(docs.cap), "cap", "committed")),
        Variant(
            "re-add",
            lambda: reset(bench.root, committed),
            lambda: check(bench.apply(docs.readd), "re-add", "committed"),
        ),
        Variant(
            "converged",
            lambda: reset(bench.root, committed),
            lambda: check(bench.apply(docs.full), "converged", "converged"),
        ),
        Variant(
            "resume",
            lambda: reset(bench.root, prepared),
            lambda: check(bench.apply(None, "--resume"), "resume", "resumed"),
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
        check(run, f"fsync count, {name}")
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
    check(run, "Ganeti under strace")
    count = count_fsyncs(parse_calls(out.read_text(errors="replace")))
    out.unlink()
    return f"For comparison, Ganeti 3.0's own tool makes {count} on a new node (same 37 files)."


def figure_converged(bench: Bench, report: Report) -> None:
    """5. Does a converged re-run write anything under the root but its summary? (strace -f -y)

    Its one allowed write is the summary that makes its txid findable on the
    node: the journal opened truncating and written once, never fsynced.
    """
    reset(bench.root, bench.seeds / "committed")
    argv = [bench.txsetup, "node-daemon-setup", "--root", str(bench.root)]
    env = _env(PYTHONDONTWRITEBYTECODE="1")
    run, calls = traced(argv, bench.docs.full, MUTATING_CALLS, out=bench.trace_file(), env=env)
    check(run, "converged re-run under strace", "converged")
    everything, failed = writes_under(calls, bench.root)
    journal = str(bench.root / "var/lib/txsetup/journal")
    summary = [text for text in everything if journal in text]
    found = [text for text in everything if journal not in text]
    clean = not found and len(summary) <= 2
    report.row(
        "5. converged re-run writes nothing under the root but its journal summary",
        "yes" if clean else f"**no**: {len(found)} other call(s), {len(summary)} on the journal",
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
                "Only its summary in the journal (one truncating open, one write, no fsync:"
                " its txid must be findable on the node), and nothing else.",
                "The same document again on a node that holds it, under `strace -f -y -e"
                " trace=` every call that can change a file or directory (write family, opens,"
                " renames, links, unlinks, mkdir/rmdir, truncate, chmod/chown, fallocate,"
                " utimensat, setxattr). Counted: an open of a path under the root with a flag"
                " that can write or create, a write to a descriptor of a file under the root,"
                " any other such call naming a path under the root. Log lines (fd 2) and the"
                " result (fd 1) are pipes and do not count. Calls that succeeded besides the"
                " journal summary's (distinct):",
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
    if load > OTHER_LOAD_NOTE:
        lines[lines.index("## Targets not met")] = (
            f"Other processes used a median {load:.0%} of the machine during the measurements:"
            " absolute times are inflated by that, ratios of alternated variants less so, CPU"
            " seconds least.\n\n## Targets not met"
        )
    lines += [f"- {text}" for text in report.unmet] or ["None."]
    for section in report.sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every node-side figure and write results-node.md; 0 on success."""
    args_list = list(sys.argv[1:] if argv is None else argv)
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
    progress(f"wrote {args.output} after {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
