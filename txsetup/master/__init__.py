"""The master side: push one payload to many nodes over OpenSSH.

The API a cluster manager embeds::

    from txsetup.master import PushOptions, build_payload, parse_node, push

    payload = build_payload(Path("/"), start_node_daemon=True)
    report = push([parse_node("root@node1"), parse_node("node2:2222")], payload,
                  PushOptions(parallel=16), on_result=print)
    if not report.ok:
        ...

Nothing here is imported on a node: ``txsetup node-daemon-setup`` never
loads this package (nor ``rich``).
"""

from txsetup.master.payload import Payload, build_payload
from txsetup.master.push import NodeEvent, PushOptions, push, push_async
from txsetup.master.results import NodeResult, PushReport, nodes_to_retry
from txsetup.master.ssh import Node, parse_node

__all__ = [
    "Node",
    "NodeEvent",
    "NodeResult",
    "Payload",
    "PushOptions",
    "PushReport",
    "build_payload",
    "nodes_to_retry",
    "parse_node",
    "push",
    "push_async",
]
