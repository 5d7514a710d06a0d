"""Services and their tasks: create, inspect, list, update (secrets, replicas, constraints, force), remove;
list tasks. The scheduler, woken by every apply, turns services into tasks."""

from __future__ import annotations

from collections.abc import Iterable

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.manager import constraint, state
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id, resolve_for_removal
from swarmsecrets.rpcutil import format_ts


def service_to_proto(s: state.Service, tasks: list[state.Task]) -> objects_pb2.Service:
    refs = [objects_pb2.SecretReference(
        secret_id=r.secret_id, secret_name=r.secret_name,
        file=objects_pb2.FileTarget(name=r.target, uid=r.uid, gid=r.gid, mode=r.mode))
        for r in s.secrets]
    spec = objects_pb2.ServiceSpec(name=s.name, labels=s.labels, mode=s.mode, command=s.command, env=s.env,
                                   user=s.user, secrets=refs, update_action=s.update_action,
                                   constraints=s.constraints)
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


def _resolve_refs(store: StoreReader, refs: Iterable[objects_pb2.SecretReference]) -> list[state.SecretRef]:
    """Secret references by name → validated records with the secret ids (Swarm's texts)."""
    by_name = {s.name: s for s in store.secrets()}
    out, missing = [], []
    for ref in refs:
        if not ref.secret_name and not ref.secret_id:
            raise errors.InvalidArgument("malformed secret reference")
        secret = store.secret(ref.secret_id) if ref.secret_id else by_name.get(ref.secret_name)
        if secret is not None and ref.secret_name and secret.name != ref.secret_name:
            secret = None  # an ID and a name that do not go together: SwarmKit finds no such secret
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


class ServicesAPI:
    """``sealer`` keys the binding of request ids."""

    def __init__(self, store: StoreReader, proposer: Proposer, sealer: Sealer) -> None:
        self.store = store
        self.proposer = proposer
        self.sealer = sealer

    async def create_service(self, request: control_pb2.CreateServiceRequest,
                             caller: str) -> control_pb2.CreateServiceResponse:
        spec = request.spec
        validation.validate_service_name(spec.name)
        mode = spec.mode or "replicated"
        replicas = spec.replicas if spec.HasField("replicas") else None
        if mode == "global" and replicas == 0:
            replicas = None  # "no replicas" as a client may spell it for a global service
        validation.validate_service_mode(mode, replicas)
        validation.validate_user(spec.user)
        validation.validate_env(spec.env)
        validation.validate_command(spec.command)
        validation.validate_labels(spec.labels)
        validation.validate_list_length("secret references", len(spec.secrets), validation.MAX_SECRET_REFS)
        action = validation.parse_update_action(spec.update_action)
        constraint.validate(spec.constraints)
        await self.proposer.barrier()
        refs = _resolve_refs(self.store, spec.secrets)
        svc = state.Service(id=ids.new_id(), name=spec.name, labels=dict(spec.labels), mode=mode,
                            replicas=1 if replicas is None else replicas, command=tuple(spec.command),
                            env=dict(spec.env), user=spec.user, secrets=tuple(refs), update_action=action,
                            constraints=tuple(sorted(spec.constraints)))
        created = await self.proposer.propose(state.CreateService(
            rid=request_id(self.sealer, state.CreateService, caller, request), service=svc))
        return control_pb2.CreateServiceResponse(service=service_to_proto(created, []))

    async def get_service(self, request: control_pb2.GetServiceRequest) -> control_pb2.GetServiceResponse:
        await self.proposer.barrier()
        svc = self.store.resolve_service(request.service_id)
        return control_pb2.GetServiceResponse(service=service_to_proto(svc, self.store.tasks(service_id=svc.id)))

    async def list_services(self, request: control_pb2.ListServicesRequest) -> control_pb2.ListServicesResponse:
        await self.proposer.barrier()
        tasks = self.store.tasks()
        return control_pb2.ListServicesResponse(services=[
            service_to_proto(s, [t for t in tasks if t.service_id == s.id]) for s in self.store.services()])

    async def update_service(self, request: control_pb2.UpdateServiceRequest,
                             caller: str) -> control_pb2.UpdateServiceResponse:
        validation.validate_list_length("secrets to add", len(request.secret_add), validation.MAX_SECRET_REFS)
        validation.validate_list_length("secrets to remove", len(request.secret_rm), validation.MAX_SECRET_REFS)
        await self.proposer.barrier()
        svc = self.store.resolve_service(request.service_id)
        secrets: tuple[state.SecretRef, ...] | None = None
        if request.secret_rm or request.secret_add:
            drop = set(request.secret_rm)
            kept = [r for r in svc.secrets if r.secret_name not in drop and r.secret_id not in drop]
            added = _resolve_refs(self.store, request.secret_add)
            refs = kept + added
            _check_targets(refs)
            secrets = tuple(refs)
        replicas: int | None = None
        if request.set_replicas:
            if svc.mode != "replicated":
                raise errors.InvalidArgument("replicas can only be used with replicated mode")
            validation.validate_replicas(request.replicas)
            replicas = request.replicas
        constraints: tuple[str, ...] | None = None
        if request.constraint_add or request.constraint_rm:
            # Docker's rule: add, then remove the ones named exactly, sorted.
            constraint.validate(request.constraint_add)
            validation.validate_list_length("constraints to remove", len(request.constraint_rm),
                                            constraint.MAX_CONSTRAINTS)
            drop = set(request.constraint_rm)
            placement = sorted(c for c in [*svc.constraints, *request.constraint_add] if c not in drop)
            constraint.validate(placement)
            constraints = tuple(placement)
        version = request.service_version.index if request.HasField("service_version") else 0
        updated = await self.proposer.propose(state.UpdateService(
            rid=request_id(self.sealer, state.UpdateService, caller, request), id=svc.id, version=version,
            secrets=secrets, replicas=replicas, force=request.force, constraints=constraints))
        return control_pb2.UpdateServiceResponse(
            service=service_to_proto(updated, self.store.tasks(service_id=svc.id)))

    async def remove_service(self, request: control_pb2.RemoveServiceRequest,
                             caller: str) -> control_pb2.RemoveServiceResponse:
        rid = request_id(self.sealer, state.RemoveService, caller, request)
        await self.proposer.barrier()
        sid = resolve_for_removal(self.store, self.store.resolve_service, request.service_id, rid)
        await self.proposer.propose(state.RemoveService(rid=rid, id=sid))
        return control_pb2.RemoveServiceResponse()

    async def list_tasks(self, request: control_pb2.ListTasksRequest) -> control_pb2.ListTasksResponse:
        await self.proposer.barrier()
        service_id = self.store.resolve_service(request.service_id).id if request.service_id else None
        node_id = self.store.resolve_node(request.node_id).id if request.node_id else None
        tasks = sorted(self.store.tasks(service_id=service_id, node_id=node_id),
                       key=lambda t: (t.service_name, t.slot, -t.created_at))
        return control_pb2.ListTasksResponse(tasks=[task_to_proto(t) for t in tasks])
