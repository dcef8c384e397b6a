"""The node daemon as ``node-daemon-setup``'s service: its control and its journal state.

Apply: restart it and wait until it presents exactly the newly installed
certificate. Restore, after the old files are back: restart it and wait for
the *old* certificate if it was running before, or stop it if it was not.
The journaled-service runner (:mod:`txsetup.txn.service`) records, before the
restart, whether it ran and which certificate it served, so ``--resume``
after a kill during the restart does what a live run would.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.node.config import DaemonConfig
from txsetup.node.daemon import (
    Probe,
    is_running,
    probe_tls,
    run_all,
    wait_healthy,
)
from txsetup.txn.service import ForwardFailed, ServiceKind

__all__ = ["DAEMON", "DaemonControl", "DaemonUnhealthy", "fingerprint_of_pem"]

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


@dataclass(frozen=True, kw_only=True)
class DaemonControl:
    """Restart, stop and health-check the node daemon as configured."""

    config: DaemonConfig
    log: FilteringBoundLogger
    server_pem: Path

    def is_running(self) -> bool:
        """Whether the daemon runs now (its ``status`` command exits 0)."""
        return is_running(self.config.status, timeout=self.config.command_timeout)

    def _run(self, what: str, commands: tuple[tuple[str, ...], ...]) -> None:
        result = run_all(commands, timeout=self.config.command_timeout)
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
        # Ganeti's noded asks for a client certificate; present the installed one.
        cert = str(self.server_pem) if self.server_pem.exists() else None
        return functools.partial(probe_tls, client_cert=cert)

    def _healthy(self, fingerprint: str | None, *, timeout: float) -> bool:
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

    def _restart_healthy(self, fingerprint: str | None) -> None:
        """Restart and wait for ``fingerprint``; raise :class:`DaemonUnhealthy` if not."""
        self._run("restart", self.config.restart)
        if not self._healthy(fingerprint, timeout=self.config.health_timeout):
            raise DaemonUnhealthy(
                f"daemon restart: not healthy within {self.config.health_timeout:g}s "
                f"({self.config.health_url or 'status'})"
            )

    def is_current(self, details: Mapping[str, Any]) -> bool:
        """Whether it serves the certificate ``details`` want already (a quick look)."""
        return self._healthy(_fingerprint(details.get("fingerprint")), timeout=1.0)

    def apply(self, details: Mapping[str, Any]) -> None:
        """Restart it and wait for the new certificate; :class:`DaemonUnhealthy` if not."""
        self._restart_healthy(_fingerprint(details.get("fingerprint")))

    def restore(self, earlier: Mapping[str, Any]) -> None:
        """Bring the daemon back to a journaled earlier state (those files already back):
        restarted on its certificate if it ran, else stopped; :class:`DaemonUnhealthy` if not."""
        if earlier.get("was_running"):
            self._restart_healthy(_fingerprint(earlier.get("old_fingerprint")))
        else:
            self._run("stop", self.config.stop)


def _fingerprint(value: object) -> str | None:
    return value if isinstance(value, str) else None


DAEMON = ServiceKind(
    step="restart_daemon",
    description="restart the node daemon; wait until healthy",
    state="restarting_daemon",
    noun="the node daemon",
    wanted=lambda details: bool(details.get("start_node_daemon")),
    earlier=lambda details: {"old_fingerprint": details.get("old_fingerprint")},
    serving=lambda details: {"old_fingerprint": details.get("fingerprint")},
)
"""The node daemon, as ``node-daemon-setup`` declares it: the prepared record's
``start_node_daemon`` asks for the restart, ``fingerprint`` is what it must
serve after and ``old_fingerprint`` what it served before."""
