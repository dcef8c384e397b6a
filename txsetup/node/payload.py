"""Decode the JSON documents a master sends on stdin, one decoder per program.

Decoding is the ``decode`` step: it only decides whether a document is
well-formed input (exit 3). Whether the node accepts it — cluster name,
certificate, keys — is verification, done elsewhere (exit 4).

Every problem of a document is collected and reported at once, each message
starting with its JSON path (:mod:`txsetup.node.strictjson`); the rules of
the Ganeti fields are in :mod:`txsetup.node.ganeti_fields`, the decoded types
in :mod:`txsetup.node.documents`.

Standard library only: this module is on the node's start-up path.
"""

from __future__ import annotations

import types

from txsetup.node.documents import NodeDaemonSetup, SshSetup
from txsetup.node.ganeti_fields import (
    authorized_keys,
    check_key_size,
    key_bits,
    key_triples,
    key_type,
    ssconf,
)
from txsetup.node.strictjson import boolean, optional, raise_if_any, required, string, top_object

__all__ = ["decode_node_daemon_setup", "decode_ssh_setup"]


def decode_node_daemon_setup(raw: bytes) -> NodeDaemonSetup:
    """Decode a ``node-daemon-setup`` document, or report all of its problems at once.

    Raises:
        InvalidInput: one error listing every problem, each starting with its JSON path.
    """
    problems: list[str] = []
    top = top_object(raw, NodeDaemonSetup, problems)
    setup = NodeDaemonSetup(
        cluster_name=required(top, "cluster_name", string, problems),
        node_daemon_certificate=required(top, "node_daemon_certificate", string, problems),
        ssconf=required(top, "ssconf", ssconf, problems),
        start_node_daemon=optional(top, "start_node_daemon", boolean, False, problems),
        hmac_key=optional(top, "hmac_key", string, None, problems),
        node_name=optional(top, "node_name", string, None, problems),
    )
    raise_if_any(problems)
    return setup


def decode_ssh_setup(raw: bytes) -> SshSetup:
    """Decode an ``ssh-setup`` document: shapes and types only; keys are parsed by checks.

    Raises:
        InvalidInput: one error listing every problem, each starting with its JSON path.
    """
    problems: list[str] = []
    top = top_object(raw, SshSetup, problems)
    setup = SshSetup(
        cluster_name=required(top, "cluster_name", string, problems),
        node_daemon_certificate=optional(top, "node_daemon_certificate", string, None, problems),
        ssh_host_key=optional(top, "ssh_host_key", key_triples, (), problems),
        ssh_root_key=optional(top, "ssh_root_key", key_triples, (), problems),
        authorized_keys=optional(
            top, "authorized_keys", authorized_keys, types.MappingProxyType({}), problems
        ),
        ssh_key_type=optional(top, "ssh_key_type", key_type, None, problems),
        ssh_key_bits=optional(top, "ssh_key_bits", key_bits, None, problems),
    )
    check_key_size(setup, problems)
    raise_if_any(problems)
    return setup
