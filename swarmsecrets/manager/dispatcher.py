"""Agent sessions and assignments, on the leader only.

Every node that runs the worker agent has a session: workers, and managers that may take tasks.
One session per node (heartbeat every 5 s ± 10 %, the cluster's setting; down after 3 missed; the
heartbeats travel on the session's own stream, or as calls from agents of the previous release) and
one assignments stream: COMPLETE first, then INCREMENTAL changes whose
``applies_to`` is the previous ``results_in``. A worker receives a secret only
while one of its tasks references it, and a REMOVE when none does. The node is
the one named in the client certificate; followers answer UNAVAILABLE and name
the leader in the ``wire.LEADER_METADATA`` trailing metadata.

Idle sessions cost nothing: no stream polls. Each apply (at most one per BATCH_DELAY) rebuilds one
plan of what every node should hold, sharing the built task and secret messages between nodes,
and wakes only the streams whose node's part changed; one periodic sweep finds silent nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import grpc

from swarmsecrets import audit, errors, validation
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import dispatcher_pb2_grpc
from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import MEMBERS, PeerAuthorizer
from swarmsecrets.ca.certs import NodeIdentity
from swarmsecrets.manager import state
from swarmsecrets.manager.logbroker import LogBroker
from swarmsecrets.raft import RaftStatus
from swarmsecrets.manager.collaborators import Clock, Proposer, Sealer, StoreReader, SystemClock
from swarmsecrets.rpcutil import peer_certificate, rpc

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD = 5.0
HEARTBEAT_JITTER = 0.5
MISSED_HEARTBEATS = 3
# Changes arriving within this window go out as one INCREMENTAL message.
BATCH_DELAY = 0.01
# Task status reports of all workers arriving within this window become one raft entry.
STATUS_BATCH_DELAY = 0.02
# One raft entry of status reports stays under this many bytes (raft's cap on a command is 1 MiB).
STATUS_ENTRY_BUDGET = 256 * 1024
# Assignments sent and not yet reported on, kept to time deliveries (the oldest are forgotten first).
DELIVERIES_TRACKED = 10_000


@dataclass
class AgentSession:
    node_id: str
    last_seen: float  # on the dispatcher's monotonic clock
    role: str = "worker"  # the node's role when the session began
    period: float = HEARTBEAT_PERIOD  # the heartbeat period the node was last told
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the session stream has something to say (log subscriptions, new roots or certificate
    # lifetime, a new role) and when its node's assignments changed; both are set when it ends.
    notice: asyncio.Event = field(default_factory=asyncio.Event)
    assigned: asyncio.Event = field(default_factory=asyncio.Event)


# What a node holds of one task: the key says when the built message is still current.
TaskKey = tuple[str, int, str, str, int]


@dataclass
class Plan:
    """What every node should hold at one generation of the store: its tasks (each as the change
    that sends it, built once and shared by every message that carries it) and the secrets they
    use (each secret's id -> the ids of the node's tasks that use it)."""
    generation: int = -1
    tasks: dict[str, dict[str, tuple[TaskKey, pb.AssignmentChange]]] = field(default_factory=dict)
    secrets: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    roots: bytes = b""
    cert_expiry: int = 0


_DIGEST = re.compile(r"[0-9a-f]{64}")


def heartbeat_of(cluster: state.Cluster | None, default: float) -> float:
    """The dispatcher heartbeat period in seconds: the cluster's setting, else ``default`` (the flag)."""
    if cluster is not None and cluster.dispatcher_heartbeat > 0:
        return cluster.dispatcher_heartbeat / 1e9
    return default


class Dispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, *, store: StoreReader, proposer: Proposer, authz: PeerAuthorizer, sealer: Sealer,
                 heartbeat_period: float = HEARTBEAT_PERIOD, clock: Clock | None = None,
                 on_delivery: Callable[[float], None] = lambda seconds: None,
                 logs: LogBroker | None = None) -> None:
        """``on_delivery``: told, in seconds, how long each task assignment took from being sent to
        its node to the node's first status report on it."""
        self.store = store
        self.proposer = proposer
        self.authz = authz
        self.sealer = sealer
        self.clock = clock or SystemClock()
        self.sessions: dict[str, AgentSession] = {}
        # Every apply bumps `generation`; the plan follows BATCH_DELAY later (one rebuild for a burst
        # of applies) and wakes the streams whose node's part of it changed.
        self.generation = 0
        self.plan = Plan()
        self._replan: asyncio.TimerHandle | None = None
        # Secrets in the plan, unsealed (and their change built) once per version for every node.
        self._secrets: dict[str, tuple[int, pb.AssignmentChange]] = {}
        self._status_batch: list[tuple[str, list[state.TaskStatusUpdate], asyncio.Future[None]]] = []
        self._status_flush: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.leader_since: float | None = None
        self.default_heartbeat = heartbeat_period
        self.on_delivery = on_delivery
        self._sent_at: dict[tuple[str, int], float] = {}  # (task id, spec version) -> when it was sent
        self._audits: list[tuple[str, list[str], str, int]] = []  # secrets sent, their audit lines not yet written
        self.logs = logs or LogBroker()
        self.logs.wake = self._notify
        self.logs.live_nodes = lambda: {n for n, s in self.sessions.items() if not s.ended.is_set()}

    @property
    def heartbeat_period(self) -> float:
        """Seconds: the cluster's setting (``swarm update --dispatcher-heartbeat``), read at each use so
        that a change applies at once; this manager's flag for a cluster that has none stored."""
        return heartbeat_of(self.store.cluster, self.default_heartbeat)

    # --- change notification ---------------------------------------------------------------------

    def on_apply(self, event: state.Applied) -> None:
        """On the raft thread. Status reports change what nodes report, never what they hold: the
        bulk of the applies under load wake nothing."""
        if not isinstance(event.command, state.TaskStatus):
            self.loop.call_soon_threadsafe(self._applied)

    def _applied(self) -> None:
        self.generation += 1
        if not self.sessions:  # a follower, or a leader nobody is connected to: plan on demand
            self.plan = Plan()
        elif self._replan is None:
            self._replan = self.loop.call_later(BATCH_DELAY, self._refresh)

    def _refresh(self) -> None:
        """Build the plan of the current generation; wake the streams it concerns."""
        self._replan = None
        old, plan = self.plan, self._build_plan()
        self.plan = plan
        needed = set().union(*plan.secrets.values()) if plan.secrets else set()
        for sid in [sid for sid in self._secrets if sid not in needed]:
            del self._secrets[sid]
        cluster_changed = (plan.roots, plan.cert_expiry) != (old.roots, old.cert_expiry)
        for node_id, s in list(self.sessions.items()):
            if s.ended.is_set():
                continue
            node = self.store.node(node_id)
            if node is None:
                self._end(s)
                continue
            if cluster_changed or node.role != s.role:
                s.notice.set()
            if old.tasks.get(node_id) != plan.tasks.get(node_id):  # built messages compare by identity
                s.assigned.set()

    def _build_plan(self) -> Plan:
        plan = Plan(generation=self.generation, roots=self._roots(), cert_expiry=self._cert_expiry())
        built = {key: change for tasks in self.plan.tasks.values() for key, change in tasks.values()}
        services = {svc.id: svc for svc in self.store.services()}
        specs: dict[str, pb.AssignmentChange] = {}  # per service: its part of every task's change, built once
        for t in self.store.tasks():
            svc = services.get(t.service_id)
            if t.desired_state != "running" or svc is None:
                continue
            key: TaskKey = (t.id, t.slot, t.desired_state, svc.id, svc.spec_version)
            change = built.get(key)
            if change is None:
                spec = specs.get(svc.id)
                if spec is None:
                    spec = specs[svc.id] = _service_change(svc)
                change = built[key] = _task_change(t, spec)
            plan.tasks.setdefault(t.node_id, {})[t.id] = (key, change)
        for node_id, tasks in plan.tasks.items():
            users: dict[str, list[str]] = {}
            for tid, (_, change) in tasks.items():
                for f in change.task.secrets:
                    users.setdefault(f.secret_id, []).append(tid)
            plan.secrets[node_id] = users
        return plan

    def _current_plan(self) -> Plan:
        if self.plan.generation < 0:
            self._refresh()
        return self.plan

    def _notify(self, nodes: Iterable[str]) -> None:
        """The session streams of ``nodes`` have log subscriptions to carry."""
        for node_id in nodes:
            s = self.sessions.get(node_id)
            if s is not None:
                s.notice.set()

    def _end(self, session: AgentSession) -> None:
        session.ended.set()
        session.notice.set()
        session.assigned.set()
        self.logs.node_gone(session.node_id)

    # --- authorization -------------------------------------------------------------------------

    def _authorize(self, context: grpc.aio.ServicerContext) -> NodeIdentity:
        """The caller's identity: any member of the swarm, asking the leader."""
        status = self.proposer.status()
        if not status.is_leader:
            raise errors.NotLeader(leader=self.store.control_addr_of(status.leader) if status.leader else "")
        ident = self.authz.authenticate(peer_certificate(context), MEMBERS)
        self.authz.authorize(ident, MEMBERS)
        return ident

    def _session(self, context: grpc.aio.ServicerContext, session_id: str) -> AgentSession:
        """The caller's open session. Only a leader holds sessions (losing its place ends them all), so
        a call on one skips the raft status, which costs more than the rest of a status report's checks."""
        ident = self.authz.authenticate(peer_certificate(context), MEMBERS)
        s = self.sessions.get(ident.node_id)
        if s is None or s.session_id != session_id or s.ended.is_set():
            self._authorize(context)  # a follower names the leader; a removed node hears it was removed
            raise errors.InvalidArgument("session invalid")
        self.authz.authorize(ident, MEMBERS)  # the node as the swarm knows it now
        return s

    def _roots(self) -> bytes:
        cluster = self.store.cluster
        return cluster.trust_bundle().encode() if cluster is not None else b""

    # --- RPCs ------------------------------------------------------------------------------------

    def _cert_expiry(self) -> int:
        cluster = self.store.cluster
        return int(certs.node_validity(cluster.node_cert_expiry if cluster is not None else 0).total_seconds())

    async def _open(self, node_id: str, request: pb.SessionRequest) -> AgentSession:
        """A new session for ``node_id`` (ending the one it had), its node marked ready."""
        if request.hostname:
            validation.validate_hostname(request.hostname)
        validation.validate_engine_version(request.engine_version)
        record = self.store.node(node_id)
        if record is None:
            raise errors.node_removed(node_id)
        old = self.sessions.get(node_id)
        if old is not None:
            self._end(old)
        session = self.sessions[node_id] = AgentSession(node_id, last_seen=self.clock.monotonic(), role=record.role,
                                                   period=self.heartbeat_period)
        await self._set_node(state.UpdateNode(id=node_id, status="ready", hostname=request.hostname,
                                              engine_version=request.engine_version))
        return session

    async def _session_messages(self, session: AgentSession) -> AsyncGenerator[pb.SessionMessage, None]:
        """What a session stream carries: the session first, then what the node must hear of
        (log subscriptions, new roots or certificate lifetime, a promotion) until the session ends."""
        node_id = session.node_id
        roots = self._roots()
        expiry = self._cert_expiry()
        yield pb.SessionMessage(session_id=session.session_id, node_id=node_id, managers=self.store.manager_addrs(),
                                heartbeat_period_ms=int(session.period * 1000), role=session.role,
                                node_cert_expiry_seconds=expiry, root_ca=roots)
        while not session.ended.is_set():
            await session.notice.wait()
            session.notice.clear()
            subscriptions = self.logs.take(node_id) if not session.ended.is_set() else []
            if subscriptions:
                yield pb.SessionMessage(session_id=session.session_id, node_id=node_id,
                                        log_subscriptions=subscriptions)
            node = self.store.node(node_id)
            if session.ended.is_set():
                break
            if not self.proposer.status().is_leader or node is None:
                self._end(session)
            elif self._roots() != roots:
                # A root CA rotation started or finished: the node trusts these roots from now on.
                roots = self._roots()
                yield pb.SessionMessage(session_id=session.session_id, node_id=node_id, root_ca=roots)
            elif node.role != session.role:
                # A worker's agent hears of its promotion (its node then becomes a manager); a
                # demoted manager's node restarts its agent as a worker's on its own.
                if session.role == "worker":
                    yield pb.SessionMessage(session_id=session.session_id, node_id=node_id, role=node.role)
                self._end(session)
            elif self._cert_expiry() != expiry:
                expiry = self._cert_expiry()
                yield pb.SessionMessage(session_id=session.session_id, node_id=node_id,
                                        node_cert_expiry_seconds=expiry)

    @rpc
    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> None:
        """A session whose heartbeats come on its own stream: per heartbeat, one message read and one
        written, no call to set up, no certificate to parse, no task or timer."""
        ident = self._authorize(context)
        opening = await context.read()
        if opening is grpc.aio.EOF:
            return
        if opening.WhichOneof("kind") != "open":
            raise errors.InvalidArgument("the first message of a session must open it")
        session = await self._open(ident.node_id, opening.open)
        writing = asyncio.Lock()  # one write at a time on a stream; heartbeats and notices interleave
        in_flight: list[asyncio.Future[None]] = []

        async def send(msg: pb.SessionMessage) -> None:
            async with writing:
                # Shielded: a write cancelled halfway still holds its operation in gRPC's core, and
                # the call must not end (status sent) until it completes (see the end below).
                write = asyncio.ensure_future(context.write(msg))
                in_flight[:] = [write]
                await asyncio.shield(write)

        async def notices() -> None:
            async with contextlib.aclosing(self._session_messages(session)) as messages:
                async for msg in messages:
                    await send(msg)

        async def beats() -> None:
            while (msg := await context.read()) is not grpc.aio.EOF:
                if msg.WhichOneof("kind") != "heartbeat":
                    raise errors.InvalidArgument("a session is opened once: expected a heartbeat")
                # The node as the swarm knows it now (its certificate was checked at the opening).
                self.authz.authorize(ident, MEMBERS)
                if session.ended.is_set():
                    return
                await send(pb.SessionMessage(heartbeat=await self._beat(session, msg.heartbeat)))

        # The stream lives while both do: the session ends (the notices end) or the node goes away.
        parts = [asyncio.create_task(notices()), asyncio.create_task(beats())]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in parts:
                p.cancel()
            await asyncio.gather(*parts, *in_flight, return_exceptions=True)
        for p in done:
            p.result()  # what ended it, if it was an error

    @rpc
    async def Session(self, request: pb.SessionRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SessionMessage]:
        session = await self._open(self._authorize(context).node_id, request)
        async with contextlib.aclosing(self._session_messages(session)) as messages:
            async for msg in messages:
                yield msg

    @rpc
    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: grpc.aio.ServicerContext) -> pb.HeartbeatResponse:
        """The heartbeat of agents of earlier releases, one call each."""
        return await self._beat(self._session(context, request.session_id), request)

    async def _beat(self, s: AgentSession, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        received = time.time_ns()
        s.last_seen = self.clock.monotonic()
        if request.trust_roots:
            node = self.store.node(s.node_id)
            if node is not None and node.trust_roots != request.trust_roots:
                await self._record_trust_roots(s.node_id, request.trust_roots)
        s.period = self.heartbeat_period
        period = s.period + random.uniform(-HEARTBEAT_JITTER, HEARTBEAT_JITTER) * (s.period / HEARTBEAT_PERIOD)
        return pb.HeartbeatResponse(period_ms=int(period * 1000), received_ns=received, replied_ns=time.time_ns())

    async def _record_trust_roots(self, node_id: str, digest: str) -> None:
        if not _DIGEST.fullmatch(digest):
            raise errors.InvalidArgument("trust_roots: expected a hex SHA-256 digest")
        term = self.proposer.leader_term()
        cmd = state.SetTrustRoots(node_id=node_id, trust_roots=digest)
        try:  # the report is retried with the next heartbeat; the heartbeat itself counts now
            state.require_supported(cmd, self.store.managers())
            if term is not None:
                await self.proposer.propose(cmd, leader_only=term)
        except errors.SwarmError as e:
            log.info("trusted roots of node %s not recorded yet: %s", node_id, e)

    @rpc
    async def UpdateTaskStatus(self, request: pb.UpdateTaskStatusRequest,
                               context: grpc.aio.ServicerContext) -> pb.UpdateTaskStatusResponse:
        s = self._session(context, request.session_id)
        updates = []
        refused: list[str] = []
        # Each report stands alone: a bad one is left out (and named in the error), an overlong message
        # is cut; neither holds back the good reports of this call or of any other worker.
        for u in request.updates:
            try:
                validation.check_task_status(u.task_id, u.status.state)
            except errors.InvalidArgument as e:
                refused.append(e.message)
                continue
            sent = self._sent_at.pop((u.task_id, u.spec_version), None)
            if sent is not None:
                self.on_delivery(self.clock.monotonic() - sent)
            updates.append(state.TaskStatusUpdate(
                task_id=u.task_id, state=u.status.state, message=validation.clip_status_text(u.status.message),
                err=validation.clip_status_text(u.status.err), exit_code=u.status.exit_code,
                spec_version=u.spec_version, ts=self.clock.now_ns()))
        if refused:
            log.warning("node %s: %d task status report(s) refused: %s", s.node_id, len(refused), refused[0])
        if updates:
            done: asyncio.Future[None] = self.loop.create_future()
            self._status_batch.append((s.node_id, updates, done))
            if self._status_flush is None or self._status_flush.done():
                self._status_flush = asyncio.create_task(self._flush_status())
            await done
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise errors.InvalidArgument(f"task status refused: {refused[0]}{more}")
        return pb.UpdateTaskStatusResponse()

    async def _flush_status(self) -> None:
        """Group commit for status reports: one raft entry (more if they would not fit in one) for every
        report of the last few ms, repeated while reports keep arriving during the proposals."""
        while self._status_batch:
            await asyncio.sleep(STATUS_BATCH_DELAY)
            pending, self._status_batch = self._status_batch, []
            chunks = _status_chunks(pending)
            # A call is answered once every entry holding its updates is in (or at the first that fails).
            left: dict[int, int] = {}
            for batch in chunks:
                for _, _, done in batch:
                    left[id(done)] = left.get(id(done), 0) + 1
            for batch in chunks:
                try:
                    term = self.proposer.leader_term()
                    if term is None:
                        raise errors.Unavailable("this manager no longer leads the swarm")
                    reports = tuple(state.StatusReport(node_id=n, updates=tuple(u)) for n, u, _ in batch)
                    await self.proposer.propose(state.TaskStatus(reports=reports), leader_only=term)
                except errors.SwarmError as e:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(e)
                else:
                    for _, _, done in batch:
                        left[id(done)] -= 1
                        if not done.done() and left[id(done)] == 0:
                            done.set_result(None)

    @rpc
    async def PublishLogs(self, request_iterator: AsyncIterator[pb.PublishLogsRequest],
                          context: grpc.aio.ServicerContext) -> pb.PublishLogsResponse:
        """Lines of a node's own tasks, for a subscription its session carried."""
        async for request in request_iterator:
            s = self._session(context, request.session_id)
            sub = self.logs.subscriptions.get(request.subscription_id)
            if sub is None:
                continue  # the asker went away meanwhile
            if s.node_id not in sub.nodes:
                raise errors.PermissionDenied("this node was not asked for these logs")
            own = {t.id for t in self.store.tasks(service_id=sub.service_id, node_id=s.node_id)}
            for m in request.messages:
                if m.task_id not in own:
                    raise errors.PermissionDenied(f"task {m.task_id} is not a task of this node and service")
                m.node_id = s.node_id
                m.service_id = sub.service_id
            self.logs.publish(s.node_id, sub, list(request.messages), request.close)
        return pb.PublishLogsResponse()

    @rpc
    async def Assignments(self, request: pb.AssignmentsRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AssignmentsMessage]:
        """The node's assignments, from the shared plan. A stream that is slow to take its messages
        holds up no other: when it is ready again, one message brings it from what it was sent to the
        plan of that moment, however many changes it missed."""
        s = self._session(context, request.session_id)
        sent_tasks: dict[str, TaskKey] = {}
        sent_secrets: set[str] = set()
        seq = 0
        while not s.ended.is_set():
            s.assigned.clear()
            changes = self._changes(s.node_id, sent_tasks, sent_secrets)
            if seq == 0 or changes:
                kind = pb.AssignmentsMessage.COMPLETE if seq == 0 else pb.AssignmentsMessage.INCREMENTAL
                self._sending([c.task for c in changes if c.action == pb.AssignmentChange.UPDATE and c.task.id])
                yield pb.AssignmentsMessage(type=kind, applies_to=str(seq) if seq else "", results_in=str(seq + 1),
                                            changes=changes)
                seq += 1
            await s.assigned.wait()

    def _changes(self, node_id: str, sent_tasks: dict[str, TaskKey],
                 sent_secrets: set[str]) -> list[pb.AssignmentChange]:
        """What takes a node from what it was sent (updated in place) to its part of the plan."""
        plan = self._current_plan()
        tasks = plan.tasks.get(node_id, {})
        secret_users = plan.secrets.get(node_id, {})
        changes: list[pb.AssignmentChange] = []
        for tid, (key, change) in tasks.items():
            if sent_tasks.get(tid) != key:
                changes.append(change)
                sent_tasks[tid] = key
        for tid in [t for t in sent_tasks if t not in tasks]:
            del sent_tasks[tid]
            changes.append(pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, task=pb.AssignedTask(id=tid)))
        for sid in sorted(secret_users.keys() - sent_secrets):
            secret = self._secret(sid)
            if secret is not None:
                changes.append(secret[1])
                sent_secrets.add(sid)
                self._audit_delivery(node_id, secret_users[sid], sid, secret[0])
        for sid in sorted(sent_secrets - secret_users.keys()):
            sent_secrets.discard(sid)
            changes.append(pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, secret=pb.AssignedSecret(id=sid)))
        return changes

    def _audit_delivery(self, node_id: str, tasks: list[str], secret_id: str, version: int) -> None:
        """The audit line of a secret sent to a node, written once this pass of the event loop has
        started every stream's message: a plan change wakes every stream at once, and a log line
        each before their sends would hold the last node's secret back by all the others' lines."""
        if not self._audits:
            self.loop.call_soon(self._write_audits)
        self._audits.append((node_id, tasks, secret_id, version))

    def _write_audits(self) -> None:
        audits, self._audits = self._audits, []
        for node_id, tasks, secret_id, version in audits:
            audit.secret_delivered(node_id, tasks, secret_id, version)

    def _secret(self, sid: str) -> tuple[int, pb.AssignmentChange] | None:
        """(version, the change that sends it) of a secret in the plan, unsealed once per version."""
        secret = self.store.secret(sid)
        if secret is None:
            return None
        cached = self._secrets.get(sid)
        if cached is None or cached[0] != secret.version:
            cached = self._secrets[sid] = (secret.version, pb.AssignmentChange(
                action=pb.AssignmentChange.UPDATE,
                secret=pb.AssignedSecret(id=sid, name=secret.name, data=self.sealer.unseal(secret.data))))
        return cached

    def _sending(self, tasks: list[pb.AssignedTask]) -> None:
        now = self.clock.monotonic()
        for t in tasks:
            self._sent_at[(t.id, t.spec_version)] = now
        while len(self._sent_at) > DELIVERIES_TRACKED:
            del self._sent_at[next(iter(self._sent_at))]

    # --- node liveness ---------------------------------------------------------------------------

    async def _set_node(self, update: state.UpdateNode) -> None:
        """Liveness is this leader's observation: it goes in only while this leader leads."""
        node = self.store.node(update.id)
        if node is None or all(getattr(node, k) == v for k, v in update.changes().items()):
            return
        term = self.proposer.leader_term()
        if term is None:
            raise errors.Unavailable("this manager no longer leads the swarm")
        await self.proposer.propose(update, leader_only=term)

    async def monitor(self) -> None:
        """Mark nodes down after missed heartbeats; end their sessions. Leader only."""
        interval = min(1.0, self.heartbeat_period / 2)
        last_tick = self.clock.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = self.clock.monotonic()
            if now - last_tick > 2 * interval + 0.5:
                self.stalled(now)
            last_tick = now
            await self.sweep(now)
            interval = min(1.0, self.heartbeat_period / 2)  # the setting may have changed

    def follow(self, st: RaftStatus) -> None:
        """The raft status feed: a leader that lost its place ends every session at once (not at
        the next sweep, which may be waiting on a proposal that will not commit)."""
        if not st.is_leader and (self.sessions or self.leader_since is not None):
            self._step_down()

    def _step_down(self) -> None:
        self.leader_since = None
        for s in self.sessions.values():
            self._end(s)
        self.sessions.clear()
        self.plan = Plan()
        self._secrets.clear()

    def stalled(self, now: float) -> None:
        """This process was stalled (paused, swapped): nobody could heartbeat to us meanwhile,
        so start every session's grace afresh instead of declaring the fleet down."""
        for s in self.sessions.values():
            s.last_seen = now
        if self.leader_since is not None:
            self.leader_since = now

    async def sweep(self, now: float) -> None:
        """One liveness pass at monotonic time ``now``: a follower ends every session; the leader
        marks down the nodes (workers and managers alike) whose session missed its heartbeats, and
        (once it has led for a whole grace period) the ready nodes that never opened a session with it."""
        if not self.proposer.status().is_leader:
            self._step_down()
            return
        if self.leader_since is None:
            self.leader_since = now
        grace = self.heartbeat_period * MISSED_HEARTBEATS
        try:
            for node_id, s in list(self.sessions.items()):
                # Each node by the period it was told: one told a longer period before a change
                # has until its next heartbeat to hear of the new one.
                if now - s.last_seen > s.period * MISSED_HEARTBEATS:
                    self._end(s)
                    del self.sessions[node_id]
                    await self._set_node(_down(node_id))
            if now - self.leader_since > grace:
                for node in self.store.nodes():
                    if node.status == "ready" and node.id not in self.sessions:
                        await self._set_node(_down(node.id))
        except errors.SwarmError as e:
            log.info("node liveness update deferred: %s", e)


StatusItem = tuple[str, list[state.TaskStatusUpdate], "asyncio.Future[None]"]


def _status_size(u: state.TaskStatusUpdate) -> int:
    """An upper bound on the bytes one status update adds to a raft entry."""
    return len(u.task_id) + len(u.state) + 4 * (len(u.message) + len(u.err)) + 128


def _status_chunks(pending: list[StatusItem]) -> list[list[StatusItem]]:
    """The reports of one flush, split into raft entries of at most STATUS_ENTRY_BUDGET bytes; one
    call's updates may span entries (its future is the same object in each)."""
    chunks: list[list[StatusItem]] = [[]]
    size = 0
    for node_id, updates, done in pending:
        part: list[state.TaskStatusUpdate] = []
        for u in updates:
            cost = _status_size(u)
            if size + cost > STATUS_ENTRY_BUDGET and (part or chunks[-1]):
                if part:
                    chunks[-1].append((node_id, part, done))
                    part = []
                chunks.append([])
                size = 0
            part.append(u)
            size += cost
        if part:
            chunks[-1].append((node_id, part, done))
    return [c for c in chunks if c]


def _service_change(svc: state.Service) -> pb.AssignmentChange:
    """What every task of ``svc`` carries: its current spec (a copy per task is cheaper than a build)."""
    files = [pb.AssignedSecretFile(secret_id=r.secret_id, target=r.target, uid=int(r.uid), gid=int(r.gid),
                                   mode=r.mode) for r in svc.secrets]
    return pb.AssignmentChange(action=pb.AssignmentChange.UPDATE, task=pb.AssignedTask(
        service_id=svc.id, service_name=svc.name, command=svc.command, env=svc.env, user=svc.user, secrets=files,
        update_action=svc.update_action, spec_version=svc.spec_version))


def _task_change(t: state.Task, spec: pb.AssignmentChange) -> pb.AssignmentChange:
    """A desired-running task as its node receives it: with its service's current spec."""
    change = pb.AssignmentChange()
    change.CopyFrom(spec)
    change.task.id, change.task.slot, change.task.desired_state = t.id, t.slot, t.desired_state
    return change


def _down(node_id: str) -> state.UpdateNode:
    return state.UpdateNode(id=node_id, status="down", status_message="heartbeat failure")
