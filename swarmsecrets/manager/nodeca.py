"""Admitting nodes: certificate issuance for token holders, renewal for members, keys for managers.

Every call proves its caller before it touches raft, and only then runs the read barrier and
authorizes from the caller's latest record (``ca.authz``): a joiner proves itself with a join
token (it has no certificate yet), checked against this manager's state first and, after the
barrier, against the swarm's latest; every later call presents the certificate issued here.
Authorization never comes from request fields, and no name in a certificate does either
(``ca.certs``).

Certificates live as long as the cluster record says (``swarm update --cert-expiry``); each one
issued is recorded in its node's record (notAfter, issuer), which ``node inspect`` shows.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import grpc
from cryptography import x509

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import ca_pb2, ca_pb2_grpc
from swarmsecrets.ca import certs, tokens
from swarmsecrets.ca.rotation import SwarmCA
from swarmsecrets.ca.authz import MANAGERS, MEMBERS, PeerAuthorizer
from swarmsecrets.ca.material import issuer_key_id
from swarmsecrets.crypto.keys import format_unlock_key
from swarmsecrets.manager import state
from swarmsecrets.manager.binding import join_request_id
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader
from swarmsecrets.manager.datakey import DataKey, join_tokens, unlock_key
from swarmsecrets.rpcutil import peer_certificate, rpc

log = logging.getLogger(__name__)

# How long, and how often, a join's certificate record waits for every manager to support it (a
# manager that just joined advertises its state version a moment later).
RECORD_PATIENCE, RECORD_RETRY = 60.0, 1.0


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    """The caller's IP as this manager sees it (context.peer() is e.g. 'ipv4:10.0.0.5:53012')."""
    peer = context.peer()
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]").replace("%5B", "").replace("%5D", "")
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else ""


def certificate_record(node_id: str, cert_pem: bytes, issuer: x509.Certificate) -> state.RecordNodeCert:
    """What the node's record keeps of a certificate ``issuer`` issued to it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return state.RecordNodeCert(node_id=node_id, serial=format(cert.serial_number, "x"),
                                not_after=int(cert.not_valid_after_utc.timestamp()),
                                issued_at=int(certs.issued_at(cert).timestamp()),
                                issuer=cert.issuer.rfc4514_string(), issuer_key=issuer_key_id(issuer))


class NodeCAService(ca_pb2_grpc.NodeCAServicer):
    """``data_key`` is the swarm's data key ring itself: GetManagerKeys hands it to managers only."""

    def __init__(self, *, store: StoreReader, proposer: Proposer, ca: SwarmCA, authz: PeerAuthorizer,
                 sealer: Sealer, data_key: DataKey, cluster_id: str) -> None:
        self.store = store
        self.proposer = proposer
        self.ca = ca
        self.authz = authz
        self.sealer = sealer
        self.data_key = data_key
        self.cluster_id = cluster_id
        self._pending: set[asyncio.Task[None]] = set()

    def _validity(self) -> datetime.timedelta:
        cluster = self.store.cluster
        return certs.node_validity(cluster.node_cert_expiry if cluster is not None else 0)

    def _record_command(self, node_id: str, cert_pem: bytes) -> state.RecordNodeCert:
        return certificate_record(node_id, cert_pem, self.ca.signer().ca.cert)

    async def _record(self, node_id: str, cert_pem: bytes) -> None:
        """Record a renewed certificate before handing it out: a renewal the swarm has no record
        of fails, and the node retries. Skipped while a manager cannot apply the record (a rolling
        upgrade)."""
        cmd = self._record_command(node_id, cert_pem)
        try:
            state.require_supported(cmd, self.store.managers())
        except errors.FailedPrecondition:
            return
        await self.proposer.propose(cmd)

    def _record_later(self, node_id: str, cert_pem: bytes) -> None:
        """Record a joiner's first certificate in the background: a joining manager's record
        says which state version it supports only once it runs."""
        cmd = self._record_command(node_id, cert_pem)

        async def record() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RECORD_PATIENCE
            while True:
                try:
                    state.require_supported(cmd, self.store.managers())
                    await self.proposer.propose(cmd)
                    return
                except errors.SwarmError as e:
                    if loop.time() > deadline:
                        log.info("certificate of node %s not recorded: %s", node_id, e)
                        return
                await asyncio.sleep(RECORD_RETRY)

        task = asyncio.get_running_loop().create_task(record())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @rpc
    async def GetRootCACertificate(self, request: ca_pb2.GetRootCACertificateRequest,
                                   context: grpc.aio.ServicerContext) -> ca_pb2.GetRootCACertificateResponse:
        return ca_pb2.GetRootCACertificateResponse(certificate=self.ca.signer().ca.cert_pem)

    def _token_role(self, token: str) -> str:
        """The role a join token admits to (by the state as this manager has it now), else InvalidArgument."""
        try:
            presented = tokens.parse_token(token)
        except errors.InvalidArgument:
            raise errors.InvalidArgument(errors.INVALID_JOIN_TOKEN) from None
        current = join_tokens(self.store, self.sealer)
        role = next((r for r in ("manager", "worker") if tokens.same_token(str(presented), current[r])), None)
        if role is None:
            raise errors.InvalidArgument(errors.INVALID_JOIN_TOKEN)
        return role

    @rpc
    async def IssueNodeCertificate(self, request: ca_pb2.IssueNodeCertificateRequest,
                                   context: grpc.aio.ServicerContext) -> ca_pb2.IssueNodeCertificateResponse:
        self._token_role(request.token)
        await self.proposer.barrier()
        # Again after the barrier: a token rotated a moment ago on another manager admits no one.
        role = self._token_role(request.token)
        addr = request.advertise_addr or _peer_host(context)
        if request.advertise_addr:
            validation.validate_addr(request.advertise_addr, 0)
        elif role == "manager":
            raise errors.InvalidArgument("--advertise-addr is required to join as a manager")
        raft_addr = ""
        if role == "manager":
            validation.validate_addr(request.raft_addr, 0)
            raft_addr = request.raft_addr
        availability = validation.parse_join_availability(request.availability)
        # Everything the joiner sent is checked before its node record is written.
        if request.hostname:
            validation.validate_hostname(request.hostname)
        validation.validate_csr(request.csr)
        if request.request_id:
            validation.validate_request_id(request.request_id)
        validation.check_node_count(len(self.store.nodes()))
        node = state.Node(id=ids.new_id(), role=role, hostname=request.hostname or "unknown", addr=addr,
                          raft_addr=raft_addr, availability=availability)
        rid = join_request_id(self.sealer, role, _peer_host(context), request)
        added = await self.proposer.propose(state.AddNode(rid=rid, node=node))
        signer = self.ca.signer()
        cert = certs.issue_node_cert(
            signer.ca, request.csr, node_id=added.id, role=role, cluster_id=self.cluster_id,
            raft_addr=added.raft_addr or None, validity=self._validity(),
        )
        self._record_later(added.id, cert)
        return ca_pb2.IssueNodeCertificateResponse(node_id=added.id, role=role, certificate=signer.chain(cert),
                                                   cluster_id=self.cluster_id)

    @rpc
    async def RenewNodeCertificate(self, request: ca_pb2.RenewNodeCertificateRequest,
                                   context: grpc.aio.ServicerContext) -> ca_pb2.IssueNodeCertificateResponse:
        """A certificate with the role the swarm holds for the caller now: a demoted manager
        renews into a worker certificate, a promoted worker into a manager one."""
        ident = self.authz.authenticate(peer_certificate(context), MEMBERS)
        await self.proposer.barrier()
        peer = self.authz.authorize(ident, MEMBERS, renewal=True)
        node = self.store.node(peer.node_id)
        if node is None:
            raise errors.node_removed(peer.node_id)
        validation.validate_csr(request.csr)
        role = node.role
        signer = self.ca.signer()
        cert = certs.issue_node_cert(signer.ca, request.csr, node_id=node.id, role=role, cluster_id=self.cluster_id,
                                     raft_addr=(node.raft_addr or None) if role == "manager" else None,
                                     validity=self._validity())
        await self._record(node.id, cert)
        return ca_pb2.IssueNodeCertificateResponse(node_id=node.id, role=role, certificate=signer.chain(cert),
                                                   cluster_id=self.cluster_id)

    @rpc
    async def GetManagerKeys(self, request: ca_pb2.GetManagerKeysRequest,
                             context: grpc.aio.ServicerContext) -> ca_pb2.GetManagerKeysResponse:
        """What a joining manager needs, and nothing else: the data key (it opens the state), the
        CA key (every manager issues certificates), the unlock key when autolock is on (it wraps
        those two keys on its disk under it) and the raft members (whom it joins)."""
        ident = self.authz.authenticate(peer_certificate(context), MANAGERS)
        await self.proposer.barrier()
        self.authz.authorize(ident, MANAGERS)
        unlock = unlock_key(self.store, self.sealer)
        current = self.ca.current  # during a rotation the new root's key is in the cluster record
        ring = self.data_key.ring
        assert current.key_pem is not None
        return ca_pb2.GetManagerKeysResponse(
            # During a data-key rotation the ring: records not re-encrypted yet need the previous key.
            data_key=ring[0], previous_data_keys=ring[1:], ca_key=current.key_pem,
            unlock_key=format_unlock_key(unlock) if unlock else "",
            raft_members=self.proposer.status().members,
        )
