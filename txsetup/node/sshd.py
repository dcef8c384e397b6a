"""sshd as ``ssh-setup``'s service: its control and its journal state.

Apply: reload it and wait until it presents every new host key. Restore,
after the old files are back: reload again and wait for the *old* keys if
sshd was running before. The journaled-service runner
(:mod:`txsetup.txn.service`) records, before the reload, whether sshd ran and
which host keys the old files held, so ``--resume`` after a kill during the
reload does what a live run would.

Healthy means the server at ``health_address`` presents the new host key in
its SSH handshake: an sshd that still answers with the old key is running the
old configuration. The key is read with ``ssh-keyscan -t KIND`` (OpenSSH's
own client code, so no SSH implementation of ours to trust) and compared by
the SHA-256 of its blob. DSA is not checked: OpenSSH has not offered DSA
host keys by default since 7.0, so a master's old DSA key is installed but
never served.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.node.config import HealthTarget, SshdConfig
from txsetup.node.daemon import is_running, run_all, run_command, wait_healthy
from txsetup.txn.service import ForwardFailed, ServiceKind

__all__ = ["SSHD", "UNCHECKED_KINDS", "SshdControl", "SshdUnhealthy", "keyscan"]

UNCHECKED_KINDS = frozenset({"dsa"})


class SshdUnhealthy(ForwardFailed):
    """sshd did not reload, or does not serve the new host keys; the step is undone."""

    error_code = "sshd_unhealthy"
    step = "reload_sshd"


def keyscan(target: HealthTarget, /, *, kind: str, timeout: float) -> str:
    """The fingerprint of the ``kind`` host key the server at ``target`` presents.

    Raises:
        OSError: no answer, or no key of that kind (what :func:`wait_healthy` retries).
        SshdUnhealthy: ssh-keyscan is not installed (nothing to retry).
    """
    program = shutil.which("ssh-keyscan")
    if program is None:
        raise SshdUnhealthy(
            "reload_sshd: ssh-keyscan is not installed; it checks that sshd serves the new "
            'host key (install the OpenSSH client, or set [sshd] health_address = "none")'
        )
    seconds = str(max(1, round(timeout)))
    argv = [program, "-T", seconds, "-p", str(target.port), "-t", kind, target.host]
    result = run_command(argv, timeout=timeout + 1)
    for line in result.output.splitlines():
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            try:
                return hashlib.sha256(base64.b64decode(fields[2], validate=True)).hexdigest()
            except (binascii.Error, ValueError):
                continue
    raise OSError(f"no {kind} host key from {target} (ssh-keyscan exited {result.returncode})")


def _checked(fingerprints: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(fingerprints.items()) if k not in UNCHECKED_KINDS}


@dataclass(frozen=True, kw_only=True)
class SshdControl:
    """Reload sshd as configured and check which host keys it serves."""

    config: SshdConfig
    log: FilteringBoundLogger

    def is_running(self) -> bool:
        """Whether sshd runs now (its ``status`` command exits 0)."""
        return is_running(self.config.status, timeout=self.config.command_timeout)

    def _reload(self) -> None:
        """Run the reload commands; raise :class:`SshdUnhealthy` when one fails."""
        result = run_all(self.config.reload, timeout=self.config.command_timeout)
        self.log.info(
            "sshd.reload",
            argv=list(result.argv),
            returncode=result.returncode,
            timed_out=result.timed_out,
            duration_ms=result.duration_ms,
            output=result.output,
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exited {result.returncode}"
            raise SshdUnhealthy(f"sshd reload: {' '.join(result.argv)} {why}")

    def _serves(self, fingerprints: Mapping[str, str], *, timeout: float) -> bool:
        """Whether sshd presents each ``kind → fingerprint`` within ``timeout`` in all."""
        target = self.config.health_address
        wanted = _checked(fingerprints)
        if target is None or not wanted:
            return self.is_running()
        budget = timeout
        for kind, fingerprint in wanted.items():
            probe = functools.partial(keyscan, kind=kind)
            health = wait_healthy(
                target, expected_fingerprint=fingerprint, timeout=budget, probe=probe
            )
            self.log.info(
                "sshd.healthy" if health.healthy else "sshd.unhealthy",
                kind=kind,
                attempts=health.attempts,
                duration_ms=health.duration_ms,
                fingerprint=health.fingerprint,
                **({"error": health.last_error} if health.last_error else {}),
            )
            if not health.healthy:
                return False
            budget = max(budget - health.duration_ms / 1000, 0.01)
        return True

    def _reload_healthy(self, fingerprints: Mapping[str, str]) -> None:
        """Reload and wait for ``fingerprints``; raise :class:`SshdUnhealthy` if not served."""
        self._reload()
        if not self._serves(fingerprints, timeout=self.config.health_timeout):
            raise SshdUnhealthy(
                f"sshd reload: the new host key is not served within "
                f"{self.config.health_timeout:g}s ({self.config.health_address or 'status'})"
            )

    def is_current(self, details: Mapping[str, Any]) -> bool:
        """Always: sshd is reloaded only because a host key file changes."""
        return True

    def apply(self, details: Mapping[str, Any]) -> None:
        """Reload and wait for the new host keys; :class:`SshdUnhealthy` if not served."""
        self._reload_healthy(_strings(details.get("host_keys")))

    def restore(self, earlier: Mapping[str, Any]) -> None:
        """Make sshd read the old keys again (files already restored) and check it serves them.

        sshd reads its keys only when reloaded, so it is reloaded whether or not
        it ran before; only a running one is expected to answer. A reload that
        fails here is not the end: if the first one failed too, sshd never left
        the old keys, and serving them is all that counts.
        """
        try:
            self._reload()
        except SshdUnhealthy as exc:
            self.log.warning("sshd.reload_failed", error=str(exc))
        fingerprints = _strings(earlier.get("old_host_keys"))
        was_running = bool(earlier.get("was_running"))
        if was_running and not self._serves(fingerprints, timeout=self.config.health_timeout):
            raise SshdUnhealthy("it does not serve the old host keys")


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


SSHD = ServiceKind(
    step="reload_sshd",
    description="reload sshd; wait until it serves the new host keys",
    state="reloading_sshd",
    noun="sshd",
    wanted=lambda details: bool(details.get("reload_sshd")),
    earlier=lambda details: {"old_host_keys": _strings(details.get("old_host_keys"))},
    serving=lambda details: {"old_host_keys": _strings(details.get("host_keys"))},
)
"""sshd, as ``ssh-setup`` declares it: the prepared record's ``reload_sshd``
asks for the reload (a host key changed), ``host_keys`` are what it must serve
after and ``old_host_keys`` what it served before."""
