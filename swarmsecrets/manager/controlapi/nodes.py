"""Nodes: list, inspect, update (availability, labels; promotion and demotion with Swarm's rules), remove."""

from __future__ import annotations

from dataclasses import replace

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import GroupStatus, Proposer, RaftMembers, Sealer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id
from swarmsecrets.rpcutil import format_ts


def node_to_proto(n: state.Node, status: GroupStatus, self_raft_addr: str, trust_root: str = "") -> objects_pb2.Node:
    """The node as Swarm shows it; a manager's status is its raft reachability as this manager
    (at ``self_raft_addr``) sees it in ``status``; ``trust_root``: the swarm's root CA (PEM)."""
    pb = objects_pb2.Node(
        id=n.id, version=objects_pb2.Version(index=n.version),
        created_at=format_ts(n.created_at), updated_at=format_ts(n.updated_at),
        spec=objects_pb2.NodeSpec(role=n.role, availability=n.availability, labels=n.labels),
        description=objects_pb2.NodeDescription(hostname=n.hostname, platform_os="linux",
                                                platform_arch=n.arch, engine_version=n.engine_version),
        cert_serial=n.cert_serial,
    )
    if n.cert_not_after:
        pb.tls_info.CopyFrom(objects_pb2.NodeTLSInfo(
            trust_root=trust_root, cert_issuer_subject=n.cert_issuer, cert_issuer_public_key=n.cert_issuer_key,
            cert_not_after=format_ts(n.cert_not_after * 10**9)))
    if n.role == "manager":
        raft_addr = n.raft_addr
        is_self = raft_addr == self_raft_addr
        reachable = is_self or raft_addr in status.reachable
        pb.manager_status.CopyFrom(objects_pb2.ManagerStatus(
            leader=status.leader == raft_addr and status.leader is not None,
            reachability="reachable" if reachable else "unreachable",
            addr=n.addr, raft_addr=raft_addr,
        ))
        pb.status.CopyFrom(objects_pb2.NodeStatus(state="ready" if reachable else "down",
                                                  addr=n.addr.rsplit(":", 1)[0]))
    else:
        pb.status.CopyFrom(objects_pb2.NodeStatus(state=n.status, message=n.status_message,
                                                  addr=n.addr.rsplit(":", 1)[0]))
    return pb


def _raft_addr_for_promotion(node: state.Node) -> str:
    host, sep, port = node.addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        raise errors.FailedPrecondition(
            f"node {node.id} has no advertised address with a port: make it leave and join again with "
            "--advertise-addr HOST:PORT, then promote it")
    return validation.raft_addr_for(node.addr)


def _check_demotion(store: StoreReader, status: GroupStatus, node: state.Node) -> None:
    """Swarm's rules: never the last manager, never a demotion that loses the quorum."""
    if len(store.managers()) <= 1:
        raise errors.FailedPrecondition("attempting to demote the last manager of the swarm")
    remaining = [a for a in status.members if a != node.raft_addr]
    if sum(a in status.reachable for a in remaining) * 2 <= len(remaining):
        raise errors.FailedPrecondition("can't remove member from the raft: this would result in a loss of quorum")


class NodesAPI:
    """``node_id`` and ``raft_addr`` are this manager's own ("self" in GetNode, itself in a status)."""

    def __init__(self, store: StoreReader, proposer: Proposer, members: RaftMembers, sealer: Sealer, *,
                 node_id: str, raft_addr: str) -> None:
        self.store = store
        self.proposer = proposer
        self.members = members
        self.sealer = sealer  # keys the binding of request ids
        self.node_id = node_id
        self.raft_addr = raft_addr

    def _trust_root(self) -> str:
        cluster = self.store.cluster
        return cluster.root_ca_cert if cluster is not None else ""

    def _to_proto(self, node: state.Node) -> objects_pb2.Node:
        return node_to_proto(node, self.proposer.status(), self.raft_addr, self._trust_root())

    async def list_nodes(self, request: control_pb2.ListNodesRequest) -> control_pb2.ListNodesResponse:
        await self.proposer.barrier()
        status = self.proposer.status()
        root = self._trust_root()
        return control_pb2.ListNodesResponse(nodes=[node_to_proto(n, status, self.raft_addr, root)
                                                    for n in self.store.nodes()])

    async def get_node(self, request: control_pb2.GetNodeRequest) -> control_pb2.GetNodeResponse:
        await self.proposer.barrier()
        ref = self.node_id if request.node_id == "self" else request.node_id
        return control_pb2.GetNodeResponse(node=self._to_proto(self.store.resolve_node(ref)))

    async def update_node(self, request: control_pb2.UpdateNodeRequest,
                          caller: str) -> control_pb2.UpdateNodeResponse:
        await self.proposer.barrier()
        node = self.store.resolve_node(request.node_id)
        if request.label_add or request.label_rm:
            validation.validate_list_length("labels to remove", len(request.label_rm), validation.MAX_LABELS)
            for key in request.label_rm:
                if key not in node.labels and key not in request.label_add:
                    raise errors.InvalidArgument(f"key {key} doesn't exist in node's labels")
            labels = {**node.labels, **request.label_add}
            for key in request.label_rm:
                labels.pop(key, None)
            validation.validate_labels(labels)
            # Its own request id: the client's is bound to the update below, and a delta of labels
            # applies alike when retried.
            await self.proposer.propose(state.UpdateNodeLabels(node_id=node.id, add=dict(request.label_add),
                                                               remove=tuple(request.label_rm)))
        change = state.UpdateNode(rid=request_id(self.sealer, state.UpdateNode, caller, request), id=node.id)
        if request.availability:
            change = replace(change, availability=validation.parse_availability(request.availability))
        demote = False
        if request.role and request.role != node.role:
            if request.role == "manager":
                change = replace(change, role="manager", raft_addr=_raft_addr_for_promotion(node))
            elif request.role == "worker":
                _check_demotion(self.store, self.proposer.status(), node)
                change = replace(change, role="worker", raft_addr="")
                demote = True
            else:
                raise errors.InvalidArgument(f"invalid role: {request.role}")
        updated = await self.proposer.propose(change)
        if demote and node.raft_addr:
            # The demoted manager has seen its new role through the log; now take it out of raft.
            await self.members.remove_member(node.raft_addr)
        return control_pb2.UpdateNodeResponse(node=self._to_proto(updated))

    async def remove_node(self, request: control_pb2.RemoveNodeRequest,
                          caller: str) -> control_pb2.RemoveNodeResponse:
        await self.proposer.barrier()
        node = self.store.resolve_node(request.node_id)
        if node.role == "manager":
            raise errors.FailedPrecondition(
                f"node {node.id} is a cluster manager and is a member of the raft cluster. "
                "It must be demoted to worker before removal")
        if node.status == "ready" and not request.force:
            raise errors.FailedPrecondition(f"node {node.id} is not down and can't be removed")
        await self.proposer.propose(state.RemoveNode(
            rid=request_id(self.sealer, state.RemoveNode, caller, request), node_id=node.id))
        return control_pb2.RemoveNodeResponse()
