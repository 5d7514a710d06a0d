"""Who is calling, and may they make this call: the one peer check every TLS service uses.

Two steps, in this order, and a service runs nothing between them but its read barrier:

1. ``authenticate`` -- the certificate alone, no state and no raft: issued by a root CA this swarm
   trusts now (after a root rotation, no longer the old one)
   (a joiner's bootstrap certificate or another swarm's is nobody), for this cluster (O), with a
   role (OU) the call allows. A caller that fails here never makes a manager touch raft.
2. ``authorize`` -- the swarm's current record of that node, read after the service's read barrier
   so that every write committed before the call (a demotion, a removal) counts: the node exists,
   was not removed, and its role now is one the call allows.

The certificate is necessary, not sufficient. A certificate admits its holder at the lesser of its
OU's role and the node's role now:

- a promoted worker's worker certificate still makes worker calls (its session learns of the
  promotion there) and renews into a manager certificate; manager calls wait for that certificate;
- a demoted manager's manager certificate admits it to nothing but ``RenewNodeCertificate``, which
  issues it the worker certificate: no manager call, and no worker session with a manager's key.

Requests never name their caller: the identity is the certificate's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from swarmsecrets import errors
from swarmsecrets.ca import certs
from swarmsecrets.ca.certs import ROLE_TO_OU, NodeIdentity, verified_identity
from swarmsecrets.raft import Peer as RaftPeer
from swarmsecrets.raft import PeerRefused, PeerVerifier


class Role(enum.StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


MANAGERS: frozenset[Role] = frozenset({Role.MANAGER})
MEMBERS: frozenset[Role] = frozenset({Role.MANAGER, Role.WORKER})


class NodeReader(Protocol):
    """The little of the swarm's state a peer check reads."""

    def node_role(self, node_id: str) -> str | None:
        """The node's current role, or None when the swarm has no such node."""
        ...

    def is_removed_node(self, node_id: str) -> bool:
        ...


@dataclass(frozen=True)
class Peer:
    """An admitted caller: its certificate's identity and its role in the swarm now."""

    identity: NodeIdentity
    role: Role

    @property
    def node_id(self) -> str:
        return self.identity.node_id


def _ous(roles: frozenset[Role]) -> str:
    return "[" + " ".join(sorted(ROLE_TO_OU[r] for r in roles)) + "]"


class PeerAuthorizer:
    """``roots``: the roots this swarm trusts now (one, or two while its root CA rotates), or a
    function that says so at each call."""

    def __init__(self, roots: x509.Certificate | Callable[[], Sequence[x509.Certificate]], cluster_id: str,
                 nodes: NodeReader) -> None:
        self.roots: Callable[[], Sequence[x509.Certificate]] = (
            (lambda: (roots,)) if isinstance(roots, x509.Certificate) else roots)
        self.cluster_id = cluster_id
        self.nodes = nodes

    def _verified(self, cert_pem: bytes) -> NodeIdentity | None:
        for root in self.roots():
            ident = verified_identity(cert_pem, root)
            if ident is not None:
                return ident
        return None

    def authenticate(self, cert_pem: bytes | None, roles: frozenset[Role]) -> NodeIdentity:
        """Step one: the identity in ``cert_pem`` (the TLS peer's certificate, None if it sent
        none), if the certificate alone allows a call open to ``roles``; else PermissionDenied.
        Reads neither the state nor raft."""
        ident = self._verified(cert_pem) if cert_pem else None
        if ident is None:
            raise errors.PermissionDenied("Permission denied: a certificate of this swarm is required")
        if ident.cluster_id != self.cluster_id:
            raise errors.PermissionDenied(
                f"Permission denied: remote certificate not part of organization: {self.cluster_id}")
        if ident.role not in roles:
            raise errors.PermissionDenied(f"Permission denied: remote certificate not part of OUs: {_ous(roles)}")
        return ident

    def authorize(self, ident: NodeIdentity, roles: frozenset[Role], *, renewal: bool = False) -> Peer:
        """Step two, after the read barrier: the caller as the swarm knows it now, if its role now
        allows the call; else PermissionDenied (NodeRemoved for a node the swarm no longer has).
        ``renewal``: the call is RenewNodeCertificate, the one call a certificate of a higher role
        than the node's now may make."""
        current = self.nodes.node_role(ident.node_id)
        if current is None or self.nodes.is_removed_node(ident.node_id):
            raise errors.node_removed(ident.node_id)
        if current not in roles:
            raise errors.PermissionDenied(
                f"Permission denied: node {ident.node_id} is a {current} now; this call needs {_ous(roles)}")
        if ident.role == Role.MANAGER and current != Role.MANAGER and not renewal:
            raise errors.PermissionDenied(
                f"Permission denied: node {ident.node_id} is a {current} now; "
                f"its manager certificate is good only to renew it")
        return Peer(ident, Role(current))

    def admit(self, cert_pem: bytes | None, roles: frozenset[Role]) -> Peer:
        """Both steps at once, for a call that reads no more than the local state (no barrier)."""
        return self.authorize(self.authenticate(cert_pem, roles), roles)


def raft_peer_verifier(cluster_id: str) -> PeerVerifier:
    """The raft transport's peer check, made during the TLS handshake (the transport has verified
    the chain against this swarm's root): admit only managers of this cluster (OU swarm-manager,
    O == cluster id); a peer may claim only the raft addresses its certificate binds (its raft URI
    SANs). A demoted or removed manager is taken out of the raft membership, which the raft
    library enforces itself."""

    def verify(der: bytes) -> RaftPeer:
        try:
            peer = certs.identity_from_der(der)
        except Exception as e:
            raise PeerRefused(f"unusable peer certificate: {e}") from None
        if peer.role != "manager":
            raise PeerRefused(f"certificate of a {peer.role or 'non-manager'} (OU is not swarm-manager)")
        if peer.cluster_id != cluster_id:
            raise PeerRefused(f"certificate of cluster {peer.cluster_id!r}")
        return RaftPeer(name=peer.node_id, raft_addrs=frozenset(peer.raft_addrs))

    return verify
