"""The Control API's services and tasks, on a real store: secret references resolved and checked
with Swarm's texts, updates, idempotent removal, task listing."""

from __future__ import annotations

from typing import Any

import grpc

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.manager import state
from tests.unit.managerkit import Swarm, aborted, control, ctx, run


def ref(name: str, target: str = "", **file: Any) -> objects_pb2.SecretReference:
    return objects_pb2.SecretReference(secret_name=name, file=objects_pb2.FileTarget(name=target or name, **file))


def create(name: str, *refs: objects_pb2.SecretReference, mode: str = "", replicas: int | None = None,
           rid: str = "") -> control_pb2.CreateServiceRequest:
    spec = objects_pb2.ServiceSpec(name=name, mode=mode, command=["sleep", "60"], secrets=list(refs))
    if replicas is not None:
        spec.replicas = replicas
    return control_pb2.CreateServiceRequest(spec=spec, request_id=rid)


def test_create_resolves_secret_names_to_ids() -> None:
    swarm = Swarm()
    db = swarm.secret("db")

    async def test() -> None:
        resp = await control(swarm).CreateService(create("web", ref("db", "db.txt", mode=0o400), replicas=2), ctx())
        svc = swarm.store.resolve_service("web")
        assert resp.service.id == svc.id and resp.service.spec.replicas == 2 and resp.service.desired_tasks == 2
        assert svc.secrets == (state.SecretRef(secret_id=db.id, secret_name="db", target="db.txt", mode=0o400),)
        assert svc.command == ("sleep", "60")

    run(test)


def test_create_names_every_missing_secret_and_creates_nothing() -> None:
    swarm = Swarm()
    swarm.secret("db")

    async def test() -> None:
        s = control(swarm)
        one = await aborted(s.CreateService(create("web", ref("db"), ref("nope")), ctx()))
        assert (one.code, one.details) == (grpc.StatusCode.INVALID_ARGUMENT, "secret not found: nope")
        two = await aborted(s.CreateService(create("web", ref("a"), ref("b")), ctx()))
        assert two.details == "secrets not found: a, b"
        no_target = objects_pb2.SecretReference(secret_name="db")
        bad = await aborted(s.CreateService(create("web", no_target), ctx()))
        assert bad.details == "malformed secret reference, no target provided"
        clash = await aborted(s.CreateService(create("web", ref("db", "x"), ref("db", "x")), ctx()))
        assert clash.code == grpc.StatusCode.INVALID_ARGUMENT
        assert swarm.store.services() == []

    run(test)


def test_global_service_counts_one_task_per_worker() -> None:
    swarm = Swarm()
    swarm.add_node("w1")
    swarm.add_node("w2")

    async def test() -> None:
        s = control(swarm)
        await s.CreateService(create("agent", mode="global", replicas=0), ctx())
        svc = swarm.store.resolve_service("agent")
        swarm.task("t1", svc, "w1", slot=0)
        swarm.task("t2", svc, "w2", slot=0)
        got = await s.GetService(control_pb2.GetServiceRequest(service_id="agent"), ctx())
        assert got.service.spec.mode == "global" and got.service.desired_tasks == 2
        assert not got.service.spec.HasField("replicas")
        bad = await aborted(s.UpdateService(control_pb2.UpdateServiceRequest(
            service_id="agent", set_replicas=True, replicas=3), ctx()))
        assert bad.details == "replicas can only be used with replicated mode"

    run(test)


def test_update_adds_and_removes_secrets_and_scales() -> None:
    swarm = Swarm()
    a, b = swarm.secret("a"), swarm.secret("b")
    svc = swarm.service("web", secrets=(state.SecretRef(secret_id=a.id, secret_name="a", target="a"),))

    async def test() -> None:
        resp = await control(swarm).UpdateService(control_pb2.UpdateServiceRequest(
            service_id="web", secret_rm=["a"], secret_add=[ref("b")], set_replicas=True, replicas=4,
            service_version=objects_pb2.Version(index=svc.version)), ctx())
        updated = swarm.store.resolve_service("web")
        assert [r.secret_id for r in updated.secrets] == [b.id] and updated.replicas == 4
        assert resp.service.spec.replicas == 4 and updated.spec_version == svc.spec_version + 1

    run(test)


def test_list_services_counts_running_tasks() -> None:
    swarm = Swarm()
    swarm.add_node("w1")
    web = swarm.service("web", replicas=2)
    swarm.service("api")
    swarm.task("t1", web, "w1", slot=1)
    swarm.proposer.apply(state.TaskStatus(reports=(state.StatusReport(node_id="w1", updates=(
        state.TaskStatusUpdate(task_id="t1", state="running", spec_version=1, ts=5),)),)))

    async def test() -> None:
        resp = await control(swarm).ListServices(control_pb2.ListServicesRequest(), ctx())
        counts = {s.spec.name: (s.running_tasks, s.desired_tasks) for s in resp.services}
        assert counts == {"web": (1, 2), "api": (0, 1)}

    run(test)


def test_remove_is_idempotent_by_request_id() -> None:
    swarm = Swarm()
    svc = swarm.service("web")

    async def test() -> None:
        s = control(swarm)
        await s.RemoveService(control_pb2.RemoveServiceRequest(service_id="web", request_id="rm"), ctx())
        assert swarm.store.service(svc.id) is None
        await s.RemoveService(control_pb2.RemoveServiceRequest(service_id="web", request_id="rm"), ctx())
        gone = await aborted(s.RemoveService(control_pb2.RemoveServiceRequest(service_id="web"), ctx()))
        assert (gone.code, gone.details) == (grpc.StatusCode.NOT_FOUND, "service web not found")

    run(test)


def test_list_tasks_by_service_and_node_in_slot_order() -> None:
    swarm = Swarm()
    swarm.add_node("w1")
    swarm.add_node("w2")
    web, api = swarm.service("web", replicas=2), swarm.service("api")
    swarm.task("t-web-2", web, "w1", slot=2)
    swarm.task("t-web-1", web, "w2", slot=1)
    swarm.task("t-api-1", api, "w1", slot=1)

    async def ids(**kw: str) -> list[str]:
        resp = await control(swarm).ListTasks(control_pb2.ListTasksRequest(**kw), ctx())
        return [t.id for t in resp.tasks]

    async def test() -> None:
        assert await ids() == ["t-api-1", "t-web-1", "t-web-2"]
        assert await ids(service_id="web") == ["t-web-1", "t-web-2"]
        assert await ids(node_id="w1") == ["t-api-1", "t-web-2"]
        err = await aborted(control(swarm).ListTasks(control_pb2.ListTasksRequest(service_id="nope"), ctx()))
        assert err.code == grpc.StatusCode.NOT_FOUND

    run(test)
