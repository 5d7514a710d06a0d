"""Pre-vote and leader stickiness: a member that rejoins after a partition or a restart cannot
depose a healthy leader, and failover still works.

``RAFT_STOCK=prevote pytest tests/raft/test_prevote.py`` restores stock elections
(prevote.PRE_VOTE = False): the rejoin and restart tests then fail. ``RAFT_STOCK=leader_loss``
restores stock's indifference to a closed connection to the leader: the two leader-loss tests
then fail (no survivor stands before its election timer, which they set far beyond their waits).
``RAFT_STOCK=early_retry`` restores stock's pace after a refused pre-vote (a whole new election
timeout): the test of a pre-vote refused only for hearing the leader later then fails.

No test here sleeps to let "nothing happen": each waits for the member under test to have run
its election timer out (its pre-vote rounds, or under stock elections its term) and for the
cluster to settle, while a Watch records every term change and candidacy, events that must not
occur.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pysyncobj.syncobj import _RAFT_STATE

from swarmsecrets.raft.node import RaftNode, RaftTiming
from tests.raft.conftest import STOCK, Cluster

Factory = Callable[..., Cluster]


class Links:
    """Drop raft messages between chosen members while their connections stay up (a partition
    that a connection check cannot see: SyncObj only holds elections while connected to someone)."""

    def __init__(self) -> None:
        self.cut: set[frozenset[str]] = set()

    def install(self, n: RaftNode) -> None:
        so = n._sync
        assert so is not None
        me = n.self_addr
        tr = so.transport
        send, deliver = tr.send, tr._onMessageReceivedCallback

        def send_filtered(node: Any, message: Any) -> Any:
            if frozenset((me, node.address)) in self.cut:
                return False
            return send(node, message)

        def deliver_filtered(node: Any, message: Any) -> None:
            if frozenset((me, node.address)) not in self.cut:
                deliver(node, message)

        tr.send = send_filtered
        tr._onMessageReceivedCallback = deliver_filtered

    def isolate(self, addr: str, others: list[str]) -> None:
        self.cut |= {frozenset((addr, o)) for o in others if o != addr}

    def heal(self) -> None:
        self.cut.clear()


class Watch:
    """Records every term a member persists and every candidacy, from installation on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    def install(self, n: RaftNode) -> None:
        so = n._sync
        assert so is not None
        addr = n.self_addr
        set_term, set_state = so._SyncObj__setCurrentTerm, so._SyncObj__setState

        def recording_set_term(term: int, voted_for: Any) -> None:
            with self.lock:
                self.events.append((addr, "term", term))
            set_term(term, voted_for)

        def recording_set_state(state: int) -> None:
            if state == _RAFT_STATE.CANDIDATE:
                with self.lock:
                    self.events.append((addr, "candidate", state))
            set_state(state)

        # SyncObj calls these through self, so instance attributes take precedence.
        so._SyncObj__setCurrentTerm = recording_set_term
        so._SyncObj__setState = recording_set_state

    def seen(self) -> list[tuple[str, str, Any]]:
        with self.lock:
            return list(self.events)


def _pre_votes(n: RaftNode) -> int:
    return n.status().pre_vote_rounds


def _timer_ran_out(n: RaftNode, rounds: int, term: int, timeout: float = 30.0) -> None:
    """Wait until ``n``'s election timer has run out ``rounds`` more times: with pre-vote it sent
    that many pre-vote rounds; with stock elections (RAFT_STOCK=prevote) its term rises instead."""
    start = _pre_votes(n)
    deadline = time.monotonic() + timeout
    while _pre_votes(n) - start < rounds and n.status().term == term:
        assert time.monotonic() < deadline, f"{n.self_addr} never ran out its election timer"
        time.sleep(0.02)


def _wait_caught_up(c: Cluster, addr: str, leader: RaftNode, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, lst = c.nodes[addr].status(), leader.status()
        assert lst.is_leader, f"{leader.self_addr} lost the leadership (now term {lst.term}, leader {lst.leader})"
        if st.leader == leader.self_addr and st.term == lst.term and st.last_applied >= lst.commit_index:
            return
        time.sleep(0.02)
    raise AssertionError(f"{addr} did not rejoin: {c.nodes[addr].status()} vs leader {leader.status()}")


def _settled(c: Cluster, leader: RaftNode, timeout: float = 30.0) -> None:
    """Every running member follows ``leader`` in its term and has applied its commit index."""
    for a in c.nodes:
        if a != leader.self_addr:
            _wait_caught_up(c, a, leader, timeout)


def started_with_links(c: Cluster) -> tuple[Links, RaftNode]:
    """Start ``c`` with links that can be cut; return them and the leader, once every member has
    applied a first write (on a loaded box a member may not have heard the term yet)."""
    c.start()
    links = Links()
    for n in c.nodes.values():
        links.install(n)
    leader = c.leader()
    leader.propose({"op": "set", "k": "before", "v": 1}, 5.0)
    _settled(c, leader)
    return links, leader


def test_isolated_member_rejoins_without_deposing_the_leader(cluster_factory: Factory) -> None:
    c = cluster_factory()
    links, leader = started_with_links(c)
    term = leader.status().term
    lone = c.followers()[0].self_addr
    watch = Watch()
    for n in c.nodes.values():
        watch.install(n)
    links.isolate(lone, c.addrs)
    for i in range(10):  # the others go on writing
        leader.propose({"op": "set", "k": f"during{i}", "v": i}, 5.0)
    _timer_ran_out(c.nodes[lone], 2, term)  # the isolated member's timer ran out twice
    lone_term = c.nodes[lone].status().term
    assert lone_term == term, f"the isolated member raised its term to {lone_term} (leader's: {term})"
    links.heal()
    _settled(c, leader)
    assert leader.status().is_leader and leader.status().term == term
    assert watch.seen() == [], f"terms or candidacies changed: {watch.seen()}"
    assert c.converge()["during9"] == 9


def test_restarted_follower_does_not_take_leadership(cluster_factory: Factory) -> None:
    """The restarted follower's election timer fires before the leader reaches it (observed with a
    leader busy with 100k secrets; here the leader's link to it is held down until its timer ran
    out twice). Stock: it holds an election the other follower grants, and takes leadership."""
    c = cluster_factory()
    c.start()
    links = Links()
    for n in c.nodes.values():
        links.install(n)
    leader = c.leader()
    for i in range(20):
        leader.propose({"op": "set", "k": f"k{i}", "v": i}, 5.0)
    _settled(c, leader)
    term = leader.status().term
    f = c.followers()[0].self_addr
    watch = Watch()
    for n in c.nodes.values():
        watch.install(n)
    c.converge()
    c.stop(f)
    links.cut.add(frozenset((f, leader.self_addr)))  # held down on the leader's side
    c.start(f)
    links.install(c.nodes[f])
    watch.install(c.nodes[f])
    _timer_ran_out(c.nodes[f], 2, term)
    links.heal()
    _settled(c, leader)
    assert leader.status().is_leader and leader.status().term == term, f"term changed: {watch.seen()}"
    assert watch.seen() == [], f"terms or candidacies changed: {watch.seen()}"
    leader.propose({"op": "set", "k": "after", "v": 1}, 5.0)
    assert c.converge()["after"] == 1


def test_restarted_follower_repeatedly_leaves_the_leader_alone(cluster_factory: Factory) -> None:
    """Plain restarts (no link held down), each follower in turn, twice: leader and term stay.
    A restarted member is a danger until it follows the leader again (its election timer runs
    from its start); once it does, the leader's heartbeats keep resetting that timer."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    _settled(c, leader)
    term = leader.status().term
    watch = Watch()
    for n in c.nodes.values():
        watch.install(n)
    for rnd in range(2):
        for f in [a for a in c.addrs if a != leader.self_addr]:
            leader.propose({"op": "set", "k": f"r{rnd}{f}", "v": rnd}, 5.0)
            c.stop(f)
            c.start(f)
            watch.install(c.nodes[f])
            _wait_caught_up(c, f, leader)
            assert leader.status().is_leader and leader.status().term == term
    assert watch.seen() == [], f"terms or candidacies changed: {watch.seen()}"
    assert c.converge()


# A failover within this many maximum election timeouts: one timeout for the survivors to notice,
# one pre-vote round and one election, with room for a loaded machine (the failover benchmark
# measures the real figure).
FAILOVER_BOUND_ELECTIONS = 8


def test_failover_still_elects_a_new_leader(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start()
    bound = FAILOVER_BOUND_ELECTIONS * c.timing.election_max
    for rnd in range(3):
        leader = c.leader()
        term = leader.status().term
        leader.propose({"op": "set", "k": f"f{rnd}", "v": rnd}, 5.0)
        old = leader.self_addr
        t0 = time.monotonic()
        c.stop(old)
        new = c.leader(timeout=2 * bound)
        took = time.monotonic() - t0
        assert new.self_addr != old and new.status().term > term
        assert took < bound, f"failover took {took:.2f} s"
        new.propose({"op": "set", "k": f"g{rnd}", "v": rnd}, 5.0)
        c.start(old)
        _wait_caught_up(c, old, new)
    assert c.converge()["g2"] == 2


def test_pre_vote_changes_no_term_or_vote(cluster_factory: Factory) -> None:
    """A lone member (its peers' messages dropped) keeps asking for pre-votes: its persisted term
    and vote stay as they were, and it is never a candidate."""
    if "prevote" in STOCK:
        pytest.skip("checks the pre-vote itself")
    c = cluster_factory()
    c.start()
    links = Links()
    for n in c.nodes.values():
        links.install(n)
    leader = c.leader()
    _settled(c, leader)  # the member to isolate has heard the current term
    lone = c.followers()[0]
    meta = os.path.join(lone.data_dir, "raft.meta")  # the persisted term and vote

    def persisted() -> tuple[int, str | None]:
        with open(meta) as f:
            doc = json.load(f)
        return doc["term"], doc["voted_for"]

    term = lone.status().term
    before = persisted()
    assert before[0] == term
    watch = Watch()
    watch.install(lone)
    links.isolate(lone.self_addr, c.addrs)
    _timer_ran_out(lone, 3, term)
    assert _pre_votes(lone) >= 3
    assert lone.status().term == term and persisted() == before
    assert watch.seen() == [], f"the lone member changed its term or stood as a candidate: {watch.seen()}"
    links.heal()
    _wait_caught_up(c, lone.self_addr, leader)


# Election timers far beyond every wait below: only a closed connection can start an election.
NO_TIMER_ELECTIONS = RaftTiming(heartbeat=0.05, election_min=60.0, election_max=120.0, leader_fallback=1.2)


def _first_leader(c: Cluster) -> RaftNode:
    """With NO_TIMER_ELECTIONS nobody stands by itself: run out the first member's timer now."""
    so = c.nodes[c.addrs[0]]._sync
    assert so is not None
    c.nodes[c.addrs[0]].call_in_loop(lambda: setattr(so, "_SyncObj__raftElectionDeadline", 0)).result(5)
    leader = c.leader(timeout=20)
    leader.propose({"op": "set", "k": "first", "v": 1}, 5.0)
    _settled(c, leader)
    return leader


def test_a_closed_connection_to_the_leader_starts_an_election(cluster_factory: Factory) -> None:
    """A stopped leader closes its connections (as the kernel of a killed one does): the
    survivors elect a new leader in one election, long before any election timer runs out."""
    c = cluster_factory(timing=NO_TIMER_ELECTIONS)
    c.start()
    for rnd in range(2):
        leader = _first_leader(c) if rnd == 0 else c.leader(timeout=20)
        term = leader.status().term
        old = leader.self_addr
        c.stop(old)
        new = c.leader(timeout=20, among=[a for a in c.addrs if a != old])
        assert new.status().term == term + 1, f"more than one election: term {term} -> {new.status().term}"
        new.propose({"op": "set", "k": f"after{rnd}", "v": rnd}, 5.0)
        c.start(old)
        _wait_caught_up(c, old, new)
    assert c.converge()["after1"] == 1


def test_a_connection_reset_while_the_leader_lives_costs_no_election(cluster_factory: Factory) -> None:
    """A follower whose connection to a live leader resets asks for pre-votes at once; the other
    follower still hears the leader and refuses, the link comes back, nothing changes."""
    c = cluster_factory(timing=NO_TIMER_ELECTIONS)
    c.start()
    leader = _first_leader(c)
    term = leader.status().term
    follower = c.followers()[0]
    so = follower._sync
    assert so is not None
    watch = Watch()
    for n in c.nodes.values():
        watch.install(n)
    rounds = _pre_votes(follower)
    to_leader = next(n for n in so.otherNodes if n.address == leader.self_addr)
    follower.call_in_loop(lambda: so.transport._connections[to_leader].disconnect()).result(5)
    _timer_ran_out(follower, 1, term)
    assert _pre_votes(follower) == rounds + 1
    _settled(c, leader)
    assert leader.status().is_leader and leader.status().term == term
    assert watch.seen() == [], f"terms or candidacies changed: {watch.seen()}"
    leader.propose({"op": "set", "k": "after", "v": 1}, 5.0)
    assert c.converge()["after"] == 1


def test_a_pre_vote_refused_only_for_hearing_the_leader_later_is_asked_again_soon(cluster_factory: Factory) -> None:
    """The leader goes silent for both followers at once (a pause); the one whose timer runs out
    first heard it 30 ms before the other, which therefore still refuses. It asks once more when
    the other's refusal window has closed, and is elected; every other election timer is set
    far beyond the wait (``RAFT_STOCK=early_retry``: nobody asks again, no leader)."""
    timing = RaftTiming(heartbeat=0.05, election_min=0.6, election_max=1.2, leader_fallback=60.0)
    c = cluster_factory(timing=timing)
    links, leader = started_with_links(c)
    first, other = c.followers()
    sf, so = first._sync, other._sync
    assert sf is not None and so is not None
    for s in (sf, so):
        s._SyncObj__generateRaftTimeout = lambda: 1000.0
    rounds = _pre_votes(first)
    links.isolate(leader.self_addr, c.addrs)

    def hold_other() -> float:
        so._SyncObj__raftElectionDeadline = so.clock() + 1000.0
        return float(so._leader_heard)

    heard = other.call_in_loop(hold_other).result(5)

    def run_out_first() -> None:
        sf._leader_heard = heard - 0.03
        sf._SyncObj__raftElectionDeadline = sf._leader_heard + timing.election_min

    first.call_in_loop(run_out_first).result(5)
    new = c.leader(timeout=30, among=[first.self_addr, other.self_addr])
    assert new is first and _pre_votes(first) == rounds + 2, \
        f"elected {new.self_addr} after {_pre_votes(first) - rounds} pre-vote rounds of the first follower"
    new.propose({"op": "set", "k": "after", "v": 2}, 5.0)
    links.heal()
    assert c.converge()["after"] == 2
