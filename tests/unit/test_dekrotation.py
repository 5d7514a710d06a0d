"""Data-key rotation: the ring, the commands' apply, the leader's re-encryption, the key file and
the erasure of replaced files."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import nacl.exceptions
import pytest

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.crypto import keys
from swarmsecrets.fsutil import publish, write_private
from swarmsecrets.manager import dekrotation, state
from swarmsecrets.manager.datakey import DataKey, join_tokens, unlock_key
from swarmsecrets.manager.state import codec
from tests.unit.managerkit import Swarm, control, ctx, run
from tests.unit.test_state_versions import LEGACY, _loads, read_snapshot

TS = 1_700_000_000 * 10**9


def following(swarm: Swarm, ring: DataKey | None = None) -> DataKey:
    """The ring follows rotations as the store applies them (``Manager._follow_data_key``)."""
    ring = ring or swarm.sealer

    def follow(event: state.Applied) -> None:
        if isinstance(event.command, state.BeginDataKeyRotation):
            ring.follow(swarm.store.cluster)
        elif isinstance(event.command, state.FinishDataKeyRotation) and event.ok:
            ring.retire()

    swarm.store.subscribe(follow)
    return ring


def opens(key: bytes, ciphertext: bytes) -> bool:
    try:
        keys.open_sealed(key, ciphertext)
    except nacl.exceptions.CryptoError:
        return False
    return True


def sealed_values(swarm: Swarm) -> list[bytes]:
    """Every sealed value the state holds: payloads, the cluster's, and remembered outcomes'."""
    tables = swarm.store.tables()
    assert tables.cluster is not None
    out = [s.data for s in tables.secrets.values()]
    out += [tables.cluster.join_tokens.worker, tables.cluster.join_tokens.manager, tables.cluster.rotation_key]
    out += [tables.cluster.unlock_key or b""]
    for seen in tables.requests.values():
        value = getattr(seen.result, "value", None)
        if isinstance(value, state.Cluster):
            out += [value.join_tokens.worker, value.join_tokens.manager, value.unlock_key or b"", value.rotation_key]
    return [v for v in out if v]


def test_a_rotation_reencrypts_everything_and_forgets_the_previous_key() -> None:
    swarm = Swarm(autolock=True)
    ring = following(swarm)
    old = ring.key
    for i in range(600):  # more than one batch
        swarm.secret(f"s{i}", f"v{i}".encode())
    # A remembered outcome that holds the cluster record (sealed values under the old key).
    run(lambda: control(swarm).RotateJoinToken(control_pb2.RotateJoinTokenRequest(role="worker"), ctx()))
    tokens_before = join_tokens(swarm.store, ring)
    assert any(opens(old, v) for v in sealed_values(swarm))

    new_id = run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
    assert ring.key_id == new_id != keys.key_id(old) and ring.ring[1:] == (old,)
    cluster = swarm.store.cluster
    assert cluster is not None and cluster.rotation_from == keys.key_id(old)
    with pytest.raises(errors.FailedPrecondition, match="already in progress"):
        run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
    # A write during the rotation is sealed under the new key already.
    assert swarm.secret("during", b"d").key_id == new_id

    rotator = dekrotation.DataKeyRotator(swarm.store, swarm.proposer, ring, swarm.clock, batch=256)
    run(lambda: rotator.finish(3))
    cluster = swarm.store.cluster
    assert cluster is not None and not cluster.rotation_from and not cluster.rotation_key
    assert ring.ring[1:] == () and ring.key_id == new_id
    assert all(s.key_id == new_id for s in swarm.store.secrets())
    assert ring.unseal(swarm.store.resolve_secret("s599").data) == b"v599"
    assert join_tokens(swarm.store, ring) == tokens_before and unlock_key(swarm.store, ring) == swarm.unlock
    # Nothing the state holds opens under the old key; everything opens under the new one.
    values = sealed_values(swarm)
    assert values and not any(opens(old, v) for v in values) and all(opens(ring.key, v) for v in values)


def test_cluster_values_sealed_under_a_key_retired_before_they_apply_are_refused() -> None:
    """Join tokens (or an unlock key) sealed under the key a rotation is leaving, applied only after
    it ended: stored, they would open under no key any manager holds."""
    swarm = Swarm()
    ring = following(swarm)
    before = join_tokens(swarm.store, ring)
    sealing = ring.current()
    stale = state.UpdateCluster(join_tokens=state.JoinTokens(worker=sealing.seal(b"w"), manager=sealing.seal(b"m")),
                                sealed_with=state.sealed_with(sealing.key_id, swarm.store.managers()))
    assert stale.sealed_with == ring.key_id
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
    run(lambda: dekrotation.DataKeyRotator(swarm.store, swarm.proposer, ring, swarm.clock).finish(3))
    with pytest.raises(errors.FailedPrecondition, match="rotated while this request was in flight"):
        run(lambda: swarm.proposer.propose(stale))
    assert join_tokens(swarm.store, ring) == before


def test_a_request_seals_everything_under_the_key_it_took_while_the_ring_rotates() -> None:
    """The ring turns on the raft thread while a request seals on the event loop: the values it
    seals and the key id it records come from one key, taken once."""
    swarm = Swarm()
    ring = following(swarm)
    before = ring.current()
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
    assert ring.key_id != before.key_id
    sealed = before.seal(b"token")
    assert keys.open_sealed(before.key, sealed) == b"token" and keys.key_id(before.key) == before.key_id
    assert ring.unseal_with(before.key_id, sealed) == b"token"  # the ring still holds it mid-rotation


def test_a_handed_ring_older_than_this_one_does_not_turn_it_back() -> None:
    """``GetManagerKeys`` answered before a rotation applied here: adopting it adds keys, but the
    current key stays the cluster record's."""
    swarm = Swarm()
    ring = following(swarm)
    handed = ring.ring
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
    current = ring.key
    ring.adopt(handed)
    assert ring.key == current and ring.ring == (current, *handed)
    assert ring.settle(lambda: swarm.store.cluster) is swarm.store.cluster
    assert ring.ring == (current, *handed)  # the rotation runs: the previous key stays


def test_settling_reads_the_record_under_the_lock_and_keeps_a_key_a_new_rotation_needs() -> None:
    """A rotation that begins while a handed ring settles: the previous key is not retired."""
    swarm = Swarm()
    ring = following(swarm)
    old = ring.key
    seen: list[state.Cluster | None] = []

    def cluster_now() -> state.Cluster | None:
        # The rotation applies just before the record is read.
        if not seen:
            run(lambda: dekrotation.begin(swarm.store, swarm.proposer, ring))
        seen.append(swarm.store.cluster)
        return seen[-1]

    cluster = ring.settle(cluster_now)
    assert cluster is not None and cluster.rotation_from == keys.key_id(old)
    assert ring.ring[1:] == (old,) and ring.key_id == cluster.key_id


def test_a_new_leader_finishes_a_rotation_it_learned_from_the_log() -> None:
    swarm = Swarm()
    old = swarm.sealer.key
    swarm.secret("a", b"1")
    other = following(swarm, DataKey(old))  # another manager's ring: the old key only
    following(swarm)
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, swarm.sealer))
    assert other.key == swarm.sealer.key and other.ring[1:] == (old,)
    run(lambda: dekrotation.DataKeyRotator(swarm.store, swarm.proposer, other, swarm.clock).finish(3))
    assert other.unseal(swarm.store.resolve_secret("a").data) == b"1" and other.ring[1:] == ()


def test_a_snapshot_taken_during_a_rotation_teaches_the_new_key() -> None:
    swarm = Swarm()
    old = swarm.sealer.key
    following(swarm)
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, swarm.sealer))
    snap = pickle.loads(pickle.dumps(codec.encode_snapshot(swarm.store.tables(), swarm.store.applied_index)))
    behind = DataKey(old)
    dekrotation.KeyedStateMachine(state.Store(), behind, missing=lambda: None).restore(snap)
    assert behind.key == swarm.sealer.key and behind.ring[1:] == (old,)
    # A snapshot taken after the rotation ended holds nothing to learn the key from: the manager
    # is told to ask another one for it.
    rotator = dekrotation.DataKeyRotator(swarm.store, swarm.proposer, swarm.sealer, swarm.clock)
    run(lambda: rotator.finish(3))
    after = pickle.loads(pickle.dumps(codec.encode_snapshot(swarm.store.tables(), swarm.store.applied_index)))
    away, asked = DataKey(old), []
    dekrotation.KeyedStateMachine(state.Store(), away, missing=lambda: asked.append(1)).restore(after)
    assert asked == [1] and away.key == old
    away.adopt((swarm.sealer.key,))
    # The handed key is held now, but which key is current is the cluster record's word.
    assert not away.missing(swarm.store.cluster) and away.key == old
    assert away.settle(lambda: swarm.store.cluster) is swarm.store.cluster
    assert away.ring == (swarm.sealer.key,)
    # A forged record (the sealed key is not the key its id names) teaches nothing.
    cluster = swarm.store.cluster
    assert cluster is not None
    forged = DataKey(old)
    assert not forged.follow(replace(cluster, rotation_key=keys.seal(old, keys.new_key())))
    assert forged.key == old


def test_apply_checks_what_each_step_expects() -> None:
    swarm = Swarm()
    ring = following(swarm)
    old_id = ring.key_id
    swarm.secret("a", b"1")
    swarm.secret("b", b"2")
    new = keys.new_key()
    new_id = keys.key_id(new)
    with pytest.raises(errors.FailedPrecondition, match="changed since"):
        swarm.proposer.apply(state.BeginDataKeyRotation(key_id=new_id, sealed_key=ring.current().seal(new),
                                                        under="other"))
    begin = state.BeginDataKeyRotation(key_id=new_id, sealed_key=keys.seal(ring.key, new), under=old_id)
    assert swarm.proposer.apply(begin) == new_id
    assert swarm.proposer.apply(begin) == new_id  # idempotent by request id
    a, b = swarm.store.resolve_secret("a"), swarm.store.resolve_secret("b")
    # An item read under a key the record no longer has is skipped (a newer write wins).
    stale = state.Reencrypted(id=a.id, from_key_id="elsewhere", key_id=new_id, data=keys.seal(new, b"x"))
    good = state.Reencrypted(id=b.id, from_key_id=old_id, key_id=new_id, data=keys.seal(new, b"2"))
    assert swarm.proposer.apply(state.ReencryptSecrets(secrets=(stale, good))) == 1
    assert swarm.store.resolve_secret("a").data == a.data
    cluster = swarm.store.cluster
    assert cluster is not None
    finish = state.FinishDataKeyRotation(key_id=new_id, cluster_version=cluster.version,
                                         join_tokens=cluster.join_tokens)
    with pytest.raises(errors.FailedPrecondition, match="1 secrets are not re-encrypted"):
        swarm.proposer.apply(finish)
    swarm.proposer.apply(state.ReencryptSecrets(secrets=(replace(stale, from_key_id=old_id),)))
    with pytest.raises(errors.UpdateOutOfSequence):
        swarm.proposer.apply(replace(finish, rid="f2", cluster_version=cluster.version - 1))
    assert swarm.proposer.apply(replace(finish, rid="f3")) == new_id
    # A secret sealed under the retired key, proposed before the rotation ended, is refused.
    with pytest.raises(errors.FailedPrecondition, match="rotated while this request was in flight"):
        swarm.proposer.apply(state.CreateSecret(id="c" * 25, name="late", data=b"x", key_id=old_id))
    with pytest.raises(errors.InvalidArgument):
        swarm.proposer.apply(state.SetDataKeyRotation(interval=-1))


def test_the_schedule() -> None:
    swarm = Swarm()
    cluster = swarm.store.cluster
    assert cluster is not None and not dekrotation.due(cluster, TS * 2)
    swarm.proposer.apply(state.SetDataKeyRotation(interval=60 * 10**9))
    cluster = swarm.store.cluster
    assert cluster is not None and cluster.key_rotated_at == swarm.clock.ns
    assert not dekrotation.due(cluster, swarm.clock.ns + 59 * 10**9)
    assert dekrotation.due(cluster, swarm.clock.ns + 60 * 10**9)
    info = run(lambda: control(swarm).SetDataKeyRotation(
        control_pb2.SetDataKeyRotationRequest(interval_seconds=0), ctx()))
    assert info.rotation_interval_seconds == 0 and info.key_id == swarm.sealer.key_id


def test_rotating_the_unlock_key_begins_a_data_key_rotation() -> None:
    swarm = Swarm(autolock=True)
    following(swarm)
    before = swarm.sealer.key_id
    resp = run(lambda: control(swarm).RotateUnlockKey(control_pb2.RotateUnlockKeyRequest(), ctx()))
    cluster = swarm.store.cluster
    assert cluster is not None and cluster.data_key_rotation_requested and dekrotation.due(cluster, swarm.clock.ns)
    assert unlock_key(swarm.store, swarm.sealer) == keys.parse_unlock_key(resp.unlock_key)
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, swarm.sealer))  # what the leader's loop does
    cluster = swarm.store.cluster
    assert cluster is not None and cluster.rotation_from == before and cluster.key_id == swarm.sealer.key_id != before
    assert not cluster.data_key_rotation_requested and not dekrotation.due(cluster, swarm.clock.ns)


def test_a_data_key_rotation_and_a_root_ca_rotation_never_overlap() -> None:
    swarm = Swarm()
    following(swarm)
    run(lambda: dekrotation.begin(swarm.store, swarm.proposer, swarm.sealer))
    cluster = swarm.store.cluster
    assert cluster is not None and cluster.rotation_from
    with pytest.raises(errors.FailedPrecondition, match="data key rotation is in progress"):
        state.unwrap(swarm.store.apply(state.StartRootRotation(
            rid="r", ts=TS, from_root=cluster.root_ca_cert, join_tokens=cluster.join_tokens,
            rotation=state.RootRotation(ca_cert="new", ca_key=b"k", cross_signed="x")), 10**6))


@pytest.mark.parametrize("cmd", [
    state.BeginDataKeyRotation(rid="1", ts=TS, key_id="k2", sealed_key=b"\x01s", under="k1"),
    state.ReencryptSecrets(rid="2", ts=TS, secrets=(state.Reencrypted(id="s", from_key_id="k1", key_id="k2",
                                                                      data=b"\x00c"),)),
    state.FinishDataKeyRotation(rid="3", ts=TS, key_id="k2", cluster_version=4,
                                join_tokens=state.JoinTokens(worker=b"w", manager=b"m"), unlock_key=b"u"),
    state.SetDataKeyRotation(rid="4", ts=TS, interval=10**9),
    state.RequestDataKeyRotation(rid="5", ts=TS),
], ids=lambda c: c.KIND)
def test_rotation_commands_round_trip_and_need_state_version_3(cmd: state.Command) -> None:
    entry = codec.encode_command(cmd)
    assert entry["v"] == 3 <= state.STATE_VERSION
    assert codec.decode_command(_loads(pickle.dumps(entry, protocol=4))) == cmd
    with pytest.raises(errors.FailedPrecondition, match="upgrade every manager first"):
        state.require_supported(cmd, [state.Node(id="m", role="manager", state_version=2)])


def test_a_snapshot_written_before_rotations_loads_with_none_in_progress() -> None:
    s = state.Store()
    codec.LogStateMachine(s).restore(read_snapshot(LEGACY / "raft.snapshot"))
    cluster = s.cluster
    assert cluster is not None
    assert (cluster.rotation_from, cluster.rotation_key, cluster.key_rotation_interval) == ("", b"", 0)


def test_the_key_file_keeps_the_ring_during_a_rotation(tmp_path: Path) -> None:
    w = keys.WrappedKeys(str(tmp_path / "keys"))
    dek, old = keys.new_key(), keys.new_key()
    w.store(dek, b"ca", None, previous=(old,))
    assert w.load().previous == (old,)
    w.store(dek, b"ca", None)
    got = w.load()
    assert got.dek == dek and got.previous == () and b"previous_deks" not in (tmp_path / "keys" /
                                                                              "manager-keys.json").read_bytes()


def test_a_replaced_file_is_erased(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_private(str(path), b"secret bytes" * 100)
    old = os.open(path, os.O_RDONLY)
    try:
        (tmp_path / "f.tmp").write_bytes(b"new")
        publish(str(tmp_path / "f.tmp"), str(path), erase_old=True)
        assert path.read_bytes() == b"new"
        assert os.pread(old, 2000, 0) == bytes(1200)  # the replaced inode: zeros, same length
    finally:
        os.close(old)
    # Without erase_old a replaced file keeps its bytes (what the rotation must not leave behind).
    old = os.open(path, os.O_RDONLY)
    try:
        write_private(str(path), b"newer")
        assert os.pread(old, 10, 0) == b"new"
    finally:
        os.close(old)


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("90s", 90.0), ("1h30m", 5400.0), ("2160h", 7776000.0),
                                               ("1.5s", 1.5), ("500ms", 0.5)])
def test_durations_parse_as_docker_takes_them(text: str, seconds: float) -> None:
    assert validation.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10", "1d", "5s junk"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=f'invalid duration "{text}"'):
        validation.parse_duration(text)
