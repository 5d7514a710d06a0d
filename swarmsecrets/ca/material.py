"""The node's current TLS identity and trust, in one place: what every port and every outgoing
channel reads at the moment it needs it.

A node's certificate is renewed while it runs, and during a root CA rotation it trusts more than
one root. Nothing that serves or dials keeps its own copy: the gRPC server asks for the current
material on every handshake (``grpc_server_credentials``), the raft transport takes its contexts
from here for every new connection (``RaftContexts``), and client channels are built from it when
they are opened (``grpc_channel_credentials``). Connections already open keep the identity they
were opened with, which stays valid until it expires.

``replace`` swaps any part atomically and tells the subscribers (on the replacing thread).
The key lives in memory only: on disk it is the node directory's business (sealed under autolock).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace as dc_replace

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmsecrets.ca import certs
from swarmsecrets.crypto import keys
from swarmsecrets.raft import Admission, PeerVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the material. ``generation`` grows with every replacement."""

    cert_chain: bytes   # PEM: the node certificate, then any intermediates
    key: bytes          # PEM
    roots: bytes        # PEM: every root this node trusts (one or more certificates)
    generation: int = 0

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert_chain)[0]

    def root_certificates(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.roots)


Subscriber = Callable[[Snapshot], None]


class TLSMaterial:
    """Thread-safe holder of the node's certificate chain, key and trusted roots."""

    def __init__(self, cert_chain: bytes, key: bytes, roots: bytes) -> None:
        self._lock = threading.Lock()
        self._current = Snapshot(cert_chain, key, roots)
        self._subscribers: list[Subscriber] = []

    def current(self) -> Snapshot:
        return self._current

    def replace(self, *, cert_chain: bytes | None = None, key: bytes | None = None,
                roots: bytes | None = None) -> Snapshot:
        """Swap the given parts (a certificate and its key go together), then tell the subscribers."""
        if (cert_chain is None) != (key is None):
            raise ValueError("a certificate is replaced together with its key")
        with self._lock:
            old = self._current
            new = dc_replace(old, cert_chain=cert_chain if cert_chain is not None else old.cert_chain,
                             key=key if key is not None else old.key,
                             roots=roots if roots is not None else old.roots,
                             generation=old.generation + 1)
            self._current = new
            subscribers = list(self._subscribers)
        for fn in subscribers:
            try:
                fn(new)
            except Exception:  # one broken subscriber must not keep the others on the old identity
                log.exception("a TLS material subscriber failed")
        return new

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` with every new snapshot; returns the way to stop."""
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    # --- what ports and channels build from it ------------------------------------------------

    def grpc_channel_credentials(self) -> grpc.ChannelCredentials:
        m = self._current
        return grpc.ssl_channel_credentials(root_certificates=m.roots, private_key=m.key,
                                            certificate_chain=m.cert_chain)

    def grpc_server_credentials(self, extra_client_roots: Callable[[Snapshot], bytes] = lambda m: b""
                                ) -> grpc.ServerCredentials:
        """Server credentials that follow the material: gRPC asks before every handshake, and gets
        a new configuration only when the material changed since it last asked. The server chain
        ends with the roots (a joiner reads the root from it); ``extra_client_roots`` adds client
        trust that is not node trust (the joiners' bootstrap CA)."""

        def config(m: Snapshot) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(m.key, m.cert_chain + m.roots)], root_certificates=m.roots + extra_client_roots(m))

        served = [self._current.generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            m = self._current
            if m.generation == served[0]:
                return None
            served[0] = m.generation
            return config(m)

        return grpc.dynamic_ssl_server_credentials(config(self._current), fetch,
                                                   require_client_authentication=True)


class RaftContexts:
    """The raft transport's TLS configuration (``raft.TLSConfig``), following a ``TLSMaterial``:
    both contexts are rebuilt when the material changes, and every new connection takes the
    ones current when it is made."""

    def __init__(self, material: TLSMaterial, verify_peer: PeerVerifier, admission: Admission | None = None) -> None:
        self._verify_peer = verify_peer
        self._admission = admission if admission is not None else Admission()
        self._contexts = self._build(material.current())
        self.close = material.subscribe(self._refresh)  # stop following (the manager stopped)

    @staticmethod
    def _build(m: Snapshot) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        with keys.memory_file(m.cert_chain) as cert_path, keys.memory_file(m.key) as key_path:
            return (certs.server_context(cert_path, key_path, m.roots),
                    certs.client_context(cert_path, key_path, m.roots))

    def _refresh(self, m: Snapshot) -> None:
        self._contexts = self._build(m)

    @property
    def server_ctx(self) -> ssl.SSLContext:
        return self._contexts[0]

    @property
    def client_ctx(self) -> ssl.SSLContext:
        return self._contexts[1]

    @property
    def verify_peer(self) -> PeerVerifier:
        return self._verify_peer

    @property
    def admission(self) -> Admission:
        return self._admission


def issuer_key_id(issuer: x509.Certificate) -> str:
    """Hex SHA-256 of an issuer's SubjectPublicKeyInfo (DER): how node records name the key that
    signed their certificate."""
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()
