"""The scheduler's plan: a pure function of the state."""

from __future__ import annotations

from typing import Any

from swarmsecrets.manager.scheduler import TASK_HISTORY, plan


def state(nodes: dict[str, dict[str, Any]], services: list[dict[str, Any]],
          tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"nodes": nodes, "services": {s["id"]: s for s in services},
            "tasks": {t["id"]: t for t in tasks or []}}


def worker(status: str = "ready", availability: str = "active") -> dict[str, Any]:
    return {"role": "worker", "status": status, "availability": availability}


def svc(sid: str, mode: str = "replicated", replicas: int = 1) -> dict[str, Any]:
    return {"id": sid, "name": sid, "mode": mode, "replicas": replicas, "spec_version": 1}


def task(tid: str, node: str, slot: int = 1, service: str = "s", **kw: Any) -> dict[str, Any]:
    return {"id": tid, "service_id": service, "service_name": service, "slot": slot, "node_id": node,
            "desired_state": "running", "state": "running", "created_at": 1, "updated_at": 1, **kw}


def test_replicas_spread_over_ready_active_workers() -> None:
    st = state({"a": worker(), "b": worker(), "c": worker("down"), "d": worker(availability="drain"),
                "m": {"role": "manager", "status": "ready"}}, [svc("s", replicas=4)])
    p = plan(st, 0)
    assert sorted(t["node_id"] for t in p["create"]) == ["a", "a", "b", "b"]
    assert sorted(t["slot"] for t in p["create"]) == [1, 2, 3, 4]


def test_global_places_one_task_per_eligible_worker() -> None:
    st = state({"a": worker(), "b": worker(), "c": worker(availability="pause")}, [svc("s", "global")],
               [task("t1", "a", 0)])
    p = plan(st, 0)
    assert [t["node_id"] for t in p["create"]] == ["b"]
    assert p["update"] == []


def test_tasks_of_down_and_drained_nodes_move_paused_ones_stay() -> None:
    st = state({"a": worker("down"), "b": worker(availability="drain"), "c": worker(availability="pause"),
                "d": worker()}, [svc("s", replicas=3)],
               [task("t1", "a", 1), task("t2", "b", 2), task("t3", "c", 3)])
    p = plan(st, 0)
    changed = {u["id"]: u["changes"] for u in p["update"]}
    assert changed == {"t1": {"desired_state": "shutdown", "state": "orphaned"},
                       "t2": {"desired_state": "shutdown", "state": "shutdown"}}
    assert sorted((t["slot"], t["node_id"]) for t in p["create"]) == [(1, "d"), (2, "d")]


def test_scaling_down_and_history_is_bounded() -> None:
    old = [task(f"old{i}", "a", 1, desired_state="shutdown", state="shutdown", updated_at=i) for i in range(8)]
    st = state({"a": worker()}, [svc("s", replicas=1)], [task("t1", "a", 1), task("t2", "a", 2)] + old)
    p = plan(st, 0)
    assert [u["id"] for u in p["update"]] == ["t2"]
    assert sorted(p["delete"]) == sorted(f"old{i}" for i in range(8 - TASK_HISTORY))
    assert p["create"] == []
