"""Agent sessions and assignments, on the leader only.

Every node that runs the worker agent has a session: workers, and managers that may take tasks.
One session per node (heartbeat every 5 s ± 10 %, the cluster's setting; down after 3 missed) and
one assignments stream: COMPLETE first, then INCREMENTAL changes whose
``applies_to`` is the previous ``results_in``. A worker receives a secret only
while one of its tasks references it, and a REMOVE when none does. The node is
the one named in the client certificate; followers answer UNAVAILABLE and name
the leader in the ``wire.LEADER_METADATA`` trailing metadata.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from swarmsecrets import audit, errors, validation
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import dispatcher_pb2_grpc
from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import MEMBERS, PeerAuthorizer
from swarmsecrets.manager import state
from swarmsecrets.manager.logbroker import LogBroker
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
# How often idle streams re-check leadership and their node.
IDLE_CHECK = 2.0
# Assignments sent and not yet reported on, kept to time deliveries (the oldest are forgotten first).
DELIVERIES_TRACKED = 10_000


@dataclass
class Session:
    node_id: str
    last_seen: float  # on the dispatcher's monotonic clock
    role: str = "worker"  # the node's role when the session began
    period: float = HEARTBEAT_PERIOD  # the heartbeat period the node was last told
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    ended: asyncio.Event = field(default_factory=asyncio.Event)


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
        self.sessions: dict[str, Session] = {}
        # Streams wait on `_changed`; every apply bumps `generation` and swaps in a fresh event, so one
        # set() wakes every stream at once (no lock to queue on), and a stream that was busy sees the
        # new generation without waiting.
        self.generation = 0
        self._changed = asyncio.Event()
        self._status_batch: list[tuple[str, list[state.TaskStatusUpdate], asyncio.Future[None]]] = []
        self._status_flush: asyncio.Task[None] | None = None
        self._cache: tuple[int, dict[str, list[state.Task]], dict[str, state.Service]] = (-1, {}, {})
        self.loop = asyncio.get_running_loop()
        self.leader_since: float | None = None
        self.default_heartbeat = heartbeat_period
        self.on_delivery = on_delivery
        self._sent_at: dict[tuple[str, int], float] = {}  # (task id, spec version) -> when it was sent
        self.logs = logs or LogBroker()
        self.logs.wake = lambda: self._bump(changed=False)
        self.logs.live_nodes = lambda: {n for n, s in self.sessions.items() if not s.ended.is_set()}

    @property
    def heartbeat_period(self) -> float:
        """Seconds: the cluster's setting (``swarm update --dispatcher-heartbeat``), read at each use so
        that a change applies at once; this manager's flag for a cluster that has none stored."""
        return heartbeat_of(self.store.cluster, self.default_heartbeat)

    # --- change notification (called on the raft thread) ------------------------------------

    def on_apply(self, event: state.Applied) -> None:
        self.loop.call_soon_threadsafe(self._bump)

    def _bump(self, changed: bool = True) -> None:
        if changed:
            self.generation += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait(self, seen: int) -> None:
        """Until the state moves past generation ``seen`` or IDLE_CHECK passes (or anything wakes us)."""
        if self.generation != seen:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), IDLE_CHECK)
        except TimeoutError:
            pass

    def _end(self, session: Session) -> None:
        session.ended.set()
        self.logs.node_gone(session.node_id)
        self._bump(changed=False)

    # --- authorization -------------------------------------------------------------------------

    def _authorize(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's node id: any member of the swarm, asking the leader."""
        status = self.proposer.status()
        if not status.is_leader:
            raise errors.NotLeader(leader=self.store.control_addr_of(status.leader) if status.leader else "")
        return self.authz.admit(peer_certificate(context), MEMBERS).node_id

    def _session(self, context: grpc.aio.ServicerContext, session_id: str) -> Session:
        node_id = self._authorize(context)
        s = self.sessions.get(node_id)
        if s is None or s.session_id != session_id or s.ended.is_set():
            raise errors.InvalidArgument("session invalid")
        return s

    def _roots(self) -> bytes:
        cluster = self.store.cluster
        return cluster.trust_bundle().encode() if cluster is not None else b""

    # --- RPCs ------------------------------------------------------------------------------------

    def _cert_expiry(self) -> int:
        cluster = self.store.cluster
        return int(certs.node_validity(cluster.node_cert_expiry if cluster is not None else 0).total_seconds())

    @rpc
    async def Session(self, request: pb.SessionRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SessionMessage]:
        node_id = self._authorize(context)
        if request.hostname:
            validation.validate_hostname(request.hostname)
        validation.validate_engine_version(request.engine_version)
        record = self.store.node(node_id)
        if record is None:
            raise errors.node_removed(node_id)
        old = self.sessions.get(node_id)
        if old is not None:
            self._end(old)
        session = self.sessions[node_id] = Session(node_id, last_seen=self.clock.monotonic(), role=record.role,
                                                   period=self.heartbeat_period)
        await self._set_node(state.UpdateNode(id=node_id, status="ready", hostname=request.hostname,
                                              engine_version=request.engine_version))
        # Changes applied while the caller holds a message count as unseen: they wake the next wait.
        seen = self.generation
        roots = self._roots()
        expiry = self._cert_expiry()
        yield pb.SessionMessage(session_id=session.session_id, node_id=node_id, managers=self.store.manager_addrs(),
                                heartbeat_period_ms=int(session.period * 1000), role=session.role,
                                node_cert_expiry_seconds=expiry, root_ca=roots)
        while not session.ended.is_set():
            await self._wait(seen)
            seen = self.generation
            subscriptions = self.logs.take(node_id) if not session.ended.is_set() else []
            if subscriptions:
                yield pb.SessionMessage(session_id=session.session_id, node_id=node_id,
                                        log_subscriptions=subscriptions)
            node = self.store.node(node_id)
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
    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: grpc.aio.ServicerContext) -> pb.HeartbeatResponse:
        s = self._session(context, request.session_id)
        s.last_seen = self.clock.monotonic()
        node = self.store.node(s.node_id)
        if request.trust_roots and node is not None and node.trust_roots != request.trust_roots:
            if not _DIGEST.fullmatch(request.trust_roots):
                raise errors.InvalidArgument("trust_roots: expected a hex SHA-256 digest")
            term = self.proposer.leader_term()
            cmd = state.SetTrustRoots(node_id=s.node_id, trust_roots=request.trust_roots)
            try:  # the report is retried with the next heartbeat; the heartbeat itself counts now
                state.require_supported(cmd, self.store.managers())
                if term is not None:
                    await self.proposer.propose(cmd, leader_only=term)
            except errors.SwarmError as e:
                log.info("trusted roots of node %s not recorded yet: %s", s.node_id, e)
        s.period = self.heartbeat_period
        period = s.period + random.uniform(-HEARTBEAT_JITTER, HEARTBEAT_JITTER) * (s.period / HEARTBEAT_PERIOD)
        return pb.HeartbeatResponse(period_ms=int(period * 1000))

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
        s = self._session(context, request.session_id)
        sent_tasks: dict[str, bytes] = {}
        sent_secrets: set[str] = set()
        seq = 0
        seen = -1
        while not s.ended.is_set():
            if seen == self.generation:
                await self._wait(seen)
                if s.ended.is_set():
                    break
                if not self.proposer.status().is_leader or self.store.node(s.node_id) is None:
                    break
                if seen == self.generation:
                    continue
                await asyncio.sleep(BATCH_DELAY)
            seen = self.generation
            tasks, secret_ids = self.view(s.node_id)
            changes: list[pb.AssignmentChange] = []
            for tid, task in tasks.items():
                blob = task.SerializeToString(deterministic=True)
                if sent_tasks.get(tid) != blob:
                    changes.append(pb.AssignmentChange(action=pb.AssignmentChange.UPDATE, task=task))
                    sent_tasks[tid] = blob
            for tid in [t for t in sent_tasks if t not in tasks]:
                del sent_tasks[tid]
                changes.append(pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, task=pb.AssignedTask(id=tid)))
            for sid in sorted(secret_ids - sent_secrets):
                secret = self.store.secret(sid)
                if secret is not None:
                    changes.append(pb.AssignmentChange(action=pb.AssignmentChange.UPDATE, secret=pb.AssignedSecret(
                        id=sid, name=secret.name, data=self.sealer.unseal(secret.data))))
                    sent_secrets.add(sid)
                    audit.secret_delivered(s.node_id, [t.id for t in tasks.values()
                                                       if any(f.secret_id == sid for f in t.secrets)],
                                           sid, secret.version)
            for sid in sorted(sent_secrets - secret_ids):
                sent_secrets.discard(sid)
                changes.append(pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, secret=pb.AssignedSecret(id=sid)))
            if seq > 0 and not changes:
                continue
            kind = pb.AssignmentsMessage.COMPLETE if seq == 0 else pb.AssignmentsMessage.INCREMENTAL
            self._sending([c.task for c in changes if c.action == pb.AssignmentChange.UPDATE and c.task.id])
            yield pb.AssignmentsMessage(type=kind, applies_to=str(seq) if seq else "", results_in=str(seq + 1),
                                        changes=changes)
            seq += 1

    def _sending(self, tasks: list[pb.AssignedTask]) -> None:
        now = self.clock.monotonic()
        for t in tasks:
            self._sent_at[(t.id, t.spec_version)] = now
        while len(self._sent_at) > DELIVERIES_TRACKED:
            del self._sent_at[next(iter(self._sent_at))]

    # --- what a node should hold ---------------------------------------------------------------

    def _snapshot(self) -> tuple[dict[str, list[state.Task]], dict[str, state.Service]]:
        """Desired-running tasks by node, and services by id: read once per generation for all streams."""
        if self._cache[0] != self.generation:
            by_node: dict[str, list[state.Task]] = {}
            for t in self.store.tasks():
                if t.desired_state == "running":
                    by_node.setdefault(t.node_id, []).append(t)
            self._cache = (self.generation, by_node, {s.id: s for s in self.store.services()})
        return self._cache[1], self._cache[2]

    def view(self, node_id: str) -> tuple[dict[str, pb.AssignedTask], set[str]]:
        """The node's tasks (desired running) with their service's current spec, and the secrets they use."""
        tasks: dict[str, pb.AssignedTask] = {}
        secret_ids: set[str] = set()
        by_node, services = self._snapshot()
        for t in by_node.get(node_id, []):
            svc = services.get(t.service_id)
            if svc is None:
                continue
            files = [pb.AssignedSecretFile(secret_id=r.secret_id, target=r.target, uid=int(r.uid),
                                           gid=int(r.gid), mode=r.mode) for r in svc.secrets]
            secret_ids.update(f.secret_id for f in files)
            tasks[t.id] = pb.AssignedTask(
                id=t.id, service_id=svc.id, service_name=svc.name, slot=t.slot,
                desired_state=t.desired_state, command=svc.command, env=svc.env,
                user=svc.user, secrets=files, update_action=svc.update_action,
                spec_version=svc.spec_version)
        return tasks, secret_ids

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
            self.leader_since = None
            for s in self.sessions.values():
                self._end(s)
            self.sessions.clear()
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


def _down(node_id: str) -> state.UpdateNode:
    return state.UpdateNode(id=node_id, status="down", status_message="heartbeat failure")
