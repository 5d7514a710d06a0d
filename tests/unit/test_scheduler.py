"""The scheduler: its plan (a pure function of the state) and its loop (off the event loop)."""

from __future__ import annotations

import asyncio
import threading
from types import MappingProxyType

from swarmsecrets.manager import state
from swarmsecrets.manager.scheduler import Scheduler, plan
from swarmsecrets.manager.state.objects import DEFAULT_TASK_HISTORY as TASK_HISTORY
from swarmsecrets.manager.state.store import Store


def view(nodes: dict[str, state.Node], services: list[state.Service],
         tasks: list[state.Task] | None = None) -> state.StateView:
    return state.StateView(1, MappingProxyType(nodes), MappingProxyType({s.id: s for s in services}),
                           MappingProxyType({t.id: t for t in tasks or []}))


def worker(nid: str, status: str = "ready", availability: str = "active") -> state.Node:
    return state.Node(id=nid, role="worker", status=status, availability=availability)


def svc(sid: str, mode: str = "replicated", replicas: int = 1) -> state.Service:
    return state.Service(id=sid, name=sid, mode=mode, replicas=replicas)


def task(tid: str, node: str, slot: int = 1, service: str = "s", desired_state: str = "running",
         st: str = "running", updated_at: int = 1) -> state.Task:
    return state.Task(id=tid, service_id=service, service_name=service, slot=slot, node_id=node,
                      desired_state=desired_state, state=st, created_at=1, updated_at=updated_at)


def nodes(*ns: state.Node) -> dict[str, state.Node]:
    return {n.id: n for n in ns}


def manager(nid: str, status: str = "ready", availability: str = "active") -> state.Node:
    return state.Node(id=nid, role="manager", status=status, availability=availability)


def test_replicas_spread_over_ready_active_workers() -> None:
    st = view(nodes(worker("a"), worker("b"), worker("c", "down"), worker("d", availability="drain"),
                    manager("m", availability="drain")), [svc("s", replicas=4)])
    p = plan(st, 0)
    assert sorted(t.node_id for t in p.create) == ["a", "a", "b", "b"]
    assert sorted(t.slot for t in p.create) == [1, 2, 3, 4]


def test_a_ready_active_manager_takes_tasks_like_a_worker() -> None:
    """A manager is Ready only while its own agent holds a session: one without ("unknown"), a
    down one, a drained or a paused one gets nothing new."""
    st = view(nodes(worker("a"), manager("m"), manager("n", "unknown"), manager("o", "down"),
                    manager("p", availability="drain"), manager("q", availability="pause")),
              [svc("s", replicas=4), svc("g", "global")])
    p = plan(st, 0)
    assert sorted(t.node_id for t in p.create if t.service_id == "s") == ["a", "a", "m", "m"]
    assert sorted(t.node_id for t in p.create if t.service_id == "g") == ["a", "m"]


def test_draining_a_manager_moves_its_tasks_to_a_worker() -> None:
    st = view(nodes(worker("a"), manager("m", availability="drain")), [svc("s", replicas=1)], [task("t1", "m", 1)])
    p = plan(st, 0)
    assert [(u.id, u.desired_state, u.state) for u in p.update] == [("t1", "shutdown", "shutdown")]
    assert [(t.slot, t.node_id) for t in p.create] == [(1, "a")]


def test_global_places_one_task_per_eligible_worker() -> None:
    st = view(nodes(worker("a"), worker("b"), worker("c", availability="pause")), [svc("s", "global")],
              [task("t1", "a", 0)])
    p = plan(st, 0)
    assert [t.node_id for t in p.create] == ["b"]
    assert p.update == ()


def test_tasks_of_down_and_drained_nodes_move_paused_ones_stay() -> None:
    st = view(nodes(worker("a", "down"), worker("b", availability="drain"), worker("c", availability="pause"),
                    worker("d")), [svc("s", replicas=3)],
              [task("t1", "a", 1), task("t2", "b", 2), task("t3", "c", 3)])
    p = plan(st, 0)
    changed = {u.id: (u.desired_state, u.state) for u in p.update}
    assert changed == {"t1": ("shutdown", "orphaned"), "t2": ("shutdown", "shutdown")}
    assert sorted((t.slot, t.node_id) for t in p.create) == [(1, "d"), (2, "d")]


def test_scaling_down_and_history_is_bounded() -> None:
    old = [task(f"old{i}", "a", 1, desired_state="shutdown", st="shutdown", updated_at=i) for i in range(8)]
    st = view(nodes(worker("a")), [svc("s", replicas=1)], [task("t1", "a", 1), task("t2", "a", 2), *old])
    p = plan(st, 0)
    assert [u.id for u in p.update] == ["t2"]
    assert sorted(p.delete) == sorted(f"old{i}" for i in range(8 - TASK_HISTORY))
    assert p.create == ()


def test_the_loop_plans_on_a_worker_thread_outside_the_store_lock_and_proposes_in_its_term() -> None:
    store = Store()
    store.apply(state.AddNode(rid="a", ts=1, node=worker("w1")), 1)
    store.apply(state.CreateService(rid="b", ts=1, service=svc("s", replicas=2)), 2)
    planned_on: list[tuple[threading.Thread, bool]] = []
    proposed: list[tuple[state.Command, int]] = []

    def planner(v: state.StateView, now: int) -> state.Schedule:
        free = store.lock.acquire(blocking=False)  # from another thread: true only if no thread holds it
        if free:
            store.lock.release()
        planned_on.append((threading.current_thread(), free))
        return plan(v, now)

    async def propose(cmd: state.Command, term: int) -> object:
        proposed.append((cmd, term))
        return None

    async def run() -> threading.Thread:
        sched = Scheduler(store.view, lambda: 7, propose, clock=lambda: 42, planner=planner)
        await sched.run_once()
        return threading.current_thread()

    loop_thread = asyncio.run(run())
    assert len(planned_on) == 1 and planned_on[0][0] is not loop_thread and planned_on[0][1]
    [(cmd, term)] = proposed
    assert term == 7 and isinstance(cmd, state.Schedule)
    assert [(t.slot, t.node_id, t.status_ts) for t in cmd.create] == [(1, "w1", 42), (2, "w1", 42)]


def test_a_follower_plans_nothing() -> None:
    calls: list[int] = []

    async def propose(cmd: state.Command, term: int) -> object:
        calls.append(term)
        return None

    def planner(v: state.StateView, now: int) -> state.Schedule:
        calls.append(0)
        return state.Schedule()

    asyncio.run(Scheduler(Store().view, lambda: None, propose, planner=planner).run_once())
    assert calls == []
