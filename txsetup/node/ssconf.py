"""Ganeti's ssconf lock: ``node-daemon-setup``'s commit lock.

Ganeti's daemons read ssconf files under ``var/lock/ganeti-ssconf.lock``;
txsetup holds it while any ssconf file is renamed into place or back, so a
reader never sees half of a cluster's new ssconf values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from txsetup.errors import Busy
from txsetup.txn.changeset import Change
from txsetup.txn.layout import Layout

__all__ = ["SSCONF_LOCK", "ssconf_locked", "touches_ssconf"]

SSCONF_LOCK = "var/lock/ganeti-ssconf.lock"


def touches_ssconf(changes: Sequence[Change]) -> bool:
    """Whether any of ``changes`` is an ssconf file."""
    return any(Path(c.path).name.startswith("ssconf_") for c in changes)


@contextlib.contextmanager
def ssconf_locked(layout: Layout, changes: Sequence[Change], timeout: float) -> Iterator[None]:
    """Hold Ganeti's ssconf lock while ``changes`` move, when one of them is an ssconf file.

    Raises:
        Busy: the lock was not free within ``timeout`` seconds (exit 5).
    """
    if not touches_ssconf(changes):
        yield
        return
    try:
        with FileLock(layout.path(SSCONF_LOCK), timeout=timeout):
            yield
    except Timeout as exc:
        raise Busy(f"could not take {SSCONF_LOCK} within {timeout:g}s") from exc
