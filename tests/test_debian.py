"""The Debian packaging in ``debian/`` agrees with the Python package it builds.

``nox -s deb`` builds the packages and lintian checks them; ``nox -s
deb_check`` installs and removes them. What can drift without either
noticing is checked here, in the ordinary suite.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO
from txsetup import __version__

DEBIAN = REPO / "debian"


def debian_version(version: str) -> str:
    """A PEP 440 version as dpkg must order it: pre-releases (``1.0rc1``) sort before ``1.0``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)*)(?:\.?(a|b|rc|dev)\.?(\d+))?(?:\.post(\d+))?", version)
    assert match, f"{version} is not a version this test knows how to map"
    release, pre, number, post = match.groups()
    return release + (f"~{pre}{number}" if pre else "") + (f"+post{post}" if post else "")


def test_changelog_names_the_package_version() -> None:
    """debian/changelog's newest entry is txsetup/__init__.py's __version__ (add one with dch)."""
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"txsetup \(([^)]+)\) \S+; urgency=\w+", first)
    assert match, first
    assert match.group(1) == debian_version(__version__), (
        f"debian/changelog is at {match.group(1)}, txsetup at {__version__}:"
        f" dch --newversion {debian_version(__version__)}"
    )


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.1.0", "0.1.0"),
        ("1.2rc1", "1.2~rc1"),
        ("1.2.0.dev3", "1.2.0~dev3"),
        ("1.0.post2", "1.0+post2"),
    ],
)
def test_debian_version_sorts_like_pep_440(version: str, expected: str) -> None:
    """Pre-releases map to ``~`` (before the release), post-releases to ``+`` (after)."""
    assert debian_version(version) == expected


def test_console_scripts_are_the_ones_the_packages_ship() -> None:
    """txsetup-ganeti links the aliases pyproject installs in /usr/bin into /usr/lib/ganeti."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    links = [line.split() for line in (DEBIAN / "txsetup-ganeti.links").read_text().splitlines()]
    assert links == [
        [f"usr/bin/{tool}", f"usr/lib/ganeti/{tool}"]
        for tool in ("node-daemon-setup", "prepare-node-join")
    ]
    assert {source.removeprefix("usr/bin/") for source, _ in links} <= set(scripts)
