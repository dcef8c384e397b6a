"""Start an atomic push, or resume the unfinished one: the API over :mod:`fleet`.

One atomic push at a time per master: both calls hold the master's lock
(``var/lib/txsetup/push/.lock``) while they run, and a new push is refused
while an earlier one is unfinished, since its nodes may still be held or
unconfirmed and two coordinators must never decide for one node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from txsetup.errors import Busy, UsageError
from txsetup.master.fleet import (
    FleetOptions,
    certificate_fingerprint,
    drive,
    master_client_cert,
    tls_check,
)
from txsetup.master.fleetlog import FleetLog, new_push_id, push_dir, unfinished_pushes
from txsetup.master.payload import Payload
from txsetup.master.push import OnEvent, PushOptions, run_until_stopped
from txsetup.master.results import PushReport
from txsetup.master.ssh import Node

__all__ = ["resume_atomic", "start_atomic", "unfinished_push"]


@contextlib.contextmanager
def _master_lock(from_root: Path) -> Iterator[None]:
    directory = push_dir(from_root)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = FileLock(directory / ".lock", timeout=0)
        lock.acquire()
    except Timeout:
        raise Busy(
            f"another atomic push or resume runs on this master ({directory}); wait for it"
        ) from None
    except OSError as exc:
        raise UsageError(f"--from-root: cannot use {directory}: {exc}") from exc
    try:
        yield
    finally:
        lock.release()


def unfinished_push(from_root: Path) -> FleetLog | None:
    """The oldest atomic push recorded under ``from_root`` that has no end, if any."""
    return next(unfinished_pushes(from_root), None)


def start_atomic(
    from_root: Path,
    nodes: Sequence[Node],
    payload: Payload,
    options: PushOptions,
    fleet: FleetOptions,
    *,
    on_event: OnEvent,
) -> PushReport:
    """Record the push durably, then drive it (SIGINT/SIGTERM stop it; resume finishes it).

    Raises:
        Busy: an earlier atomic push is unfinished, or one runs now (exit 5).
    """
    with _master_lock(from_root):
        earlier = unfinished_push(from_root)
        if earlier is not None:
            raise Busy(
                f"atomic push {earlier.push_id} is unfinished: finish it first with "
                f"`txsetup push --resume --from-root {from_root}`"
            )
        certificate = payload.document.get("node_daemon_certificate")
        fingerprint = certificate_fingerprint(certificate) if certificate else None
        log = FleetLog(push_dir(from_root) / f"{new_push_id()}.json")
        log.append(
            "push",
            push_id=log.push_id,
            nodes=[node.spec for node in nodes],
            program=payload.program,
            digest=payload.digest,
            certificate=fingerprint,
            options=_record_options(options) | fleet.to_record(),
        )
        return _drive(
            log, options, fleet, payload=payload, fingerprint=fingerprint, on_event=on_event
        )


def resume_atomic(from_root: Path, *, on_event: OnEvent) -> PushReport | None:
    """Finish the unfinished atomic push under ``from_root``; None when there is none.

    It runs with the options the push recorded.
    """
    with _master_lock(from_root):
        log = unfinished_push(from_root)
        if log is None:
            return None
        recorded = log.records[0]
        kept = recorded["options"]
        options = PushOptions(
            ssh=kept["ssh"],
            ssh_options=tuple(kept["ssh_options"]),
            remote_command=kept["remote_command"],
            parallel=kept["parallel"],
            timeout=kept["timeout"],
        )
        fleet = FleetOptions.from_record(kept, master_client_cert(from_root))
        return _drive(
            log,
            options,
            fleet,
            payload=None,
            fingerprint=recorded["certificate"],
            on_event=on_event,
        )


def _no_check(_: Node) -> None:
    return None


def _record_options(options: PushOptions) -> dict[str, object]:
    return {
        "ssh": options.ssh,
        "ssh_options": list(options.ssh_options),
        "remote_command": options.remote_command,
        "parallel": options.parallel,
        "timeout": options.timeout,
    }


def _drive(
    log: FleetLog,
    options: PushOptions,
    fleet: FleetOptions,
    *,
    payload: Payload | None,
    fingerprint: str | None,
    on_event: OnEvent,
) -> PushReport:
    """Drive the push; the master's own check is the daemon's certificate over TLS, when
    the push installs one (ssh-setup's nodes check their sshd themselves)."""
    return run_until_stopped(
        lambda stop: drive(
            log,
            options,
            fleet,
            stdin_for=payload.for_node if payload is not None else None,
            check=tls_check(fleet, fingerprint) if fingerprint else _no_check,
            on_event=on_event,
            stop=stop,
        )
    )
