"""``python3 noxfile.py ...``: run nox, from a private virtual environment if need be.

The README's commands must work on a fresh Debian or Ubuntu node as root, whose
system Python refuses ``pip install`` (PEP 668) and may have neither pip nor
``ensurepip`` (Debian's ``python3-venv`` package). When the running Python cannot
import nox, :func:`bootstrap_and_reexec` makes ``.nox/_bootstrap`` beside the
noxfile with the standard library's ``venv``, gets pip into it from ``ensurepip``
or else as PyPI's wheel of pip (its sha256 checked against PyPI's), installs nox
with that pip and re-executes the noxfile under that environment's Python.
Standard library only: nothing else can be assumed before nox exists. Each action
is one line on stderr; a failure is one line and exit 1, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import venv
from pathlib import Path
from typing import NoReturn

BOOTSTRAP_DIR = Path(".nox", "_bootstrap")
PIP_RELEASE_URL = "https://pypi.org/pypi/pip/json"  # PyPI's JSON API: the newest pip
# Set for the re-executed noxfile: if nox still cannot be imported there, stop, don't loop.
REEXEC_MARK = "TXSETUP_NOX_BOOTSTRAPPED"
NETWORK_TIMEOUT = 60.0
PIP_INSTALL = ("install", "--quiet", "--disable-pip-version-check", "--no-input", "nox")


class BootstrapError(Exception):
    """Why nox could not be installed, in one line for a person."""


def say(message: str) -> None:
    """One line on stderr, named after the command the person typed."""
    print(f"noxfile.py: {message}", file=sys.stderr, flush=True)


def bootstrap_and_reexec(noxfile: Path) -> NoReturn:
    """Make sure ``.nox/_bootstrap`` has nox, then run ``noxfile`` again under its Python."""
    venv_dir = noxfile.resolve().parent / BOOTSTRAP_DIR
    python = venv_dir / "bin" / "python"
    shown = os.path.relpath(venv_dir)
    if os.environ.get(REEXEC_MARK):
        say(f"nox is still not importable by {sys.executable}; remove {shown} and run again")
        raise SystemExit(1)
    try:
        if has_nox(python):
            say(f"running nox from {shown}")
        else:
            started = time.monotonic()
            say(f"nox is not importable by {sys.executable}; installing it into {shown} (once)")
            install_nox(venv_dir, python)
            say(f"nox is ready in {shown} ({time.monotonic() - started:.0f} s)")
    except BootstrapError as error:
        say(
            f"cannot install nox into {shown}: {error}. Fix that and run this again, or"
            " install nox yourself (apt-get install python3-nox, or pipx install nox)"
        )
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        say(f"interrupted; {shown} is made again on the next run")
        raise SystemExit(130) from None
    os.environ[REEXEC_MARK] = "1"
    os.execv(python, [str(python), str(noxfile), *sys.argv[1:]])  # noqa: S606


def run_nox(noxfile: Path) -> None:
    """Run nox's own command line on ``noxfile`` (its arguments are this process's)."""
    # nox.main is newer than Debian 12's nox (2022.11.21); nox.__main__.main is in both.
    from nox.__main__ import main

    os.environ.pop(REEXEC_MARK, None)
    sys.argv[1:1] = ["--noxfile", str(noxfile)]  # a later -f/--noxfile still wins
    main()


def has_nox(python: Path) -> bool:
    """Whether ``python`` exists, runs, and imports nox (an interrupted bootstrap does not)."""
    try:
        found = subprocess.run(
            [str(python), "-c", "import nox.__main__"], capture_output=True, check=False
        )
    except OSError:  # missing, or its interpreter is gone
        return False
    return found.returncode == 0


def install_nox(venv_dir: Path, python: Path) -> None:
    """Create the environment afresh, with pip from ensurepip if there is one, and add nox."""
    if has_ensurepip():
        say(f"creating it with {sys.executable} -m venv (pip from ensurepip)")
        try:
            create_venv(venv_dir, with_pip=True)
        except BootstrapError as error:
            say(f"that did not work ({error}); fetching pip from PyPI instead")
        else:
            pip_install(python, ["-m", "pip"])
            return
    else:
        say("no ensurepip here (Debian: package python3-venv); fetching pip from PyPI")
    create_venv(venv_dir, with_pip=False)
    with tempfile.TemporaryDirectory(prefix="txsetup-pip-") as tmp:
        wheel = fetch_pip_wheel(Path(tmp))
        pip_install(python, [str(wheel / "pip")])  # pip runs from its own wheel


def has_ensurepip() -> bool:
    """Whether this Python has ensurepip (Debian and Ubuntu ship it in python3-venv)."""
    try:  # what venv runs: a stray empty ensurepip directory would import, and not do
        return importlib.util.find_spec("ensurepip.__main__") is not None
    except ImportError:
        return False


def create_venv(venv_dir: Path, *, with_pip: bool) -> None:
    """``python3 -m venv [--without-pip] --clear venv_dir``, done in this process."""
    try:
        venv.EnvBuilder(clear=True, symlinks=os.name != "nt", with_pip=with_pip).create(venv_dir)
    except subprocess.CalledProcessError as error:
        raise BootstrapError(f"ensurepip failed with exit {error.returncode}") from error
    except SystemExit as error:  # Debian's venv exits when it finds no ensurepip
        raise BootstrapError(f"venv exited with {error.code}") from error
    except OSError as error:
        raise BootstrapError(f"cannot create {venv_dir}: {error.strerror or error}") from error


def fetch_pip_wheel(directory: Path) -> Path:
    """Download PyPI's newest pip wheel into ``directory``, checked against PyPI's sha256."""
    try:
        release = json.loads(fetch(PIP_RELEASE_URL))
        version = str(release["info"]["version"])
        wheel = next(
            entry
            for entry in release["urls"]
            if entry["packagetype"] == "bdist_wheel"
            and str(entry["filename"]).endswith("-py3-none-any.whl")
        )
        filename, sha256 = str(wheel["filename"]), str(wheel["digests"]["sha256"])
        url = urllib.parse.urljoin(PIP_RELEASE_URL, str(wheel["url"]))  # absolute on pypi.org
    except (ValueError, KeyError, TypeError, StopIteration) as error:
        raise BootstrapError(f"unexpected answer from {PIP_RELEASE_URL}") from error
    if not url.startswith("https://") or "/" in filename:
        raise BootstrapError(f"unexpected answer from {PIP_RELEASE_URL}")
    data = fetch(url)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BootstrapError(f"{filename} does not have the sha256 PyPI lists for it")
    path = directory / filename
    path.write_bytes(data)
    say(f"fetched pip {version} from PyPI, sha256 {sha256[:12]}… checked")
    return path


def fetch(url: str) -> bytes:
    """The body at ``url`` (https, certificate checked), or a one-line reason it is not."""
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as answer:  # noqa: S310
            body: bytes = answer.read()
    except urllib.error.URLError as error:
        raise BootstrapError(f"cannot reach PyPI ({error.reason})") from error
    except OSError as error:  # a timeout, or a connection cut while reading
        raise BootstrapError(f"cannot reach PyPI ({error})") from error
    return body


def pip_install(python: Path, pip: list[str]) -> None:
    """``pip install nox`` into the environment of ``python``; pip's last word if it fails."""
    say("installing nox with pip")
    done = subprocess.run(
        [str(python), *pip, *PIP_INSTALL], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise BootstrapError(
            f"pip install nox failed (exit {done.returncode}): {said[-1] if said else 'no output'}"
        )
