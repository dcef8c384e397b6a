"""Where one ``txsetup push`` to one node spends its wall time, read from that push itself.

The push runs with ``--log-format json``: its stderr carries its own events
(``node.begin``, ``node.end``) and every log line of the node-side run, each
with a microsecond ``ts``. The remote command is prefixed with a shell
builtin that prints the time the node's login shell started (bash's
``$EPOCHREALTIME``; ``date`` where the shell has no such variable), which
push forwards as a ``node.output`` line. The nodes are sshd processes on this
machine, so every clock is the same clock and the differences are the parts:

======================  ============================================================
part                    from → to
======================  ============================================================
master start-up         spawn of ``txsetup push`` → ``node.begin`` (Python, imports,
                        the payload read, built and checked)
ssh                     ``node.begin`` → the node's shell runs (the master connection:
                        TCP, key exchange, host key check, authentication; then the
                        command's session over it, login shell)
node start-up           shell → the node's first event (Python, imports, reading
                        stdin: the document)
each step               its ``step.begin`` → ``step.end`` (``verify_cert`` mints
                        client.pem; ``stage`` writes and fsyncs; ``commit`` renames)
node, between steps     the rest of the node's run (journal records, the lock's
                        release, its result)
node exit, ssh close    the node's last event → ``node.end``
master exit             ``node.end`` → push's exit (results printed, interpreter end)
======================  ============================================================

Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

__all__ = ["MARK", "PARTS", "parts_of", "stamped_command"]

MARK: Final = "bench.shell"
PARTS: Final = (
    "master start-up",
    "ssh",
    "node start-up",
    "node, between steps",
    "node exit, ssh close",
    "master exit",
)


def stamped_command(command: str) -> str:
    """``command`` preceded by a line giving the time the node's shell started."""
    stamp = f'echo {MARK} "${{EPOCHREALTIME:-$(date +%s.%N)}}" >&2'
    return f"{stamp}; exec {command}"


def _when(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def parts_of(stderr: str, spawned: float, exited: float) -> dict[str, float]:
    """Seconds of each part (``PARTS`` and one ``step <name>`` per step) of a one-node push.

    Raises:
        RuntimeError: the log lacks an event the breakdown needs.
    """
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    try:
        begin = next(_when(e) for e in events if e.get("event") == "node.begin")
        end = next(_when(e) for e in events if e.get("event") == "node.end")
        shell = next(
            float(e["line"].split()[1])
            for e in events
            if e.get("event") == "node.output" and e.get("line", "").startswith(MARK)
        )
    except (StopIteration, IndexError, ValueError) as exc:
        raise RuntimeError(f"push's log lacks what the breakdown needs: {exc!r}") from exc
    node = [e for e in events if "txid" in e and "node" in e and e.get("program")]
    node = [e for e in node if not str(e.get("event", "")).startswith(("node.", "push."))]
    if not node:
        raise RuntimeError("push's log holds no event of the node-side run")
    first, last = _when(node[0]), _when(node[-1])
    steps = _steps(node)
    return {
        "master start-up": begin - spawned,
        "ssh": shell - begin,
        "node start-up": first - shell,
        **{f"step {name}": seconds for name, seconds in steps},
        "node, between steps": (last - first) - sum(seconds for _, seconds in steps),
        "node exit, ssh close": end - last,
        "master exit": exited - end,
    }


def _steps(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """Each step's wall time, ``step.begin`` to ``step.end``, in the order they ran."""
    started: dict[str, float] = {}
    steps: list[tuple[str, float]] = []
    for event in events:
        name = str(event.get("step", ""))
        if event.get("event") == "step.begin":
            started[name] = _when(event)
        elif event.get("event") == "step.end" and name in started:
            steps.append((name, _when(event) - started.pop(name)))
    return steps
