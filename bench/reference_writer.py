"""The reference writer: the least a node-daemon-setup can do, as a floor to measure against.

``python bench/reference_writer.py --root DIR --client-pem FILE [--stack | --mint]``
reads the JSON document on stdin and writes the files ``txsetup
node-daemon-setup`` writes for it — every ``ssconf_<key>``, ``server.pem``,
``hmac.key`` and ``client.pem`` under ``DIR/var/lib/ganeti``, with txsetup's
modes and Ganeti's owners — durably, one file after another: create with
the final mode, write, fsync, rename over the target; then fsync the
directory once. No checks, no journal, no lock, no log.

``client.pem`` is copied from ``FILE`` (it is minted on the node, not sent);
``--mint`` makes it instead, the minimal way (RSA 2048, CN = node name,
signed by the node key, as Ganeti does). ``--stack`` first imports what
txsetup's stack imports — cryptography (x509 and the hazmat modules txsetup
uses), filelock and structlog — so that the difference to txsetup is
txsetup's own work, not its libraries' loading. Standard library only
otherwise; run by path, so it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def import_stack() -> None:
    """Load the libraries txsetup loads on a node (the imports of its checks, lock and log)."""
    import filelock  # noqa: F401
    import structlog  # noqa: F401
    from cryptography import x509  # noqa: F401
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import (  # noqa: F401
        dsa,
        ec,
        ed448,
        ed25519,
        rsa,
    )


def mint_client_pem(server_pem: str, node_name: str) -> bytes:
    """client.pem as Ganeti makes it: a new RSA 2048 key, a certificate signed by the node key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    data = server_pem.encode()
    issuer = x509.load_pem_x509_certificate(data)
    signer = serialization.load_pem_private_key(data, password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1825))
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    pkcs8 = serialization.PrivateFormat.PKCS8
    pem = serialization.Encoding.PEM
    return key.private_bytes(pem, pkcs8, serialization.NoEncryption()) + cert.public_bytes(pem)


def write_durably(
    directory: str, name: str, data: bytes, mode: int, owner: tuple[int, int]
) -> None:
    """Create a new file with its final mode and owner, write, fsync, rename it into place."""
    staged = os.path.join(directory, f".{name}.new")
    fd = os.open(staged, _FLAGS, mode)
    try:
        if owner != (-1, -1):
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(staged, os.path.join(directory, name))


def main() -> int:
    """Write the document's files; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--client-pem", required=True)
    parser.add_argument("--stack", action="store_true", help="import txsetup's libraries first")
    parser.add_argument("--mint", action="store_true", help="mint client.pem (implies --stack)")
    args = parser.parse_args()
    if args.stack or args.mint:
        import_stack()
    document = json.loads(sys.stdin.buffer.read())
    directory = os.path.join(args.root, "var/lib/ganeti")
    masterd = (-1, -1)
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("gnt-masterd")
            masterd = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            pass
    for key, value in document["ssconf"].items():
        content = value if not value or value.endswith("\n") else value + "\n"
        write_durably(directory, f"ssconf_{key}", content.encode(), 0o444, (-1, -1))
    pem = document["node_daemon_certificate"]
    write_durably(directory, "server.pem", pem.encode(), 0o440, masterd)
    write_durably(directory, "hmac.key", document["hmac_key"].encode(), 0o440, masterd)
    if args.mint:
        client = mint_client_pem(pem, document["node_name"])
    else:
        with open(args.client_pem, "rb") as stream:
            client = stream.read()
    write_durably(directory, "client.pem", client, 0o440, (-1, -1))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
