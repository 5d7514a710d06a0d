"""The RaftMembership service: managers join and leave the raft group through it.

Only a manager of this swarm (certificate and current record, see ``ca.authz``) may
call; a joiner may add only the raft address its certificate binds, and a leaver
removes only itself, never a node named in the request. The certificate is checked
first, without raft; then the read barrier, so that the check of the caller's record
sees its latest (a promotion, join or demotion another manager committed a moment ago).
"""

from __future__ import annotations

import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import raft_pb2, raft_pb2_grpc
from swarmsecrets.ca.authz import MANAGERS, PeerAuthorizer
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Proposer, RaftMembers, StoreReader
from swarmsecrets.rpcutil import peer_certificate, rpc


class RaftMembershipService(raft_pb2_grpc.RaftMembershipServicer):
    def __init__(self, store: StoreReader, proposer: Proposer, members: RaftMembers,
                 authz: PeerAuthorizer) -> None:
        self.store = store
        self.proposer = proposer
        self.members = members
        self.authz = authz

    @rpc
    async def Join(self, request: raft_pb2.RaftJoinRequest,
                   context: grpc.aio.ServicerContext) -> raft_pb2.RaftJoinResponse:
        ident = self.authz.authenticate(peer_certificate(context), MANAGERS)
        await self.proposer.barrier()
        self.authz.authorize(ident, MANAGERS)
        if request.raft_addr not in ident.raft_addrs:
            raise errors.PermissionDenied(
                f"Permission denied: raft address {request.raft_addr} is not bound to node {ident.node_id}")
        if request.raft_addr not in self.proposer.status().members:
            await self.members.add_member(request.raft_addr)
        return raft_pb2.RaftJoinResponse(members=self.proposer.status().members)

    @rpc
    async def Leave(self, request: raft_pb2.RaftLeaveRequest,
                    context: grpc.aio.ServicerContext) -> raft_pb2.RaftLeaveResponse:
        ident = self.authz.authenticate(peer_certificate(context), MANAGERS)
        await self.proposer.barrier()
        peer = self.authz.authorize(ident, MANAGERS)
        node = self.store.node(peer.node_id)
        if node is None:
            raise errors.node_removed(peer.node_id)
        raft_addr = node.raft_addr
        if raft_addr and raft_addr in self.proposer.status().members:
            await self.members.remove_member(raft_addr)
        await self.proposer.propose(state.RemoveNode(node_id=peer.node_id))
        return raft_pb2.RaftLeaveResponse()
