"""Converging this node to its assignments: which tasks run, and which secret files each task sees.

The session (``agent.py``) reads the dispatcher's assignment stream and hands every message to
``Assignments.apply``; ``Reconciler.reconcile`` then makes the task dirs and the task processes
match the result. Nothing here talks to the network, so both are driven directly in tests.

A reconcile touches only what changed: a task whose files (targets, contents, owners, modes), user
and service are the same as at its last materialization is neither remounted nor rewritten, so an
update to one task leaves every other task's tmpfs alone. Within a changed task, ``SecretsFS``
swaps each changed file atomically and leaves identical files as they are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import objects_pb2
from swarmsecrets.worker import tasklogs
from swarmsecrets.worker.executor import Supervisor, TaskProcess, TaskStatus
from swarmsecrets.worker.secretsfs import FileSpec, SecretsFS

log = logging.getLogger(__name__)


class Resubscribe(Exception):
    """The assignments stream skipped a sequence number: start over with a COMPLETE set."""


class Assignments:
    """This node's tasks and the secrets they use, as the dispatcher's assignment stream describes them.

    A stream opens with a COMPLETE set (replacing everything known) and continues with INCREMENTAL
    changes, each naming the version it ``applies_to``; a change that does not follow the last one
    applied means a message was lost, and ``apply`` raises ``Resubscribe``.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, pb.AssignedTask] = {}
        self.secrets: dict[str, bytes] = {}
        self._last: str | None = None

    def new_stream(self) -> None:
        """A new stream must open with a COMPLETE set; what is known stays until that set arrives."""
        self._last = None

    def clear(self) -> None:
        self.tasks.clear()
        self.secrets.clear()
        self._last = None

    def apply(self, msg: pb.AssignmentsMessage) -> None:
        if msg.type == pb.AssignmentsMessage.COMPLETE:
            self.tasks.clear()
            self.secrets.clear()
        elif self._last is None or msg.applies_to != self._last:
            raise Resubscribe()
        self._last = msg.results_in
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


@dataclass
class Running:
    spec_version: int
    supervisor: Supervisor | None  # None for a service without a command: files only


@dataclass(frozen=True)
class _Materialized:
    """What a task dir holds: equal values mean there is nothing to write."""

    service: str
    owner: tuple[int, int]
    files: tuple[FileSpec, ...]


# The user a task runs as when its service names none, on an agent that can switch users: nobody, not
# root as in Docker. A Docker container's root is confined by its own image and a device cgroup; here the
# task shares the host's filesystem, so root would be the host's root on every file outside its namespaces.
DEFAULT_USER = (65534, 65534)


def parse_user(spec: str) -> tuple[int, int] | None:
    """``uid[:gid]`` as the task runs; empty means ``DEFAULT_USER`` (None: the agent's own user, when it
    cannot switch users). Raises ValueError if malformed."""
    if not spec:
        return DEFAULT_USER if os.geteuid() == 0 else None
    uid, _, gid = spec.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise ValueError(f"invalid user {spec!r}: want uid[:gid]") from None


class Reconciler:
    """Owns this node's task dirs and task processes, and the status updates waiting to be sent."""

    def __init__(self, fs: SecretsFS, loop: asyncio.AbstractEventLoop, *, hide: Sequence[str] = (),
                 log_root: str | None = None) -> None:
        """``hide``: paths tasks must not see besides the secrets root (the daemon's data dir and socket).
        ``log_root``: where tasks' output is kept (``tasklogs``), one directory per task."""
        self.fs = fs
        self.log_root = log_root
        self.loop = loop
        self.hide = [fs.root, *hide]
        self.running: dict[str, Running] = {}
        self.pending: dict[str, pb.TaskStatusUpdate] = {}
        self.has_reports = asyncio.Event()  # set while ``pending`` holds reports to send
        self._materialized: dict[str, _Materialized] = {}

    async def reconcile(self, tasks: dict[str, pb.AssignedTask], secrets: dict[str, bytes]) -> None:
        for tid in [t for t in {**self.running, **self._materialized} if t not in tasks]:
            await self.stop_task(tid)
        for task in list(tasks.values()):
            await self._converge(task, secrets)
        if self.log_root is not None:  # the output of tasks this node no longer has goes with them
            for tid in tasklogs.task_dirs(self.log_root):
                if tid not in tasks:
                    tasklogs.remove(self.log_root, tid)

    async def _converge(self, task: pb.AssignedTask, secrets: dict[str, bytes]) -> None:
        tid = task.id
        missing = [f.secret_id for f in task.secrets if f.secret_id not in secrets]
        if missing:
            self._report(tid, task.spec_version, "rejected", err=f"secret {missing[0]} is not available")
            return
        try:
            user = parse_user(task.user)
        except ValueError as e:
            self._report(tid, task.spec_version, "rejected", err=str(e))
            return
        wanted = _Materialized(
            task.service_name, user or (os.geteuid(), os.getegid()),
            tuple(FileSpec(f.target, secrets[f.secret_id], f.uid, f.gid, f.mode) for f in task.secrets))
        if self._materialized.get(tid) != wanted:
            self._materialized.pop(tid, None)  # unknown until the write succeeds: the next reconcile retries
            try:
                await asyncio.to_thread(self.fs.materialize, tid, wanted.service, wanted.files, owner=wanted.owner)
            except (OSError, ValueError) as e:
                self._report(tid, task.spec_version, "rejected", err=f"error injecting secrets: {e}")
                return
            self._materialized[tid] = wanted
        current = self.running.get(tid)
        if current is None:
            self.running[tid] = Running(task.spec_version, self._start_task(task, self.fs.task_dir(tid), user))
        elif current.spec_version != task.spec_version:
            current.spec_version = task.spec_version
            self._apply_update_action(task, current)

    async def stop_task(self, tid: str) -> None:
        """Stop the task's process and remove its secrets; idempotent."""
        current = self.running.pop(tid, None)
        if current is not None and current.supervisor is not None:
            await asyncio.to_thread(current.supervisor.stop)
        self._materialized.pop(tid, None)
        await asyncio.to_thread(self.fs.remove_task, tid)
        self.pending.pop(tid, None)

    async def stop_all(self, wipe: bool) -> None:
        """Stop every task; with ``wipe`` nothing of the swarm is left on tmpfs."""
        for tid in list({**self.running, **self._materialized}):
            await self.stop_task(tid)
        if wipe:
            await asyncio.to_thread(self.fs.wipe)
            if self.log_root is not None:
                await asyncio.to_thread(shutil.rmtree, self.log_root, True)

    def take_reports(self) -> list[pb.TaskStatusUpdate]:
        updates, self.pending = list(self.pending.values()), {}
        self.has_reports.clear()
        return updates

    def requeue_reports(self, updates: list[pb.TaskStatusUpdate]) -> None:
        """Keep updates that could not be sent for the next session, unless newer ones came in."""
        for u in updates:
            self.pending.setdefault(u.task_id, u)
        if self.pending:
            self.has_reports.set()

    # --- task processes -----------------------------------------------------------------------

    def _start_task(self, task: pb.AssignedTask, task_dir: str, user: tuple[int, int] | None) -> Supervisor | None:
        tid, version = task.id, task.spec_version
        if not task.command:
            self._report(tid, version, "running", message="secrets materialized")
            return None

        def on_change(status: TaskStatus) -> None:
            self.loop.call_soon_threadsafe(self._report_status, tid, status)

        supervisor = Supervisor(
            lambda: TaskProcess(tid, list(task.command), dict(task.env), user, task_dir, mask=self.hide,
                                log_dir=os.path.join(self.log_root, tid) if self.log_root else None),
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

    # --- status -------------------------------------------------------------------------------

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
        self.has_reports.set()
