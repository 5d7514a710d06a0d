"""When a leader tells its followers of a new commit index: at once when one of them waits for it
(a command it forwarded), before applying the entries itself, else with the next AppendEntries, so
a write on the leader costs one AppendEntries per follower, not two."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.raft.conftest import Cluster
from tests.raft.raft_harness import DictMachine


def _quiet_heartbeats(c: Cluster) -> None:
    """From the next AppendEntries on, only writes send any (and nobody stands for election)."""
    for n in c.nodes.values():
        conf = n._sync.conf  # type: ignore[union-attr]
        conf.raftMinTimeout, conf.raftMaxTimeout = 3600.0, 7200.0
        conf.leaderFallbackTimeout = 3600.0
        conf.appendEntriesPeriod = 3600.0


def test_writes_on_the_leader_send_one_append_entries_each(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3)
    c.start()
    leader = c.leader()
    _quiet_heartbeats(c)
    leader.propose({"op": "set", "k": "warm", "v": 0}, timeout=30.0)  # sent under the quiet timers
    so = leader._sync
    assert so is not None
    sent: Counter[str] = Counter()
    send = so.transport.send

    def counting_send(node: Any, message: Any) -> Any:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            sent[node.address] += 1
        return send(node, message)

    so.transport.send = counting_send  # type: ignore[method-assign]
    for i in range(10):
        leader.propose({"op": "set", "k": f"k{i}", "v": i}, timeout=30.0)
    assert sorted(sent.values()) == [10, 10]


def test_a_follower_s_write_is_applied_there_without_waiting_for_a_heartbeat(
        cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3)
    c.start()
    leader = c.leader()
    _quiet_heartbeats(c)
    leader.propose({"op": "set", "k": "warm", "v": 0}, timeout=30.0)
    follower = c.followers()[0]
    for i in range(5):
        # The follower answers once it has applied the entry: it must learn the commit at once.
        follower.propose({"op": "set", "k": f"f{i}", "v": i}, timeout=10.0)
        follower.read_barrier(timeout=10.0)
    assert c.machines[follower.self_addr].copy()["f4"] == 4


class _Gate:
    def __init__(self) -> None:
        self.leader = ""
        self.applied_elsewhere = threading.Event()
        self.seen: list[bool] = []


class _GatedMachine(DictMachine):
    """Applying key 'gate' on the leader waits (at most 10 s) until another member has applied it."""

    def __init__(self, gate: _Gate) -> None:
        super().__init__()
        self.gate = gate
        self.addr = ""

    def apply(self, command: dict[str, Any], index: int) -> Any:
        if command.get("k") == "gate":
            if self.addr == self.gate.leader:
                self.gate.seen.append(self.gate.applied_elsewhere.wait(10.0))
            else:
                self.gate.applied_elsewhere.set()
        return super().apply(command, index)


def test_a_follower_learns_the_commit_of_its_write_before_the_leader_applies_it(
        cluster_factory: Callable[..., Cluster]) -> None:
    gate = _Gate()
    c = cluster_factory(3, machine=lambda: _GatedMachine(gate))
    c.start()
    for addr, machine in c.machines.items():
        machine.addr = addr  # type: ignore[attr-defined]
    leader = c.leader()
    gate.leader = leader.self_addr
    _quiet_heartbeats(c)  # nobody stands for election while the leader's apply waits
    leader.propose({"op": "set", "k": "warm", "v": 0}, timeout=30.0)
    c.followers()[0].propose({"op": "set", "k": "gate", "v": 1}, timeout=30.0)
    c.converge()
    assert gate.seen == [True]
