"""What the checks of every program read from the node: local files, the cluster name."""

from __future__ import annotations

import os
from typing import Any

from txsetup.errors import RefusedByVerification
from txsetup.node.files import GANETI_DIR
from txsetup.txn.atomic import read_regular
from txsetup.txn.layout import Layout
from txsetup.txn.program import TxnContext

__all__ = ["LOCAL_LIMIT", "describe_cluster", "local_cluster_name", "read_local"]

LOCAL_LIMIT = 1024 * 1024
_CLUSTER_NAME = f"{GANETI_DIR}/ssconf_cluster_name"


def read_local(layout: Layout, relpath: str) -> bytes | None:
    """A local file verification compares against, or None when there is none.

    Something that exists but cannot be read as a regular file of sane size
    (a symlink, a directory, over 1 MiB) is refused: treating it as absent
    would skip the very check it is there for.
    """
    path = layout.path(relpath)
    content = read_regular(path, LOCAL_LIMIT)
    if content is None and os.path.lexists(path):
        raise RefusedByVerification(
            f"{relpath} exists but is not a regular file of at most 1 MiB; fix or remove it"
        )
    return content


def local_cluster_name(layout: Layout) -> str | None:
    """The cluster this node belongs to already (its ssconf), or None."""
    local = read_local(layout, _CLUSTER_NAME)
    return local.decode("utf-8", "replace").strip() if local is not None else None


def describe_cluster(ctx: TxnContext[Any, Any]) -> str:
    """The cluster name check: against this node's own name, or a node that has none yet."""
    if os.path.lexists(ctx.layout.path(_CLUSTER_NAME)):
        return "cluster name matches this node's"
    return "cluster name accepted (this node has none yet)"
