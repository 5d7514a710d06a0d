"""kill -9 of managers: writes go on, restarted managers catch up, quorum loss fails fast."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets import errors
from tests.framework import Cluster, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path).started() as c:
        yield c


def names(node) -> set[str]:  # type: ignore[no-untyped-def]
    return set(node.ok("secret", "ls", "--format", "{{.Name}}").split())


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_kill_one_manager_writes_go_on_and_it_catches_up(fresh: Cluster, victim: str) -> None:
    leader = fresh.leader()
    dead = leader if victim == "leader" else next(n for n in fresh.managers if n is not leader)
    alive = [n for n in fresh.managers if n is not dead]
    alive[0].ok("secret", "create", "before", "-", input="v")
    dead.kill()
    for i in range(20):
        alive[i % 2].ok("secret", "create", f"during{i}", "-", input=f"v{i}")
    dead.start()
    expected = {"before"} | {f"during{i}" for i in range(20)}
    wait_until(lambda: expected <= names(dead), 30, 0.3, "the restarted manager to catch up")
    alive[1].ok("secret", "create", "after", "-", input="v")
    wait_until(lambda: "after" in names(dead), 15, 0.2, "a write after the restart")


def test_majority_gone_fails_fast_with_no_leader_then_recovers(fresh: Cluster) -> None:
    m1, m2, m3 = fresh.managers
    m1.ok("secret", "create", "kept", "-", input="v")
    m2.kill()
    m3.kill()
    t0 = time.monotonic()
    err = m1.fails("secret", "create", "lost", "-", input="v", timeout=30)
    elapsed = time.monotonic() - t0
    assert errors.NO_LEADER in err, err
    assert elapsed < 10, f"the write took {elapsed:.1f}s to fail"
    m2.start()
    m3.start()
    wait_until(lambda: m1.cli("secret", "create", "back", "-", input="v").returncode == 0, 30, 0.5,
               "writes after the majority returned")
    for n in fresh.managers:
        wait_until(lambda n=n: {"kept", "back"} <= names(n), 20, 0.3, f"{n.name} to have every write")
        assert "lost" not in names(n)


def test_whole_cluster_restart_loses_nothing(fresh: Cluster) -> None:
    m1, m2, m3 = fresh.managers
    created = {f"s{i}" for i in range(30)}
    for i, name in enumerate(sorted(created)):
        fresh.managers[i % 3].ok("secret", "create", name, "-", input=name)
    for n in fresh.managers:
        n.kill()
    for n in fresh.managers:
        n.start()
    for n in fresh.managers:
        wait_until(lambda n=n: created <= names(n), 30, 0.3, f"{n.name} to come back with every secret")
    m2.ok("secret", "create", "post-restart", "-", input="v")


def test_a_retry_after_a_leader_change_returns_the_original_outcome(fresh: Cluster) -> None:
    from swarmsecrets.api.v1 import control_pb2, objects_pb2
    from swarmsecrets.client import LocalClient, LocalError, Status

    leader = fresh.leader()
    followers = [n for n in fresh.managers if n is not leader]
    spec = objects_pb2.SecretSpec(name="once", data=b"v")

    def control(n):  # type: ignore[no-untyped-def]
        return LocalClient(n.sock).control

    first = control(followers[0]).CreateSecret(control_pb2.CreateSecretRequest(spec=spec, request_id="rid-x"),
                                                timeout=10).secret
    control(followers[0]).CreateSecret(control_pb2.CreateSecretRequest(
        spec=objects_pb2.SecretSpec(name="gone", data=b"v"), request_id="rid-y"), timeout=10)
    control(followers[0]).RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="gone", request_id="rid-z"),
                                       timeout=10)
    leader.kill()
    new_leader = fresh.leader()
    assert new_leader is not leader
    # The client never saw the answers (say): it retries on another manager, under the new leader.
    again = control(followers[1]).CreateSecret(control_pb2.CreateSecretRequest(spec=spec, request_id="rid-x"),
                                               timeout=10).secret
    assert again.id == first.id
    control(followers[1]).RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="gone", request_id="rid-z"),
                                       timeout=10)
    # A new request id is a new request: now it is a real conflict.
    try:
        control(followers[1]).CreateSecret(control_pb2.CreateSecretRequest(spec=spec, request_id="rid-new"),
                                           timeout=10)
    except LocalError as e:
        assert e.code is Status.ALREADY_EXISTS
    else:
        raise AssertionError("a duplicate name was accepted")
