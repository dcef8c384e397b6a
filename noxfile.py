"""Sessions: ``tests``, ``tests_debian``, ``lint``, ``demo`` (the README's two commands),
``bench``, ``docs``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.version import Version

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (its console scripts too)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


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
    without dependencies and only the test tools come from PyPI. Before the
    tests it prints the version and origin of each library imported, and fails
    unless each is the Debian package at exactly its lower bound.
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
    session.run(python, "-m", "pytest", *session.posargs, external=True, env=env)


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

    Installs without extras, as on a node: rich, when present, is imported by
    structlog and adds start-up time to every txsetup process. Arguments
    (``--quick``, ``--reps N``) go to both benchmarks.
    """
    session.install("-e", ".")
    # A node installs a wheel, which pip byte-compiles: without this, an editable install
    # under PYTHONDONTWRITEBYTECODE=1 compiles txsetup from source in every timed run.
    session.run("python", "-m", "compileall", "-q", "txsetup")
    session.run("python", "-m", "bench.push", *session.posargs)
    session.run("python", "-m", "bench.node", *session.posargs)


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
