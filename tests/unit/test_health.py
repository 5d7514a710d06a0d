"""A manager's health: SERVING with a leader, a majority and every committed entry applied."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from swarmsecrets.manager.health import NOT_SERVING, SERVING, Health, serving
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
