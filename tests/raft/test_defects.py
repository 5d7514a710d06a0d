"""pysyncobj 0.3.17 log-handling defects (truncation on re-sent batches, nextIndex moving back,
compaction past the end of the log), driven through SyncObj's own
handlers on the raft thread."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import FAIL_REASON

from swarmsecrets.raft import wire
from swarmsecrets.raft.journal import DurableJournal
from swarmsecrets.raft.node import RaftNode, _RaftSyncObj
from tests.raft.conftest import Cluster

Factory = Callable[..., Cluster]
LEADER, FOLLOWER = 2, 0  # pysyncobj's _RAFT_STATE


def cmd(k: str) -> bytes:
    return b"\x00" + wire.dumps({"op": "set", "k": k, "v": 1})


def ae(term: int, prev: int, prev_term: int, entries: list[tuple[bytes, int, int]],
       commit: int) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": commit, "prevLogIdx": prev,
            "prevLogTerm": prev_term, "entries": entries}


def lone_follower(c: Cluster) -> tuple[RaftNode, _RaftSyncObj, Any]:
    """Start only the first member: it never campaigns (it reaches nobody) and takes our messages."""
    node_addr = min(c.addrs)
    c.start(node_addr)
    node = c.nodes[node_addr]
    so = node._sync
    assert isinstance(so, _RaftSyncObj)
    return node, so, next(iter(so.otherNodes))


def test_follower_truncates_only_on_a_real_conflict(cluster_factory: Factory) -> None:
    """Stock deletes everything after prevLogIdx when a batch is re-sent, applied entries
    included, and re-appends only what the batch carried."""
    c = cluster_factory(2)
    node, so, leader = lone_follower(c)
    batch = [(cmd(f"k{i}"), i, 1) for i in range(2, 11)]

    def deliver(message: dict[str, Any]) -> list[tuple[int, int]]:
        def run() -> list[tuple[int, int]]:
            so._SyncObj__onMessageReceived(leader, message)
            return [(e[1], e[2]) for e in so._journal]
        return node.call_in_loop(run).result(5)

    assert deliver(ae(1, 1, 0, batch, commit=5)) == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    deadline = time.monotonic() + 30
    while node.status().last_applied < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.status().last_applied == 5
    # the leader sends entries 4..6 again (nextIndex went back): nothing may be truncated
    assert deliver(ae(1, 3, 1, batch[2:5], commit=5)) == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    # a real conflict from a new leader at index 8: truncated from there, and only from there
    log_ = deliver(ae(2, 7, 1, [(cmd("n8"), 8, 2), (cmd("n9"), 9, 2)], commit=5))
    assert log_ == [(1, 0)] + [(i, 1) for i in range(2, 8)] + [(8, 2), (9, 2)]


def test_follower_does_not_answer_a_message_that_only_commits(cluster_factory: Factory) -> None:
    """Stock answers the AppendEntries a leader sends after each commit, though the answer tells it
    nothing new: two replies and two passes of the leader's loop per write."""
    c = cluster_factory(2)
    node, so, leader = lone_follower(c)

    def answers(message: dict[str, Any]) -> list[tuple[int, bool]]:
        def run() -> list[tuple[int, bool]]:
            held = len(so._acks)
            so._SyncObj__onMessageReceived(leader, message)
            return [(next_idx, success) for _, _, next_idx, success in so._acks[held:]]
        return node.call_in_loop(run).result(5)

    batch = [(cmd(f"k{i}"), i, 1) for i in range(2, 6)]
    assert answers(ae(1, 1, 0, batch, commit=1)) == [(6, True)]  # entries: answered
    assert answers(ae(1, 5, 1, [], commit=3)) == []               # only commits: not answered
    assert answers(ae(1, 5, 1, [], commit=3)) == [(6, True)]      # a heartbeat: answered
    assert answers(ae(1, 7, 1, [], commit=4)) == [(6, False)]     # not this log's end: refused
    assert answers(ae(2, 5, 1, [], commit=4)) == [(6, True)]      # a new term: answered


def test_leader_never_moves_next_index_back(cluster_factory: Factory) -> None:
    """Stock: a success reply for an earlier batch pulled nextIndex back below batches in flight."""
    c = cluster_factory(2)
    node, so, follower = lone_follower(c)

    def scenario() -> tuple[int, int]:
        so._SyncObj__raftState = LEADER
        try:
            so._SyncObj__raftNextIndex[follower] = 20  # batches up to 19 sent
            so._SyncObj__raftMatchIndex[follower] = 10
            so._SyncObj__lastResponseTime[follower] = time.monotonic()
            so._SyncObj__onMessageReceived(follower, {"type": "next_node_idx", "next_node_idx": 15,
                                                      "reset": False, "success": True})
            return so._SyncObj__raftNextIndex[follower], so._SyncObj__raftMatchIndex[follower]
        finally:
            so._SyncObj__raftState = FOLLOWER

    assert node.call_in_loop(scenario).result(5) == (20, 14)


def test_compaction_never_empties_the_log(cluster_factory: Factory) -> None:
    """Stock: a compaction finishing after a truncation deleted past the end of the log; every tick
    then raised IndexError."""
    c = cluster_factory(1)
    c.start()
    node = c.leader()
    for i in range(10):
        node.propose({"op": "set", "k": f"k{i}", "v": i}, 5.0)
    so = node._sync
    assert isinstance(so, _RaftSyncObj)

    def race() -> tuple[int, int]:
        j = so._journal
        first = j[0][1]
        so._snapshots.pair = (j[8 - first], j[9 - first])  # a snapshot at entry 9 completed...
        j.deleteEntriesFrom(6 - first)                       # ...after a truncation to entry 5
        so._SyncObj__deleteEntriesTo(8)
        return so._SyncObj__getCurrentLogIndex(), len(j)

    assert node.call_in_loop(race).result(5) == (5, 5)
    c.stop()


@pytest.mark.slow
def test_pipelined_load_never_truncates_the_log(cluster_factory: Factory,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-sent batches, end to end: with one leader throughout there is no conflict, so no follower
    may truncate anything, however many batches are in flight (stock: nextIndex regressions
    re-send batches and every re-send truncates; 14-136 truncations of applied entries per 10 s
    burst). A burst during which the leader changed proves nothing either way (conflicts were
    possible): a loaded machine can cause that, so such a burst is run again on a fresh cluster."""
    truncations: list[int] = []
    real = DurableJournal.deleteEntriesFrom

    def counting(self: DurableJournal, entryFrom: int) -> None:
        if entryFrom < len(self):
            truncations.append(self[entryFrom][1])
        real(self, entryFrom)

    monkeypatch.setattr(DurableJournal, "deleteEntriesFrom", counting)
    for _attempt in range(3):
        truncations.clear()
        c = cluster_factory()
        c.start()
        term = c.leader().status().term
        nodes = list(c.nodes.values())
        stop = time.monotonic() + 3.0

        def writer(w: int, nodes: list[RaftNode] = nodes, stop: float = stop) -> None:
            i = 0
            while time.monotonic() < stop:
                futs = [nodes[(w + j) % 3].propose_async({"op": "set", "k": f"{w}-{i}-{j}", "v": j}, 5.0)
                        for j in range(32)]
                for f in futs:
                    f.exception(6)
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c.converge()
        stable = {n.status().term for n in nodes} == {term}
        c.stop()
        if stable:
            break
    else:
        raise AssertionError("the leader changed in each of 3 bursts: the machine is too loaded to tell")
    assert not truncations, f"{len(truncations)} truncations without a conflict, at {truncations[:10]}"


def test_log_entries_cannot_smuggle_code(cluster_factory: Factory, tmp_path: Path) -> None:
    """Entries come from peers: a VERSION or membership entry is a pickle stock loads without
    restriction, and stock queues any command kind a follower forwards."""
    marker = tmp_path / "pwned"

    class Gadget:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    gadget = pickle.dumps(Gadget(), protocol=2)
    c = cluster_factory(2)
    node, so, leader = lone_follower(c)
    refused: list[int] = []
    node.call_in_loop(lambda: so._applyCommand(gadget, lambda _r, err: refused.append(err), 3)).result(5)
    assert refused == [FAIL_REASON.REQUEST_DENIED]
    entries = [(b"\x03" + gadget, 2, 1), (b"\x02" + gadget, 3, 1), (cmd("after"), 4, 1)]
    message = ae(1, 1, 0, entries, commit=4)
    node.call_in_loop(lambda: so._SyncObj__onMessageReceived(leader, message)).result(5)
    deadline = time.monotonic() + 30
    while node.status().last_applied < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.status().last_applied == 4
    assert c.machines[node.self_addr].copy() == {"after": 1}
    assert not marker.exists()
