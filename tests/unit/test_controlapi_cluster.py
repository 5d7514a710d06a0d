"""The Control API's swarm object, on a real store: join tokens and the unlock key, shown opened
and stored sealed; rotation."""

from __future__ import annotations

import grpc

from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.ca import certs, tokens
from swarmsecrets.crypto import keys
from tests.unit.managerkit import CLUSTER_ID, Swarm, aborted, control, ctx, run


def test_get_cluster_shows_the_join_tokens() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await control(swarm).GetCluster(control_pb2.GetClusterRequest(), ctx())
        c = resp.cluster
        assert c.id == CLUSTER_ID and not c.autolock
        assert (c.join_tokens.worker, c.join_tokens.manager) == (swarm.worker_token, swarm.manager_token)

    run(test)


def test_rotating_a_join_token_changes_that_role_only_and_keeps_it_sealed() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await control(swarm).RotateJoinToken(control_pb2.RotateJoinTokenRequest(role="worker"), ctx())
        fresh = resp.join_tokens.worker
        assert fresh != swarm.worker_token and resp.join_tokens.manager == swarm.manager_token
        assert tokens.parse_token(fresh).ca_digest == certs.ca_digest(swarm.ca.cert_pem)
        cluster = swarm.store.cluster
        assert cluster is not None and fresh.encode() not in cluster.join_tokens.worker
        bad = await aborted(control(swarm).RotateJoinToken(control_pb2.RotateJoinTokenRequest(role="boss"), ctx()))
        assert (bad.code, bad.details) == (grpc.StatusCode.INVALID_ARGUMENT, "unknown role boss")

    run(test)


def test_unlock_key_without_autolock_is_refused() -> None:
    swarm = Swarm()

    async def test() -> None:
        none = await aborted(control(swarm).GetUnlockKey(control_pb2.GetUnlockKeyRequest(), ctx()))
        assert (none.code, none.details) == (grpc.StatusCode.FAILED_PRECONDITION, "no unlock key is set")
        rotate = await aborted(control(swarm).RotateUnlockKey(control_pb2.RotateUnlockKeyRequest(), ctx()))
        assert rotate.details == "cannot rotate because autolock is not turned on"

    run(test)


def test_unlock_key_is_shown_and_rotated() -> None:
    swarm = Swarm(autolock=True)
    unlock = swarm.unlock
    assert unlock is not None

    async def test() -> None:
        s = control(swarm)
        shown = await s.GetUnlockKey(control_pb2.GetUnlockKeyRequest(), ctx())
        assert shown.unlock_key == keys.format_unlock_key(unlock)
        rotated = await s.RotateUnlockKey(control_pb2.RotateUnlockKeyRequest(), ctx())
        assert rotated.unlock_key != shown.unlock_key
        again = await s.GetUnlockKey(control_pb2.GetUnlockKeyRequest(), ctx())
        assert again.unlock_key == rotated.unlock_key
        cluster = swarm.store.cluster
        assert cluster is not None and cluster.unlock_key is not None
        assert swarm.sealer.unseal(cluster.unlock_key) == keys.parse_unlock_key(rotated.unlock_key)

    run(test)
