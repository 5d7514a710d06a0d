"""The fault schedule and its injection: each fault is applied, held for its window, then healed.

Faults: ``kill`` (SIGKILL a manager, often the leader, restart it after the
window), ``pause`` (SIGSTOP/SIGCONT the leader), ``partition`` (random majority/minority split of the
managers), ``partition-leader`` (the leader cut from every other manager), ``loss`` (10 % of what a
follower sends, nft numgen), ``delay`` (what a follower receives, 100 ± 20 ms through NFQUEUE),
``worker-partition`` (a worker cut from every manager). ``loss+delay`` applies both to one follower.
Partitions cut managers only; workers keep their links unless they are the target.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.chaoskit.lab import Lab
from tests.chaoskit.swarm import Swarm
from tests.framework import Node
from tests.chaoskit.workload import History, LeaderMonitor

FAULTS = ("kill", "pause", "partition", "partition-leader", "loss", "delay", "worker-partition")
DEFAULT_FAULTS = ("kill", "pause", "partition", "partition-leader", "loss", "delay")
LOSS_PERCENT = 10.0
DELAY_MS, JITTER_MS = 100.0, 20.0
KILL_LEADER_ODDS = 0.7


@dataclass(frozen=True)
class FaultSpec:
    """``kind`` at ``at`` s after the workload starts, held ``duration`` s. ``target``: a member name,
    "leader" or "follower" (resolved when it fires), or None: chosen by kind (the leader for pause and
    partition-leader, usually the leader for kill, a follower for loss and delay, a random worker)."""

    kind: str
    at: float
    duration: float
    target: str | None = None

    def __post_init__(self) -> None:
        for part in self.kind.split("+"):
            if part not in FAULTS:
                raise ValueError(f"unknown fault {part!r}; known: {', '.join(FAULTS)}")
        if "+" in self.kind and not set(self.kind.split("+")) <= {"loss", "delay"}:
            raise ValueError("only loss and delay combine (on one follower)")


def random_schedule(kinds: Sequence[str], duration: float, rng: random.Random,
                    window: tuple[float, float] = (2.5, 5.0), calm: tuple[float, float] = (2.0, 4.0),
                    lead_in: float = 2.0) -> list[FaultSpec]:
    """Faults one after another, each followed by a calm spell, all healed before ``duration``."""
    out: list[FaultSpec] = []
    t = lead_in
    for _ in range(10_000):
        d = rng.uniform(*window)
        if not kinds or t + d > duration:
            break
        kind = rng.choice(list(kinds))
        if kind == "worker-partition":
            d = max(d, 4.5)  # longer than the worker heartbeat grace (3 missed 1 s heartbeats)
            if t + d > duration:
                break
        out.append(FaultSpec(kind, round(t, 2), round(d, 2)))
        t += d + rng.uniform(*calm)
    return out


class Nemesis:
    """Runs a schedule in its own thread; ``heal_all`` puts everything back (also after an interruption)."""

    def __init__(self, lab: Lab, swarm: Swarm, history: History, monitor: LeaderMonitor,
                 schedule: Sequence[FaultSpec], rng: random.Random, stop: threading.Event) -> None:
        self.lab, self.swarm, self.history, self.monitor = lab, swarm, history, monitor
        self.schedule = sorted(schedule, key=lambda f: f.at)
        self.rng = rng
        self.stop = stop
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    # --- targets ----------------------------------------------------------------------------------

    def leader(self) -> Node | None:
        return self.monitor.current() or self.swarm.current_leader()

    def pick(self, spec: FaultSpec) -> Node:
        if spec.target not in (None, "leader", "follower"):
            return self.swarm.member(spec.target)
        if spec.kind == "worker-partition":
            return self.rng.choice(self.swarm.workers)
        managers = [m for m in self.swarm.managers if m.running]
        leader = self.leader()
        wants_leader = spec.target == "leader" or (spec.target is None and (
            spec.kind in ("pause", "partition-leader")
            or (spec.kind == "kill" and self.rng.random() < KILL_LEADER_ODDS)))
        if wants_leader:
            return leader or self.rng.choice(managers)
        if spec.kind == "kill" and spec.target is None:
            return self.rng.choice(managers)
        return self.rng.choice([m for m in managers if m is not leader] or managers)

    # --- one fault ----------------------------------------------------------------------------------

    def run(self, t_start: float) -> None:
        try:
            for spec in self.schedule:
                if self.stop.wait(max(0.0, t_start + spec.at - self.history.now())):
                    return
                self.one(spec)
        except BaseException as e:  # reported by the runner; the lab is healed and torn down anyway
            self.error = e

    def one(self, spec: FaultSpec) -> None:
        target = self.pick(spec)
        hosts = {m.name: m.host for m in self.swarm.members}
        others = [m for m in self.swarm.managers if m is not target]
        rec: dict[str, Any] = {"kind": "fault", "fault": spec.kind, "nodes": [target.name]}
        t0 = self.history.now()
        with self._lock:
            if spec.kind == "kill":
                target.kill()
            elif spec.kind == "pause":
                target.pause()
            elif spec.kind == "partition":
                managers = self.swarm.managers[:]
                self.rng.shuffle(managers)
                minority = managers[: self.rng.randint(1, (len(managers) - 1) // 2)]
                majority = [m for m in managers if m not in minority]
                self.lab.partition([[m.host for m in minority], [m.host for m in majority]])
                rec.update(nodes=sorted(m.name for m in minority), cut=sorted(m.name for m in minority),
                           detail=f"{'+'.join(sorted(m.name for m in minority))} cut from "
                                  f"{'+'.join(sorted(m.name for m in majority))}")
            elif spec.kind == "partition-leader":
                self.lab.isolate(target.host, [m.host for m in others])
                rec.update(cut=[target.name], detail=f"{target.name} cut from {'+'.join(m.name for m in others)}")
            elif spec.kind == "worker-partition":
                self.lab.isolate(target.host, [m.host for m in self.swarm.managers])
                rec.update(detail=f"{target.name} cut from every manager")
            else:
                parts = spec.kind.split("+")
                if "loss" in parts:
                    self.lab.loss(target.host, LOSS_PERCENT)
                if "delay" in parts:
                    self.lab.delay(target.host, DELAY_MS, JITTER_MS)
                rec.update(detail=", ".join(
                    ([f"{LOSS_PERCENT:g}% loss out"] if "loss" in parts else [])
                    + ([f"{DELAY_MS:g}±{JITTER_MS:g} ms delay in"] if "delay" in parts else [])))
        rec["start"] = self.history.now()
        self.stop.wait(spec.duration)
        rec["heal_start"] = self.history.now()
        with self._lock:
            if spec.kind == "kill":
                target.start()
            elif spec.kind == "pause":
                target.resume()
            elif spec.kind in ("partition", "partition-leader", "worker-partition"):
                self.lab.heal([hosts[m.name] for m in self.swarm.members])
            else:
                self.lab.heal([target.host])
                self.lab.clear_delay(target.host)
        rec.update(invoked=t0, end=self.history.now())
        self.history.record(rec)

    def heal_all(self) -> None:
        """Every network fault lifted, every paused daemon resumed, every killed one restarted."""
        with self._lock:
            self.lab.clear_delays()
            self.lab.heal(list(self.lab.all_hosts()))
            for m in self.swarm.members:
                if m.paused:
                    m.resume()
                if not m.running:
                    m.start()
