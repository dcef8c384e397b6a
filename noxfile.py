"""Sessions: ``tests``, ``lint``, ``demo`` (the README's two commands), ``bench``, ``docs``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# ``python3 noxfile.py ARGS`` is ``nox ARGS``, with or without nox installed: where the
# running Python cannot import nox (a fresh Debian's system Python), tools/nox_bootstrap.py
# installs it into .nox/_bootstrap and runs this file again with that environment's Python.
try:
    import nox
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


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (its console scripts too)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


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


if __name__ == "__main__":
    from tools.nox_bootstrap import run_nox

    run_nox(Path(__file__))
