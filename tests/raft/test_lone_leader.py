"""A leader alone in its group commits on its own fdatasync, without waiting out the loop's poll."""

from __future__ import annotations

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
