"""An attacker's tools: forged certificates, raw TLS connections, gRPC channels with a chosen identity."""

from __future__ import annotations

import base64
import binascii
import re
import socket
import ssl
from pathlib import Path

import grpc
import nacl.exceptions
import nacl.secret
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from swarmsecrets.ca import certs


def tls_connect(port: int, cert: tuple[str, str] | None, host: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection that trusts anything and presents ``cert`` (cert path, key path) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection((host, port), timeout=5)
    return ctx.wrap_socket(raw)


def refused(port: int, cert: tuple[str, str] | None) -> bool:
    """True if the raft port closes the connection instead of talking raft to us."""
    try:
        s = tls_connect(port, cert)
    except (ssl.SSLError, OSError):
        return True
    try:
        s.settimeout(3)
        s.sendall(b"\x00" * 64)
        return s.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True
    finally:
        s.close()


def forge_cert(tmp: Path, name: str, ca: certs.RootCA, role: str, cluster_id: str,
               raft: str | None) -> tuple[str, str]:
    """A node certificate signed by ``ca`` (another swarm's, or a stolen one): (cert path, key path)."""
    key, csr = certs.generate_key_and_csr()
    cert = certs.issue_node_cert(ca, csr, node_id="x" * 25, role=role, cluster_id=cluster_id,
                                 addrs=["127.0.0.1:1"], raft_addr=raft)
    (tmp / f"{name}.crt").write_bytes(cert)
    (tmp / f"{name}.key").write_bytes(key)
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


def node_channel(addr: str, cert_dir: Path, server_name: str = "swarm-manager") -> grpc.Channel:
    """A gRPC channel to ``addr`` with a node's identity, read from its ``certificates`` dir."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(cert_dir / "swarm-root-ca.crt").read_bytes(),
        private_key=(cert_dir / "swarm-node.key").read_bytes(),
        certificate_chain=(cert_dir / "swarm-node.crt").read_bytes())
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", server_name)])


def presented_certificate(port: int, host: str = "127.0.0.1") -> bytes | None:
    """The certificate (DER) a TLS port presents to a client that shows none, or None if the port is
    closed or no handshake happens."""
    try:
        s = tls_connect(port, None, host)
    except (ssl.SSLError, OSError):
        return None
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def _blobs(data: bytes) -> list[bytes]:
    """A file's bytes, and every value in it a thief would decode: PEM blocks and base64 strings
    (JSON values included)."""
    out = [data]
    out += re.findall(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", data, re.S)
    for token in re.findall(rb"[A-Za-z0-9+/=]{40,}", data):
        try:
            out.append(base64.b64decode(token + b"=" * (-len(token) % 4), validate=True))
        except (binascii.Error, ValueError):
            pass
    return out


def _private_keys(blob: bytes) -> list[PrivateKeyTypes]:
    found: list[PrivateKeyTypes] = []
    for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            found.append(load(blob, None))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
    return found


def loot_disk(data_dir: Path, keks: tuple[bytes, ...] = ()) -> tuple[list[PrivateKeyTypes], list[bytes]]:
    """What a thief holding ``data_dir`` (and the keys ``keks``, if any) recovers: every private key
    that loads from any file, in clear or opened by a key found on the same disk (any 32-byte file or
    value) or given in ``keks``, and every payload such a key opens (the wrapped data key among them)."""
    blobs = [b for f in sorted(data_dir.rglob("*")) if f.is_file() for b in _blobs(f.read_bytes())]
    candidates = set(keks) | {b for b in blobs if len(b) == nacl.secret.SecretBox.KEY_SIZE}
    opened: list[bytes] = []
    for kek in candidates:
        box = nacl.secret.SecretBox(kek)
        for b in blobs:
            if len(b) > box.NONCE_SIZE + box.MACBYTES:
                try:
                    opened.append(box.decrypt(b))
                except nacl.exceptions.CryptoError:
                    pass
    private = [k for b in blobs + opened for k in _private_keys(b)]
    return private, opened


def public_der(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
