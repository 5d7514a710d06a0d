"""Root CA, node certificates and the identity they carry.

Subjects follow SwarmKit: CN = node id, OU = ``swarm-manager`` | ``swarm-worker``,
O = cluster id. Managers also carry a URI SAN ``swarmsecrets-raft://HOST:PORT``
that binds their raft address to the certificate, so a member cannot claim
another member's address on the raft port.

Every name in a certificate is the CA's: the role's OU and the node id as DNS names, and for a
manager ``swarm-ca``. No name comes from a request (an advertised host name or address): clients
verify a manager by the manager-only name ``swarm-manager`` (and its raft peers by OU and O), never
by the address they dialled, so an address in the certificate would serve nobody and a joiner
advertising ``swarm-manager:PORT`` would get the name that passes for a manager.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import socket
import secrets
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MANAGER_OU = "swarm-manager"
WORKER_OU = "swarm-worker"
ROLE_TO_OU = {"manager": MANAGER_OU, "worker": WORKER_OU}
OU_TO_ROLE = {v: k for k, v in ROLE_TO_OU.items()}
RAFT_URI_SCHEME = "swarmsecrets-raft://"
# The name SwarmKit gives its CA servers (every manager is one); the root's CN too.
CA_SERVER_NAME = "swarm-ca"
CA_VALIDITY = datetime.timedelta(days=365 * 20)
NODE_VALIDITY = datetime.timedelta(days=90)
# The shortest node certificate lifetime an operator may set (Docker's), and its message.
MIN_NODE_VALIDITY = datetime.timedelta(hours=1)
# notBefore lies this far before the time of issue, for peers whose clocks lag; notAfter is the
# time of issue plus the lifetime, so that a certificate lives exactly as long as the swarm says.
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class RootCA:
    cert_pem: bytes
    key_pem: bytes | None  # None on nodes that only trust the CA

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        if self.key_pem is None:
            raise ValueError("this node does not hold the CA key")
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    role: str  # "manager" | "worker"
    cluster_id: str
    raft_addrs: tuple[str, ...]
    serial: str
    not_after: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_root_ca(*, distinct: bool = False) -> RootCA:
    """A new root CA. ``distinct``: a subject no other root has (a random serial-number attribute),
    for a rotation's new root: with two roots of one name, a TLS library could try the wrong one
    before it checks the signature."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, CA_SERVER_NAME)]
    if distinct:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)))
    name = x509.Name(attrs)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return RootCA(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_key_and_csr() -> tuple[bytes, bytes]:
    """A fresh node key (PEM, never leaves the node) and a CSR for it (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmsecrets-node")]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def issue_node_cert(ca: RootCA, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str,
                    raft_addr: str | None = None, validity: datetime.timedelta = NODE_VALIDITY) -> bytes:
    """Sign a node certificate. Only the CSR's public key is used; the subject and names are ours."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("invalid certificate request signature")
    ou = ROLE_TO_OU[role]
    # The OU as a DNS name: for a manager it is wire.MANAGER_SERVER_NAME, the name clients verify.
    sans: list[x509.GeneralName] = [x509.DNSName(ou), x509.DNSName(node_id)]
    if role == "manager":
        sans.append(x509.DNSName(CA_SERVER_NAME))
        if raft_addr:
            sans.append(x509.UniformResourceIdentifier(RAFT_URI_SCHEME + raft_addr))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ]))
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.private_key(), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# --- bootstrap identity for joiners ----------------------------------------------------
#
# The gRPC port requires a client certificate (grpc-python cannot ask for one
# optionally, as Go's VerifyClientCertIfGiven does). A joiner has none yet, so it
# presents a "bootstrap" certificate signed by a key that anyone can derive from
# the CA digest. It proves nothing: RPCs accept only certificates that the root CA
# itself issued (verified_identity), and a bootstrap peer may only fetch the CA and
# ask for a certificate with its join token.

BOOTSTRAP_OU = "swarm-bootstrap"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _bootstrap_key(digest: str) -> ec.EllipticCurvePrivateKey:
    seed = int.from_bytes(hashlib.sha256(b"swarmsecrets-bootstrap:" + digest.encode()).digest(), "big")
    return ec.derive_private_key(seed % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def _bootstrap_name(digest: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarm-bootstrap-ca"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, BOOTSTRAP_OU),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, digest[:50])])


def bootstrap_ca_cert(digest: str) -> bytes:
    """The bootstrap CA certificate a manager adds to its client trust bundle."""
    key = _bootstrap_key(digest)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_bootstrap_name(digest)).issuer_name(_bootstrap_name(digest))
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def bootstrap_client_cert(digest: str) -> tuple[bytes, bytes]:
    """(key PEM, cert PEM) a joiner presents before it has a real certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "joiner"),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, BOOTSTRAP_OU)]))
        .issuer_name(_bootstrap_name(digest))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(_bootstrap_key(digest), hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


@functools.lru_cache(maxsize=8192)
def verified_identity(cert_pem: bytes, root: x509.Certificate) -> NodeIdentity | None:
    """The identity in a peer certificate, only if the root CA itself issued it.

    Cached: every dispatcher RPC asks, and the answer for a given (certificate, root) never
    changes (removal is checked separately, against the state)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return None
    ident = identity_of(cert)
    return ident if ident.role in ROLE_TO_OU else None


def identity_of(cert: x509.Certificate) -> NodeIdentity:
    def attr(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    raft = tuple(u[len(RAFT_URI_SCHEME):] for u in uris if u.startswith(RAFT_URI_SCHEME))
    return NodeIdentity(
        node_id=attr(NameOID.COMMON_NAME),
        role=OU_TO_ROLE.get(attr(NameOID.ORGANIZATIONAL_UNIT_NAME), ""),
        cluster_id=attr(NameOID.ORGANIZATION_NAME),
        raft_addrs=raft,
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
    )


def node_validity(seconds: int) -> datetime.timedelta:
    """The lifetime of node certificates the cluster record sets (0: the default)."""
    return datetime.timedelta(seconds=seconds) if seconds > 0 else NODE_VALIDITY


def issued_at(cert: x509.Certificate) -> datetime.datetime:
    """When a node certificate was issued (its notBefore is backdated)."""
    return cert.not_valid_before_utc + BACKDATE


@functools.lru_cache(maxsize=256)
def identity_from_pem(pem: bytes) -> NodeIdentity:
    """Cached: the servers read the caller's identity from its certificate on every write, and
    parsing one costs tens of microseconds (a frozen identity can be shared)."""
    return identity_of(x509.load_pem_x509_certificate(pem))


def identity_from_der(der: bytes) -> NodeIdentity:
    return identity_of(x509.load_der_x509_certificate(der))


def ca_digest(ca_pem: bytes) -> str:
    """SHA-256 of the CA PEM as a 50-char base36 string (the join token's <D>)."""
    from swarmsecrets.ids import base36

    return base36(int.from_bytes(hashlib.sha256(ca_pem).digest(), "big"), 50)


# --- TLS contexts (raft transport and anything else on plain ssl sockets) -----

def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                         else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_context(cert_path: str, key_path: str, ca_pem: bytes) -> ssl.SSLContext:
    """Mutual-TLS server context: the peer must present a certificate of this CA."""
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def client_context(cert_path: str, key_path: str, ca_pem: bytes) -> ssl.SSLContext:
    """Mutual-TLS client context verifying the peer against this CA.

    Host names are not checked: the peer's identity is read from its certificate's
    subject and raft SAN by the caller.
    """
    ctx = _base_context(ssl.Purpose.SERVER_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _load_pems(ctx: ssl.SSLContext, key_pem: bytes, cert_pem: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        key_path, cert_path = os.path.join(d, "k"), os.path.join(d, "c")
        with open(key_path, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        ctx.load_cert_chain(cert_path, key_path)


def fetch_unverified_root(host: str, port: int, digest: str, timeout: float = 5.0) -> bytes:
    """The root certificate a manager presents (last of its chain), NOT yet trusted.

    The joiner pins it afterwards by comparing ca_digest() with the join token's digest.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _load_pems(ctx, *bootstrap_client_cert(digest))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw) as tls:
            # Public from Python 3.13; on 3.11/3.12 the same method lives on the private SSL object.
            getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
            chain = getter() or []
    if not chain:
        raise ValueError("the manager presented no certificate chain")
    last = chain[-1]
    der = last.public_bytes(ssl._ssl.ENCODING_DER) if hasattr(last, "public_bytes") else bytes(last)  # type: ignore[attr-defined]
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
