"""Snapshots: taken off the raft thread, installed on lagging followers, reloaded on restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from swarmsecrets.raft.node import RaftNode, RaftTuning, _RaftSyncObj
from tests.raft.conftest import Cluster
from tests.raft.raft_harness import DictMachine

Factory = Callable[..., Cluster]


def sync_of(node: RaftNode) -> _RaftSyncObj:
    assert isinstance(node._sync, _RaftSyncObj)
    return node._sync


def write_many(nodes: list[RaftNode], n: int, prefix: str, inflight: int = 64) -> None:
    pending: list[Future[Any]] = []
    for i in range(n):
        node = nodes[i % len(nodes)]
        pending.append(node.propose_async({"op": "set", "k": f"{prefix}{i}", "v": i}, 10.0))
        if len(pending) >= inflight:
            pending.pop(0).result(15)
    for f in pending:
        f.result(15)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_snapshot_does_not_stall_heartbeats(cluster_factory: Factory) -> None:
    """A snapshot whose serialisation takes 3 s runs in a forked child: the raft loop keeps
    beating, so the leader keeps its term and writes keep flowing (inline, every write waited
    for the snapshot and the leader lost the lead)."""
    delay = 3.0  # longer than an election timeout: stalling the loop this long costs the lead
    c = cluster_factory(tuning=RaftTuning(snapshot_entries=20, snapshot_interval=1.0),
                        machine=lambda: DictMachine(snapshot_delay=delay))
    c.start()
    leader = c.leader()
    term = leader.status().term
    lsync = sync_of(leader)
    worst = 0.0
    deadline = time.monotonic() + 60
    i = 0
    while lsync._snapshots.pair is None:  # write on until the leader's own snapshot is done
        assert time.monotonic() < deadline, "the leader took no snapshot"
        t = time.monotonic()
        leader.propose({"op": "set", "k": f"k{i}", "v": i}, 2 * delay)
        worst = max(worst, time.monotonic() - t)
        i += 1
    assert leader.status().is_leader and leader.status().term == term
    assert worst < delay, f"a write took {worst:.2f}s: it waited for the snapshot"


@pytest.mark.slow
def test_lagging_follower_catches_up_through_a_snapshot(cluster_factory: Factory) -> None:
    """A manager that was down while thousands of writes happened (and the log was compacted
    past its last entry) is brought up to date by a snapshot transfer."""
    c = cluster_factory(tuning=RaftTuning(snapshot_entries=500, snapshot_interval=2.0))
    c.start()
    leader = c.leader()
    write_many([leader], 100, "a")
    victim = c.followers()[0].self_addr
    c.converge()
    c.stop(victim)
    survivors = list(c.nodes.values())
    write_many(survivors, 3000, "b")
    lsync = sync_of(leader)
    wait_for(lambda: leader.call_in_loop(lambda: lsync._journal[0][1]).result(5) > 200, 10,
             "the leader to compact its log")
    term = leader.status().term
    c.make_machine = lambda: DictMachine(restore_delay=1.5)  # a large state takes a while to load
    c.start(victim)
    state = c.converge(timeout=20)
    assert len(state) == 3100
    assert leader.status().is_leader and leader.status().term == term, "the new member deposed the leader"
    vsync = sync_of(c.nodes[victim])
    assert vsync._snapshots.pair is not None and vsync._snapshots.pair[1][1] > 200, "no snapshot installed"


@pytest.mark.slow
def test_whole_cluster_restart_after_compaction_keeps_everything(cluster_factory: Factory) -> None:
    """Stock with a journal but no dump came back empty after a compaction and a restart."""
    c = cluster_factory(tuning=RaftTuning(snapshot_entries=200, snapshot_interval=1.0))
    c.start()
    leader = c.leader()
    write_many([leader], 1000, "k")
    wait_for(lambda: all(sync_of(n)._snapshots.pair is not None for n in c.nodes.values()), 10,
             "every member to snapshot")
    write_many([leader], 100, "late")
    before = c.converge()
    c.stop()
    c.start()
    c.leader()
    assert c.converge() == before
    assert len(before) == 1100


def test_crash_between_snapshot_and_compaction_loses_nothing(cluster_factory: Factory,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """pysyncobj replaces the whole journal with the snapshot's two entries when the journal does
    not start at the snapshot, which is the state a crash between the snapshot's rename and the
    journal's compaction leaves: every later entry was lost. We compact at start-up first."""
    monkeypatch.setattr(_RaftSyncObj, "_SyncObj__deleteEntriesTo", lambda self, idx: None)  # "crash"
    c = cluster_factory(1, tuning=RaftTuning(snapshot_entries=50, snapshot_interval=1.0))
    c.start()
    node = c.leader()
    write_many([node], 100, "a")
    wait_for(lambda: sync_of(node)._snapshots.pair is not None, 5, "a snapshot")
    write_many([node], 50, "b")
    expected = c.machines[node.self_addr].copy()
    c.stop()
    c.start()
    assert c.leader().wait_ready(5)
    assert c.converge() == expected


def test_compact_now_snapshots_every_member_outside_its_turn(cluster_factory: Factory) -> None:
    """With the default thresholds (10,000 entries, 600 s, members in turns) nothing would be
    snapshotted here for minutes; ``compact`` snapshots and compacts at once, on every member."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    write_many([leader], 50, "k")
    c.converge()
    last = leader.status().last_applied
    assert all(n.compacted_to() < last - 1 for n in c.nodes.values())
    for n in c.nodes.values():
        n.compact()
    wait_for(lambda: all(n.compacted_to() >= last - 1 for n in c.nodes.values()), 10, "every member compacted")


def test_a_log_past_the_entry_threshold_is_compacted_outside_the_members_turns(cluster_factory: Factory) -> None:
    """Turns pace snapshots by time (here one turn each per 600 s): stock waited for its turn
    even far past the entry threshold, the whole log held in memory and replayed at a restart."""
    c = cluster_factory(tuning=RaftTuning(snapshot_entries=40, snapshot_interval=600.0))
    c.start()
    leader = c.leader()
    write_many([leader], 150, "k")
    c.converge()
    wait_for(lambda: all(n.compacted_to() > 1 for n in c.nodes.values()), 10, "every member compacted")
