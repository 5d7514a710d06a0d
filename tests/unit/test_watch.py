"""The manager's raft events: a leader elected or lost, quorum lost (after its grace) or regained."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarmsecrets.logfmt import fields_of
from swarmsecrets.manager.watch import RaftWatch, StatusFeed
from swarmsecrets.raft import RaftStatus

MEMBERS = ["a:1", "b:1", "c:1"]


def test_raft_events(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    status = [RaftStatus(leader=None, is_leader=False, term=1, commit_index=0, last_applied=0,
                         members=MEMBERS, reachable=set(MEMBERS))]
    watch = RaftWatch(lambda: status[0], grace=1.0, clock=lambda: now[0])

    def step(t: float, **changes: object) -> list[tuple[str, dict[str, object]]]:
        caplog.clear()
        now[0] = t
        for k, v in changes.items():
            setattr(status[0], k, v)
        watch.sample()
        return [(r.levelname, fields_of(r)) for r in caplog.records]

    caplog.set_level(logging.INFO, logger="swarmsecrets.events")
    assert step(0.0) == []
    assert step(0.1, leader="b:1", term=2) == [
        ("INFO", {"event": "leader_elected", "term": 2, "leader": "b:1", "is_leader": False})]
    # One member away keeps the quorum; two away lose it only once the grace has passed.
    assert step(0.2, reachable={"a:1", "b:1"}) == []
    assert step(0.3, reachable={"a:1"}, leader=None) == [
        ("INFO", {"event": "leader_lost", "term": 2, "previous": "b:1"})]
    assert step(1.2) == []
    assert step(1.3) == [("WARNING", {"event": "quorum_lost", "term": 2, "members": 3, "reachable": 1})]
    assert step(5.0) == []
    assert step(5.1, reachable=set(MEMBERS), leader="a:1", is_leader=True, term=3) == [
        ("INFO", {"event": "leader_elected", "term": 3, "leader": "a:1", "is_leader": True}),
        ("INFO", {"event": "quorum_regained", "term": 3, "members": 3, "reachable": 3})]


def test_the_status_feed_reads_the_status_once_for_all_its_followers_and_again_when_poked() -> None:
    async def run() -> None:
        reads = [0]

        def status() -> RaftStatus:
            reads[0] += 1
            return RaftStatus(leader="a:1", is_leader=True, term=reads[0], commit_index=0, last_applied=0,
                              members=MEMBERS, reachable=set(MEMBERS))

        seen: list[tuple[str, int]] = []
        changed = asyncio.Event()

        async def health(st: RaftStatus) -> None:
            seen.append(("health", st.term))

        def events(st: RaftStatus) -> None:
            seen.append(("events", st.term))
            changed.set()

        feed = StatusFeed(status, [health, events])
        task = asyncio.create_task(feed.run())
        await changed.wait()
        changed.clear()
        feed.poke()
        await changed.wait()
        task.cancel()
        assert seen[:4] == [("health", 1), ("events", 1), ("health", 2), ("events", 2)]

    asyncio.run(run())
