"""Root CA rotation: a new root, the cross-signed intermediate that bridges it to the old one, the
trust bundle while both are valid, and how far the swarm has moved.

The rotation is online. While it runs, the swarm trusts both roots (the bundle) and issues
certificates from the new root's key, each sent with the cross-signed intermediate: a certificate
with the new root's subject and key, signed by the OLD root. A node that still trusts only the old
root verifies a new certificate through that intermediate; a node that trusts the new root
verifies it directly; and every node that trusts the bundle accepts certificates of either root.
Once every node that is not down holds a certificate from the new root, the old root leaves the
bundle and its certificates are refused everywhere.

Each new root gets a subject of its own (CN ``swarm-ca`` plus a serial number attribute): TLS
libraries pick an issuer by name before they check a signature, so two trusted roots with one
name could make a valid certificate fail against the wrong one.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from swarmsecrets.ca import certs
from swarmsecrets.crypto.keys import memory_file

if TYPE_CHECKING:
    from swarmsecrets.manager.state.objects import Cluster




def bundle_digest(roots_pem: bytes) -> str:
    """How a node says which roots it trusts: hex SHA-256 of the bundle's PEM."""
    return hashlib.sha256(roots_pem).hexdigest()


def split_pems(pem: bytes) -> list[bytes]:
    """Every certificate of a PEM bundle, each as its own PEM."""
    return [c.public_bytes(serialization.Encoding.PEM) for c in x509.load_pem_x509_certificates(pem)]


def create_rotation_root() -> certs.RootCA:
    """A new root CA for a rotation: like the first one, with a subject no other root has."""
    return certs.create_root_ca(distinct=True)


def cross_sign(old: certs.RootCA, new_root_pem: bytes) -> bytes:
    """The intermediate that bridges the roots: the new root's subject, key and extensions, issued
    by the old root and valid no longer than it."""
    new = x509.load_pem_x509_certificate(new_root_pem)
    old_cert = old.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(new.subject).issuer_name(old_cert.subject)
        .public_key(new.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(new.not_valid_before_utc)
        .not_valid_after(min(new.not_valid_after_utc, old_cert.not_valid_after_utc))
    )
    for ext in new.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(old.private_key().public_key()), critical=False)
    return builder.sign(old.private_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def chains_to(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
              roots: Iterable[x509.Certificate]) -> bool:
    """Whether ``leaf`` was issued by one of ``roots``, directly or through one of ``intermediates``
    (one level: all a rotation adds). Names and signatures only: validity periods are the TLS
    handshake's business."""
    roots = list(roots)
    if any(_issued_by(leaf, r) for r in roots):
        return True
    return any(_issued_by(leaf, i) and any(_issued_by(i, r) for r in roots) for i in intermediates)


# --- the signer and the bundle for a cluster record -------------------------------------------------

@dataclass(frozen=True)
class Signer:
    """What issues node certificates now: the CA (cert and key) and the intermediates sent with
    every certificate it issues (the cross-signed one during a rotation)."""

    ca: certs.RootCA
    intermediates: bytes = b""

    def chain(self, leaf_pem: bytes) -> bytes:
        return leaf_pem + self.intermediates


@dataclass(frozen=True)
class Progress:
    """How far a rotation has come, as ``swarm ca --rotate`` shows it: nodes whose certificate is
    from the desired root, nodes that trust exactly the desired root, of ``total``."""

    certs_rotated: int
    roots_rotated: int
    total: int
    in_progress: bool

    @property
    def done(self) -> bool:
        return not self.in_progress and self.certs_rotated == self.total and self.roots_rotated == self.total


def progress(desired_issuer_key: str, desired_roots_digest: str, nodes: Iterable[tuple[str, str]],
             in_progress: bool) -> Progress:
    """``nodes``: (cert issuer key, trusted roots digest) of every node. While the old root is still
    trusted, no node counts as having the final trust (as Docker shows it)."""
    listed = list(nodes)
    certs_ok = sum(1 for issuer, _ in listed if issuer == desired_issuer_key)
    roots_ok = 0 if in_progress else sum(1 for _, digest in listed if digest == desired_roots_digest)
    return Progress(certs_ok, roots_ok, len(listed), in_progress)


class SealerLike(Protocol):
    def unseal(self, ciphertext: bytes) -> bytes: ...


class SwarmCA:
    """A manager's CA: the swarm's current root with its key, and what signs now. During a
    rotation the new root's key (sealed in the cluster record) signs, and certificates go out
    with the cross-signed intermediate; ``finish`` makes the new root the current one."""

    def __init__(self, current: certs.RootCA, cluster: Callable[[], Cluster | None], sealer: SealerLike) -> None:
        self.current = current
        self._cluster = cluster
        self._sealer = sealer
        self._rotation_signer: tuple[str, Signer] | None = None

    def signer(self) -> Signer:
        cluster = self._cluster()
        rotation = cluster.root_rotation if cluster is not None else None
        if rotation is None:
            return Signer(self.current)
        cached = self._rotation_signer
        if cached is None or cached[0] != rotation.ca_cert:
            ca = certs.RootCA(rotation.ca_cert.encode(), self._sealer.unseal(rotation.ca_key))
            cached = self._rotation_signer = (rotation.ca_cert, Signer(ca, rotation.cross_signed.encode()))
        return cached[1]

    def follow(self, root_pem: bytes) -> None:
        """The swarm's current root is ``root_pem``: hold it as the current certificate when it is the
        one for this manager's CA key (a manager that joined during a rotation pinned the new root
        before the swarm made it the current one)."""
        if root_pem == self.current.cert_pem or self.current.key_pem is None:
            return
        root = x509.load_pem_x509_certificate(root_pem)
        if root.public_key() == self.current.private_key().public_key():
            self.current = certs.RootCA(root_pem, self.current.key_pem)

    def finish(self, root_pem: bytes, key_pem: bytes) -> None:
        self.current = certs.RootCA(root_pem, key_pem)
        self._rotation_signer = None


# --- a node that slept through a rotation ---------------------------------------------------------

STALE_ROOT = ("this node's certificate is from a root CA that the swarm no longer trusts (the swarm's root CA "
              "was rotated while this node was down)")


def refused_for_old_root(host: str, port: int, cert_chain: bytes, key: bytes, roots: bytes,
                         timeout: float = 2.0) -> bool | None:
    """Whether the manager at ``host:port`` refuses this identity because the swarm moved to a root
    it does not trust directly: True when the manager's certificate chains to our root only through
    a cross-signed intermediate and the manager refuses our certificate; False when its certificate
    comes straight from one of our roots, or it accepts us; None when it cannot tell (unreachable,
    no answer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=roots.decode())
    with memory_file(cert_chain) as cert_path, memory_file(key) as key_path:
        ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["h2"])
    trusted = x509.load_pem_x509_certificates(roots)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None or any(_issued_by(x509.load_der_x509_certificate(der), r) for r in trusted):
                return False
            try:
                # TLS 1.3: the server's verdict on our certificate follows the handshake, as an
                # alert or (gRPC) the connection closed at once; a server that accepted us waits
                # for our first request or sends its own first frame.
                return tls.recv(1) == b""
            except ssl.SSLError:
                return True
            except TimeoutError:
                return False
    except (OSError, ValueError):
        return None
