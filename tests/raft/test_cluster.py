"""Three managers in one process on loopback: proposals, reads, failures, membership."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pysyncobj.config import FAIL_REASON

from swarmsecrets.raft import (
    ApplyFailed,
    InvalidCommand,
    NoLeader,
    StorageFailed,
    Unavailable,
    UnknownOutcome,
    wire,
)
from swarmsecrets.raft.node import RaftNode, RaftTiming, _RaftSyncObj
from tests.raft.conftest import IN_PROCESS_TIMING, STOCK, Cluster, free_ports
from tests.raft.raft_harness import DictMachine

Factory = Callable[..., Cluster]


def test_proposals_on_leader_and_follower_and_status(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start()
    leader = c.leader()
    follower = c.followers()[0]
    i1 = leader.propose({"op": "set", "k": "a", "v": 1}, 5.0)
    i2 = follower.propose({"op": "set", "k": "b", "v": b"\x00bytes"}, 5.0)  # forwarded to the leader
    assert i2 > i1 > 1
    assert c.machines[follower.self_addr].copy()["b"] == b"\x00bytes"  # applied here before returning
    deadline = time.monotonic() + 10  # the follower-to-follower link may still be connecting
    while (st := follower.status()).reachable != set(c.addrs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st.leader == leader.self_addr and not st.is_leader
    assert st.members == sorted(c.addrs) and st.reachable == set(c.addrs)
    assert st.commit_index >= i2 and st.last_applied >= i2 and st.term >= 1
    assert c.converge() == {"a": 1, "b": b"\x00bytes"}


def _through_elections(fn: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Retry across an election the loaded test box may cause; what is asserted comes after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (Unavailable, UnknownOutcome):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _waiting_in(thread: threading.Thread, function: str) -> bool:
    """True if ``thread`` is running inside ``function`` (somewhere down its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_read_barrier_sees_every_acknowledged_write(cluster_factory: Factory) -> None:
    """Each write goes under its own key: a retried write whose first attempt timed out may still
    be applied later (its outcome was unknown), so a shared key could be overwritten by an older
    value after the barrier; that would not be a stale read."""
    c = cluster_factory()
    c.start()
    c.leader()
    f1, f2 = c.followers()
    for i in range(20):
        _through_elections(lambda i=i: c.leader().propose({"op": "set", "k": f"x{i}", "v": i}, 5.0))
        _through_elections(lambda: f2.read_barrier(5.0))
        seen = c.machines[f2.self_addr].copy()
        missing = [j for j in range(i + 1) if seen.get(f"x{j}") != j]
        assert not missing, f"after write {i}, the barrier on {f2.self_addr} missed writes {missing}"
    # Concurrent barriers share entries. The raft loop of f1 is held while 30 callers arrive, so
    # they are concurrent whatever the machine's load: they must share two rounds (the one in
    # flight when a caller arrived, and the next), not make one entry each.
    before = f1.status().commit_index
    failed: list[BaseException] = []

    def barrier() -> None:
        try:
            _through_elections(lambda: f1.read_barrier(15.0))
        except BaseException as e:
            failed.append(e)

    gate = threading.Event()
    held = threading.Event()
    f1.call_in_loop(lambda: (held.set(), gate.wait(10)))
    assert held.wait(10)
    threads = [threading.Thread(target=barrier) for _ in range(30)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while not all(_waiting_in(t, "read_barrier") for t in threads):
            assert time.monotonic() < deadline, "the callers did not all reach read_barrier"
            time.sleep(0.01)
    finally:
        gate.set()
    for t in threads:
        t.join()
    assert not failed, failed
    # Two rounds, plus what an election the barriers rode out would add (a no-op, a retry).
    assert f1.status().commit_index - before <= 5


def test_non_plain_or_oversized_commands_are_refused_up_front(cluster_factory: Factory) -> None:
    c = cluster_factory(1)
    c.start()
    node = c.leader()
    with pytest.raises(InvalidCommand):
        node.propose({"op": "set", "k": "t", "v": threading.Lock}, 5.0)
    with pytest.raises(InvalidCommand):
        node.propose({"op": "set", "k": "t", "v": b"x" * (wire.MAX_COMMAND_BYTES + 1)}, 5.0)


@pytest.mark.slow
def test_large_values_replicate_like_small_ones(cluster_factory: Factory) -> None:
    """~512 KiB values (stock: protocol-2 pickles inflate bytes by half, and entries of 64 KiB or
    more go through its chunked transfer, which ends the chunks too early)."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    follower = c.followers()[0]
    values = {f"v{i}": os.urandom(511_999) for i in range(8)}
    for i, (k, v) in enumerate(values.items()):
        node = leader if i % 2 else follower
        node.propose({"op": "set", "k": k, "v": v}, 10.0)
    futures = [leader.propose_async({"op": "set", "k": f"p{i}", "v": os.urandom(511_999)}, 10.0)
               for i in range(8)]
    for f in futures:
        f.result(15)
    state = c.converge(timeout=15)
    assert all(state[k] == v for k, v in values.items())
    assert all(n.status().tick_errors == 0 for n in c.nodes.values())


# "At once": a refusal that does not wait for the proposal's timeout. The bound is half of that
# timeout, so a loaded machine cannot blur the two.
PROPOSAL_TIMEOUT = 5.0
FAST = PROPOSAL_TIMEOUT / 2


def test_no_leader_fails_fast(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start(c.addrs[0])  # alone: no quorum, no leader
    node = c.nodes[c.addrs[0]]
    t = time.monotonic()
    with pytest.raises(NoLeader):
        node.propose({"op": "set", "k": "a", "v": 1}, PROPOSAL_TIMEOUT)
    assert time.monotonic() - t < FAST
    assert not node.wait_ready(0.5)


def test_minority_leader_steps_down_and_refuses_writes(cluster_factory: Factory) -> None:
    """Check-quorum: a leader cut off from the majority stops leading within ~leader_fallback."""
    fallback = 30.0 if "fallback" in STOCK else 0.8
    c = cluster_factory(timing=RaftTiming(leader_fallback=fallback))
    c.start()
    leader = c.leader()
    c.stop(*[a for a in c.addrs if a != leader.self_addr])
    # Our fallback, with room for a loaded machine; well short of stock's 30 s.
    deadline = time.monotonic() + 10.0
    while leader.status().is_leader and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leader.status().is_leader
    t = time.monotonic()
    with pytest.raises(Unavailable):
        leader.propose({"op": "set", "k": "lost", "v": 1}, PROPOSAL_TIMEOUT)
    assert time.monotonic() - t < FAST


# A failover within 8 maximum election timeouts of the in-process timing: one timeout for the
# survivors to notice, a pre-vote round and an election, with room for a loaded machine (the
# failover benchmark measures the real figure).
FAILOVER_BOUND = 8 * IN_PROCESS_TIMING.election_max


def test_failover_keeps_every_acknowledged_write(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start()
    acked: dict[str, int] = {}
    stop = threading.Event()

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            node = c.nodes.get(c.addrs[(w + i) % 3])
            i += 1
            if node is None:
                continue
            try:
                node.propose({"op": "set", "k": f"{w}-{i}", "v": i}, 2.0)
                acked[f"{w}-{i}"] = i
            except (Unavailable, UnknownOutcome):
                time.sleep(0.01)

    def acked_grows_by(n: int) -> None:
        target = len(acked) + n
        deadline = time.monotonic() + 30
        while len(acked) < target:
            assert time.monotonic() < deadline, f"writes stalled at {len(acked)} acknowledged"
            time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    acked_grows_by(50)  # writes are flowing through every member
    old = c.leader()
    c.stop(old.self_addr)
    t0 = time.monotonic()
    new = c.leader(timeout=FAILOVER_BOUND)
    failover = time.monotonic() - t0
    acked_grows_by(50)  # and flow again through the new leader
    stop.set()
    for t in threads:
        t.join()
    assert new.self_addr != old.self_addr
    assert failover < FAILOVER_BOUND
    state = c.converge()
    missing = [k for k in acked if k not in state]
    assert not missing, f"{len(missing)} acknowledged writes lost"


def test_exception_in_apply_does_not_halt_the_state_machine(cluster_factory: Factory) -> None:
    """Stock stops applying on every node for good (and again after a restart)."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    with pytest.raises(ApplyFailed, match="RuntimeError: boom"):
        leader.propose({"op": "boom"}, 3.0)
    for i in range(5):
        leader.propose({"op": "set", "k": f"after{i}", "v": i}, 3.0)
    state = c.converge()
    assert state["after4"] == 4
    assert all(n.apply_errors == 1 for n in c.nodes.values())
    victim = c.followers()[0].self_addr
    c.stop(victim)
    c.start(victim)  # replays the failing entry from its journal
    assert c.nodes[victim].wait_ready(5.0)
    assert c.converge()["after4"] == 4


def test_tick_exceptions_are_counted_and_survived(cluster_factory: Factory) -> None:
    """Stock logs tick exceptions and retries forever with nothing surfaced."""
    c = cluster_factory(1)
    c.start()
    node = c.leader()
    so = node._sync
    assert so is not None
    fired: list[int] = []

    def broken() -> None:
        if len(fired) < 3:
            fired.append(1)
            raise RuntimeError("injected")

    so.addOnTickCallback(broken)
    deadline = time.monotonic() + 30
    while node.status().tick_errors < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    st = node.status()
    assert st.tick_errors == 3 and "injected" in st.last_tick_error
    assert node.propose({"op": "set", "k": "ok", "v": 1}, 3.0) > 0


def test_a_failed_fdatasync_stops_the_member(cluster_factory: Factory) -> None:
    """After a failed fsync the data may be gone while a retry succeeds: the member must stop
    (a leader that went on would count itself toward commits it does not hold)."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    so = leader._sync
    assert isinstance(so, _RaftSyncObj)
    leader.call_in_loop(lambda: setattr(so._journal, "_fd", 1 << 20)).result(5)  # the disk "fails"
    with pytest.raises((Unavailable, UnknownOutcome)):
        leader.propose({"op": "set", "k": "x", "v": 1}, 2.0)
    assert "raft journal" in (so.failure or "")
    with pytest.raises(StorageFailed, match="storage failed"):
        leader.propose({"op": "set", "k": "x", "v": 1}, 2.0)
    survivors = [a for a in c.addrs if a != leader.self_addr]
    new = c.leader(among=survivors)
    assert new.propose({"op": "set", "k": "y", "v": 2}, 5.0) > 0


@pytest.mark.slow
def test_idle_follower_link_survives_for_the_next_election(cluster_factory: Factory) -> None:
    """Stock drops a link idle for connectionTimeout on its first send, losing the first
    RequestVote between the followers when the leader dies."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    f_low, f_high = sorted(a for a in c.addrs if a != leader.self_addr)
    so = c.nodes[f_high]._sync  # the higher address dials the lower one
    assert so is not None
    node = next(n for n in so.otherNodes if n.address == f_low)
    conn = so.transport._connections[node]
    created = conn.created
    time.sleep(4.0)  # longer than stock's 3.5 s connectionTimeout; nothing flows between followers
    c.stop(leader.self_addr)
    new = c.leader(timeout=FAILOVER_BOUND)
    assert new.self_addr in (f_low, f_high)
    assert so.transport._connections[node] is conn and conn.created == created, "the idle link was dropped"
    sock = conn._sock  # dead peers are found by TCP keepalive instead
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 5000


def test_membership_add_catch_up_and_remove(cluster_factory: Factory, pki: Any) -> None:
    c = cluster_factory()
    c.start()
    leader = c.leader()
    for i in range(30):
        leader.propose({"op": "set", "k": f"k{i}", "v": i}, 5.0)
    (port,) = free_ports(1)
    new_addr = f"127.0.0.1:{port}"
    c.tls[new_addr] = pki.tls(new_addr)
    follower = c.followers()[0]
    follower.add_member(new_addr, 10.0)  # forwarded to the leader
    members = leader.status().members
    assert new_addr in members
    with open(os.path.join(follower.data_dir, "raft.meta")) as f:  # a restart resumes with it
        assert json.load(f)["members"] == sorted(members)
    c.node(new_addr, members=members).start()  # a joiner starts with the list the leader returned
    assert c.nodes[new_addr].wait_ready(10.0)
    leader.propose({"op": "set", "k": "late", "v": 1}, 5.0)
    assert c.converge()["late"] == 1
    # the joiner's persisted member list wins over a stale argument after a restart
    c.stop(new_addr)
    c.node(new_addr, members=[new_addr]).start()
    assert c.nodes[new_addr].status().members == sorted(c.addrs + [new_addr])
    assert c.nodes[new_addr].wait_ready(10.0)
    # the leader removes itself: it hands leadership over, and learns when its removal commits
    leader.remove_member(leader.self_addr, 10.0)
    survivors = [a for a in c.addrs + [new_addr] if a != leader.self_addr]
    new_leader = c.leader(among=survivors)
    assert leader.self_addr not in new_leader.status().members
    c.stop(leader.self_addr)
    # a follower removes another follower, then itself: the leader is left alone
    x, y = (c.nodes[a] for a in survivors if a != new_leader.self_addr)
    x.remove_member(y.self_addr, 10.0)
    assert new_leader.status().members == sorted([new_leader.self_addr, x.self_addr])
    x.remove_member(x.self_addr, 10.0)
    assert new_leader.status().members == [new_leader.self_addr]
    c.stop(x.self_addr, y.self_addr)
    new_leader.propose({"op": "set", "k": "after-remove", "v": 1}, 5.0)
    assert c.converge()["after-remove"] == 1


def test_membership_changes_are_one_at_a_time(cluster_factory: Factory) -> None:
    """Stock's one-change-at-a-time guard is dead code; two changes proposed together were both accepted."""
    c = cluster_factory()
    c.start()
    leader = c.leader()
    leader.propose({"op": "set", "k": "warm", "v": 1}, 5.0)  # the leader's no-op is applied
    so = leader._sync
    assert isinstance(so, _RaftSyncObj)
    a, b = (f"127.0.0.1:{p}" for p in free_ports(2))
    results: list[int] = []
    done = threading.Event()

    def callback(_: Any, err: int) -> None:
        results.append(err)
        if len(results) == 2:
            done.set()

    def propose_both() -> None:
        for addr in (a, b):
            so._applyCommand(wire.dumps(["add", addr]), callback, 2)

    leader.call_in_loop(propose_both).result(5)
    assert done.wait(5)
    assert sorted(results) == [FAIL_REASON.SUCCESS, FAIL_REASON.REQUEST_DENIED]
    assert len(leader.status().members) == 4


def test_transfer_leadership(cluster_factory: Factory) -> None:
    c = cluster_factory()
    c.start()
    leader = c.leader()
    leader.propose({"op": "set", "k": "a", "v": 1}, 5.0)
    leader.transfer_leadership(5.0)
    new = c.leader(among=[a for a in c.addrs if a != leader.self_addr])
    assert leader.status().leader == new.self_addr
    c.followers()[0].transfer_leadership(1.0)  # not the leader: nothing to do
    assert new.propose({"op": "set", "k": "b", "v": 2}, 5.0) > 0


def test_wildcard_and_malformed_addresses_are_refused(pki: Any, tmp_path: Any) -> None:
    tls = pki.tls("127.0.0.1:1")
    for bad in ("0.0.0.0:4243", "[::]:4243", "127.0.0.1", "127.0.0.1:0", "host:port"):
        with pytest.raises(ValueError):
            RaftNode(self_addr=bad, members=[], data_dir=str(tmp_path), tls=tls, state_machine=DictMachine())
