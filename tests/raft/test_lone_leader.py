"""A leader's own fdatasync wakes its loop exactly when its copy is the vote that commits: alone in
its group at every write (without waiting out the loop's poll), in a group never in steady writes
(the followers' replies wake the loop, so a wake-up of its own would be a pass for nothing)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.raft.conftest import Cluster


def test_a_lone_leader_commits_once_its_sync_is_done(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(1)
    c.start()
    leader = c.leader()
    sync = leader._sync
    assert sync is not None
    poll = sync._poller.poll

    def long_poll(timeout: float) -> Any:
        # Only a wake-up ends this poll: were the loop to wait for its timeout after the sync
        # that commits, no write would be acknowledged within the test's timeout.
        return poll(600.0)

    sync._poller.poll = long_poll
    for i in range(20):
        assert leader.propose({"op": "set", "k": f"k{i}", "v": i}, timeout=30.0) > 0
    assert c.converge()["k19"] == 19


def test_a_leader_with_followers_does_not_wake_itself_after_its_sync(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(3)
    c.start()
    leader = c.leader()
    sync = leader._sync
    assert sync is not None and sync._wakeup is not None
    wakeup = sync._wakeup
    notify = wakeup.notify
    own_wakes: list[int] = []

    def counting_notify() -> None:
        if threading.get_ident() == sync._loop_thread:  # proposals wake it from other threads
            own_wakes.append(sync.raftCommitIndex)
        notify()

    wakeup.notify = counting_notify  # type: ignore[method-assign]
    for i in range(20):
        assert leader.propose({"op": "set", "k": f"k{i}", "v": i}, timeout=30.0) > 0
    assert c.converge()["k19"] == 19
    assert own_wakes == []
