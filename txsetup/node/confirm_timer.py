"""The timer that reverts a commit not confirmed in time, whatever becomes of the SSH session.

When it fires it runs ``txsetup revert TXID --if-unconfirmed`` with the
same root and configuration file: that reverts only when the deadline has
passed and no ``txsetup confirm`` came (a confirmed commit makes it a no-op).

* Where systemd is the init system (``<root>/run/systemd/system`` exists)
  and ``systemd-run`` is there: a transient timer, ``systemd-run
  --on-active=SECONDS``, unit ``txsetup-confirm-<txid>``. It survives the
  SSH session, and logind's KillUserProcesses too.
* Otherwise, or when systemd-run fails: a detached process in a session of
  its own (``setsid``), with no terminal, stdin, stdout and stderr on
  ``/dev/null`` and working directory ``/``; it sleeps until the deadline
  (:func:`txsetup.txn.last_commit.revert` waits for it, holding no lock).

Neither is what makes the deadline hold: a node that was down when it
passed reverts at the next txsetup run on it (the lock step of every run,
``--resume``, or the boot-time unit of the Debian package).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from txsetup.txn.layout import Layout

__all__ = ["arm_timer", "timer_argv"]

_SYSTEMD_RUN_TIMEOUT = 30.0
# The timer waits this long for a run that holds the lock before giving up (exit 5);
# the next run on the node then reverts instead.
_TIMER_LOCK_TIMEOUT = "3600"


def timer_argv(layout: Layout, txid: str, config: Path | None) -> list[str]:
    """The command the timer runs: this txsetup, reverting ``txid`` if still unconfirmed."""
    argv = [sys.executable, "-m", "txsetup", "revert", txid, "--if-unconfirmed"]
    argv += ["--root", str(layout.root.resolve()), "--lock-timeout", _TIMER_LOCK_TIMEOUT]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    return argv


def arm_timer(
    layout: Layout,
    txid: str,
    deadline: str,
    *,
    config: Path | None,
    log: FilteringBoundLogger,
) -> str | None:
    """Arm the revert of ``txid`` at ``deadline``: ``systemd``, ``process``, or None (not armed).

    Best effort: the deadline holds at the next run whatever happens here.
    """
    argv = timer_argv(layout, txid, config)
    left = (datetime.fromisoformat(deadline) - datetime.now(UTC)).total_seconds()
    seconds = max(1, math.ceil(left))
    systemd_run = shutil.which("systemd-run")
    if (layout.root / "run/systemd/system").is_dir() and systemd_run is not None:
        unit = f"txsetup-confirm-{txid}"
        command = [
            systemd_run,
            f"--unit={unit}",
            f"--on-active={seconds}",
            "--timer-property=AccuracySec=1s",
            f"--description=txsetup: revert {txid} unless confirmed",
            *argv,
        ]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_SYSTEMD_RUN_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("confirm.timer_failed", timer="systemd", error=str(exc))
        else:
            if done.returncode == 0:
                log.info("confirm.timer", timer="systemd", unit=unit, deadline=deadline)
                return "systemd"
            error = done.stderr.decode(errors="replace").strip()[-500:]
            log.warning("confirm.timer_failed", timer="systemd", error=error)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    except OSError as exc:
        log.warning("confirm.timer_failed", timer="process", error=str(exc))
        return None
    log.info("confirm.timer", timer="process", pid=process.pid, deadline=deadline)
    return "process"
