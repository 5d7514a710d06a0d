"""The worker agent's session: one session to the leader, assignments in, status out.

What the assignments mean for the tmpfs and the task processes is ``reconcile.py``; this module
is the network side. The session follows the leader: a follower answers UNAVAILABLE naming the
leader, and the agent reconnects there with jittered exponential backoff. Meanwhile the tmpfs
contents and the running tasks stay as they are; the next assignments stream starts with a
COMPLETE set, and the agent converges to it, touching only the tasks that differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from swarmsecrets import __version__, errors
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import dispatcher_pb2_grpc, objects_pb2
from swarmsecrets.rpcutil import error_from_rpc
from swarmsecrets.worker import tasklogs
from swarmsecrets.worker.reconcile import Assignments, Reconciler, Resubscribe
from swarmsecrets.worker.secretsfs import SecretsFS

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.1, 8.0
REPORT_INTERVAL = 0.1
# The leader keeps a session this many heartbeat periods after the last beat it took.
GRACE_PERIODS = 3
# How often a followed task's log is read for new lines, and how many lines go in one message.
LOG_POLL = 0.2
LOG_BATCH = 256

ChannelFactory = Callable[[str], grpc.aio.Channel]


class Pulse:
    """A session's heartbeat: the period the leader says, and when it last answered (on the
    event loop's clock)."""

    def __init__(self, period_ms: int, now: float) -> None:
        self.period = period_ms / 1000 if period_ms else 5.0
        self.told = self.period
        self.answered = now
        log.info("heartbeat period: %gs", self.told)

    def answer(self, resp: pb.HeartbeatResponse, now: float) -> None:
        self.answered = now
        self.period = resp.period_ms / 1000 if resp.period_ms else self.period
        # The leader jitters each period by up to 10 %: a larger change is the swarm's new setting.
        if not 0.8 <= self.period / self.told <= 1.25:
            self.told = self.period
            log.info("heartbeat period: %gs", self.told)

    def expired(self, now: float) -> bool:
        """The leader has dropped the session by now: nothing answered for its grace."""
        return now - self.answered > self.period * GRACE_PERIODS


class Agent:
    def __init__(self, *, secrets_root: str, allow_non_tmpfs: bool, managers: list[str],
                 channel: ChannelFactory, on_removed: Callable[[], Awaitable[None]],
                 on_managers: Callable[[list[str]], None], on_promoted: Callable[[], Any],
                 on_root_ca: Callable[[bytes], None] = lambda bundle: None,
                 trust_roots: Callable[[], str] = lambda: "",
                 hide: Sequence[str] = (), on_cert_expiry: Callable[[int], None] = lambda seconds: None,
                 log_root: str | None = None) -> None:
        """``hide``: what no task may see besides the secrets root (the daemon's data dir and socket).
        ``on_cert_expiry``: told the swarm's node certificate lifetime (seconds) when a session
        starts and when it changes. ``on_root_ca``: the roots the swarm trusts, as the session says;
        ``trust_roots``: the digest of those this node trusts, reported with each heartbeat.
        ``log_root``: where the tasks' output is kept, for ``service logs`` (not on the secrets root)."""
        self.fs = SecretsFS(secrets_root, allow_non_tmpfs=allow_non_tmpfs)
        if self.fs.fallback_reason:
            log.warning("%s", self.fs.fallback_reason)
        self.managers = list(managers)
        self.channel = channel
        self.on_removed = on_removed
        self.on_managers = on_managers
        self.on_promoted = on_promoted
        self.on_root_ca = on_root_ca
        self.trust_roots = trust_roots
        self.on_cert_expiry = on_cert_expiry
        self.assignments = Assignments()
        self.reconciler = Reconciler(self.fs, asyncio.get_running_loop(), hide=hide, log_root=log_root)
        self.log_root = log_root
        self._publishers: dict[str, asyncio.Task[None]] = {}
        self.leader_hint = ""
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        dropped = self.fs.recover()
        if dropped:
            log.info("removed %d task dirs left by an earlier run", len(dropped))
        self._task = asyncio.create_task(self._run())

    async def stop(self, wipe: bool = True) -> None:
        """Stop the session and every task; with ``wipe`` nothing of the swarm is left on tmpfs."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.reconciler.stop_all(wipe)
        self.assignments.clear()

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        turn = 0
        while True:
            target = self.leader_hint or self.managers[turn % len(self.managers)]
            self.leader_hint = ""
            try:
                await self._session(target)
                backoff = BACKOFF_FIRST
            except Resubscribe:
                log.info("assignments out of sequence: resubscribing")
                continue
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e)
                if isinstance(err, errors.NodeRemoved):
                    log.warning("this node was removed from the swarm: wiping its secrets")
                    await self.stop(wipe=True)
                    await self.on_removed()
                    return
                if isinstance(err, errors.NotLeader) and err.leader:
                    self.leader_hint = err.leader
                    backoff = BACKOFF_FIRST
                else:
                    turn += 1
                log.info("session with %s ended: %s %s", target, e.code().name, e.details())
            except (OSError, ValueError) as e:
                turn += 1
                log.info("session with %s failed: %s", target, e)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, BACKOFF_MAX)

    # --- one session --------------------------------------------------------------------------

    async def _session(self, target: str) -> None:
        async with self.channel(target) as ch:
            stub = dispatcher_pb2_grpc.DispatcherStub(ch)
            session, first, beats_on_stream = await self._open(
                stub, pb.SessionRequest(hostname=socket.gethostname(), engine_version=__version__))
            if first is grpc.aio.EOF:
                raise OSError("the session closed before it started")
            self.on_root_ca(first.root_ca)
            if list(first.managers) and list(first.managers) != self.managers:
                self.managers = list(first.managers)
                self.on_managers(self.managers)
            log.info("session %s with %s", first.session_id[:8], target)
            if first.node_cert_expiry_seconds:
                self.on_cert_expiry(first.node_cert_expiry_seconds)
            pulse = Pulse(first.heartbeat_period_ms, asyncio.get_running_loop().time())
            beats = (self._beats_on_stream(session, pulse) if beats_on_stream
                     else self._heartbeats(stub, first.session_id, pulse))
            # The session lives while all four do; the first to end (an error, a failed heartbeat,
            # a promotion, the stream closing) ends it, and the agent reconnects.
            parts = [asyncio.create_task(self._assignments(stub, first.session_id)),
                     asyncio.create_task(beats),
                     asyncio.create_task(self._reporter(stub, first.session_id)),
                     asyncio.create_task(self._watch_role(session, stub, first.session_id, pulse))]
            try:
                done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in [*parts, *self._publishers.values()]:
                    p.cancel()
                self._publishers.clear()
                session.cancel()
            for p in done:
                p.result()  # re-raise what ended the session
            raise OSError("the session ended")

    async def _open(self, stub: Any, request: pb.SessionRequest) -> tuple[Any, Any, bool]:
        """(the session stream, its first message, whether heartbeats go on the stream): a Connect
        stream, or with a leader of an earlier release (which has no Connect) a Session stream and
        Heartbeat calls."""
        call = stub.Connect()
        try:
            with contextlib.suppress(asyncio.InvalidStateError):  # the call ended already: read says why
                await call.write(pb.AgentMessage(open=request))
            return call, await call.read(), True
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        log.info("the leader is of an earlier release: heartbeats as calls")
        session = stub.Session(request)
        return session, await session.read(), False

    async def _watch_role(self, session: Any, stub: Any, session_id: str, pulse: Pulse) -> None:
        """A promotion arrives on the session stream; the daemon then turns this node into a manager.
        So do requests for the logs of this node's tasks, and the answers to heartbeats."""
        loop = asyncio.get_running_loop()
        while True:
            msg = await session.read()
            if msg is grpc.aio.EOF:
                return
            if msg.HasField("heartbeat"):
                pulse.answer(msg.heartbeat, loop.time())
                continue
            for sub in msg.log_subscriptions:
                self._subscription(stub, session_id, sub)
            if msg.root_ca:
                self.on_root_ca(msg.root_ca)
            if msg.node_cert_expiry_seconds:
                self.on_cert_expiry(msg.node_cert_expiry_seconds)
            if msg.role and msg.role != "worker":
                log.info("this node was promoted to %s", msg.role)
                self.on_promoted()
                return

    # --- service logs -------------------------------------------------------------------------

    def _subscription(self, stub: Any, session_id: str, sub: pb.LogSubscription) -> None:
        old = self._publishers.pop(sub.id, None)
        if old is not None:
            old.cancel()
        if not sub.close:
            self._publishers[sub.id] = asyncio.create_task(self._publish(stub, session_id, sub))

    async def _publish(self, stub: Any, session_id: str, sub: pb.LogSubscription) -> None:
        """Send the output of this node's tasks of the service: the last ``tail`` lines of each, then
        (with ``follow``) what they write next, also of tasks that start later, until the
        subscription closes."""
        queue: asyncio.Queue[pb.PublishLogsRequest | None] = asyncio.Queue(maxsize=16)

        async def requests() -> AsyncIterator[pb.PublishLogsRequest]:
            while (item := await queue.get()) is not None:
                yield item

        async def produce() -> None:
            try:
                await read_and_follow()
            except OSError as e:  # the files could not be read: the asker gets what was sent
                log.warning("logs for subscription %s: %s", sub.id[:8], e)
                await queue.put(pb.PublishLogsRequest(session_id=session_id, subscription_id=sub.id, close=True))
                await queue.put(None)

        async def read_and_follow() -> None:
            followers: dict[str, tasklogs.Follower] = {}
            first = True
            while True:
                batch: list[objects_pb2.LogMessage] = []
                for task in self._tasks_of(sub.service_id):
                    directory = os.path.join(self.log_root or "", task.id)
                    if task.id not in followers:
                        # Tasks that start after the request are followed from their first line.
                        records, followers[task.id] = await asyncio.to_thread(
                            tasklogs.read, directory, sub.tail if first else -1)
                    else:
                        records = await asyncio.to_thread(followers[task.id].poll)
                    batch += [objects_pb2.LogMessage(task_id=task.id, service_id=sub.service_id, ts_ns=ts, data=d)
                              for ts, d in records]
                batch.sort(key=lambda m: m.ts_ns)
                for i in range(0, len(batch), LOG_BATCH):
                    await queue.put(pb.PublishLogsRequest(session_id=session_id, subscription_id=sub.id,
                                                          messages=batch[i:i + LOG_BATCH]))
                first = False
                if not sub.follow:
                    await queue.put(pb.PublishLogsRequest(session_id=session_id, subscription_id=sub.id, close=True))
                    await queue.put(None)
                    return
                await asyncio.sleep(LOG_POLL)

        producer = asyncio.create_task(produce())
        try:
            await stub.PublishLogs(requests())
        except grpc.aio.AioRpcError as e:
            log.info("logs for subscription %s not sent: %s %s", sub.id[:8], e.code().name, e.details())
        finally:
            producer.cancel()
            if self._publishers.get(sub.id) is asyncio.current_task():
                del self._publishers[sub.id]

    def _tasks_of(self, service_id: str) -> list[pb.AssignedTask]:
        if self.log_root is None:
            return []
        return sorted((t for t in self.assignments.tasks.values() if t.service_id == service_id), key=lambda t: t.id)

    async def _beats_on_stream(self, session: Any, pulse: Pulse) -> None:
        """Beat on the session stream at the period the leader says (``_watch_role`` takes the
        answers); a leader silent for as long as it would keep the session ends it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(pulse.period)
            if pulse.expired(loop.time()):
                raise OSError("the leader stopped answering heartbeats")
            await session.write(pb.AgentMessage(heartbeat=pb.HeartbeatRequest(trust_roots=self.trust_roots())))

    async def _heartbeats(self, stub: Any, session_id: str, pulse: Pulse) -> None:
        """Beat with Heartbeat calls (a leader of an earlier release). A beat that times out (a busy
        leader or a starved node) is tried again at the next period while the leader would still keep
        the session; any other failure ends the session."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(pulse.period)
            try:
                resp = await stub.Heartbeat(pb.HeartbeatRequest(session_id=session_id,
                                                                trust_roots=self.trust_roots()), timeout=5)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED or pulse.expired(loop.time()):
                    raise
                log.info("heartbeat timed out: trying again in %gs", pulse.period)
                continue
            pulse.answer(resp, loop.time())

    async def _reporter(self, stub: Any, session_id: str) -> None:
        """Send the status reports of REPORT_INTERVAL after the first in one call (a burst of changes
        becomes one report, sent after the burst); an idle node makes no call and no wake-up."""
        while True:
            await self.reconciler.has_reports.wait()
            await asyncio.sleep(REPORT_INTERVAL)
            updates = self.reconciler.take_reports()
            if updates:
                try:
                    await stub.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=session_id, updates=updates),
                                                timeout=10)
                except (grpc.aio.AioRpcError, asyncio.CancelledError):
                    # Also when the session ends during the call: the next session sends them.
                    self.reconciler.requeue_reports(updates)
                    raise

    async def _assignments(self, stub: Any, session_id: str) -> None:
        stream = stub.Assignments(pb.AssignmentsRequest(session_id=session_id))
        self.assignments.new_stream()
        async for msg in stream:
            self.assignments.apply(msg)  # raises Resubscribe on a gap in the sequence
            await self.reconciler.reconcile(self.assignments.tasks, self.assignments.secrets)
        raise OSError("the assignments stream ended")
