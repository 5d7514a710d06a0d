"""The worker agent's session against an in-process dispatcher on loopback.

``FakeDispatcher`` implements the Dispatcher service in a few lines: the test decides what each
assignments stream carries and sees the status reports the agent sends. The channel is plain gRPC
on 127.0.0.1: the mutual TLS of a real session is the daemon's business and is covered by the
integration tests; here the subject is how the agent follows the stream.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from swarmsecrets import errors, rpcutil
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import dispatcher_pb2_grpc
from swarmsecrets.worker.agent import Agent, Pulse
from tests.worker.test_reconcile import DB, Stream, let_the_clock_tick, newest_ctime, remove, snapshot, task, update

T = TypeVar("T")
NODE_ID = "node-1"


class FakeDispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    """One manager's Dispatcher service, scripted by the test."""

    def __init__(self, period_ms: int = 60_000) -> None:
        self.streams: asyncio.Queue[asyncio.Queue[pb.AssignmentsMessage | None]] = asyncio.Queue()
        self.sessions = 0
        self.period_ms = period_ms
        self.beats: list[str] = []  # how each heartbeat came: "stream" or "call"
        self.reports: dict[str, pb.TaskStatusUpdate] = {}
        self.removed = False
        self.redirect_to = ""
        self.end_session = asyncio.Event()

    async def _opening(self, context: grpc.aio.ServicerContext) -> pb.SessionMessage:
        if self.redirect_to:
            await rpcutil.abort(context, errors.NotLeader(leader=self.redirect_to))
        if self.removed:
            # what the dispatcher sends: the typed kind travels beside the message
            await rpcutil.abort(context, errors.node_removed(NODE_ID))
        self.sessions += 1
        self.end_session.clear()
        return pb.SessionMessage(session_id=f"s{self.sessions}", node_id=NODE_ID, heartbeat_period_ms=self.period_ms)

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> None:
        opening = await context.read()
        assert opening.WhichOneof("kind") == "open"
        await context.write(await self._opening(context))

        async def answer() -> None:
            while (msg := await context.read()) is not grpc.aio.EOF:
                assert msg.WhichOneof("kind") == "heartbeat"
                self.beats.append("stream")
                await context.write(pb.SessionMessage(heartbeat=pb.HeartbeatResponse(period_ms=self.period_ms)))

        answering = asyncio.create_task(answer())
        try:
            await self.end_session.wait()
        finally:
            answering.cancel()

    async def Session(self, request: pb.SessionRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SessionMessage]:
        yield await self._opening(context)
        await self.end_session.wait()

    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: grpc.aio.ServicerContext) -> pb.HeartbeatResponse:
        self.beats.append("call")
        return pb.HeartbeatResponse(period_ms=self.period_ms)

    async def UpdateTaskStatus(self, request: pb.UpdateTaskStatusRequest,
                               context: grpc.aio.ServicerContext) -> pb.UpdateTaskStatusResponse:
        for u in request.updates:
            self.reports[u.task_id] = u
        return pb.UpdateTaskStatusResponse()

    async def Assignments(self, request: pb.AssignmentsRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AssignmentsMessage]:
        queue: asyncio.Queue[pb.AssignmentsMessage | None] = asyncio.Queue()
        await self.streams.put(queue)
        while (msg := await queue.get()) is not None:
            yield msg

    async def next_stream(self) -> asyncio.Queue[pb.AssignmentsMessage | None]:
        """The queue feeding the next assignments stream the agent opens."""
        return await asyncio.wait_for(self.streams.get(), timeout=20)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, root: str) -> None:
        self.root = root
        self.removed = asyncio.Event()
        self.servers: list[grpc.aio.Server] = []

    async def dispatcher(self, fake: FakeDispatcher | None = None) -> tuple[FakeDispatcher, str]:
        fake = fake or FakeDispatcher()
        server = grpc.aio.server()
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.servers.append(server)
        return fake, f"127.0.0.1:{port}"

    def agent(self, managers: list[str]) -> Agent:
        async def on_removed() -> None:
            self.removed.set()

        return Agent(secrets_root=self.root, allow_non_tmpfs=False, managers=managers,
                     channel=grpc.aio.insecure_channel, on_removed=on_removed,
                     on_managers=lambda _managers: None, on_promoted=lambda: None)


def run(test: Callable[[Harness], Awaitable[T]], root: str) -> T:
    async def main() -> T:
        h = Harness(root)
        try:
            return await test(h)
        finally:
            for server in h.servers:
                await server.stop(grace=None)

    return asyncio.run(main())


def test_a_gap_in_the_stream_resubscribes_and_keeps_the_files_meanwhile(root: str) -> None:
    async def test(h: Harness) -> None:
        fake, addr = await h.dispatcher()
        agent = h.agent([addr])
        agent.start()
        try:
            s = Stream()
            first = await fake.next_stream()
            t1 = task("t1", [("sec-db", "db")])
            await first.put(s.complete(update(t1), update(DB)))
            await until(lambda: "t1" in fake.reports)
            assert fake.reports["t1"].status.state == "running"
            path = os.path.join(agent.fs.task_dir("t1"), "db")
            with open(path, "rb") as f:
                assert f.read() == b"db-password\n"
            before = snapshot(agent.fs.task_dir("t1"))
            let_the_clock_tick(h.root, newest_ctime(before))

            s.incremental(update(task("lost")))  # never delivered
            await first.put(s.incremental(remove(t1)))
            second = await fake.next_stream()  # the agent started over
            assert fake.sessions == 2
            assert snapshot(agent.fs.task_dir("t1")) == before, "a resubscribe must not disturb the tasks"
            await second.put(Stream().complete(update(t1), update(DB)))
            await second.put(None)  # the stream ends: the agent reconnects and waits for the next set
            await fake.next_stream()
            assert snapshot(agent.fs.task_dir("t1")) == before
        finally:
            fake.end_session.set()
            await agent.stop(wipe=True)
        assert agent.fs.list_tasks() == []

    run(test, root)


def test_a_follower_sends_the_agent_to_the_leader(root: str) -> None:
    async def test(h: Harness) -> None:
        leader, leader_addr = await h.dispatcher()
        follower, follower_addr = await h.dispatcher()
        follower.redirect_to = leader_addr
        agent = h.agent([follower_addr])
        agent.start()
        try:
            stream = await leader.next_stream()
            await stream.put(Stream().complete(update(task("t1", [("sec-db", "db")])), update(DB)))
            await until(lambda: "t1" in leader.reports)
            assert follower.sessions == 0
        finally:
            leader.end_session.set()
            await agent.stop(wipe=True)

    run(test, root)


def test_a_removed_node_wipes_its_secrets(root: str) -> None:
    async def test(h: Harness) -> None:
        fake, addr = await h.dispatcher()
        agent = h.agent([addr])
        agent.start()
        try:
            stream = await fake.next_stream()
            await stream.put(Stream().complete(update(task("t1", [("sec-db", "db")])), update(DB)))
            await until(lambda: "t1" in fake.reports)
            assert agent.fs.list_tasks() == ["t1"]
            fake.removed = True
            fake.end_session.set()  # the manager drops the session; the agent's reconnect is refused
            await asyncio.wait_for(h.removed.wait(), timeout=20)
            assert agent.fs.list_tasks() == []
            assert not os.path.lexists(agent.fs.services_dir)
        finally:
            await agent.stop(wipe=True)

    run(test, root)


class EarlierReleaseDispatcher(FakeDispatcher):
    """A leader of the previous release: sessions without Connect, heartbeats as calls."""

    Connect = dispatcher_pb2_grpc.DispatcherServicer.Connect  # type: ignore[assignment]


def test_heartbeats_go_on_the_session_stream_and_as_calls_to_a_leader_of_an_earlier_release(root: str) -> None:
    async def beats(h: Harness, fake: FakeDispatcher) -> list[str]:
        _, addr = await h.dispatcher(fake)
        agent = h.agent([addr])
        agent.start()
        try:
            stream = await fake.next_stream()
            await stream.put(Stream().complete(update(task("t1", [("sec-db", "db")])), update(DB)))
            await until(lambda: "t1" in fake.reports and len(fake.beats) >= 3)
            assert fake.sessions == 1  # answered beats keep the session
            return fake.beats
        finally:
            fake.end_session.set()
            await agent.stop(wipe=True)

    async def test(h: Harness) -> None:
        assert set(await beats(h, FakeDispatcher(period_ms=10))) == {"stream"}
        assert set(await beats(h, EarlierReleaseDispatcher(period_ms=10))) == {"call"}

    run(test, root)


class _FlakyHeartbeats:
    """A stub whose Heartbeat fails with the codes given, in turn, then answers."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.calls = 0

    async def Heartbeat(self, request: pb.HeartbeatRequest, timeout: float) -> pb.HeartbeatResponse:
        self.calls += 1
        if self.codes:
            code = self.codes.pop(0)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="scripted")
        raise asyncio.CancelledError  # answered: the test has seen what it came for


def test_a_heartbeat_that_times_out_is_tried_again_and_any_other_failure_ends_the_session(root: str) -> None:
    async def test(h: Harness) -> None:
        agent = h.agent(["127.0.0.1:1"])
        slow = _FlakyHeartbeats(grpc.StatusCode.DEADLINE_EXCEEDED)
        try:
            await agent._heartbeats(slow, "s", Pulse(50, asyncio.get_running_loop().time()))
        except asyncio.CancelledError:
            pass
        assert slow.calls == 2
        gone = _FlakyHeartbeats(grpc.StatusCode.INVALID_ARGUMENT)
        try:
            await agent._heartbeats(gone, "s", Pulse(50, asyncio.get_running_loop().time()))
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert gone.calls == 1

    run(test, root)


def test_status_reports_in_flight_when_the_session_ends_go_with_the_next_session(root: str) -> None:
    async def test(h: Harness) -> None:
        agent = h.agent(["127.0.0.1:1"])
        calling = asyncio.Event()

        class Stuck:
            async def UpdateTaskStatus(self, request: pb.UpdateTaskStatusRequest, timeout: float) -> None:
                calling.set()
                await asyncio.Event().wait()

        agent.reconciler._report("t1", 1, "running")
        reporter = asyncio.create_task(agent._reporter(Stuck(), "s"))
        await calling.wait()
        reporter.cancel()  # the session ends
        try:
            await reporter
        except asyncio.CancelledError:
            pass
        assert [u.task_id for u in agent.reconciler.take_reports()] == ["t1"]

    run(test, root)
