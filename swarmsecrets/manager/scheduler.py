"""Services -> tasks -> nodes, on the leader only.

The plan is a pure function of an immutable view of the replicated state; the leader proposes
it as one ``Schedule`` command, so every manager sees the same decisions. It runs on a worker
thread (a large swarm's plan must not stall the event loop that serves the control API and the
dispatcher), on a frozen view, never under the store lock (apply goes on meanwhile).

Replicated services spread their slots over Ready+Active nodes (fewest tasks first); global
services get one task per such node; only nodes that satisfy every placement constraint of the
service count (manager/constraint.py). A slot that no node can take gets a ``pending`` task whose
error says why, in Swarm's words (``no suitable node (…)``), replaced by a placed task once a node
fits; a task whose node no longer satisfies the constraints moves. Managers are nodes like any
other here, as in Docker Swarm: a manager is Ready only while its own worker agent holds a
session with the leader, and a manager that must not run tasks has availability ``drain``. Tasks
on a node that is down, drained or removed are shut down and their slots placed elsewhere; a
paused node keeps what it runs but gets nothing new. A task whose command exits is restarted
by its worker with backoff, not rescheduled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

from swarmsecrets import errors, ids
from swarmsecrets.manager import constraint
from swarmsecrets.manager.state import TERMINAL_STATES, Command, Node, Schedule, Service, StateView, Task, TaskChange
from swarmsecrets.manager.state.objects import DEFAULT_TASK_HISTORY

log = logging.getLogger(__name__)

INTERVAL = 1.0
COALESCE = 0.02


def eligible(node: Node) -> bool:
    """A node that may receive new tasks, whatever its role."""
    return node.status == "ready" and node.availability == "active"


def keeps_tasks(node: Node | None) -> bool:
    """A node whose running tasks stay where they are (ready, and active or paused)."""
    return node is not None and node.status == "ready" and node.availability in ("active", "pause")


def explain(nodes: Iterable[Node], constraints: list[constraint.Constraint]) -> str:
    """Why no node fits, as Swarm's scheduler says it: each node counts against the first check it
    fails (available for new tasks, then the constraints), the most common reason first."""
    unavailable = unsatisfied = 0
    for node in nodes:
        if not eligible(node):
            unavailable += 1
        elif not constraint.node_matches(constraints, node):
            unsatisfied += 1
    reasons = []
    if unavailable:
        reasons.append((unavailable, f"{_nodes(unavailable)} not available for new tasks"))
    if unsatisfied:
        reasons.append((unsatisfied, f"scheduling constraints not satisfied on {_nodes(unsatisfied)}"))
    reasons.sort(key=lambda r: -r[0])
    detail = "; ".join(text for _, text in reasons)
    return f"no suitable node ({detail})" if detail else "no suitable node"


def _nodes(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


def plan(view: StateView, now_ns: int) -> Schedule:
    nodes, tasks = view.nodes, view.tasks
    history = view.cluster.task_history_limit if view.cluster is not None else DEFAULT_TASK_HISTORY
    ready = sorted(nid for nid, n in nodes.items() if eligible(n))
    load = Counter(t.node_id for t in tasks.values() if t.desired_state == "running" and t.node_id)
    create: list[Task] = []
    update: list[TaskChange] = []
    delete: list[str] = []

    def shutdown(task: Task) -> None:
        if task.state in TERMINAL_STATES:
            new_state = task.state
        else:
            node = nodes.get(task.node_id)
            # A live node stops the task itself; a down or vanished one cannot tell us.
            new_state = "shutdown" if node is not None and node.status == "ready" else "orphaned"
        update.append(TaskChange(id=task.id, desired_state="shutdown", state=new_state))
        load[task.node_id] -= 1

    def place(svc: Service, slot: int, node_id: str) -> None:
        create.append(Task(id=ids.new_id(), service_id=svc.id, service_name=svc.name, slot=slot, node_id=node_id,
                           desired_state="running", state="assigned", status_ts=now_ns,
                           spec_version=svc.spec_version))
        load[node_id] += 1

    def wait(svc: Service, slot: int, pending: list[Task], reason: str) -> None:
        """The slot has no node: one pending task says why (a new one when the reason changed)."""
        if pending and pending[0].err == reason:
            delete.extend(t.id for t in pending[1:])
            return
        delete.extend(t.id for t in pending)
        create.append(Task(id=ids.new_id(), service_id=svc.id, service_name=svc.name, slot=slot, node_id="",
                           desired_state="running", state="pending", message="pending task scheduling",
                           err=reason, status_ts=now_ns, spec_version=svc.spec_version))

    for svc in sorted(view.services.values(), key=lambda s: s.id):
        try:
            wanted = constraint.parse(svc.constraints)
        except errors.SwarmError:  # checked when set: only a record from elsewhere could hold one
            wanted = [constraint.Constraint("", True, "")]  # that no node satisfies

        def fits(node: Node | None, wanted: list[constraint.Constraint] = wanted) -> bool:
            return node is not None and constraint.node_matches(wanted, node)

        running = [t for t in tasks.values() if t.service_id == svc.id and t.desired_state == "running"]
        # Pending tasks (no node yet) are replaced, never shut down: they never ran.
        pending_by_slot: dict[int, list[Task]] = {}
        for t in running:
            if not t.node_id:
                pending_by_slot.setdefault(t.slot, []).append(t)
        running = [t for t in running if t.node_id]
        candidates = [nid for nid in ready if fits(nodes[nid])]
        if svc.mode == "global":
            covered = set()
            for t in running:
                node = nodes.get(t.node_id)
                if keeps_tasks(node) and fits(node) and t.node_id not in covered:
                    covered.add(t.node_id)
                else:
                    shutdown(t)
            for nid in candidates:
                if nid not in covered:
                    place(svc, 0, nid)
            delete.extend(t.id for group in pending_by_slot.values() for t in group)
            continue
        by_slot: dict[int, list[Task]] = {}
        for t in running:
            by_slot.setdefault(t.slot, []).append(t)
        reason = ""
        for slot in range(1, svc.replicas + 1):
            keep = None
            for t in sorted(by_slot.pop(slot, []), key=lambda t: t.created_at):
                node = nodes.get(t.node_id)
                if keep is None and keeps_tasks(node) and fits(node):
                    keep = t
                else:
                    shutdown(t)
            pending = sorted(pending_by_slot.pop(slot, []), key=lambda t: -t.created_at)
            if keep is None and candidates:
                place(svc, slot, min(candidates, key=lambda nid: (load[nid], nid)))
            elif keep is None:
                reason = reason or explain(nodes.values(), wanted)
                wait(svc, slot, pending, reason)
                continue
            delete.extend(t.id for t in pending)
        for extra in by_slot.values():  # slots above the replica count
            for t in extra:
                shutdown(t)
        delete.extend(t.id for group in pending_by_slot.values() for t in group)

    # History: drop the oldest finished tasks beyond the cluster's limit per service (negative: keep all).
    finished: dict[str, list[Task]] = {}
    for t in tasks.values():
        if t.desired_state != "running":
            finished.setdefault(t.service_id, []).append(t)
    if history >= 0:
        for group in finished.values():
            group.sort(key=lambda t: t.updated_at)
            delete += [t.id for t in group[:max(len(group) - history, 0)]]
    return Schedule(create=tuple(create), update=tuple(update), delete=tuple(delete))


Propose = Callable[[Command, int], Awaitable[object]]


class Scheduler:
    """Runs on every manager; acts only while this manager leads.

    ``view`` reads the state, ``leader_term`` says whether (and in which term) this manager
    leads, ``propose(cmd, term)`` replicates a decision only while that term lasts.
    """

    def __init__(self, view: Callable[[], StateView], leader_term: Callable[[], int | None], propose: Propose,
                 clock: Callable[[], int] = time.time_ns,
                 planner: Callable[[StateView, int], Schedule] = plan) -> None:
        self.view = view
        self.leader_term = leader_term
        self.propose = propose
        self.clock = clock
        self.planner = planner
        self.wake = asyncio.Event()

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), INTERVAL)
            except TimeoutError:
                pass
            self.wake.clear()
            await self.run_once()

    def _plan(self) -> Schedule:
        """On a worker thread: take the view (a brief copy under the store lock), then plan without it."""
        return self.planner(self.view(), self.clock())

    async def run_once(self) -> None:
        """One pass: plan on a worker thread from the current view, propose what changes."""
        term = self.leader_term()
        if term is None:
            return
        await asyncio.sleep(COALESCE)  # a burst of applies makes one plan
        try:
            decision = await asyncio.to_thread(self._plan)
            if decision:
                await self.propose(decision, term)
        except errors.SwarmError as e:
            log.info("scheduling deferred: %s", e)
        except Exception:
            log.exception("scheduler pass failed")
