"""A manager's health: SERVING with a leader, a majority and every committed entry applied."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from swarmsecrets.manager.health import KEEP_UP, NOT_SERVING, SERVING, CommitMarks, Health, serving
from swarmsecrets.raft import RaftStatus


def _status(leader: str | None = "a", members: int = 3, reachable: int = 3, commit: int = 10,
            applied: int = 10) -> RaftStatus:
    addrs = [f"m{i}" for i in range(members)]
    return RaftStatus(leader=leader, is_leader=False, term=1, commit_index=commit, last_applied=applied,
                      members=addrs, reachable=set(addrs[:reachable]))


def test_health_serving_needs_a_leader_a_majority_and_the_committed_entries() -> None:
    assert serving(_status())
    assert serving(_status(reachable=2))
    assert not serving(_status(leader=None))
    assert not serving(_status(reachable=1))
    assert not serving(_status(applied=9))
    assert serving(_status(applied=9), applied_at_least=9)


def test_a_manager_that_keeps_up_under_writes_stays_serving_and_a_lagging_one_does_not() -> None:
    now = [0.0]
    marks = CommitMarks(lambda: now[0])
    # Its first look: everything it knows committed, as after a restart.
    assert marks.target(_status(commit=100, applied=0)) == 100
    now[0] = KEEP_UP / 2
    assert marks.target(_status(commit=150, applied=120)) == 100
    # Under writes the commit index is always a little ahead of the apply: the mark is what was
    # committed KEEP_UP ago, which a manager that keeps up has long applied.
    for step in range(1, 20):
        now[0] = KEEP_UP / 2 + step * 0.1
        st = _status(commit=150 + 10 * step, applied=149 + 10 * step)
        target = marks.target(st)
        assert not serving(st) and serving(st, target)
    # One that stops applying while entries commit falls below the mark KEEP_UP later.
    lagging = _status(commit=400, applied=340)
    now[0] += 0.1
    assert serving(lagging, marks.target(lagging))
    now[0] += KEEP_UP
    assert not serving(lagging, marks.target(lagging))


def test_health_follows_the_status_for_every_service() -> None:
    async def run() -> None:
        st = [_status(applied=9)]
        h = Health(lambda: st[0], ["swarmsecrets.v1.Control"])

        async def check(service: str) -> int:
            resp = await h.servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
            return int(resp.status)

        await h.refresh()
        assert [await check(s) for s in ("", "swarmsecrets.v1.Control")] == [NOT_SERVING, NOT_SERVING]
        st[0] = _status()
        await h.refresh()
        assert [await check(s) for s in ("", "swarmsecrets.v1.Control")] == [SERVING, SERVING]

    asyncio.run(run())
