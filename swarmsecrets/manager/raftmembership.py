"""The RaftMembership service: managers join and leave the raft group through it.

Only a manager of this swarm (certificate and current record, see ``ca.authz``) may
call; a joiner may add only the raft address its certificate binds, and a leaver
removes only itself, never a node named in the request. The read barrier comes
first so that the check sees the caller's latest record (a promotion or join that
another manager committed a moment ago).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import raft_pb2, raft_pb2_grpc
from swarmsecrets.ca.authz import MANAGERS
from swarmsecrets.manager import state
from swarmsecrets.manager.manager import Manager
from swarmsecrets.rpcutil import peer_certificate, rpc

# How long adding or removing a raft member may take before the call fails.
MEMBERSHIP_TIMEOUT = 15.0

GetManager = Callable[[], Manager]


class RaftMembershipService(raft_pb2_grpc.RaftMembershipServicer):
    def __init__(self, get_manager: GetManager) -> None:
        self.get_manager = get_manager

    @rpc
    async def Join(self, request: raft_pb2.RaftJoinRequest,
                   context: grpc.aio.ServicerContext) -> raft_pb2.RaftJoinResponse:
        m = self.get_manager()
        await m.barrier()
        ident = m.authz.authorize(peer_certificate(context), MANAGERS).identity
        if request.raft_addr not in ident.raft_addrs:
            raise errors.PermissionDenied(
                f"Permission denied: raft address {request.raft_addr} is not bound to node {ident.node_id}")
        if request.raft_addr not in m.raft_status().members:
            await asyncio.to_thread(m.raft.add_member, request.raft_addr, MEMBERSHIP_TIMEOUT)
        return raft_pb2.RaftJoinResponse(members=m.raft_status().members)

    @rpc
    async def Leave(self, request: raft_pb2.RaftLeaveRequest,
                    context: grpc.aio.ServicerContext) -> raft_pb2.RaftLeaveResponse:
        m = self.get_manager()
        await m.barrier()
        peer = m.authz.authorize(peer_certificate(context), MANAGERS)
        node = m.store.node(peer.node_id)
        if node is None:
            raise errors.node_removed(peer.node_id)
        raft_addr = node.raft_addr
        if raft_addr and raft_addr in m.raft_status().members:
            await asyncio.to_thread(m.raft.remove_member, raft_addr, MEMBERSHIP_TIMEOUT)
        await m.propose(state.RemoveNode(node_id=peer.node_id))
        return raft_pb2.RaftLeaveResponse()
