"""Sessions: ``tests``, ``lint``, ``demo`` (the README's two commands use these), ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"


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
