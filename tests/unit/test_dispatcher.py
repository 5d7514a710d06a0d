"""The dispatcher on a real store: sessions (who may open one, on which manager), heartbeats and
liveness on a clock the test moves, status reports batched into one raft entry, and assignment
streams (COMPLETE, then INCREMENTAL; a node receives only the secrets its own tasks use)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from swarmsecrets import errors, wire
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import objects_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager import dispatcher as dispatcher_module
from swarmsecrets.manager.dispatcher import MISSED_HEARTBEATS, Dispatcher
from swarmsecrets.raft import RaftStatus
from swarmsecrets.raft import wire as raft_wire
from tests.unit.managerkit import Context, Swarm, aborted, ctx

PERIOD = 5.0


def dispatcher(swarm: Swarm) -> Dispatcher:
    d = Dispatcher(store=swarm.store, proposer=swarm.proposer, authz=swarm.authz, sealer=swarm.sealer,
                   heartbeat_period=PERIOD, clock=swarm.clock)
    swarm.store.subscribe(d.on_apply)
    return d


def run(test: Callable[[Swarm], Awaitable[None]], swarm: Swarm | None = None) -> None:
    async def main() -> None:
        await asyncio.wait_for(test(swarm or Swarm()), 30)

    asyncio.run(main())


async def open_session(d: Dispatcher, cert: bytes) -> tuple[Any, pb.SessionMessage]:
    stream: Any = d.Session(pb.SessionRequest(hostname="box", engine_version="9.9"), ctx(cert))
    first = await stream.__anext__()
    return stream, first


async def next_message(stream: Any) -> Any:
    return await asyncio.wait_for(stream.__anext__(), 10)


class StreamContext(Context):
    """A bidi call's context: what the node sends, and what the servicer wrote."""

    def __init__(self, cert_pem: bytes) -> None:
        super().__init__(cert_pem)
        self.inbound: asyncio.Queue[Any] = asyncio.Queue()
        self.outbound: asyncio.Queue[pb.SessionMessage] = asyncio.Queue()

    async def read(self) -> Any:
        return await self.inbound.get()

    async def write(self, msg: pb.SessionMessage) -> None:
        await self.outbound.put(msg)

    async def exchange(self, msg: pb.AgentMessage) -> pb.SessionMessage:
        await self.inbound.put(msg)
        return await asyncio.wait_for(self.outbound.get(), 10)


def status(task_id: str, st: str, spec_version: int = 1) -> pb.TaskStatusUpdate:
    return pb.TaskStatusUpdate(task_id=task_id, status=objects_pb2.TaskStatus(state=st), spec_version=spec_version)


async def kept_then_marked_down(d: Dispatcher, swarm: Swarm, node_id: str, grace: float) -> None:
    """A node that beat just now stays ready for ``grace`` less a second; a sweep two seconds
    later marks it down and ends its session."""
    swarm.clock.mono += grace - 1
    await d.sweep(swarm.clock.monotonic())
    node = swarm.store.node(node_id)
    assert node is not None and node.status == "ready" and node_id in d.sessions
    swarm.clock.mono += 2
    await d.sweep(swarm.clock.monotonic())
    node = swarm.store.node(node_id)
    assert node is not None and (node.status, node.status_message) == ("down", "heartbeat failure")


# --- sessions ------------------------------------------------------------------------------------

def test_a_worker_opens_a_session_and_is_marked_ready() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1", status="unknown")
        d = dispatcher(swarm)
        stream, first = await open_session(d, swarm.cert("w1", "worker"))
        assert first.node_id == "w1" and first.role == "worker" and first.session_id
        assert list(first.managers) == ["127.0.0.1:4242"] and first.heartbeat_period_ms == 5000
        node = swarm.store.node("w1")
        assert node is not None and (node.status, node.hostname, node.engine_version) == ("ready", "box", "9.9")
        await stream.aclose()

    run(test)


def test_a_promoted_worker_hears_its_new_role_and_its_session_ends() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1", addr="10.0.0.7:4242")
        d = dispatcher(swarm)
        stream, first = await open_session(d, swarm.cert("w1", "worker"))
        swarm.proposer.apply(state.UpdateNode(id="w1", role="manager", raft_addr="10.0.0.7:4243"))
        told = await next_message(stream)
        assert (told.role, told.session_id) == ("manager", first.session_id)
        with pytest.raises(StopAsyncIteration):
            await next_message(stream)
        assert d.sessions["w1"].ended.is_set()

    run(test)


def test_a_manager_opens_a_session_as_a_manager_and_is_marked_ready() -> None:
    """A manager that may take tasks runs the worker agent too; its session carries its role."""
    async def test(swarm: Swarm) -> None:
        swarm.add_node("m2", "manager", addr="127.0.0.2:4242", raft_addr="127.0.0.2:4243", status="unknown")
        d = dispatcher(swarm)
        stream, first = await open_session(d, swarm.cert("m2", "manager"))
        assert (first.node_id, first.role) == ("m2", "manager")
        node = swarm.store.node("m2")
        assert node is not None and node.status == "ready"
        await stream.aclose()

    run(test)


def test_a_demoted_managers_session_ends_without_a_promotion_notice() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("m2", "manager", addr="127.0.0.2:4242", raft_addr="127.0.0.2:4243")
        d = dispatcher(swarm)
        stream, _ = await open_session(d, swarm.cert("m2", "manager"))
        swarm.proposer.apply(state.UpdateNode(id="m2", role="worker", raft_addr=""))
        with pytest.raises(StopAsyncIteration):  # no message: the node restarts its agent as a worker's
            await next_message(stream)
        assert d.sessions["m2"].ended.is_set()

    run(test)


def test_a_follower_names_the_leader_it_knows() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("m2", "manager", addr="127.0.0.2:4242", raft_addr="127.0.0.2:4243", status="unknown")
        swarm.add_node("w1")
        swarm.proposer.group.is_leader = False
        swarm.proposer.group.leader = "127.0.0.2:4243"
        err = await aborted(open_session(dispatcher(swarm), swarm.cert("w1", "worker")))
        assert err.code == grpc.StatusCode.UNAVAILABLE and err.kind == errors.NotLeader().kind
        assert err.metadata[wire.LEADER_METADATA] == "127.0.0.2:4242"

    run(test)


def test_only_members_of_this_swarm_open_sessions() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        other = await aborted(open_session(d, swarm.cert("w1", "worker", ca=Swarm().ca)))
        assert other.code == grpc.StatusCode.PERMISSION_DENIED
        nobody = await aborted(open_session(d, b""))
        assert nobody.code == grpc.StatusCode.PERMISSION_DENIED
        swarm.proposer.apply(state.RemoveNode(node_id="w1"))
        removed = await aborted(open_session(d, swarm.cert("w1", "worker")))
        assert removed.kind == errors.node_removed("w1").kind
        assert d.sessions == {}

    run(test)


# --- heartbeats and liveness ------------------------------------------------------------------------

def test_heartbeats_keep_a_session_alive_and_silence_marks_the_node_down() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1", status="unknown")
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        grace = PERIOD * MISSED_HEARTBEATS
        swarm.clock.mono += grace - 1
        beat = await d.Heartbeat(pb.HeartbeatRequest(session_id=first.session_id), ctx(cert))
        assert 4500 <= beat.period_ms <= 5500
        await kept_then_marked_down(d, swarm, "w1", grace)
        assert "w1" not in d.sessions
        late = await aborted(d.Heartbeat(pb.HeartbeatRequest(session_id=first.session_id), ctx(cert)))
        assert (late.code, late.details) == (grpc.StatusCode.INVALID_ARGUMENT, "session invalid")
        await stream.aclose()

    run(test)


def test_heartbeats_on_the_session_stream_keep_it_alive_and_silence_ends_it() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1", status="unknown")
        d = dispatcher(swarm)
        c = StreamContext(swarm.cert("w1", "worker"))
        call = asyncio.create_task(d.Connect(None, c))  # type: ignore[arg-type]
        first = await c.exchange(pb.AgentMessage(open=pb.SessionRequest(hostname="box", engine_version="9.9")))
        assert first.node_id == "w1" and first.session_id and first.heartbeat_period_ms == 5000
        node = swarm.store.node("w1")
        assert node is not None and node.status == "ready"
        grace = PERIOD * MISSED_HEARTBEATS
        swarm.clock.mono += grace - 1
        answer = await c.exchange(pb.AgentMessage(heartbeat=pb.HeartbeatRequest()))
        assert 4500 <= answer.heartbeat.period_ms <= 5500 and answer.heartbeat.received_ns
        await kept_then_marked_down(d, swarm, "w1", grace)
        await asyncio.wait_for(call, 10)  # the session ended: so did its stream

    run(test)


def test_a_session_stream_opens_once_and_carries_heartbeats_after() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        c = StreamContext(swarm.cert("w1", "worker"))
        await c.inbound.put(pb.AgentMessage(heartbeat=pb.HeartbeatRequest()))
        err = await aborted(d.Connect(None, c))  # type: ignore[arg-type]
        assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "the first message of a session must open it")
        c = StreamContext(swarm.cert("w1", "worker"))
        call = asyncio.create_task(d.Connect(None, c))  # type: ignore[arg-type]
        await c.exchange(pb.AgentMessage(open=pb.SessionRequest()))
        await c.inbound.put(pb.AgentMessage(open=pb.SessionRequest()))
        err = await aborted(asyncio.wait_for(call, 10))
        assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "a session is opened once: expected a heartbeat")

    run(test)


def test_a_heartbeat_names_its_session() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        swarm.add_node("w2")
        d = dispatcher(swarm)
        stream, first = await open_session(d, swarm.cert("w1", "worker"))
        # Another node cannot beat for w1's session, nor w1 for a made-up one.
        theirs = await aborted(d.Heartbeat(pb.HeartbeatRequest(session_id=first.session_id),
                                           ctx(swarm.cert("w2", "worker"))))
        assert theirs.details == "session invalid"
        made_up = await aborted(d.Heartbeat(pb.HeartbeatRequest(session_id="x"), ctx(swarm.cert("w1", "worker"))))
        assert made_up.details == "session invalid"
        await stream.aclose()

    run(test)


def test_a_new_leader_marks_down_the_ready_workers_that_never_came_after_a_grace() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        await d.sweep(swarm.clock.monotonic())  # becomes leader now
        swarm.clock.mono += PERIOD * MISSED_HEARTBEATS
        await d.sweep(swarm.clock.monotonic())
        node = swarm.store.node("w1")
        assert node is not None and node.status == "ready"
        swarm.clock.mono += 1
        await d.sweep(swarm.clock.monotonic())
        node = swarm.store.node("w1")
        assert node is not None and node.status == "down"

    run(test)


def test_liveness_marks_managers_down_like_workers() -> None:
    """A manager with a stale session, and a ready manager that never opened one, are Down (and
    so take no new tasks), as workers are."""
    async def test(swarm: Swarm) -> None:
        swarm.add_node("m2", "manager", addr="127.0.0.2:4242", raft_addr="127.0.0.2:4243", status="unknown")
        swarm.add_node("m3", "manager", addr="127.0.0.3:4242", raft_addr="127.0.0.3:4243")
        d = dispatcher(swarm)
        await d.sweep(swarm.clock.monotonic())  # becomes leader now
        stream, _ = await open_session(d, swarm.cert("m2", "manager"))
        swarm.clock.mono += PERIOD * MISSED_HEARTBEATS + 1
        await d.sweep(swarm.clock.monotonic())
        for nid in ("m2", "m3"):
            node = swarm.store.node(nid)
            assert node is not None and (node.status, node.status_message) == ("down", "heartbeat failure"), nid
        assert "m2" not in d.sessions
        await stream.aclose()

    run(test)


def test_after_a_stall_every_session_gets_its_grace_afresh() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        stream, _ = await open_session(d, swarm.cert("w1", "worker"))
        swarm.clock.mono += 10 * PERIOD * MISSED_HEARTBEATS  # the process was paused
        d.stalled(swarm.clock.monotonic())
        await d.sweep(swarm.clock.monotonic())
        node = swarm.store.node("w1")
        assert node is not None and node.status == "ready" and "w1" in d.sessions
        await stream.aclose()

    run(test)


def test_a_follower_ends_every_session() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        stream, _ = await open_session(d, swarm.cert("w1", "worker"))
        session = d.sessions["w1"]
        swarm.proposer.group.is_leader = False
        await d.sweep(swarm.clock.monotonic())
        assert session.ended.is_set() and d.sessions == {}
        node = swarm.store.node("w1")
        assert node is not None and node.status == "ready"  # a follower observes nothing
        await stream.aclose()

    run(test)


def test_a_leader_that_lost_its_place_ends_every_session_as_soon_as_the_status_feed_says_so() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        assignments: Any = d.Assignments(pb.AssignmentsRequest(session_id=first.session_id), ctx(cert))
        await next_message(assignments)
        d.follow(RaftStatus(leader="127.0.0.2:4243", is_leader=False, term=2, commit_index=0, last_applied=0,
                            members=[], reachable=set()))
        assert d.sessions == {}
        with pytest.raises(StopAsyncIteration):
            await next_message(assignments)
        with pytest.raises(StopAsyncIteration):
            await next_message(stream)

    run(test)


# --- task status -------------------------------------------------------------------------------------

def test_status_reports_of_several_workers_become_one_raft_entry() -> None:
    async def test(swarm: Swarm) -> None:
        svc = swarm.service("web", replicas=2)
        swarm.add_node("w1")
        swarm.add_node("w2")
        swarm.task("t1", svc, "w1", slot=1)
        swarm.task("t2", svc, "w2", slot=2)
        d = dispatcher(swarm)
        c1, c2 = swarm.cert("w1", "worker"), swarm.cert("w2", "worker")
        s1, m1 = await open_session(d, c1)
        s2, m2 = await open_session(d, c2)
        before = len(swarm.proposer.proposed)
        await asyncio.gather(
            d.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=m1.session_id, updates=[status("t1", "running")]),
                               ctx(c1)),
            d.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=m2.session_id, updates=[status("t2", "failed")]),
                               ctx(c2)))
        batch = swarm.proposer.proposed[before:]
        assert len(batch) == 1 and isinstance(batch[0], state.TaskStatus)
        assert {r.node_id for r in batch[0].reports} == {"w1", "w2"}
        states = {t.id: t.state for t in swarm.store.tasks()}
        assert states == {"t1": "running", "t2": "failed"}
        await s1.aclose()
        await s2.aclose()

    run(test)


def test_status_reports_fail_when_this_manager_no_longer_leads() -> None:
    async def test(swarm: Swarm) -> None:
        svc = swarm.service("web")
        swarm.add_node("w1")
        swarm.task("t1", svc, "w1")
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        swarm.proposer.group.term += 1  # a new term began: this leader's session is not in it
        swarm.proposer.group.is_leader = False
        err = await aborted(d.UpdateTaskStatus(pb.UpdateTaskStatusRequest(
            session_id=first.session_id, updates=[status("t1", "running")]), ctx(cert)))
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert {t.id: t.state for t in swarm.store.tasks()} == {"t1": "assigned"}
        await stream.aclose()

    run(test)


# --- assignments -------------------------------------------------------------------------------------

def test_assignments_complete_then_incremental_with_only_this_nodes_secrets() -> None:
    async def test(swarm: Swarm) -> None:
        a, b, c = swarm.secret("a", b"A!"), swarm.secret("b", b"B!"), swarm.secret("c", b"C!")
        web = swarm.service("web", secrets=(state.SecretRef(secret_id=a.id, secret_name="a", target="a.txt"),))
        api = swarm.service("api", secrets=(state.SecretRef(secret_id=b.id, secret_name="b", target="b.txt"),))
        other = swarm.service("other", secrets=(state.SecretRef(secret_id=c.id, secret_name="c", target="c"),))
        swarm.add_node("w1")
        swarm.add_node("w2")
        swarm.task("t-web", web, "w1")
        swarm.task("t-other", other, "w2")
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        session, first = await open_session(d, cert)
        stream: Any = d.Assignments(pb.AssignmentsRequest(session_id=first.session_id), ctx(cert))

        complete = await next_message(stream)
        assert complete.type == pb.AssignmentsMessage.COMPLETE and complete.results_in == "1"
        tasks = {ch.task.id: ch.task for ch in complete.changes if ch.HasField("task")}
        secrets = {ch.secret.id: ch.secret for ch in complete.changes if ch.HasField("secret")}
        assert list(tasks) == ["t-web"] and [f.target for f in tasks["t-web"].secrets] == ["a.txt"]
        assert {k: (v.name, v.data) for k, v in secrets.items()} == {a.id: ("a", b"A!")}

        # w1 gets a task of "api": its secret comes along; w2's secret never does.
        swarm.task("t-api", api, "w1")
        inc = await next_message(stream)
        assert (inc.type, inc.applies_to, inc.results_in) == (pb.AssignmentsMessage.INCREMENTAL, "1", "2")
        assert {(ch.action, ch.task.id or ch.secret.id) for ch in inc.changes} == {
            (pb.AssignmentChange.UPDATE, "t-api"), (pb.AssignmentChange.UPDATE, b.id)}
        assert [ch.secret.data for ch in inc.changes if ch.HasField("secret")] == [b"B!"]

        # The web task shuts down: the task and its secret (no other task of w1 uses it) go.
        swarm.proposer.apply(state.Schedule(update=(state.TaskChange(id="t-web", desired_state="shutdown",
                                                                     state="shutdown"),)))
        gone = await next_message(stream)
        assert (gone.applies_to, gone.results_in) == ("2", "3")
        assert {(ch.action, ch.task.id or ch.secret.id) for ch in gone.changes} == {
            (pb.AssignmentChange.REMOVE, "t-web"), (pb.AssignmentChange.REMOVE, a.id)}
        assert all(ch.secret.data == b"" for ch in gone.changes)

        # A change that touches nothing of w1's sends nothing: the next message is about the next real change.
        swarm.proposer.apply(state.Schedule(update=(state.TaskChange(id="t-other", desired_state="shutdown",
                                                                     state="shutdown"),)))
        swarm.proposer.apply(state.UpdateService(rid="u", id=api.id, version=0, force=True))
        forced = await next_message(stream)
        assert forced.applies_to == "3"
        assert [(ch.action, ch.task.id, ch.task.spec_version) for ch in forced.changes] == [
            (pb.AssignmentChange.UPDATE, "t-api", api.spec_version + 1)]
        await stream.aclose()
        await session.aclose()

    run(test)


def test_assignments_need_the_callers_own_session() -> None:
    async def test(swarm: Swarm) -> None:
        swarm.add_node("w1")
        swarm.add_node("w2")
        d = dispatcher(swarm)
        session, first = await open_session(d, swarm.cert("w1", "worker"))
        stream: Any = d.Assignments(pb.AssignmentsRequest(session_id=first.session_id),
                                    ctx(swarm.cert("w2", "worker")))
        err = await aborted(stream.__anext__())
        assert err.details == "session invalid"
        await session.aclose()

    run(test)


def test_a_bad_status_report_is_refused_alone_and_an_oversize_one_is_cut() -> None:
    async def test(swarm: Swarm) -> None:
        svc = swarm.service("web", replicas=2)
        swarm.add_node("w1")
        swarm.task("t1", svc, "w1", slot=1)
        swarm.task("t2", svc, "w1", slot=2)
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        huge = pb.TaskStatusUpdate(task_id="t2", status=objects_pb2.TaskStatus(state="failed", err="E" * 2_000_000))
        err = await aborted(d.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=first.session_id, updates=[
            status("t1", "running"), huge, status("t1", "x" * 100_000), status("t" * 1000, "running")]), ctx(cert)))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details.startswith("task status refused: invalid task state 'xxxx") and err.details.endswith(
            "(and 1 more)") and len(err.details) < 200
        tasks = {t.id: t for t in swarm.store.tasks()}
        assert tasks["t1"].state == "running" and tasks["t2"].state == "failed"
        assert tasks["t2"].err.endswith("E... (truncated)") and len(tasks["t2"].err) <= 1024
        await stream.aclose()

    run(test)


def test_status_reports_too_large_for_one_raft_entry_are_split() -> None:
    async def test(swarm: Swarm) -> None:
        svc = swarm.service("web", replicas=600)
        swarm.add_node("w1")
        for i in range(600):
            swarm.task(f"t{i}", svc, "w1", slot=i + 1)
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        stream, first = await open_session(d, cert)
        before = len(swarm.proposer.proposed)
        updates = [pb.TaskStatusUpdate(task_id=f"t{i}", status=objects_pb2.TaskStatus(
            state="running", message="m" * 5000)) for i in range(600)]
        await d.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=first.session_id, updates=updates), ctx(cert))
        entries = swarm.proposer.proposed[before:]
        assert len(entries) > 1 and all(isinstance(e, state.TaskStatus) for e in entries)
        assert all(len(raft_wire.dumps(state.encode_command(e))) <= dispatcher_module.STATUS_ENTRY_BUDGET
                   for e in entries)
        assert {t.state for t in swarm.store.tasks()} == {"running"}
        await stream.aclose()

    run(test)


def test_a_stream_that_fell_behind_gets_every_change_it_missed_in_one_message() -> None:
    async def test(swarm: Swarm) -> None:
        web, api = swarm.service("web"), swarm.service("api")
        swarm.add_node("w1")
        d = dispatcher(swarm)
        cert = swarm.cert("w1", "worker")
        session, first = await open_session(d, cert)
        stream: Any = d.Assignments(pb.AssignmentsRequest(session_id=first.session_id), ctx(cert))
        assert (await next_message(stream)).type == pb.AssignmentsMessage.COMPLETE
        swarm.task("t-web", web, "w1")  # two changes while the node takes nothing
        swarm.task("t-api", api, "w1")
        inc = await next_message(stream)
        assert (inc.applies_to, inc.results_in) == ("1", "2")
        assert sorted(ch.task.id for ch in inc.changes) == ["t-api", "t-web"]
        await stream.aclose()
        await session.aclose()

    run(test)
