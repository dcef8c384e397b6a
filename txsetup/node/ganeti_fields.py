"""The document fields whose rules are Ganeti's: ssconf, SSH keys, key sizes.

Each check here reports its problems at the field's JSON path and goes on,
like those of :mod:`txsetup.node.strictjson` it is built from. Shapes and
sizes only: whether a key parses or matches is verification, done later.

Standard library only: this module is on the node's start-up path.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Final

from txsetup.node.documents import SshKeyTriple, SshSetup
from txsetup.node.files import ssconf_content
from txsetup.node.strictjson import (
    Integer,
    JsonObject,
    array,
    json_object,
    json_path,
    size_text,
    string,
    utf8_size,
    wrong_type,
)

__all__ = [
    "MAX_SSCONF_VALUE_BYTES",
    "MAX_SSH_KEY_BITS",
    "MIN_RSA_KEY_BITS",
    "SSCONF_KEYS",
    "SSH_KEY_TYPES",
    "authorized_keys",
    "check_key_size",
    "key_bits",
    "key_triples",
    "key_type",
    "ssconf",
]

MAX_SSCONF_VALUE_BYTES: Final = 128 * 1024  # the file's UTF-8 bytes, added newline included
# fmt: off
SSCONF_KEYS: Final[frozenset[str]] = frozenset({
    "cluster_name", "cluster_tags", "file_storage_dir", "shared_file_storage_dir",
    "gluster_storage_dir", "master_candidates", "master_candidates_ips",
    "master_candidates_certs", "master_ip", "master_netdev", "master_netmask", "master_node",
    "node_list", "node_primary_ips", "node_secondary_ips", "node_vm_capable", "offline_nodes",
    "online_nodes", "primary_ip_family", "instance_list", "release_version", "hypervisor_list",
    "maintain_node_health", "uid_pool", "nodegroups", "networks", "enabled_user_shutdown",
    "ssh_ports", "hvparams_chroot", "hvparams_lxc", "hvparams_fake", "hvparams_xen-hvm",
    "hvparams_kvm", "hvparams_xen-pvm",
})
# fmt: on
SSH_KEY_TYPES: Final = ("rsa", "dsa", "ecdsa", "ed25519")
MAX_SSH_KEY_BITS: Final = 16384
MIN_RSA_KEY_BITS: Final = 1024


def ssconf(value: object, path: str, problems: list[str]) -> Mapping[str, str]:
    """ssconf keys become file names, so only Ganeti's names are allowed."""
    found = json_object(value, path, problems)
    if isinstance(value, JsonObject) and not found:
        problems.append(f"{path}: empty object, expected at least one ssconf key")
    values: dict[str, str] = {}
    for key, item in found.items():
        item_path = json_path(path, key)
        if key not in SSCONF_KEYS:
            problems.append(f"{item_path}: unknown ssconf key")
            continue
        values[key] = string(item, item_path, problems, empty_ok=True)
        problem = _ssconf_size_problem(values[key])
        if problem:
            problems.append(f"{item_path}: {problem}")
    return types.MappingProxyType(values)


def _ssconf_size_problem(value: str) -> str | None:
    """Cap the file a value makes, newline included, at 128 KiB of UTF-8.

    That file is what Ganeti's ``ReadSsconfFile`` refuses beyond 128 KiB (by
    its size in bytes), so a bigger one would break every ssconf read of the
    key on the node. Ganeti's writer counts characters of the value plus the
    newline, which is the same for ASCII and lets a longer UTF-8 file through.
    """
    size = utf8_size(value)
    if size is None or size + 1 <= MAX_SSCONF_VALUE_BYTES:  # fast path; a surrogate is reported
        return None
    file_size = len(ssconf_content(value))
    if file_size <= MAX_SSCONF_VALUE_BYTES:
        return None
    limit = size_text(MAX_SSCONF_VALUE_BYTES)
    if file_size > size:
        return f"value of {size} bytes, {file_size} with the newline ssconf adds, more than {limit}"
    return f"value of {size} bytes, more than {limit}"


def key_type(value: object, path: str, problems: list[str]) -> str:
    """One of the SSH key types Ganeti knows."""
    if not isinstance(value, str):
        problems.append(wrong_type(path, "string", value))
        return ""
    if value not in SSH_KEY_TYPES:
        problems.append(f"{path}: expected one of {', '.join(SSH_KEY_TYPES)}")
    return value


def key_bits(value: object, path: str, problems: list[str]) -> int:
    """A positive integer of sane size (its digits are counted before any conversion)."""
    if not isinstance(value, Integer):
        problems.append(wrong_type(path, "integer", value))
        return 0
    digits = value.digits
    if len(digits) > len(str(MAX_SSH_KEY_BITS)) or not 0 < int(digits) <= MAX_SSH_KEY_BITS:
        problems.append(f"{path}: expected a key size from 1 to {MAX_SSH_KEY_BITS} bits")
        return 0
    return int(digits)


def check_key_size(setup: SshSetup, problems: list[str]) -> None:
    """Sizes ssh-keygen accepts for the type, so the node can make the key Ganeti asks for."""
    bits, kind = setup.ssh_key_bits, setup.ssh_key_type
    if bits is not None and kind is None:
        problems.append("$.ssh_key_bits: given without $.ssh_key_type")
    if not bits or kind not in SSH_KEY_TYPES:
        return
    allowed = {
        "rsa": bits >= MIN_RSA_KEY_BITS,
        "dsa": bits == 1024,
        "ecdsa": bits in (256, 384, 521),
        "ed25519": True,  # ssh-keygen ignores -b for ed25519, as Ganeti passes it anyway
    }
    if not allowed[kind]:
        sizes = {
            "rsa": f"at least {MIN_RSA_KEY_BITS}",
            "dsa": "1024",
            "ecdsa": "256, 384 or 521",
        }
        problems.append(f"$.ssh_key_bits: a {kind} key must have {sizes[kind]} bits")


def key_triples(value: object, path: str, problems: list[str]) -> tuple[SshKeyTriple, ...]:
    """``[[type, private, public], ...]``, one key per type: each type is one file."""
    triples: list[SshKeyTriple] = []
    types_seen: set[str] = set()
    for index, item in enumerate(array(value, path, problems)):
        item_path = f"{path}[{index}]"
        parts = array(item, item_path, problems)
        if isinstance(item, list) and len(parts) != 3:
            problems.append(
                f"{item_path}: expected [type, private, public], got {len(parts)} items"
            )
        if len(parts) != 3:
            continue
        kind = string(parts[0], f"{item_path}[0]", problems)
        if isinstance(parts[0], str) and kind not in SSH_KEY_TYPES:
            problems.append(f"{item_path}[0]: expected one of {', '.join(SSH_KEY_TYPES)}")
        elif kind in types_seen:
            problems.append(f"{item_path}[0]: a second {kind} key")
        elif kind:
            types_seen.add(kind)
        private = string(parts[1], f"{item_path}[1]", problems)
        public = _key_line(parts[2], f"{item_path}[2]", problems)
        triples.append(SshKeyTriple(kind, private, public))
    return tuple(triples)


def authorized_keys(value: object, path: str, problems: list[str]) -> Mapping[str, tuple[str, ...]]:
    """Name → public key lines, as Ganeti keeps them per node."""
    lines: dict[str, tuple[str, ...]] = {}
    for name, item in json_object(value, path, problems).items():
        item_path = json_path(path, name)
        if not name:
            problems.append(f"{item_path}: empty name")
        listed = enumerate(array(item, item_path, problems))
        lines[name] = tuple(_key_line(line, f"{item_path}[{i}]", problems) for i, line in listed)
    return types.MappingProxyType(lines)


def _key_line(value: object, path: str, problems: list[str]) -> str:
    """One line: a line break inside it would add a second, unchecked key to a file."""
    line = string(value, path, problems)
    if any(char in line.removesuffix("\n") for char in "\n\r\0"):
        problems.append(f"{path}: line break or NUL inside a key line")
    return line
