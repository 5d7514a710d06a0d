"""The Control service: validation → proposal → result.

Served on the unix socket (the local operator) and on the TLS port (managers only:
``get_manager`` admits the caller through ``ca.authz`` first). Writes go through
the raft log; reads are linearizable: a read barrier, then the local state.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2
from swarmsecrets.ca import tokens
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.manager import Manager
from swarmsecrets.manager.raftmembership import MEMBERSHIP_TIMEOUT
from swarmsecrets.rpcutil import format_ts, rpc

GetManager = Callable[[grpc.aio.ServicerContext], Manager]


def secret_to_proto(s: state.Secret) -> objects_pb2.Secret:
    return objects_pb2.Secret(
        id=s.id, version=objects_pb2.Version(index=s.version),
        created_at=format_ts(s.created_at), updated_at=format_ts(s.updated_at),
        spec=objects_pb2.SecretSpec(name=s.name, labels=s.labels),
    )


def node_to_proto(n: state.Node, manager: Manager) -> objects_pb2.Node:
    status = manager.raft_status()
    pb = objects_pb2.Node(
        id=n.id, version=objects_pb2.Version(index=n.version),
        created_at=format_ts(n.created_at), updated_at=format_ts(n.updated_at),
        spec=objects_pb2.NodeSpec(role=n.role, availability=n.availability, labels=n.labels),
        description=objects_pb2.NodeDescription(hostname=n.hostname, platform_os="linux",
                                                platform_arch=n.arch, engine_version=n.engine_version),
        cert_serial=n.cert_serial,
    )
    if n.role == "manager":
        raft_addr = n.raft_addr
        is_self = raft_addr == manager.state.raft_addr
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


def service_to_proto(s: state.Service, tasks: list[state.Task]) -> objects_pb2.Service:
    refs = [objects_pb2.SecretReference(
        secret_id=r.secret_id, secret_name=r.secret_name,
        file=objects_pb2.FileTarget(name=r.target, uid=r.uid, gid=r.gid, mode=r.mode))
        for r in s.secrets]
    spec = objects_pb2.ServiceSpec(name=s.name, labels=s.labels, mode=s.mode, command=s.command, env=s.env,
                                   user=s.user, secrets=refs, update_action=s.update_action)
    if s.mode == "replicated":
        spec.replicas = s.replicas
    live = [t for t in tasks if t.desired_state == "running"]
    return objects_pb2.Service(
        id=s.id, version=objects_pb2.Version(index=s.version),
        created_at=format_ts(s.created_at), updated_at=format_ts(s.updated_at), spec=spec,
        spec_version=s.spec_version, running_tasks=sum(t.state == "running" for t in live),
        desired_tasks=len(live) if s.mode == "global" else s.replicas,
    )


def task_to_proto(t: state.Task) -> objects_pb2.Task:
    return objects_pb2.Task(
        id=t.id, version=objects_pb2.Version(index=t.version),
        created_at=format_ts(t.created_at), updated_at=format_ts(t.updated_at),
        service_id=t.service_id, service_name=t.service_name, slot=t.slot, node_id=t.node_id,
        desired_state=t.desired_state, spec_version=t.spec_version,
        status=objects_pb2.TaskStatus(state=t.state, message=t.message, err=t.err,
                                      timestamp=format_ts(t.status_ts or t.updated_at),
                                      exit_code=t.exit_code),
    )


def _resolve_refs(m: Manager, refs: Any) -> list[state.SecretRef]:
    """Secret references by name → validated records with the secret ids (Swarm's texts)."""
    by_name = {s.name: s for s in m.store.secrets()}
    out, missing = [], []
    for ref in refs:
        secret = by_name.get(ref.secret_name) or (m.store.secret(ref.secret_id) if ref.secret_id else None)
        if not ref.secret_name and not ref.secret_id:
            raise errors.InvalidArgument("malformed secret reference")
        if secret is None:
            missing.append(ref.secret_name or ref.secret_id)
            continue
        if not ref.HasField("file"):
            raise errors.InvalidArgument("malformed secret reference, no target provided")
        f = ref.file
        if not f.name:
            raise errors.InvalidArgument("malformed file secret reference, invalid target file name provided")
        checked = validation.SecretRef(source=secret.name, target=f.name, uid=f.uid or "0", gid=f.gid or "0",
                                       mode=f.mode)
        validation.validate_secret_ref(checked)
        out.append(state.SecretRef(secret_id=secret.id, secret_name=secret.name, target=checked.target,
                                   uid=checked.uid, gid=checked.gid, mode=checked.mode))
    if missing:
        noun = "secret" if len(missing) == 1 else "secrets"
        raise errors.InvalidArgument(f"{noun} not found: {', '.join(missing)}")
    _check_targets(out)
    return out


def _check_targets(refs: list[state.SecretRef]) -> None:
    validation.check_conflicting_targets([
        validation.SecretRef(source=r.secret_name, target=r.target, uid=r.uid, gid=r.gid, mode=r.mode)
        for r in refs])


def _raft_addr_for_promotion(node: state.Node) -> str:
    host, sep, port = node.addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        raise errors.FailedPrecondition(
            f"node {node.id} has no advertised address with a port: make it leave and join again with "
            "--advertise-addr HOST:PORT, then promote it")
    return validation.raft_addr_for(node.addr)


def _check_demotion(m: Manager, node: state.Node) -> None:
    """Swarm's rules: never the last manager, never a demotion that loses the quorum."""
    status = m.raft_status()
    if len(m.store.managers()) <= 1:
        raise errors.FailedPrecondition("attempting to demote the last manager of the swarm")
    remaining = [a for a in status.members if a != node.raft_addr]
    if sum(a in status.reachable for a in remaining) * 2 <= len(remaining):
        raise errors.FailedPrecondition("can't remove member from the raft: this would result in a loss of quorum")


def _resolve_for_removal(m: Manager, resolve: Callable[[str], state.Secret | state.Service], ref: str,
                         rid: str) -> str:
    """The object's id; for a retry of a removal that already happened, the reference itself, so
    the proposal (same request id) answers with the first outcome instead of a false not-found."""
    try:
        return resolve(ref).id
    except errors.NotFound:
        if not m.store.has_request(rid):
            raise
        return ref


def _rid(request_id: str) -> str:
    return request_id or ids.new_request_id()


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, get_manager: GetManager) -> None:
        self.get_manager = get_manager

    # --- secrets --------------------------------------------------------------------------

    @rpc
    async def CreateSecret(self, request: control_pb2.CreateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.CreateSecretResponse:
        m = self.get_manager(context)
        if not request.HasField("spec"):
            raise errors.InvalidArgument("invalid argument")
        spec = request.spec
        validation.validate_secret_name(spec.name)
        validation.validate_secret_data(spec.data)
        created = await m.propose(state.CreateSecret(
            rid=_rid(request.request_id), id=ids.new_id(), name=spec.name, labels=dict(spec.labels),
            data=m.seal(spec.data), key_id=m.key_id))
        return control_pb2.CreateSecretResponse(secret=secret_to_proto(created))

    @rpc
    async def GetSecret(self, request: control_pb2.GetSecretRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.GetSecretResponse:
        m = self.get_manager(context)
        if not request.secret_id:
            raise errors.InvalidArgument("secret ID must be provided")
        await m.barrier()
        return control_pb2.GetSecretResponse(secret=secret_to_proto(m.store.resolve_secret(request.secret_id)))

    @rpc
    async def ListSecrets(self, request: control_pb2.ListSecretsRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.ListSecretsResponse:
        m = self.get_manager(context)
        await m.barrier()
        f = request.filters
        names = {n.lower() for n in f.names}
        out = []
        for s in m.store.secrets():
            if names and s.name.lower() not in names:
                continue
            if f.name_prefixes and not any(s.name.startswith(p) for p in f.name_prefixes):
                continue
            if f.id_prefixes and not any(s.id.startswith(p) for p in f.id_prefixes):
                continue
            labels = s.labels
            if any(k not in labels or (v and labels[k] != v) for k, v in f.labels.items()):
                continue
            out.append(secret_to_proto(s))
        return control_pb2.ListSecretsResponse(secrets=out)

    @rpc
    async def UpdateSecret(self, request: control_pb2.UpdateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.UpdateSecretResponse:
        m = self.get_manager(context)
        if not request.secret_id or not request.HasField("secret_version") or not request.HasField("spec"):
            raise errors.InvalidArgument("invalid argument")
        await m.barrier()
        current = m.store.resolve_secret(request.secret_id)
        spec = request.spec
        if spec.name != current.name or (
            spec.data and not hmac.compare_digest(spec.data, m.unseal(current.data))
        ):
            raise errors.InvalidArgument(errors.ONLY_LABELS)
        updated = await m.propose(state.UpdateSecret(
            rid=_rid(request.request_id), id=current.id, version=request.secret_version.index,
            labels=dict(spec.labels)))
        return control_pb2.UpdateSecretResponse(secret=secret_to_proto(updated))

    @rpc
    async def RemoveSecret(self, request: control_pb2.RemoveSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.RemoveSecretResponse:
        m = self.get_manager(context)
        if not request.secret_id:
            raise errors.InvalidArgument("secret ID must be provided")
        rid = _rid(request.request_id)
        await m.barrier()
        secret_id = _resolve_for_removal(m, m.store.resolve_secret, request.secret_id, rid)
        await m.propose(state.RemoveSecret(rid=rid, id=secret_id))
        return control_pb2.RemoveSecretResponse()

    # --- nodes ----------------------------------------------------------------------------

    @rpc
    async def ListNodes(self, request: control_pb2.ListNodesRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListNodesResponse:
        m = self.get_manager(context)
        await m.barrier()
        return control_pb2.ListNodesResponse(nodes=[node_to_proto(n, m) for n in m.store.nodes()])

    @rpc
    async def GetNode(self, request: control_pb2.GetNodeRequest,
                      context: grpc.aio.ServicerContext) -> control_pb2.GetNodeResponse:
        m = self.get_manager(context)
        await m.barrier()
        ref = m.state.node_id if request.node_id == "self" else request.node_id
        return control_pb2.GetNodeResponse(node=node_to_proto(m.store.resolve_node(ref), m))

    @rpc
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.UpdateNodeResponse:
        m = self.get_manager(context)
        await m.barrier()
        node = m.store.resolve_node(request.node_id)
        change = state.UpdateNode(rid=_rid(request.request_id), id=node.id)
        if request.availability:
            change = replace(change, availability=validation.parse_availability(request.availability))
        demote = False
        if request.role and request.role != node.role:
            if request.role == "manager":
                change = replace(change, role="manager", raft_addr=_raft_addr_for_promotion(node))
            elif request.role == "worker":
                _check_demotion(m, node)
                change = replace(change, role="worker", raft_addr="")
                demote = True
            else:
                raise errors.InvalidArgument(f"invalid role: {request.role}")
        updated = await m.propose(change)
        if demote and node.raft_addr:
            # The demoted manager has seen its new role through the log; now take it out of raft.
            await asyncio.to_thread(m.raft.remove_member, node.raft_addr, MEMBERSHIP_TIMEOUT)
        return control_pb2.UpdateNodeResponse(node=node_to_proto(updated, m))

    @rpc
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.RemoveNodeResponse:
        m = self.get_manager(context)
        await m.barrier()
        node = m.store.resolve_node(request.node_id)
        if node.role == "manager":
            raise errors.FailedPrecondition(
                f"node {node.id} is a cluster manager and is a member of the raft cluster. "
                "It must be demoted to worker before removal")
        if node.status == "ready" and not request.force:
            raise errors.FailedPrecondition(f"node {node.id} is not down and can't be removed")
        await m.propose(state.RemoveNode(rid=_rid(request.request_id), node_id=node.id))
        return control_pb2.RemoveNodeResponse()

    # --- services and tasks ------------------------------------------------------------------

    @rpc
    async def CreateService(self, request: control_pb2.CreateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.CreateServiceResponse:
        m = self.get_manager(context)
        spec = request.spec
        validation.validate_service_name(spec.name)
        mode = spec.mode or "replicated"
        replicas = spec.replicas if spec.HasField("replicas") else None
        if mode == "global" and replicas == 0:
            replicas = None  # "no replicas" as a client may spell it for a global service
        validation.validate_service_mode(mode, replicas)
        validation.validate_user(spec.user)
        validation.validate_env(spec.env)
        action = validation.parse_update_action(spec.update_action)
        await m.barrier()
        refs = _resolve_refs(m, spec.secrets)
        svc = state.Service(id=ids.new_id(), name=spec.name, labels=dict(spec.labels), mode=mode,
                            replicas=1 if replicas is None else replicas, command=tuple(spec.command),
                            env=dict(spec.env), user=spec.user, secrets=tuple(refs), update_action=action)
        created = await m.propose(state.CreateService(rid=_rid(request.request_id), service=svc))
        m.poke_scheduler()
        return control_pb2.CreateServiceResponse(service=service_to_proto(created, []))

    @rpc
    async def GetService(self, request: control_pb2.GetServiceRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetServiceResponse:
        m = self.get_manager(context)
        await m.barrier()
        svc = m.store.resolve_service(request.service_id)
        return control_pb2.GetServiceResponse(service=service_to_proto(svc, m.store.tasks(service_id=svc.id)))

    @rpc
    async def ListServices(self, request: control_pb2.ListServicesRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.ListServicesResponse:
        m = self.get_manager(context)
        await m.barrier()
        tasks = m.store.tasks()
        return control_pb2.ListServicesResponse(services=[
            service_to_proto(s, [t for t in tasks if t.service_id == s.id]) for s in m.store.services()])

    @rpc
    async def UpdateService(self, request: control_pb2.UpdateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.UpdateServiceResponse:
        m = self.get_manager(context)
        await m.barrier()
        svc = m.store.resolve_service(request.service_id)
        secrets: tuple[state.SecretRef, ...] | None = None
        if request.secret_rm or request.secret_add:
            drop = set(request.secret_rm)
            kept = [r for r in svc.secrets if r.secret_name not in drop and r.secret_id not in drop]
            added = _resolve_refs(m, request.secret_add)
            refs = kept + added
            _check_targets(refs)
            secrets = tuple(refs)
        replicas: int | None = None
        if request.set_replicas:
            if svc.mode != "replicated":
                raise errors.InvalidArgument("replicas can only be used with replicated mode")
            replicas = request.replicas
        version = request.service_version.index if request.HasField("service_version") else 0
        updated = await m.propose(state.UpdateService(rid=_rid(request.request_id), id=svc.id, version=version,
                                                      secrets=secrets, replicas=replicas, force=request.force))
        m.poke_scheduler()
        return control_pb2.UpdateServiceResponse(
            service=service_to_proto(updated, m.store.tasks(service_id=svc.id)))

    @rpc
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.RemoveServiceResponse:
        m = self.get_manager(context)
        rid = _rid(request.request_id)
        await m.barrier()
        sid = _resolve_for_removal(m, m.store.resolve_service, request.service_id, rid)
        await m.propose(state.RemoveService(rid=rid, id=sid))
        return control_pb2.RemoveServiceResponse()

    @rpc
    async def ListTasks(self, request: control_pb2.ListTasksRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListTasksResponse:
        m = self.get_manager(context)
        await m.barrier()
        service_id = m.store.resolve_service(request.service_id).id if request.service_id else None
        node_id = m.store.resolve_node(request.node_id).id if request.node_id else None
        tasks = sorted(m.store.tasks(service_id=service_id, node_id=node_id),
                       key=lambda t: (t.service_name, t.slot, -t.created_at))
        return control_pb2.ListTasksResponse(tasks=[task_to_proto(t) for t in tasks])

    # --- cluster ----------------------------------------------------------------------------

    @rpc
    async def GetCluster(self, request: control_pb2.GetClusterRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetClusterResponse:
        m = self.get_manager(context)
        await m.barrier()
        return control_pb2.GetClusterResponse(cluster=_cluster_to_proto(m))

    @rpc
    async def RotateJoinToken(self, request: control_pb2.RotateJoinTokenRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.RotateJoinTokenResponse:
        m = self.get_manager(context)
        if request.role not in ("worker", "manager"):
            raise errors.InvalidArgument(f"unknown role {request.role}")
        await m.barrier()
        cluster = m.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        fresh = m.seal(str(tokens.new_token(m.ca.cert_pem)).encode())
        sealed = replace(cluster.join_tokens, **{request.role: fresh})
        await m.propose(state.UpdateCluster(rid=_rid(request.request_id), join_tokens=sealed))
        jt = m.join_tokens()
        return control_pb2.RotateJoinTokenResponse(
            join_tokens=objects_pb2.JoinTokens(worker=jt["worker"], manager=jt["manager"]))

    @rpc
    async def GetUnlockKey(self, request: control_pb2.GetUnlockKeyRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        m = self.get_manager(context)
        await m.barrier()
        key = m.unlock_key()
        if key is None:
            raise errors.FailedPrecondition("no unlock key is set")
        return control_pb2.GetUnlockKeyResponse(unlock_key=keys.format_unlock_key(key))

    @rpc
    async def RotateUnlockKey(self, request: control_pb2.RotateUnlockKeyRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        m = self.get_manager(context)
        await m.barrier()
        cluster = m.store.cluster
        if cluster is None or not cluster.autolock:
            raise errors.FailedPrecondition("cannot rotate because autolock is not turned on")
        new = keys.new_key()
        await m.propose(state.UpdateCluster(rid=_rid(request.request_id), unlock_key=m.seal(new)))
        key = m.unlock_key()
        assert key is not None
        return control_pb2.GetUnlockKeyResponse(unlock_key=keys.format_unlock_key(key))


def _cluster_to_proto(m: Manager) -> objects_pb2.Cluster:
    c = m.store.cluster
    if c is None:
        raise errors.Unavailable("the cluster state is not available yet")
    jt = m.join_tokens()
    return objects_pb2.Cluster(
        id=c.id, version=objects_pb2.Version(index=c.version),
        created_at=format_ts(c.created_at), updated_at=format_ts(c.updated_at),
        join_tokens=objects_pb2.JoinTokens(worker=jt["worker"], manager=jt["manager"]),
        autolock=c.autolock, root_ca_cert=c.root_ca_cert,
    )
