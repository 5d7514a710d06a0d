"""RaftNode.removed: set on a member once its removal is committed and applied there, cleared when
it is added again. A demoted manager waits on it before it stops."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.raft.conftest import Cluster

Factory = Callable[..., Cluster]


def test_a_removed_member_learns_its_removal_and_a_readded_one_forgets_it(cluster_factory: Factory) -> None:
    c = cluster_factory(3)
    c.start()
    leader = c.leader()
    f, other = c.followers()
    assert not any(n.removed.is_set() for n in c.nodes.values())

    leader.remove_member(f.self_addr, 10.0)
    assert f.removed.wait(10.0), "the removed follower never applied its committed removal"
    assert not leader.removed.is_set() and not other.removed.is_set()

    leader.add_member(f.self_addr, 10.0)
    deadline = time.monotonic() + 10.0
    while f.removed.is_set():  # cleared when f applies the entry that adds it back
        assert time.monotonic() < deadline, "the re-added follower still counts itself removed"
        time.sleep(0.02)

    # A leader asked to remove itself hands leadership over first, then learns the commit too.
    leader.remove_member(leader.self_addr, 10.0)
    assert leader.removed.wait(10.0)
    assert not leader.status().is_leader
