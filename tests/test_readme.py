"""The README's two commands, as written, under the Debian system Python.

``/usr/bin/python3`` with no nox, PEP 668 in force, a clean environment and a
fresh copy of the tracked tree: ``noxfile.py`` must install nox itself
(``tools/nox_bootstrap.py``). A fresh Debian also lacks ``python3-venv`` (its
ensurepip) and ``python3-pip``: where this machine has them, a private mount
namespace hides them from the run (a PYTHONPATH fake would not do: ``venv``
runs ensurepip with ``python -I``, which ignores it). These tests download nox
and the demo's dependencies from PyPI; ``-s tests`` is never run here (it would
run these).
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SYSTEM_TESTS, require_root, require_tool

SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOOTSTRAP_SAYS = "noxfile.py: nox is not importable by /usr/bin/python3; installing it into"
# What a fresh Debian 12 lacks: ensurepip (python3-venv), pip (python3-pip), their wheels.
HIDDEN_MODULES = ("ensurepip", "pip")
WHEELS_DIR = Path("/usr/share/python-wheels")
HANG = 1200  # seconds: downloads from PyPI and a whole demo; catches hangs only


def readme_commands() -> list[str]:
    """The commands of the README's "Try it" block, without their comments."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's Try it section has no sh block"
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block[1].splitlines()]


def require_debian_python() -> None:
    """/usr/bin/python3 is what python3 means on the system PATH, is ≥ 3.11, and has no nox."""
    problem = None
    if shutil.which("python3", path=SYSTEM_PATH) != str(SYSTEM_PYTHON):
        problem = f"python3 on {SYSTEM_PATH} is not {SYSTEM_PYTHON}"
    elif exit_code(SYSTEM_PYTHON, "-c", "import sys; assert sys.version_info >= (3, 11)"):
        problem = f"{SYSTEM_PYTHON} is older than 3.11"
    elif exit_code(SYSTEM_PYTHON, "-c", "import nox") == 0:
        problem = f"{SYSTEM_PYTHON} imports nox (python3-nox?): nothing to bootstrap"
    if problem:
        if SYSTEM_TESTS:
            pytest.fail(f"{problem}; required when TXSETUP_SYSTEM_TESTS=1")
        pytest.skip(problem)


def exit_code(python: Path, *args: str, env: dict[str, str] | None = None) -> int:
    """The exit code of ``python ARGS``, by default in an environment of the system PATH alone."""
    return subprocess.run(
        [str(python), *args],
        env=env or {"PATH": SYSTEM_PATH},
        capture_output=True,
        check=False,
        timeout=60,
    ).returncode


def tracked_copy(destination: Path) -> Path:
    """A copy of the files git tracks (what a fresh clone has), without .nox or venvs."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        if SYSTEM_TESTS:
            pytest.fail("a git checkout is required when TXSETUP_SYSTEM_TESTS=1")
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    )
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def system_env(home: Path, **extra: str) -> dict[str, str]:
    """A root shell's environment on a fresh node: no venv, no pyenv, only the system PATH."""
    home.mkdir(exist_ok=True)
    return {"PATH": SYSTEM_PATH, "HOME": str(home), **extra}


def without_venv_and_pip(directory: Path) -> list[str]:
    """A command prefix that runs its command with ensurepip, pip and their wheels hidden.

    Each package directory the system Python has is covered, in a private mount
    namespace, by one whose ``__init__`` raises what a missing module raises.
    """
    require_root("hiding python3-venv and python3-pip in a mount namespace")
    unshare = require_tool("unshare")
    mounts = []
    for module in HIDDEN_MODULES:
        found = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", f"import {module}; print({module}.__path__[0])"],
            env={"PATH": SYSTEM_PATH},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if found.returncode == 0:
            cover = directory / module
            cover.mkdir(parents=True)
            (cover / "__init__.py").write_text(
                f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
            )
            mounts.append((cover, Path(found.stdout.strip())))
    if WHEELS_DIR.is_dir():
        (directory / "wheels").mkdir(parents=True)
        mounts.append((directory / "wheels", WHEELS_DIR))
    script = "".join(
        f"mount --bind {shlex.quote(str(cover))} {shlex.quote(str(target))} && "
        for cover, target in mounts
    )
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", f'{script}exec "$@"', "sh"]


def remove_demo_logs(stdout: str) -> None:
    """The demo keeps its JSON logs in a directory it names last; remove it."""
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    kept = Path(last.rsplit(" ", 1)[-1])
    if kept.name.startswith("txsetup-demo-logs-"):
        shutil.rmtree(kept, ignore_errors=True)


def assert_demo_told(proc: subprocess.CompletedProcess[str]) -> None:
    """The demo session ran and told its story: every scenario done, nox satisfied."""
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert "Traceback" not in said
    assert "txsetup demo:" in proc.stdout
    assert re.search(r"^  ✓ ", proc.stdout, re.MULTILINE), proc.stdout
    assert not re.search(r"^  ✗ ", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"\b(\d+) of \1 scenarios did what they should", proc.stdout), proc.stdout
    assert "Session demo was successful" in proc.stderr


def test_readme_gives_the_two_commands_and_ci_runs_the_tests_one() -> None:
    """The README's block is the demo and the tests command; .ci/run runs the latter as written."""
    demo, tests = readme_commands()
    assert demo == "python3 noxfile.py -s demo"
    assert tests == "python3 noxfile.py -s tests"
    readme = (REPO / "README.md").read_text()
    assert "`nox -s demo`" in readme
    assert "`nox -s tests`" in readme
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert f"PATH={SYSTEM_PATH} {tests}" in ci


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.timeout(HANG)
def test_readme_demo_command_as_written_on_the_system_python(tmp_path: Path) -> None:
    """The README's demo command, by a shell in a fresh tree, installs nox and tells the demo."""
    require_debian_python()
    tree = tracked_copy(tmp_path / "tree")
    demo = readme_commands()[0]
    proc = subprocess.run(
        ["/bin/sh", "-c", demo],
        cwd=tree,
        env=system_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=HANG - 60,
        check=False,
    )
    try:
        assert_demo_told(proc)
    finally:
        remove_demo_logs(proc.stdout)
    assert BOOTSTRAP_SAYS in proc.stderr
    assert "noxfile.py: nox is ready in .nox/_bootstrap" in proc.stderr
    assert (tree / ".nox" / "_bootstrap" / "bin" / "python").exists()
    assert (tree / ".nox" / "demo").is_dir()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".nox/_bootstrap/bin/python"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, ".nox/_bootstrap is not ignored by git"


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.timeout(HANG)
def test_without_python3_venv_or_pip_the_demo_command_still_works(tmp_path: Path) -> None:
    """No ensurepip, no pip: pip comes from PyPI (sha256 checked), nox works, the demo runs."""
    require_debian_python()
    hidden = without_venv_and_pip(tmp_path / "hidden")
    tree = tracked_copy(tmp_path / "tree")
    env = system_env(tmp_path / "home")
    venv = str(tmp_path / "venv")
    for refused in (["-c", "import ensurepip"], ["-m", "pip", "--version"], ["-m", "venv", venv]):
        assert run_in(hidden, tree, env, "python3", *refused).returncode != 0, refused

    listed = run_in(hidden, tree, env, "python3", "noxfile.py", "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    lines = listed.stderr.splitlines()
    assert lines[0].startswith(BOOTSTRAP_SAYS), listed.stderr
    assert any(line.startswith("noxfile.py: no ensurepip here") for line in lines), lines
    assert any(
        re.match(r"noxfile\.py: fetched pip \S+ from PyPI, sha256 [0-9a-f]{12}… checked$", line)
        for line in lines
    ), lines
    assert re.search(r"^\* tests -> ", listed.stdout, re.MULTILINE), listed.stdout
    assert re.search(r"^- demo -> ", listed.stdout, re.MULTILINE), listed.stdout
    # pip ran from its wheel: the environment has nox but no pip of its own.
    bootstrap_python = ".nox/_bootstrap/bin/python"
    assert run_in(hidden, tree, env, bootstrap_python, "-c", "import nox").returncode == 0
    assert run_in(hidden, tree, env, bootstrap_python, "-m", "pip", "-V").returncode != 0

    demo = run_in(hidden, tree, env, "/bin/sh", "-c", readme_commands()[0])
    try:
        assert_demo_told(demo)
    finally:
        remove_demo_logs(demo.stdout)
    assert demo.stderr.splitlines()[0] == "noxfile.py: running nox from .nox/_bootstrap"
    assert "virtualenv" in (tree / ".nox" / "demo" / "pyvenv.cfg").read_text()


@pytest.mark.system
def test_bootstrap_without_network_fails_in_one_line(tmp_path: Path) -> None:
    """PyPI out of reach: exit 1, one line naming the cause and the way out, no traceback."""
    require_debian_python()
    hidden = without_venv_and_pip(tmp_path / "hidden")
    tree = tracked_copy(tmp_path / "tree")
    with socket.socket() as probe:  # a loopback port nobody listens on: the proxy refuses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    env = system_env(tmp_path / "home", https_proxy=proxy, HTTPS_PROXY=proxy)
    proc = run_in(hidden, tree, env, "python3", "noxfile.py", "-s", "demo")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("noxfile.py: ") for line in lines), lines
    assert lines[-1].startswith(
        "noxfile.py: cannot install nox into .nox/_bootstrap: cannot reach PyPI ("
    ), lines
    assert "apt-get install python3-nox" in lines[-1]
    assert "pipx install nox" in lines[-1]
    assert (tree / ".nox" / "_bootstrap").is_dir()
    assert not list(tree.glob(".nox/_bootstrap/lib/python3*/site-packages/nox"))


def run_in(
    prefix: list[str], tree: Path, env: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    """``argv`` run in ``tree`` behind ``prefix``, its program found on the system PATH."""
    return subprocess.run(
        [*prefix, *argv],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG - 60,
        check=False,
    )
