"""Reads on the leader through a read index: no log entry, and never a stale answer.

``RAFT_STOCK=read_index pytest tests/raft/test_read_index.py`` takes every read through a no-op
entry again: the first test then fails (each read appends to the log); the others still pass,
since the no-op entry is safe too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from swarmsecrets.raft import readindex, wire
from swarmsecrets.raft.errors import RaftError
from swarmsecrets.raft.node import RaftNode, RaftTiming
from tests.framework import wait_until
from tests.raft.conftest import Cluster
from tests.raft.test_prevote import started_with_links

Factory = Callable[..., Cluster]


def _echoing(leader: RaftNode, timeout: float = 20.0) -> None:
    """Wait until every follower has echoed a read number to ``leader`` in its term (the first
    read of a term takes a no-op entry: nobody has echoed yet)."""
    so = leader._sync
    assert so is not None
    leader.read_barrier(5.0)
    if not readindex.READ_INDEX:
        return  # every read takes a no-op entry
    wait_until(lambda: len(leader.call_in_loop(lambda: dict(so._echoed)).result(5.0)) == len(so.otherNodes),
               timeout, 0.02, "every follower to echo a read number")


def test_reads_on_the_leader_append_nothing_to_the_log(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start()
    leader = c.leader()
    leader.propose({"op": "set", "k": "a", "v": 1}, 5.0)
    _echoing(leader)
    before = leader.status().commit_index
    for _ in range(20):
        leader.read_barrier(5.0)
        assert c.machines[leader.self_addr].copy()["a"] == 1
    after = leader.status()
    assert after.is_leader and after.commit_index == before, \
        f"reads appended {after.commit_index - before} entries to the log"
    # A follower's read still goes through the leader's log (a no-op entry).
    c.followers()[0].read_barrier(5.0)
    assert leader.status().commit_index > before


def test_a_leader_cut_off_from_the_others_answers_no_read(cluster_factory: Factory) -> None:
    """The others elect a new leader and acknowledge a write; the old leader, which does not
    know yet (its check-quorum timer is set far off), must not answer a read from its state."""
    c = cluster_factory(timing=RaftTiming(heartbeat=0.05, election_min=0.6, election_max=1.2,
                                          leader_fallback=60.0))
    links, old = started_with_links(c)
    _echoing(old)
    links.isolate(old.self_addr, c.addrs)
    others = [a for a in c.addrs if a != old.self_addr]
    new = c.leader(among=others)
    new.propose({"op": "set", "k": "k", "v": "after"}, 5.0)  # acknowledged
    assert old.status().is_leader, "the old leader stepped down: the read below would prove nothing"
    try:
        old.read_barrier(2.0)
    except RaftError:
        pass  # refused or timed out: the right answers
    else:
        assert c.machines[old.self_addr].copy().get("k") == "after", "a stale read was answered"
    links.heal()
    assert c.converge()["k"] == "after"


def test_members_of_an_earlier_release_never_see_read_index_fields(cluster_factory: Factory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Until every member reads them (``read_index_ready``), no message carries them: members of
    an earlier release refuse a peer that sends fields they do not know. Reads still work."""
    refused: list[dict[str, Any]] = []
    valid = wire.valid_message

    def earlier_release(message: Any) -> bool:
        if isinstance(message, dict) and ({"rs", "rt"} & message.keys()):
            refused.append(message)
            return False
        return valid(message)

    monkeypatch.setattr(wire, "valid_message", earlier_release)
    c = cluster_factory(read_index_ready=lambda: False)
    c.start()
    leader = c.leader()
    leader.propose({"op": "set", "k": "a", "v": 1}, 5.0)
    before = leader.status().commit_index
    for _ in range(5):
        leader.read_barrier(5.0)
    leader.propose({"op": "set", "k": "a", "v": 2}, 5.0)
    assert leader.status().commit_index > before + 1  # reads took no-op entries
    assert refused == [] and all(n._sync is not None and n._sync.transport.rejected == 0 for n in c.nodes.values())
    assert c.converge()["a"] == 2
