"""Placement: the constraint parser and matcher (Swarm's cases), the scheduler's use of them (pending
tasks with Swarm's reason), node labels and the cluster settings in the replicated state."""

from __future__ import annotations

import asyncio
import json
import pickle
from types import MappingProxyType
from typing import Any

import grpc
import pytest

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.manager import constraint, state
from swarmsecrets.manager.scheduler import plan
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import Store
from tests.unit import managerkit
from tests.unit.managerkit import Swarm, aborted, control, ctx
from tests.unit.test_cli_service import FakeDaemon, add_service, fake, invoke, server  # noqa: F401 (fixtures)
from tests.unit.test_dispatcher import dispatcher, open_session, run
from tests.unit.test_state_versions import _loads

TS = 1_700_000_000_000_000_000


# --- parser and matcher ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, error", [
    ("", "constraint expected one operator from ==, !="),
    (" ", "constraint expected one operator from ==, !="),
    ("nodeabc", "constraint expected one operator from ==, !="),
    ("node ~ abc", "constraint expected one operator from ==, !="),
    ("1node==a2", "key '1node' is invalid"),
    ("no de== node1", "key 'no de' is invalid"),
    ("no*de==node1", "key 'no*de' is invalid"),
    ("==node1", "key '' is invalid"),
    ("no$de==node1", "key 'no$de' is invalid"),
    ("node==", "value '' is invalid"),
    ("node== ", "value '' is invalid"),
    ("node==a<b", "value 'a<b' is invalid"),
])
def test_swarms_bad_constraints_are_refused_with_its_texts(text: str, error: str) -> None:
    with pytest.raises(errors.InvalidArgument) as e:
        constraint.parse([text])
    assert str(e.value.message if hasattr(e.value, "message") else e.value) == error


@pytest.mark.parametrize("text, key, value", [
    (" node == node1", "node", "node1"),
    ("NoDe==node1", "NoDe", "node1"),
    ("no.de==node1", "no.de", "node1"),
    ("_node==_node1", "_node", "_node1"),
    ("node==[a-b]+c*(n|b)/", "node", "[a-b]+c*(n|b)/"),
    ("node==node 1", "node", "node 1"),
])
def test_swarms_good_constraints_parse(text: str, key: str, value: str) -> None:
    (c,) = constraint.parse([text])
    assert (c.key, c.value) == (key, value)


def test_match_is_whole_value_and_case_insensitive() -> None:
    (eq,) = constraint.parse(["node.name==f*o"])
    assert eq.match("F*o") and not eq.match("foo") and eq.match("foo", "f*o", "bar")
    (ne,) = constraint.parse(["node.name!=foo"])
    assert not ne.match("foo") and ne.match("fo") and ne.match("fooExtra")


def node(nid: str, role: str = "worker", hostname: str = "", labels: dict[str, str] | None = None,
         status: str = "ready", availability: str = "active") -> state.Node:
    return state.Node(id=nid, role=role, hostname=hostname, labels=labels or {}, status=status,
                      availability=availability)


def test_node_attributes_and_labels() -> None:
    n = node("abc", "manager", "host-1", {"zone": "East", "Disk": "ssd"})

    def matches(*texts: str) -> bool:
        return constraint.node_matches(constraint.parse(texts), n)

    assert matches("node.id==abc", "node.hostname==HOST-1", "node.role==manager", "node.labels.zone==east")
    assert matches("node.role!=worker", "node.labels.missing!=x", "NODE.LABELS.Disk==SSD")
    assert not matches("node.labels.disk==ssd")  # a label's name is case-sensitive
    assert not matches("node.labels.missing==x") and not matches("node.role==worker")
    assert not matches("engine.labels.x==y") and not matches("node.ip==1.2.3.4")  # keys we do not know


# --- the scheduler ---------------------------------------------------------------------------------

def view(nodes: list[state.Node], services: list[state.Service], tasks: list[state.Task] | None = None,
         cluster: state.Cluster | None = None) -> state.StateView:
    return state.StateView(1, MappingProxyType({n.id: n for n in nodes}), MappingProxyType({s.id: s for s in services}),
                           MappingProxyType({t.id: t for t in tasks or []}), cluster)


def svc(sid: str, *constraints: str, mode: str = "replicated", replicas: int = 1) -> state.Service:
    return state.Service(id=sid, name=sid, mode=mode, replicas=replicas, constraints=constraints)


def task(tid: str, node_id: str, slot: int = 1, st: str = "running", err: str = "", created_at: int = 1,
         desired_state: str = "running", updated_at: int = 1) -> state.Task:
    return state.Task(id=tid, service_id="s", service_name="s", slot=slot, node_id=node_id, state=st, err=err,
                      desired_state=desired_state, created_at=created_at, updated_at=updated_at)


NODES = [node("m", "manager"), node("w1", labels={"zone": "east"}), node("w2"), node("w3", status="down")]


def test_replicas_go_only_to_nodes_that_satisfy_every_constraint() -> None:
    p = plan(view(NODES, [svc("s", "node.labels.zone==east", "node.role==worker", replicas=2),
                          svc("g", "node.role!=worker", mode="global")]), 0)
    assert sorted((t.service_id, t.node_id) for t in p.create) == [("g", "m"), ("s", "w1"), ("s", "w1")]


def test_a_slot_no_node_fits_gets_a_pending_task_with_swarms_reason() -> None:
    p = plan(view(NODES, [svc("s", "node.labels.zone==west", replicas=2)]), 0)
    assert [(t.slot, t.node_id, t.state, t.err) for t in sorted(p.create, key=lambda t: t.slot)] == [
        (s, "", "pending", "no suitable node (scheduling constraints not satisfied on 3 nodes; "
                           "1 node not available for new tasks)") for s in (1, 2)]
    assert plan(view([], [svc("s")]), 0).create[0].err == "no suitable node"
    drained = [node("a", availability="drain"), node("b", availability="pause"), node("c", labels={"x": "y"})]
    assert plan(view(drained, [svc("s", "node.labels.x==z")]), 0).create[0].err == (
        "no suitable node (2 nodes not available for new tasks; scheduling constraints not satisfied on 1 node)")


def test_a_pending_task_stays_while_its_reason_holds_and_gives_way_to_a_placed_one() -> None:
    reason = "no suitable node (scheduling constraints not satisfied on 3 nodes; 1 node not available for new tasks)"
    waiting = task("p1", "", st="pending", err=reason)
    assert not plan(view(NODES, [svc("s", "node.labels.zone==west")], [waiting]), 0)
    # The reason changed (a node went down): a new pending task says so.
    down = [*NODES[:3], node("w3", status="down"), node("w4", status="down")]
    p = plan(view(down, [svc("s", "node.labels.zone==west")], [waiting]), 0)
    assert p.delete == ("p1",) and [(t.node_id, t.state) for t in p.create] == [("", "pending")]
    # The constraint now fits w1: the pending task is replaced by one placed there.
    p = plan(view(NODES, [svc("s", "node.labels.zone==east")], [waiting]), 0)
    assert p.delete == ("p1",) and [(t.node_id, t.state, t.slot) for t in p.create] == [("w1", "assigned", 1)]
    assert p.update == ()


def test_a_task_whose_node_no_longer_fits_moves() -> None:
    p = plan(view(NODES, [svc("s", "node.labels.zone==east")], [task("t1", "w2")]), 0)
    assert [(u.id, u.desired_state) for u in p.update] == [("t1", "shutdown")]
    assert [t.node_id for t in p.create] == ["w1"]
    p = plan(view(NODES, [svc("g", "node.role==manager", mode="global")],
                  [state.Task(id="t2", service_id="g", service_name="g", slot=0, node_id="w1", state="running")]), 0)
    assert [u.id for u in p.update] == ["t2"] and [t.node_id for t in p.create] == ["m"]


@pytest.mark.parametrize("limit, kept", [(5, 5), (2, 2), (0, 0), (-1, 8)])
def test_the_task_history_limit_is_the_clusters(limit: int, kept: int) -> None:
    old = [task(f"old{i}", "w1", desired_state="shutdown", st="shutdown", updated_at=i) for i in range(8)]
    cluster = state.Cluster(id="c", root_ca_cert="", join_tokens=state.JoinTokens(worker=b"", manager=b""),
                            task_history_limit=limit)
    p = plan(view(NODES, [svc("s")], [task("t1", "w1"), *old], cluster), 0)
    assert sorted(p.delete) == sorted(f"old{i}" for i in range(8 - kept))


# --- the replicated state --------------------------------------------------------------------------

def cluster_store() -> Store:
    s = Store()
    state.unwrap(s.apply(state.InitCluster(rid="i", ts=TS, cluster=state.Cluster(
        id="c", root_ca_cert="", join_tokens=state.JoinTokens(worker=b"", manager=b"")),
        node=node("m", "manager")), 1))
    return s


def test_node_labels_are_added_then_removed_and_validated() -> None:
    s = cluster_store()
    n = state.unwrap(s.apply(state.UpdateNodeLabels(rid="l1", ts=TS, node_id="m", add={"a": "1", "b": ""}), 2))
    assert dict(n.labels) == {"a": "1", "b": ""}
    n = state.unwrap(s.apply(state.UpdateNodeLabels(rid="l2", ts=TS, node_id="m", add={"c": "3"},
                                                    remove=("a", "c", "gone")), 3))
    assert dict(n.labels) == {"b": ""} and n.version == 3
    with pytest.raises(errors.InvalidArgument):
        state.unwrap(s.apply(state.UpdateNodeLabels(rid="l3", ts=TS, node_id="m", add={"": "x"}), 4))
    with pytest.raises(errors.NotFound):
        state.unwrap(s.apply(state.UpdateNodeLabels(rid="l4", ts=TS, node_id="nope", add={"a": "1"}), 5))


def test_cluster_settings_change_alone_and_refuse_a_non_positive_heartbeat() -> None:
    s = cluster_store()
    c = state.unwrap(s.apply(state.SetClusterSettings(rid="s1", ts=TS, task_history_limit=-1), 2))
    assert (c.task_history_limit, c.dispatcher_heartbeat) == (-1, 0)
    c = state.unwrap(s.apply(state.SetClusterSettings(rid="s2", ts=TS, dispatcher_heartbeat=7 * 10**9), 3))
    assert (c.task_history_limit, c.dispatcher_heartbeat) == (-1, 7 * 10**9)
    with pytest.raises(errors.InvalidArgument):
        state.unwrap(s.apply(state.SetClusterSettings(rid="s3", ts=TS, dispatcher_heartbeat=0), 4))
    assert s.view().cluster is s.cluster


def test_an_update_of_constraints_moves_tasks_without_a_new_spec() -> None:
    s = cluster_store()
    state.unwrap(s.apply(state.CreateService(rid="c", ts=TS, service=svc("s", "node.role==manager")), 2))
    new = state.unwrap(s.apply(state.UpdateService(rid="u", ts=TS, id="s", constraints=()), 3))
    assert new.constraints == () and new.spec_version == 1


SEEDED = state.Cluster(id="c", root_ca_cert="", join_tokens=state.JoinTokens(worker=b"", manager=b""),
                       dispatcher_heartbeat=5 * 10**9)


@pytest.mark.parametrize("cmd, needs", [
    (state.UpdateNodeLabels(rid="1", ts=TS, node_id="n", add={"a": "b"}, remove=("c",)), 4),
    (state.SetClusterSettings(rid="2", ts=TS, task_history_limit=3, dispatcher_heartbeat=10**9), 4),
    (state.CreateService(rid="3", ts=TS, service=svc("s", "node.role==worker")), 4),
    (state.CreateService(rid="4", ts=TS, service=svc("s")), 1),
    (state.UpdateService(rid="5", ts=TS, id="s", constraints=("node.role==worker",)), 4),
    (state.UpdateService(rid="6", ts=TS, id="s", constraints=()), 4),
    (state.UpdateService(rid="7", ts=TS, id="s", replicas=2), 1),
    (state.InitCluster(rid="8", ts=TS, cluster=SEEDED, node=node("m", "manager")), 4),
], ids=lambda c: getattr(c, "rid", ""))
def test_new_fields_need_state_version_4_and_round_trip(cmd: state.Command, needs: int) -> None:
    entry = codec.encode_command(cmd)
    assert entry["v"] == needs
    assert codec.decode_command(_loads(pickle.dumps(entry, protocol=4))) == cmd
    managers = [state.Node(id="m", role="manager", state_version=3)]
    if needs > 3:
        with pytest.raises(errors.FailedPrecondition, match="upgrade every manager first"):
            state.require_supported(cmd, managers)
    else:
        state.require_supported(cmd, managers)


# --- the CLI (against test_cli_service's fake daemon) ------------------------------------------------


def test_cli_sends_constraints_and_labels_and_shows_them(invoke: Any, fake: FakeDaemon) -> None:  # noqa: F811
    r = invoke("service", "create", "-d", "--name", "app", "--constraint", "node.role==worker",
               "--constraint", "node.labels.zone!=west", "--", "sleep", "1")
    assert r.exit_code == 0, r.stderr
    assert list(fake.calls("CreateService")[0].spec.constraints) == ["node.role==worker", "node.labels.zone!=west"]
    r = invoke("service", "update", "-d", "--constraint-add", "node.id==x", "--constraint-rm", "node.role==worker",
               "app")
    assert r.exit_code == 0, r.stderr
    (req,) = fake.calls("UpdateService")
    assert (list(req.constraint_add), list(req.constraint_rm)) == (["node.id==x"], ["node.role==worker"])
    add_service(fake, "c" * 25, "placed", constraints=["node.role==worker", "node.labels.a==b"])
    r = invoke("service", "inspect", "--pretty", "placed")
    assert "\nPlacement:\n Constraints:\t[node.role==worker node.labels.a==b]\nUpdateConfig:" in r.stdout
    r = invoke("service", "inspect", "placed")
    assert json.loads(r.stdout)[0]["Spec"]["TaskTemplate"]["Placement"] == {
        "Constraints": ["node.role==worker", "node.labels.a==b"]}

    r = invoke("node", "update", "--label-add", "zone=east", "--label-add", "ssd", "--label-rm", "old", "node2")
    assert (r.exit_code, r.stdout) == (0, "node2\n")
    (req,) = fake.calls("UpdateNode")
    assert (dict(req.label_add), list(req.label_rm)) == ({"zone": "east", "ssd": ""}, ["old"])
    r = invoke("node", "update", "--label-add", "=x", "node2")
    assert (r.exit_code, r.stderr) == (1, 'invalid argument "=x" for "--label-add" flag: invalid label \'=x\': '
                                          "empty name\n")
    assert len(fake.calls("UpdateNode")) == 1


def test_node_ls_filters_like_docker(invoke: Any, fake: FakeDaemon) -> None:  # noqa: F811
    fake.nodes[1].spec.labels.update({"zone": "east", "ssd": ""})
    fake.nodes[2].spec.labels.update({"zone": "west"})

    def ids(*filters: str) -> list[str]:
        r = invoke("node", "ls", "-q", *[a for f in filters for a in ("-f", f)])
        assert r.exit_code == 0, r.stderr
        return r.stdout.split()

    assert ids("node.label=zone") == ["node2", "node3"]
    assert ids("node.label=zone=east") == ["node2"]
    assert ids("node.label=zone", "node.label=ssd") == ["node2"]  # labels AND'd
    assert ids("role=manager", "role=WORKER") == ["node1", "node2", "node3"]  # one key's values OR'd
    assert ids("role=worker", "name=wrk-2") == ["node3"]
    assert ids("id=node1") == ["node1"] and ids("label=x") == []
    for bad, error in (("foo=bar", "invalid filter 'foo'"), ("role=boss", "Invalid role filter: 'boss'"),
                       ("zone", "bad format of filter (expected name=value)")):
        r = invoke("node", "ls", "-f", bad)
        assert (r.exit_code, r.stderr) == (1, error + "\n")


# --- the dispatcher's heartbeat: the cluster's setting, applied live --------------------------------

def test_the_dispatcher_takes_the_clusters_heartbeat_live_and_each_node_keeps_the_grace_it_was_told() -> None:
    async def test(swarm: Any) -> None:
        swarm.add_node("w1", status="unknown")
        d = dispatcher(swarm)  # its own flag: 5 s, used while the cluster stores none
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        assert first.heartbeat_period_ms == 5000
        swarm.proposer.apply(state.SetClusterSettings(dispatcher_heartbeat=20 * 10**9))
        beat = await d.Heartbeat(pb.HeartbeatRequest(session_id=first.session_id), ctx(cert))
        assert 18000 <= beat.period_ms <= 22000
        # Down to 1 s: w1 was told 20 s, and has three of those to hear of the change.
        swarm.proposer.apply(state.SetClusterSettings(dispatcher_heartbeat=10**9))
        swarm.clock.mono += 59
        await d.sweep(swarm.clock.monotonic())
        node = swarm.store.node("w1")
        assert node is not None and node.status == "ready"
        beat = await d.Heartbeat(pb.HeartbeatRequest(session_id=first.session_id), ctx(cert))
        assert 900 <= beat.period_ms <= 1100
        swarm.clock.mono += 3.5
        await d.sweep(swarm.clock.monotonic())
        node = swarm.store.node("w1")
        assert node is not None and node.status == "down"
        await stream.aclose()
        await asyncio.sleep(0)

    run(test)


# --- the Control API ---------------------------------------------------------------------------------

def test_control_api_labels_and_constraints_with_docker_s_rules() -> None:
    swarm = Swarm()
    swarm.add_node("w1")

    async def test() -> None:
        s = control(swarm)
        resp = await s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w1", label_add={"a": "1", "b": "2"}), ctx())
        assert dict(resp.node.spec.labels) == {"a": "1", "b": "2"}
        # Added then removed in one request (a key being added may be removed), as docker does.
        resp = await s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w1", label_add={"c": "3"},
                                                                label_rm=["a", "c"]), ctx())
        assert dict(resp.node.spec.labels) == {"b": "2"}
        e = await aborted(s.UpdateNode(control_pb2.UpdateNodeRequest(node_id="w1", label_rm=["zz"]), ctx()))
        assert (e.code, e.details) == (grpc.StatusCode.INVALID_ARGUMENT, "key zz doesn't exist in node's labels")

        spec = objects_pb2.ServiceSpec(name="web", constraints=["node.role==worker"], command=["sleep", "1"])
        e = await aborted(s.CreateService(control_pb2.CreateServiceRequest(
            spec=objects_pb2.ServiceSpec(name="bad", constraints=["node.role=worker"])), ctx()))
        assert (e.code, e.details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "constraint expected one operator from ==, !=")
        await s.CreateService(control_pb2.CreateServiceRequest(spec=spec), ctx())
        resp = await s.UpdateService(control_pb2.UpdateServiceRequest(
            service_id="web", constraint_add=["node.labels.b==2", "node.id!=x"], constraint_rm=["node.role==worker"]),
            ctx())
        assert list(resp.service.spec.constraints) == ["node.id!=x", "node.labels.b==2"]  # sorted, as docker
        e = await aborted(s.UpdateService(control_pb2.UpdateServiceRequest(
            service_id="web", constraint_add=["node.labels.b==<2"]), ctx()))
        assert e.details == "value '<2' is invalid"
        svc = swarm.store.resolve_service("web")
        assert svc.constraints == ("node.id!=x", "node.labels.b==2") and svc.spec_version == 1

    managerkit.run(test)
