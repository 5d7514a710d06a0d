"""Services → tasks → nodes, on the leader only (DESIGN §3).

The plan is a pure function of the replicated state; the leader proposes it as one
``schedule`` command, so every manager sees the same decisions. Replicated services
spread their slots over Ready+Active workers (fewest tasks first); global services
get one task per such worker. Tasks on a node that is down, drained or removed are
shut down and their slots placed elsewhere; a paused node keeps what it runs but
gets nothing new. A task whose command exits is restarted by its worker with
backoff, not rescheduled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from swarmsecrets import errors, ids
from swarmsecrets.manager.store import TERMINAL_STATES

log = logging.getLogger(__name__)

# Finished tasks kept per service for `service ps` history.
TASK_HISTORY = 5
INTERVAL = 1.0
COALESCE = 0.02


def eligible(node: dict[str, Any]) -> bool:
    return node["role"] == "worker" and node.get("status") == "ready" and node.get("availability", "active") == "active"


def keeps_tasks(node: dict[str, Any] | None) -> bool:
    """A node whose running tasks stay where they are (ready, and active or paused)."""
    return (node is not None and node.get("status") == "ready"
            and node.get("availability", "active") in ("active", "pause"))


def plan(state: dict[str, Any], now_ns: int) -> dict[str, list[Any]]:
    nodes: dict[str, dict[str, Any]] = state["nodes"]
    tasks: dict[str, dict[str, Any]] = state["tasks"]
    ready = sorted(nid for nid, n in nodes.items() if eligible(n))
    load = Counter(t["node_id"] for t in tasks.values() if t["desired_state"] == "running")
    create: list[dict[str, Any]] = []
    update: list[dict[str, Any]] = []

    def shutdown(task: dict[str, Any]) -> None:
        if task["state"] in TERMINAL_STATES:
            new_state = task["state"]
        else:
            node = nodes.get(task["node_id"])
            # A live node stops the task itself; a down or vanished one cannot tell us.
            new_state = "shutdown" if node is not None and node.get("status") == "ready" else "orphaned"
        update.append({"id": task["id"], "changes": {"desired_state": "shutdown", "state": new_state}})
        load[task["node_id"]] -= 1

    def place(svc: dict[str, Any], slot: int, node_id: str) -> None:
        create.append({"id": ids.new_id(), "service_id": svc["id"], "service_name": svc["name"], "slot": slot,
                       "node_id": node_id, "desired_state": "running", "state": "assigned", "message": "",
                       "err": "", "exit_code": 0, "status_ts": now_ns, "spec_version": svc["spec_version"]})
        load[node_id] += 1

    for svc in sorted(state["services"].values(), key=lambda s: s["id"]):
        running = [t for t in tasks.values() if t["service_id"] == svc["id"] and t["desired_state"] == "running"]
        if svc["mode"] == "global":
            covered = set()
            for t in running:
                if keeps_tasks(nodes.get(t["node_id"])) and t["node_id"] not in covered:
                    covered.add(t["node_id"])
                else:
                    shutdown(t)
            for nid in ready:
                if nid not in covered:
                    place(svc, 0, nid)
            continue
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for t in running:
            by_slot.setdefault(t["slot"], []).append(t)
        for slot in range(1, int(svc["replicas"]) + 1):
            keep = None
            for t in sorted(by_slot.pop(slot, []), key=lambda t: t["created_at"]):
                if keep is None and keeps_tasks(nodes.get(t["node_id"])):
                    keep = t
                else:
                    shutdown(t)
            if keep is None and ready:
                place(svc, slot, min(ready, key=lambda nid: (load[nid], nid)))
        for extra in by_slot.values():  # slots above the replica count
            for t in extra:
                shutdown(t)

    # History: drop the oldest finished tasks beyond TASK_HISTORY per service.
    delete: list[str] = []
    finished: dict[str, list[dict[str, Any]]] = {}
    for t in tasks.values():
        if t["desired_state"] != "running":
            finished.setdefault(t["service_id"], []).append(t)
    for group in finished.values():
        group.sort(key=lambda t: t["updated_at"])
        delete += [t["id"] for t in group[:-TASK_HISTORY]]
    return {"create": create, "update": update, "delete": delete}


class Scheduler:
    """Runs on every manager; acts only while this manager leads."""

    def __init__(self, manager: Any) -> None:
        self.m = manager
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
            term = self.m.leader_term()
            if term is None:
                continue
            await asyncio.sleep(COALESCE)  # a burst of applies makes one plan
            try:
                with self.m.store.lock:
                    decision = plan(self.m.store.state, time.time_ns())
                if any(decision.values()):
                    await self.m.propose({"op": "schedule", "rid": ids.new_request_id(), **decision},
                                         leader_only=term)
            except errors.SwarmError as e:
                log.info("scheduling deferred: %s", e)
            except Exception:
                log.exception("scheduler pass failed")
