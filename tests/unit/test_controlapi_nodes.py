"""The Control API's nodes, on a real store: Swarm's view of managers, promotion and demotion with
Swarm's rules (and the raft removal after a demotion), removal."""

from __future__ import annotations

import grpc

from swarmsecrets.api.v1 import control_pb2
from tests.unit.managerkit import SELF_ID, SELF_RAFT, Swarm, aborted, control, ctx, run

OTHER_RAFT = "127.0.0.2:4243"


def two_managers() -> Swarm:
    swarm = Swarm()
    swarm.add_node("m2", "manager", addr="127.0.0.2:4242", raft_addr=OTHER_RAFT, status="unknown")
    swarm.proposer.group.members.append(OTHER_RAFT)
    return swarm


def test_list_shows_manager_reachability_and_the_leader() -> None:
    swarm = two_managers()
    swarm.add_node("w1", status="down")

    async def test() -> None:
        resp = await control(swarm).ListNodes(control_pb2.ListNodesRequest(), ctx())
        nodes = {n.id: n for n in resp.nodes}
        assert nodes[SELF_ID].manager_status.leader and nodes[SELF_ID].status.state == "ready"
        # m2's raft link is down as this manager sees it.
        assert nodes["m2"].manager_status.reachability == "unreachable" and nodes["m2"].status.state == "down"
        assert not nodes["m2"].manager_status.leader
        assert nodes["w1"].status.state == "down" and not nodes["w1"].HasField("manager_status")
        swarm.proposer.group.reachable.add(OTHER_RAFT)
        m2 = await control(swarm).GetNode(control_pb2.GetNodeRequest(node_id="m2"), ctx())
        assert m2.node.manager_status.reachability == "reachable"

    run(test)


def test_get_self_is_this_manager() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await control(swarm).GetNode(control_pb2.GetNodeRequest(node_id="self"), ctx())
        assert resp.node.id == SELF_ID and resp.node.manager_status.raft_addr == SELF_RAFT

    run(test)


def test_promotion_binds_the_raft_address_next_to_the_advertised_one() -> None:
    swarm = Swarm()
    swarm.add_node("w1", addr="10.0.0.7:4242")
    swarm.add_node("w2", addr="10.0.0.8")

    async def test() -> None:
        s = control(swarm)
        resp = await s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w1", role="manager"), ctx())
        assert resp.node.spec.role == "manager"
        node = swarm.store.node("w1")
        assert node is not None and node.role == "manager" and node.raft_addr == "10.0.0.7:4243"
        no_port = await aborted(s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w2", role="manager"), ctx()))
        assert no_port.code == grpc.StatusCode.FAILED_PRECONDITION and "no advertised address" in no_port.details
        bad = await aborted(s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w2", role="boss"), ctx()))
        assert (bad.code, bad.details) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid role: boss")

    run(test)


def test_demotion_records_the_role_then_takes_the_member_out_of_raft() -> None:
    swarm = two_managers()
    swarm.proposer.group.reachable.add(OTHER_RAFT)
    swarm.proposer.group.members.append("127.0.0.3:4243")  # a third member, so that quorum survives
    swarm.proposer.group.reachable.add("127.0.0.3:4243")

    async def test() -> None:
        await control(swarm).UpdateNode(control_pb2.UpdateNodeRequest(node_id="m2", role="worker"), ctx())
        node = swarm.store.node("m2")
        assert node is not None and (node.role, node.raft_addr) == ("worker", "")
        assert OTHER_RAFT not in swarm.proposer.group.members

    run(test)


def test_demotion_never_of_the_last_manager_nor_losing_the_quorum() -> None:
    async def test() -> None:
        alone = Swarm()
        last = await aborted(control(alone).UpdateNode(
            control_pb2.UpdateNodeRequest(node_id=SELF_ID, role="worker"), ctx()))
        assert last.details == "attempting to demote the last manager of the swarm"
        swarm = two_managers()  # m2 unreachable: demoting this manager would leave m2 alone
        quorum = await aborted(control(swarm).UpdateNode(
            control_pb2.UpdateNodeRequest(node_id=SELF_ID, role="worker"), ctx()))
        assert quorum.code == grpc.StatusCode.FAILED_PRECONDITION and "loss of quorum" in quorum.details
        assert all(n.role == "manager" for n in swarm.store.managers()) and len(swarm.store.managers()) == 2

    run(test)


def test_availability_is_parsed() -> None:
    swarm = Swarm()
    swarm.add_node("w1")

    async def test() -> None:
        await control(swarm).UpdateNode(control_pb2.UpdateNodeRequest(node_id="w1", availability="drain"), ctx())
        node = swarm.store.node("w1")
        assert node is not None and node.availability == "drain"
        bad = await aborted(control(swarm).UpdateNode(
            control_pb2.UpdateNodeRequest(node_id="w1", availability="nap"), ctx()))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT

    run(test)


def test_remove_refuses_managers_and_live_workers_unless_forced() -> None:
    swarm = two_managers()
    swarm.add_node("up")
    swarm.add_node("dead", status="down")

    async def test() -> None:
        s = control(swarm)
        mgr = await aborted(s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="m2"), ctx()))
        assert "must be demoted to worker before removal" in mgr.details
        live = await aborted(s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="up"), ctx()))
        assert live.details == "node up is not down and can't be removed"
        await s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="dead"), ctx())
        await s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="up", force=True), ctx())
        assert swarm.store.is_removed_node("dead") and swarm.store.is_removed_node("up")

    run(test)
