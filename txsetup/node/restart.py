"""The ``restart_daemon`` step's do and undo, journaled.

Do: note (durably, in the journal) whether the daemon runs, restart it,
and wait until it presents exactly the newly installed certificate.
Undo, after the files are back: restart it and wait for the *old*
certificate if it was running before, or stop it if it was not. Both read
what they need from the journal, so ``--resume`` after a kill during the
restart does the same thing a live run would.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from txsetup.errors import RecoveryFailed
from txsetup.node.config import DaemonConfig
from txsetup.node.daemon import (
    Probe,
    RunCommand,
    is_running,
    probe_tls,
    run_all,
    run_command,
    wait_healthy,
)
from txsetup.node.files import GANETI_DIR
from txsetup.txn.journal import Journal, Record, TxnState, find_record, record_once
from txsetup.txn.recovery import ForwardFailed, Hooks, PendingTxn

__all__ = ["DaemonControl", "DaemonUnhealthy", "fingerprint_of_pem", "recovery_hooks"]

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


def fingerprint_of_pem(pem: bytes | None) -> str | None:
    """SHA-256 of the first certificate in ``pem`` (what a TLS peer presents), or None."""
    if not pem:
        return None
    match = _CERT_BLOCK.search(pem)
    if match is None:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group().decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return hashlib.sha256(der).hexdigest()


class DaemonUnhealthy(ForwardFailed):
    """The node daemon did not (re)start healthy; the step is undone."""

    error_code = "daemon_unhealthy"
    step = "restart_daemon"


@dataclass(frozen=True)
class DaemonControl:
    """Restart, stop and health-check the node daemon as configured."""

    config: DaemonConfig
    log: FilteringBoundLogger
    server_pem: Path
    run: RunCommand = run_command
    probe: Probe | None = None

    def is_running(self) -> bool:
        """Whether the daemon runs now (its ``status`` command exits 0)."""
        return is_running(self.config.status, timeout=self.config.command_timeout, run=self.run)

    def _run(self, what: str, commands: tuple[tuple[str, ...], ...]) -> None:
        result = run_all(commands, timeout=self.config.command_timeout, run=self.run)
        self.log.info(
            f"daemon.{what}",
            argv=list(result.argv),
            returncode=result.returncode,
            timed_out=result.timed_out,
            duration_ms=result.duration_ms,
            output=result.output,
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exited {result.returncode}"
            last = result.output.strip().splitlines()[-1:] or [""]
            raise DaemonUnhealthy(
                f"daemon {what}: {' '.join(result.argv)} {why}"
                + (f": {last[0]}" if last[0] else "")
            )

    def _probe(self) -> Probe:
        if self.probe is not None:
            return self.probe
        # Ganeti's noded asks for a client certificate; present the installed one.
        cert = str(self.server_pem) if self.server_pem.exists() else None
        return functools.partial(probe_tls, client_cert=cert)

    def healthy(self, fingerprint: str | None, *, timeout: float) -> bool:
        """Whether the daemon serves the certificate ``fingerprint`` within ``timeout``."""
        target = self.config.health_url
        if target is None or fingerprint is None:
            return self.is_running()
        health = wait_healthy(
            target, expected_fingerprint=fingerprint, timeout=timeout, probe=self._probe()
        )
        self.log.info(
            "daemon.healthy" if health.healthy else "daemon.unhealthy",
            attempts=health.attempts,
            duration_ms=health.duration_ms,
            fingerprint=health.fingerprint,
            **({"error": health.last_error} if health.last_error else {}),
        )
        return health.healthy

    def restart_healthy(self, fingerprint: str | None) -> None:
        """Restart and wait for ``fingerprint``; raise :class:`DaemonUnhealthy` if not."""
        self._run("restart", self.config.restart)
        if not self.healthy(fingerprint, timeout=self.config.health_timeout):
            raise DaemonUnhealthy(
                f"daemon restart: not healthy within {self.config.health_timeout:g}s "
                f"({self.config.health_url or 'status'})"
            )

    def restore(self, *, was_running: bool, fingerprint: str | None) -> None:
        """Bring the daemon back to its earlier state (files already restored)."""
        try:
            if was_running:
                self.restart_healthy(fingerprint)
            else:
                self._run("stop", self.config.stop)
        except DaemonUnhealthy as exc:
            raise RecoveryFailed(f"restoring the node daemon failed: {exc}") from exc


def restart_journaled(
    control: DaemonControl,
    journal: Journal,
    records: list[Record],
    *,
    old_fingerprint: str | None,
    new_fingerprint: str | None,
) -> None:
    """The whole ``restart_daemon`` do, for a live run and for roll-forward alike:
    journal the earlier state (once), restart, wait for the new certificate."""
    record_once(
        journal,
        records,
        TxnState.RESTARTING_DAEMON,
        lambda: {"was_running": control.is_running(), "old_fingerprint": old_fingerprint},
    )
    control.restart_healthy(new_fingerprint)


def restore_if_touched(control: DaemonControl, records: list[Record]) -> None:
    """Undo hook: put the daemon back only if this transaction touched it."""
    record = find_record(records, TxnState.RESTARTING_DAEMON)
    if record is not None:
        old = record.data.get("old_fingerprint")
        control.restore(
            was_running=bool(record.data.get("was_running")),
            fingerprint=old if isinstance(old, str) else None,
        )


def recovery_hooks(control: DaemonControl) -> Hooks:
    """How recovery finishes or undoes ``restart_daemon``, from the journal alone.

    Rolling forward restarts the daemon when the transaction asked for it
    (raising :class:`DaemonUnhealthy`, so recovery undoes instead, if it does
    not come back); undoing puts it back only if the transaction touched it.
    """

    def after_commit(txn: PendingTxn, journal: Journal) -> None:
        if txn.details.get("start_node_daemon"):
            old, new = txn.details.get("old_fingerprint"), txn.details.get("fingerprint")
            restart_journaled(
                control,
                journal,
                txn.records,
                old_fingerprint=old if isinstance(old, str) else None,
                new_fingerprint=new if isinstance(new, str) else None,
            )

    return Hooks(
        after_commit=after_commit,
        after_undo=lambda txn: restore_if_touched(control, txn.records),
        sweep_dirs=(GANETI_DIR,),
    )
