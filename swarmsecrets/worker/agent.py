"""The worker agent: one session to the leader, assignments in, secrets to tmpfs, tasks run, status out.

The session follows the leader: a follower answers UNAVAILABLE naming the leader,
and the agent reconnects there with jittered exponential backoff. Meanwhile the
tmpfs contents and the running tasks stay as they are; the next assignments
stream starts with a COMPLETE set, and the agent converges to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from swarmsecrets import __version__, errors
from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import dispatcher_pb2_grpc, objects_pb2
from swarmsecrets.rpcutil import error_from_rpc
from swarmsecrets.worker.executor import Supervisor, TaskProcess, TaskStatus
from swarmsecrets.worker.secretsfs import FileSpec, SecretsFS

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.1, 8.0
REPORT_INTERVAL = 0.1

ChannelFactory = Callable[[str], grpc.aio.Channel]


class Resubscribe(Exception):
    """The assignments stream skipped a sequence number: start over with a COMPLETE set."""


@dataclass
class Running:
    spec_version: int
    supervisor: Supervisor | None  # None for a service without a command: files only


def _user(spec: str) -> tuple[int, int] | None:
    if not spec:
        return None
    uid, _, gid = spec.partition(":")
    return int(uid), int(gid or uid)


class Agent:
    def __init__(self, *, secrets_root: str, allow_non_tmpfs: bool, managers: list[str],
                 channel: ChannelFactory, on_removed: Callable[[], Awaitable[None]],
                 on_managers: Callable[[list[str]], None], on_promoted: Callable[[], Any]) -> None:
        self.fs = SecretsFS(secrets_root, allow_non_tmpfs=allow_non_tmpfs)
        if self.fs.fallback_reason:
            log.warning("%s", self.fs.fallback_reason)
        self.managers = list(managers)
        self.channel = channel
        self.on_removed = on_removed
        self.on_managers = on_managers
        self.on_promoted = on_promoted
        self.tasks: dict[str, pb.AssignedTask] = {}
        self.secrets: dict[str, bytes] = {}
        self.running: dict[str, Running] = {}
        self.pending: dict[str, pb.TaskStatusUpdate] = {}
        self.leader_hint = ""
        self.loop = asyncio.get_running_loop()
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
        for tid in list(self.running):
            await self._stop_task(tid)
        if wipe:
            self.fs.wipe()
        self.secrets.clear()
        self.tasks.clear()

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
            session = stub.Session(pb.SessionRequest(hostname=socket.gethostname(), engine_version=__version__))
            first = await session.read()
            if first is grpc.aio.EOF:
                raise OSError("the session closed before it started")
            if list(first.managers) and list(first.managers) != self.managers:
                self.managers = list(first.managers)
                self.on_managers(self.managers)
            log.info("session %s with %s", first.session_id[:8], target)
            # The session lives while all four do; the first to end (an error, a failed heartbeat,
            # a promotion, the stream closing) ends it, and the agent reconnects.
            parts = [asyncio.create_task(self._assignments(stub, first.session_id)),
                     asyncio.create_task(self._heartbeats(stub, first.session_id, first.heartbeat_period_ms)),
                     asyncio.create_task(self._reporter(stub, first.session_id)),
                     asyncio.create_task(self._watch_role(session))]
            try:
                done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in parts:
                    p.cancel()
                session.cancel()
            for p in done:
                p.result()  # re-raise what ended the session
            raise OSError("the session ended")

    async def _watch_role(self, session: Any) -> None:
        """A promotion arrives on the session stream; the daemon then turns this node into a manager."""
        while True:
            msg = await session.read()
            if msg is grpc.aio.EOF:
                return
            if msg.role and msg.role != "worker":
                log.info("this node was promoted to %s", msg.role)
                self.on_promoted()
                return

    async def _heartbeats(self, stub: Any, session_id: str, period_ms: int) -> None:
        period = period_ms / 1000 if period_ms else 5.0
        while True:
            await asyncio.sleep(period)
            resp = await stub.Heartbeat(pb.HeartbeatRequest(session_id=session_id), timeout=5)
            period = resp.period_ms / 1000 if resp.period_ms else period

    async def _reporter(self, stub: Any, session_id: str) -> None:
        while True:
            if self.pending:
                updates, self.pending = list(self.pending.values()), {}
                try:
                    await stub.UpdateTaskStatus(pb.UpdateTaskStatusRequest(session_id=session_id, updates=updates),
                                                timeout=10)
                except grpc.aio.AioRpcError:
                    for u in updates:  # keep them for the next session unless newer ones came in
                        self.pending.setdefault(u.task_id, u)
                    raise
            await asyncio.sleep(REPORT_INTERVAL)

    async def _assignments(self, stub: Any, session_id: str) -> None:
        stream = stub.Assignments(pb.AssignmentsRequest(session_id=session_id))
        last = None
        async for msg in stream:
            if msg.type == pb.AssignmentsMessage.COMPLETE:
                self.tasks.clear()
                self.secrets.clear()
            elif msg.applies_to != last:
                raise Resubscribe()
            last = msg.results_in
            for change in msg.changes:
                remove = change.action == pb.AssignmentChange.REMOVE
                if change.HasField("task"):
                    if remove:
                        self.tasks.pop(change.task.id, None)
                    else:
                        self.tasks[change.task.id] = change.task
                elif change.HasField("secret"):
                    if remove:
                        self.secrets.pop(change.secret.id, None)
                    else:
                        self.secrets[change.secret.id] = change.secret.data
            await self.reconcile()
        raise OSError("the assignments stream ended")

    # --- converge to the assignments ------------------------------------------------------------

    async def reconcile(self) -> None:
        for tid in [t for t in self.running if t not in self.tasks]:
            await self._stop_task(tid)
        for tid, task in self.tasks.items():
            missing = [f.secret_id for f in task.secrets if f.secret_id not in self.secrets]
            if missing:
                self._report(tid, task.spec_version, "rejected", err=f"secret {missing[0]} is not available")
                continue
            files = [FileSpec(f.target, self.secrets[f.secret_id], f.uid, f.gid, f.mode) for f in task.secrets]
            user = _user(task.user)
            try:
                task_dir = await asyncio.to_thread(self.fs.materialize, tid, task.service_name, files,
                                                   owner=user or (0, 0))
            except (OSError, ValueError) as e:
                self._report(tid, task.spec_version, "rejected", err=f"error injecting secrets: {e}")
                continue
            current = self.running.get(tid)
            if current is None:
                self.running[tid] = Running(task.spec_version, self._start_task(task, task_dir, user))
            elif current.spec_version != task.spec_version:
                current.spec_version = task.spec_version
                self._apply_update_action(task, current)

    def _start_task(self, task: pb.AssignedTask, task_dir: str, user: tuple[int, int] | None) -> Supervisor | None:
        tid, version = task.id, task.spec_version
        if not task.command:
            self._report(tid, version, "running", message="secrets materialized")
            return None

        def on_change(status: TaskStatus) -> None:
            self.loop.call_soon_threadsafe(self._report_status, tid, status)

        supervisor = Supervisor(
            lambda: TaskProcess(tid, list(task.command), dict(task.env), user, task_dir, mask=[self.fs.root]),
            on_change=on_change)
        supervisor.start()
        return supervisor

    def _apply_update_action(self, task: pb.AssignedTask, current: Running) -> None:
        action = task.update_action or "restart"
        if current.supervisor is None:
            self._report(task.id, task.spec_version, "running", message="secrets updated")
            return
        if action == "restart":
            current.supervisor.restart()
        elif action.startswith("signal:"):
            current.supervisor.signal(signal.Signals[action.split(":", 1)[1]])
        st = current.supervisor.status
        self._report(task.id, task.spec_version, st.state, err=st.error or "")

    async def _stop_task(self, tid: str) -> None:
        current = self.running.pop(tid, None)
        if current is not None and current.supervisor is not None:
            await asyncio.to_thread(current.supervisor.stop)
        await asyncio.to_thread(self.fs.remove_task, tid)
        self.pending.pop(tid, None)

    # --- status -----------------------------------------------------------------------------------

    def _report_status(self, tid: str, status: TaskStatus) -> None:
        current = self.running.get(tid)
        if current is None:
            return
        self._report(tid, current.spec_version, status.state, err=status.error or "",
                     exit_code=status.exit_code or 0)

    def _report(self, tid: str, spec_version: int, state: str, *, message: str = "", err: str = "",
                exit_code: int = 0) -> None:
        self.pending[tid] = pb.TaskStatusUpdate(
            task_id=tid, spec_version=spec_version,
            status=objects_pb2.TaskStatus(state=state, message=message, err=err, exit_code=exit_code))
