"""Sessions: ``tests``, ``tests_debian``, ``lint``, ``demo`` (the README's two commands),
``matrix``, ``bench``, ``docs``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from tempfile import TemporaryDirectory

# ``python3 noxfile.py ARGS`` is ``nox ARGS``, with or without nox installed: where the
# running Python cannot import nox (a fresh Debian's system Python), tools/nox_bootstrap.py
# installs it into .nox/_bootstrap and runs this file again with that environment's Python.
try:
    import nox
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:
    if __name__ != "__main__":
        raise
    from tools.nox_bootstrap import bootstrap_and_reexec

    bootstrap_and_reexec(Path(__file__))

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# virtualenv (a dependency of nox) seeds pip itself: the stdlib venv needs ensurepip,
# which Debian's system Python lacks without the python3-venv package.
nox.options.default_venv_backend = "virtualenv"


def parallel(args: list[str]) -> list[str]:
    """pytest's arguments with one xdist worker per core (at least two) in front.

    Most tests wait on processes they started (sshd, the demo daemon, strace), so
    two workers help even on one core. ``worksteal``: a worker that runs out
    takes queued tests from another, so the long tests (which run first) never
    leave one worker busy while the other idles. Arguments that choose the
    workers themselves (``-n``, ``--numprocesses``, ``-p no:xdist``) are left alone.
    """
    chosen = any(
        arg in ("-n", "--numprocesses", "no:xdist", "-pno:xdist")
        or arg.startswith(("-n", "--numprocesses="))
        for arg in args
    )
    workers = ["-n", str(max(2, os.cpu_count() or 1)), "--dist", "worksteal"]
    return args if chosen else [*workers, *args]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (its console scripts too).

    Tests run in parallel (pytest-xdist), one worker per core, at least two;
    ``-- -n 1`` or ``-- -p no:xdist`` runs them one at a time. The crash matrices
    run at their ``quick`` depth here (a few points of each syscall group)
    unless ``TXSETUP_CRASH`` says otherwise, and the property tests
    derandomized: the ``matrix`` session runs both whole.
    """
    session.install("-e", ".[test]")
    session.run("pytest", *parallel(session.posargs))


CRASH_TESTS = (
    "tests/test_crash.py",
    "tests/test_ssh_crash.py",
    "tests/test_decision_crash.py",
    "tests/test_revert_crash.py",
    "tests/test_fleet_crash.py",
    "tests/test_journal.py",
)
CRASH_DEPTHS = ("quick", "sampled", "full")


@nox.session
def matrix(session: nox.Session) -> None:
    """The fault matrices whole, then the property tests in a longer random run.

    kill -9 and injected EIO/ENOSPC at every file syscall of real runs of both
    programs, on a fresh node and on a re-add, under strace: the depth is
    ``TXSETUP_CRASH`` (``full`` unless set, or given as this session's first
    argument: ``-- sampled``). Then every property test (hypothesis) with the
    ``matrix`` profile: random instead of derandomized, and
    ``TXSETUP_PROPERTY_SCALE`` (default 10) times its examples. The rest of the
    arguments go to both pytest runs.
    """
    depth, args = os.environ.get("TXSETUP_CRASH", "full"), list(session.posargs)
    if args and args[0] in CRASH_DEPTHS:
        depth = args.pop(0)
    session.install("-e", ".[test]")
    # Timeouts catch hangs: these runs are long by design.
    hangs = ("-o", "timeout=3600")
    crash = parallel([*CRASH_TESTS, *hangs, *args])
    session.run("pytest", *crash, env={"TXSETUP_CRASH": depth})
    properties = ["tests", "-m", "hypothesis", "--hypothesis-profile=matrix", *hangs, *args]
    session.run("pytest", *parallel(properties))


# The oldest end of the supported range: Debian 12's system Python and its own libraries.
DEBIAN_PYTHON = "/usr/bin/python3"
DEBIAN_SITE = "/usr/lib/python3/dist-packages"
DEBIAN_PACKAGES = {  # module -> the Debian package that provides it
    "cryptography": "python3-cryptography",
    "filelock": "python3-filelock",
    "structlog": "python3-structlog",
    "rich": "python3-rich",
    "ensurepip": "python3-venv",
}
_IMPORTED = """
import importlib, importlib.metadata, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        origin = importlib.import_module(name).__file__
    except Exception:
        found[name] = None
        continue
    try:
        found[name] = [importlib.metadata.version(name), origin]
    except importlib.metadata.PackageNotFoundError:  # ensurepip: part of Python, no version
        found[name] = ["", origin]
print(json.dumps(found))
"""


@nox.session(python=False)
def tests_debian(session: nox.Session) -> None:
    """Run the whole suite at the oldest supported end: Debian 12's Python and its own libraries.

    Proves the lower bounds in pyproject.toml: txsetup works on /usr/bin/python3
    with Debian's python3-cryptography, python3-filelock, python3-structlog and
    python3-rich. Its venv sees the system's packages; txsetup is installed
    without dependencies and only the test tools (pytest, pytest-xdist...) come
    from PyPI; the tests run in parallel, as in ``tests``. Before the tests it
    prints the version and origin of each library imported, and fails unless
    each is the Debian package at exactly its lower bound.
    """
    apt = "apt-get install " + " ".join(sorted(set(DEBIAN_PACKAGES.values())))
    if not Path(DEBIAN_PYTHON).exists():
        session.error(f"{DEBIAN_PYTHON} is missing: this session needs Debian's python3 ({apt})")
    imported = _imported(DEBIAN_PYTHON)
    lacking = [DEBIAN_PACKAGES[name] for name, found in imported.items() if found is None]
    if lacking:
        session.error(f"{DEBIAN_PYTHON} lacks {', '.join(lacking)}: as root, run {apt}")
    venv = Path(".nox", "tests_debian").resolve()
    shutil.rmtree(venv, ignore_errors=True)  # nothing a pip of an earlier run left may shadow them
    session.run(DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", str(venv), external=True)
    python = str(venv / "bin" / "python")
    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    session.run(*pip, "--no-deps", "-e", ".", external=True)
    session.run(*pip, *_test_tools(), external=True)
    _check_debian_libraries(session, python, apt)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
    }
    session.run(python, "-m", "pytest", *parallel(session.posargs), external=True, env=env)


def _imported(python: str) -> dict[str, list[str] | None]:
    """What ``python`` imports for each library: ``[version, file]``, or None when it cannot."""
    out = subprocess.run(
        [python, "-c", _IMPORTED, *DEBIAN_PACKAGES], capture_output=True, text=True, check=True
    )
    found: dict[str, list[str] | None] = json.loads(out.stdout)
    return found


def _lower_bounds() -> dict[str, Version]:
    """The ``>=`` bound pyproject.toml sets for each library, in any of its requirement lists."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    lists = [project["dependencies"], *project["optional-dependencies"].values()]
    bounds = {}
    for requirement in (Requirement(text) for group in lists for text in group):
        for spec in requirement.specifier:
            if spec.operator == ">=":
                bounds[requirement.name] = Version(spec.version)
    return bounds


def _test_tools() -> list[str]:
    """The test extra without the libraries Debian provides: pytest and its helpers, from PyPI."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    test = project["optional-dependencies"]["test"]
    return [text for text in test if Requirement(text).name not in DEBIAN_PACKAGES]


def _check_debian_libraries(session: nox.Session, python: str, apt: str) -> None:
    """Print what the venv imports; fail unless each is Debian's, at pyproject's lower bound."""
    bounds = _lower_bounds()
    wrong = []
    for name, found in _imported(python).items():
        if name not in bounds:
            continue
        version, origin = found or ["not importable", "nowhere"]
        session.log(f"{name} {version} from {origin}")
        if (
            found is None
            or not origin.startswith(DEBIAN_SITE + "/")
            or Version(version) != bounds[name]
        ):
            wrong.append(
                f"{name} {version} from {origin}, not {DEBIAN_PACKAGES[name]} {bounds[name]}"
            )
    if wrong:
        session.error(
            "not the oldest end this session proves: "
            + "; ".join(wrong)
            + f" (in {DEBIAN_SITE}; Debian 12: {apt})"
        )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict over the package, the tests and this file."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Run txsetup on an embedded default: a temporary node root, a real run, a push."""
    session.install("-e", ".[master]")
    session.run("python", "-m", "txsetup.demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Measure push (bench/results.md) and the node side (bench/results-node.md); not timed tests.

    Installs without extras, as on a node: txsetup keeps structlog from importing
    rich, but the node benchmark's reference writer imports structlog as any tool
    would. Arguments (``--quick``, ``--reps N``) go to both benchmarks.
    """
    session.install("-e", ".")
    # A node installs a wheel, which pip byte-compiles: without this, an editable install
    # under PYTHONDONTWRITEBYTECODE=1 compiles txsetup from source in every timed run.
    session.run("python", "-m", "compileall", "-q", "txsetup")
    session.run("python", "-m", "bench.push", *session.posargs)
    session.run("python", "-m", "bench.node", *session.posargs)


DEB_DIR = Path("dist/deb")
DEB_PACKAGES = ("txsetup", "txsetup-ganeti")
# What dpkg-buildpackage and apt-get see: Debian's own tools and Python, not this session's.
SYSTEM_ENV = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8")
# Binary packages only, unsigned; Build-Depends are checked, but not build-essential:
# an Architecture: all Python package needs no compiler.
DPKG_BUILDPACKAGE = ("dpkg-buildpackage", "-b", "-us", "-uc", "--ignore-builtin-builddeps")
# What each package must hold (dpkg-deb --contents paths), beside the Python package.
_ALIASES = ("txsetup", "node-daemon-setup", "prepare-node-join")
DEB_CONTENTS = (
    [f"./usr/bin/{name}" for name in _ALIASES]
    + [f"./usr/share/man/man8/{name}.8.gz" for name in _ALIASES]
    + [
        "./usr/lib/python3/dist-packages/txsetup/cli/__init__.py",
        "./usr/share/doc/txsetup/copyright",
    ],
    ["./usr/lib/ganeti/node-daemon-setup", "./usr/lib/ganeti/prepare-node-join"],
)
# Ganeti's two tools that txsetup-ganeti diverts to <path>.ganeti and replaces.
GANETI_TOOLS = tuple(
    Path("/usr/lib/ganeti") / tool for tool in ("node-daemon-setup", "prepare-node-join")
)


@nox.session
def deb(session: nox.Session) -> None:
    """Build txsetup_<version>_all.deb and txsetup-ganeti_<version>_all.deb into dist/deb/.

    The build runs in a temporary copy of the files git tracks (or would), so
    the checkout gets no litter. The man pages are built there first with this
    session's Sphinx (Debian 12's python3-sphinx is older than the docs need);
    then ``dpkg-buildpackage`` runs with Debian's debhelper, pybuild, hatchling
    and Python only. lintian checks both packages: an error or a warning fails.
    """
    missing = [tool for tool in ("git", "dpkg-buildpackage", "lintian") if not shutil.which(tool)]
    if missing:
        session.error(
            f"building the packages needs {', '.join(missing)}: apt-get install git debhelper"
            " dh-python pybuild-plugin-pyproject python3-all python3-hatchling lintian"
        )
    session.install("-e", ".[docs]")
    with TemporaryDirectory(prefix="txsetup-deb-") as tmp:
        source = Path(tmp) / "txsetup"
        copy_tree_git_tracks(session, source)
        docs = source / "docs"
        build = ("sphinx-build", "-W", "--keep-going", "-n", "-q", "-b", "man")
        session.run(*build, str(docs), str(docs / "_build/man"))
        with session.chdir(source):
            session.run(*SYSTEM_ENV, *DPKG_BUILDPACKAGE, external=True)
        version = changelog_version(source)
        built = [Path(tmp) / f"{name}_{version}_all.deb" for name in DEB_PACKAGES]
        if not all(deb.exists() for deb in built):
            session.error(f"dpkg-buildpackage did not write {', '.join(map(str, built))}")
        DEB_DIR.mkdir(parents=True, exist_ok=True)
        for old in DEB_DIR.glob("*.deb"):
            old.unlink()
        for deb in built:
            shutil.copy2(deb, DEB_DIR)
    debs = [str(DEB_DIR / deb.name) for deb in built]
    session.run("lintian", "--fail-on", "error,warning", "--info", *debs, external=True)
    for package, expected in zip(debs, DEB_CONTENTS, strict=True):
        listing = subprocess.run(
            ["dpkg-deb", "--contents", package], capture_output=True, text=True, check=True
        ).stdout
        paths = {line.split()[5] for line in listing.splitlines()}
        if lacking := sorted(path for path in expected if path not in paths):
            session.error(f"{package} lacks {', '.join(lacking)}")
    session.log(f"built {' and '.join(debs)}")


def copy_tree_git_tracks(session: nox.Session, target: Path) -> None:
    """Copy the files git tracks, or would track (not ignored), to ``target``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        path = Path(name)
        if not path.is_symlink() and not path.exists():  # deleted but not yet committed
            continue
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path, follow_symlinks=False)
    session.log(f"copied the tracked tree to {target}")


def changelog_version(source: Path) -> str:
    """The version of the newest entry in ``source``'s debian/changelog."""
    return subprocess.run(
        ["dpkg-parsechangelog", "--show-field", "Version"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@nox.session
def deb_check(session: nox.Session) -> None:
    """Install dist/deb's packages with apt, run Ganeti's master on them, remove, purge.

    For CI, as root: it changes the machine. Ganeti's own packages must be
    installed (``apt-get install ganeti``). With both packages installed,
    ``tests/test_ganeti_master.py`` runs with ``TXSETUP_DEB_INSTALLED=1``:
    Ganeti's master code calls the machine's /usr/lib/ganeti/node-daemon-setup
    and prepare-node-join, now txsetup's, run by the system Python. Then
    ``apt-get remove``, and again install and ``apt-get purge``: each time
    Ganeti's tools must be back as they were and no diversion left.
    """
    if os.geteuid() != 0:
        session.error("deb_check installs packages into this machine: run it as root (in CI)")
    debs = [next(iter(sorted(DEB_DIR.glob(f"{name}_*_all.deb"))), None) for name in DEB_PACKAGES]
    if None in debs:
        session.error(f"no packages in {DEB_DIR}: run `nox -s deb` first")
    if not all(tool.is_symlink() for tool in GANETI_TOOLS):
        session.error("Ganeti's tools are not installed: apt-get install ganeti")
    session.install("-e", ".[test]")  # the test harness; the node runs the installed package
    before = ganeti_tools()
    apt = (*SYSTEM_ENV, "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q")
    install = (*apt, "install", *[f"./{deb}" for deb in debs])
    try:
        session.run(*install, external=True)
        diverted = ganeti_tools(".ganeti")
        if diverted != before:
            session.error(f"Ganeti's tools were not moved aside intact: {diverted} != {before}")
        check_boot_unit(session)
        session.run(
            "pytest",
            "tests/test_ganeti_master.py",
            *session.posargs,
            env={"TXSETUP_DEB_INSTALLED": "1", "TXSETUP_SYSTEM_TESTS": "1"},
        )
        for removal in ("remove", "purge"):
            if removal == "purge":
                session.run(*install, external=True)
            session.run(*apt, removal, *DEB_PACKAGES, external=True)
            check_ganeti_restored(session, before, removal)
    except BaseException:  # leave the machine as it was, then report the failure
        subprocess.run([*apt, "purge", *DEB_PACKAGES], check=False)
        raise


def check_boot_unit(session: nox.Session) -> None:
    """The txsetup package's boot-time unit is installed and enabled (not started)."""
    unit = "txsetup-recover.service"
    installed = [
        d for d in ("/lib/systemd/system", "/usr/lib/systemd/system") if Path(d, unit).is_file()
    ]
    wants = Path("/etc/systemd/system/multi-user.target.wants", unit)
    if not installed or not wants.is_symlink():
        session.error(f"{unit}: installed in {installed}, enabled: {wants.is_symlink()}")
    session.log(f"{unit} is installed in {installed[0]} and enabled")


def ganeti_tools(suffix: str = "") -> dict[str, tuple[str, str]]:
    """Ganeti's tools at their path plus ``suffix``: where each link points, its content's hash."""
    state = {}
    for tool in GANETI_TOOLS:
        path = tool.with_name(tool.name + suffix)
        target = os.readlink(path) if path.is_symlink() else "(no symlink)"
        content = subprocess.run(
            ["sha256sum", str(path)], capture_output=True, text=True, check=False
        ).stdout.split(" ")[0]
        state[tool.name] = (target, content)
    return state


def check_ganeti_restored(
    session: nox.Session, before: dict[str, tuple[str, str]], how: str
) -> None:
    """After ``apt-get how``: Ganeti's tools are as ``before``, nothing diverted or left over."""
    after = ganeti_tools()
    leftovers = [str(t) + ".ganeti" for t in GANETI_TOOLS if os.path.lexists(f"{t}.ganeti")]
    diversions = subprocess.run(
        ["dpkg-divert", "--list", "/usr/lib/ganeti/*"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if after != before or leftovers or diversions:
        session.error(
            f"after apt-get {how}, Ganeti's tools are {after} (were {before});"
            f" left over: {leftovers}; diversions: {diversions!r}"
        )
    session.log(f"apt-get {how}: Ganeti's tools are back as they were {before}, nothing diverted")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site (html) and the man pages, warnings as errors; check each page renders.

    The build runs the installed ``txsetup`` for its example outputs and draws
    the transaction's state diagram with graphviz's ``dot``; the man pages are
    checked with ``man -l``, with groff's warnings counted as failures.
    """
    missing = [tool for tool in ("dot", "man") if shutil.which(tool) is None]
    if missing:
        session.error(
            f"the docs need {' and '.join(missing)}: install graphviz (dot) and man-db (man),"
            " e.g. apt-get install graphviz man-db"
        )
    session.install("-e", ".[docs]")
    build = ("sphinx-build", "-W", "--keep-going", "-n", "-q")
    session.run(*build, "-b", "html", "docs", "docs/_build/html")
    session.run(*build, "-b", "man", "docs", "docs/_build/man")
    pages = sorted(Path("docs/_build/man").glob("*.8"))
    if not pages:
        session.error("sphinx built no man pages in docs/_build/man")
    for page in pages:
        check_man_page(session, page)


def check_man_page(session: nox.Session, page: Path) -> None:
    """Render ``page`` as ``man`` would on an 80-column terminal; any groff warning fails."""
    rendered = subprocess.run(
        ["man", "--warnings=w", "-l", str(page)],
        env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "MANPAGER": "cat"},
        capture_output=True,
        text=True,
        check=False,
    )
    if rendered.returncode != 0 or rendered.stderr.strip() or not rendered.stdout.strip():
        session.error(
            f"{page} does not render cleanly (exit {rendered.returncode}):\n{rendered.stderr}"
        )
    session.log(f"{page}: {len(rendered.stdout.splitlines())} lines at 80 columns, no warnings")


if __name__ == "__main__":
    from tools.nox_bootstrap import run_nox

    run_nox(Path(__file__))
