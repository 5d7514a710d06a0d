"""Offline recovery of raft data: ``force_new_cluster`` turns a member whose group lost its quorum
into a group of one that keeps every entry it held; ``seed`` starts a group of one from a state."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from swarmsecrets.raft import NoLeader, RaftNode, RaftTuning, UnknownOutcome, force_new_cluster, seed
from swarmsecrets.raft.journal import DurableJournal
from tests.raft.conftest import Cluster
from tests.raft.raft_harness import free_ports

Factory = Callable[..., Cluster]


def _write(c: Cluster, n: int, prefix: str = "k") -> None:
    leader = c.leader()
    for i in range(n):
        leader.propose({"op": "set", "k": f"{prefix}{i}", "v": i}, 10.0)


def _members_on_disk(c: Cluster, addr: str) -> list[str] | None:
    d = c.root / addr.replace(":", "_")
    j = DurableJournal(str(d / "raft.journal"), str(d / "raft.meta"))
    try:
        return j.get_members()
    finally:
        j._destroy()


def _survivor_after_quorum_loss(c: Cluster, writes: int) -> tuple[str, dict[str, int]]:
    c.start()
    _write(c, writes)
    survivor = c.followers()[0].self_addr
    want = c.converge()
    c.stop()
    return survivor, want


@pytest.mark.parametrize("snapshot_entries", [10_000, 20], ids=["journal", "snapshot"])
def test_force_new_cluster_keeps_every_entry_and_leaves_one_member(cluster_factory: Factory,
                                                                  snapshot_entries: int) -> None:
    c = cluster_factory(3, tuning=RaftTuning(snapshot_entries=snapshot_entries, snapshot_interval=0.5))
    survivor, want = _survivor_after_quorum_loss(c, 60)

    # The probe can fail: alone, with its old membership, the survivor elects nobody.
    c.start(survivor)
    alone = c.nodes[survivor]
    time.sleep(3 * c.timing.election_max)
    assert not alone.status().is_leader
    with pytest.raises((NoLeader, UnknownOutcome)):
        alone.propose({"op": "set", "k": "x", "v": 0}, 1.0)
    c.stop(survivor)

    removed = force_new_cluster(str(c.root / survivor.replace(":", "_")), survivor)
    assert sorted(removed) == sorted(a for a in c.addrs if a != survivor)
    assert _members_on_disk(c, survivor) == [survivor]

    c.start(survivor)
    leader = c.leader()
    assert leader.self_addr == survivor
    assert leader.status().members == [survivor]
    leader.propose({"op": "set", "k": "after", "v": 1}, 10.0)
    assert c.machines[survivor].copy() == {**want, "after": 1}

    # Restarted, it is still a group of one with the same state.
    c.stop(survivor)
    c.start(survivor)
    assert c.leader().status().members == [survivor]
    assert c.machines[survivor].copy() == {**want, "after": 1}


def test_a_new_member_joins_the_forced_group_and_never_counts_the_removed_ones(cluster_factory: Factory) -> None:
    c = cluster_factory(3)
    survivor, want = _survivor_after_quorum_loss(c, 30)
    force_new_cluster(str(c.root / survivor.replace(":", "_")), survivor)
    c.start(survivor)
    leader = c.leader()

    fresh = f"127.0.0.1:{free_ports(1)[0]}"
    c.tls[fresh] = c.pki.tls(fresh)
    c.node(fresh, members=[survivor, fresh]).start()  # as a joining manager: raft first, then the add
    leader.add_member(fresh, 10.0)
    _write(c, 5, prefix="n")
    state = c.converge()
    assert state == {**want, **{f"n{i}": i for i in range(5)}}
    assert c.nodes[fresh].status().members == sorted([survivor, fresh])
    assert _members_on_disk(c, survivor) == sorted([survivor, fresh])


def test_force_new_cluster_may_move_the_member_to_a_new_address(cluster_factory: Factory) -> None:
    c = cluster_factory(3)
    survivor, want = _survivor_after_quorum_loss(c, 10)
    moved = f"127.0.0.1:{free_ports(1)[0]}"
    data_dir = c.root / survivor.replace(":", "_")
    removed = force_new_cluster(str(data_dir), moved)
    assert survivor in removed
    c.tls[moved] = c.pki.tls(moved)
    c.machines[moved] = c.make_machine()
    n = RaftNode(self_addr=moved, members=[moved], data_dir=str(data_dir), tls=c.tls[moved],
                 state_machine=c.machines[moved], timing=c.timing)
    c.nodes[moved] = n
    n.start()
    assert c.leader().status().members == [moved]
    assert c.machines[moved].copy() == want


def test_seed_starts_a_group_of_one_from_a_state(cluster_factory: Factory) -> None:
    c = cluster_factory(1)
    addr = c.addrs[0]
    data_dir = str(c.root / addr.replace(":", "_"))
    seed(data_dir, addr, {"data": {"a": 1, "b": 2}}, 500)
    with pytest.raises(FileExistsError):
        seed(data_dir, addr, {"data": {}}, 500)
    c.start()
    leader = c.leader()
    assert c.machines[addr].copy() == {"a": 1, "b": 2}
    assert leader.propose({"op": "set", "k": "c", "v": 3}, 10.0) > 500
    assert leader.status().members == [addr]
