"""Raft membership on a real store with real certificates: a manager joins with the raft address
its certificate binds, and leaves only itself."""

from __future__ import annotations

import grpc

from swarmsecrets.api.v1 import raft_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager.raftmembership import RaftMembershipService
from tests.unit.managerkit import SELF_RAFT, Swarm, aborted, ctx, run

M2_RAFT = "10.0.0.8:4243"


def service(swarm: Swarm) -> RaftMembershipService:
    return RaftMembershipService(swarm.store, swarm.proposer, swarm.proposer, swarm.authz)


def test_a_manager_joins_with_the_raft_address_its_certificate_binds() -> None:
    swarm = Swarm()
    swarm.add_node("m2", "manager", addr="10.0.0.8:4242", raft_addr=M2_RAFT)
    cert = swarm.cert("m2", "manager", raft_addr=M2_RAFT)

    async def test() -> None:
        svc = service(swarm)
        other = await aborted(svc.Join(raft_pb2.RaftJoinRequest(raft_addr="10.0.0.9:4243"), ctx(cert)))
        assert other.code == grpc.StatusCode.PERMISSION_DENIED and "not bound to node m2" in other.details
        assert swarm.proposer.group.members == [SELF_RAFT]
        joined = await svc.Join(raft_pb2.RaftJoinRequest(raft_addr=M2_RAFT), ctx(cert))
        assert list(joined.members) == [SELF_RAFT, M2_RAFT]
        again = await svc.Join(raft_pb2.RaftJoinRequest(raft_addr=M2_RAFT), ctx(cert))
        assert list(again.members) == [SELF_RAFT, M2_RAFT]

    run(test)


def test_workers_cannot_join_raft() -> None:
    swarm = Swarm()
    swarm.add_node("w1")

    async def test() -> None:
        err = await aborted(service(swarm).Join(raft_pb2.RaftJoinRequest(raft_addr=M2_RAFT),
                                                ctx(swarm.cert("w1", "worker"))))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert swarm.proposer.group.members == [SELF_RAFT]

    run(test)


def test_a_manager_leaves_itself_not_the_node_it_names() -> None:
    swarm = Swarm()
    swarm.add_node("m2", "manager", addr="10.0.0.8:4242", raft_addr=M2_RAFT)
    swarm.proposer.group.members.append(M2_RAFT)

    async def test() -> None:
        await service(swarm).Leave(raft_pb2.RaftLeaveRequest(node_id="m1"),
                                   ctx(swarm.cert("m2", "manager", raft_addr=M2_RAFT)))
        assert swarm.proposer.group.members == [SELF_RAFT]
        assert swarm.store.is_removed_node("m2") and swarm.store.node("m1") is not None
        assert any(isinstance(c, state.RemoveNode) and c.node_id == "m2" for c in swarm.proposer.proposed)

    run(test)


def test_a_worker_certificate_runs_no_read_barrier() -> None:
    swarm = Swarm()
    swarm.add_node("w1")

    async def test() -> None:
        for call in (service(swarm).Join(raft_pb2.RaftJoinRequest(raft_addr=M2_RAFT), ctx(swarm.cert("w1", "worker"))),
                     service(swarm).Leave(raft_pb2.RaftLeaveRequest(), ctx())):
            await aborted(call)
        assert swarm.proposer.barriers == 0

    run(test)
