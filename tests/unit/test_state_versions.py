"""The versioned encoding of the replicated state: data written by the release before versions
still loads, and commands that a member does not know are refused cleanly (rolling upgrades)."""

from __future__ import annotations

import io
import logging
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.state import codec, commands
from swarmsecrets.manager.state.store import Store

# Written by the release before versions (commit ed108eb): its RaftNode and store on a temp dir,
# a snapshot after the first commands, then more commands in the journal only. generate.py.txt
# beside the files is the script that wrote them.
LEGACY = Path(__file__).parent / "data" / "state_v0"
TS = 1_700_000_000_000_000_000


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _loads(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


def read_snapshot(path: Path) -> Any:
    """The state part of a raft snapshot file: magic, u64 + header pickle, u64 + state pickle, digest."""
    raw = path.read_bytes()
    assert raw[:8] == b"SWRS\x00\x00\x00\x01"
    (head_len,) = struct.unpack_from("!Q", raw, 8)
    at = 16 + head_len
    (state_len,) = struct.unpack_from("!Q", raw, at)
    return _loads(raw[at + 8:at + 8 + state_len])


def read_journal(path: Path) -> list[tuple[int, Any]]:
    """The regular commands of a raft journal: magic, then records (len, crc, index, term, type+pickle)."""
    raw = path.read_bytes()
    assert raw[:8] == b"SWRJ\x00\x00\x00\x01"
    out, at = [], 8
    while at < len(raw):
        length, _crc, index, _term = struct.unpack_from("!IIQQ", raw, at)
        at += 24
        entry = raw[at:at + length]
        at += length
        if entry[:1] == b"\x00":  # regular command (the others are raft's own: no-ops, membership)
            out.append((index, _loads(entry[1:])))
    return out


def test_a_legacy_snapshot_and_journal_load_into_the_typed_store() -> None:
    snap = read_snapshot(LEGACY / "raft.snapshot")
    assert "state_version" not in snap and "v" not in read_journal(LEGACY / "raft.journal")[-1][1]
    s = Store()
    machine = codec.LogStateMachine(s)
    machine.restore(snap)
    assert s.applied_index == snap["applied_index"] == 11
    assert s.resolve_service("web").replicas == 2 and not s.tasks()
    results = {index: machine.apply(entry, index)
               for index, entry in read_journal(LEGACY / "raft.journal") if index > s.applied_index}
    assert len(results) == 10 and s.applied_index == 22
    assert isinstance(results[22], state.Err) and "already exists" in results[22].message  # as it failed then

    cluster = s.cluster
    assert cluster is not None and cluster.id == "c" * 25 and cluster.autolock and cluster.key_id == "kid1"
    assert cluster.unlock_key == b"\x01" + b"\xaa" * 40 + b"u2" and cluster.join_tokens.worker.endswith(b"w")
    manager, worker = s.node("m" * 25), s.node("w" * 25)
    assert manager is not None and manager.role == "manager" and manager.raft_addr == "127.0.0.1:2378"
    assert manager.state_version == 0  # written before members advertised it: counts as version 1
    assert worker is not None and (worker.status, worker.availability, worker.hostname) == ("ready", "pause", "wrk1")
    assert s.node("x" * 25) is None and s.is_removed_node("x" * 25)
    db = s.resolve_secret("db_pass")
    assert db.labels == {"env": "prod", "team": "db"} and db.data == b"\x01" + b"\xaa" * 40 + b"1"
    assert sorted(x.name for x in s.secrets()) == ["api_key", "db_pass"]
    web = s.resolve_service("web")
    assert web.replicas == 3 and web.spec_version == 2 and web.command == ("sleep", "600")
    assert [(r.secret_name, r.target, r.mode) for r in web.secrets] == [("db_pass", "db_pass", 0o444),
                                                                      ("api_key", "api", 0o444)]
    tasks = {t.id: t for t in s.tasks()}
    assert tasks["k" * 25].state == "running" and tasks["k" * 25].message == "started"
    assert (tasks["l" * 25].state, tasks["l" * 25].desired_state) == ("orphaned", "shutdown")
    # Retries of requests made before the upgrade still get their first outcome.
    assert s.has_request("rid-s1") and s.has_request("rid-svc-up")
    first = machine.apply({"op": "create_secret", "rid": "rid-s1", "id": "z" * 25, "name": "db_pass",
                           "labels": {}, "data": b"x", "key_id": "kid1", "ts": TS + 99}, 23)
    assert isinstance(first, state.Ok) and first.value.id == "s" * 25 and first.value.data == b""

    # The old code's own state after the same log: the typed store holds exactly the same.
    expected, _ = codec.decode_snapshot(_loads((LEGACY / "expected_state.pickle").read_bytes()))
    got = s.tables()
    for name in ("cluster", "nodes", "secrets", "services", "tasks", "removed_nodes"):
        assert getattr(got, name) == getattr(expected, name), name


def test_the_new_snapshot_carries_its_version_and_round_trips() -> None:
    s = Store()
    machine = codec.LogStateMachine(s)
    machine.restore(read_snapshot(LEGACY / "raft.snapshot"))
    for index, entry in read_journal(LEGACY / "raft.journal"):
        if index > s.applied_index:
            machine.apply(entry, index)
    snap = machine.snapshot()  # its manager never advertised a version: the whole-state form it reads
    # Tagged with the version its content needs (no batch was applied: the same as before batches).
    assert isinstance(snap, dict) and snap["state_version"] == codec.FRAMED_SINCE
    again = Store()
    codec.LogStateMachine(again).restore(_loads(pickle.dumps(snap, protocol=4)))  # plain data only
    assert again.tables() == s.tables() and again.applied_index == s.applied_index


def _every_table_filled() -> Store:
    """A store whose every table holds something, its one manager reading framed snapshots."""
    s = Store()
    for index, cmd in enumerate(EVERY_COMMAND, 1):
        if not isinstance(cmd, (state.RemoveSecret, state.RemoveService, state.RemoveNode)):
            s.apply(cmd, index)
    s.apply(state.CreateSecret(rid="a" * 32 + "/" + "b" * 64, ts=TS, id="s2", name="Upper", data=b"c", key_id="k"), 50)
    s.apply(state.AddNode(rid="m", ts=TS, node=state.Node(id="m", role="manager", raft_addr="b:1",
                                                           state_version=state.STATE_VERSION)), 51)
    s.apply(state.UpdateNode(rid="m2", ts=TS, id="n", state_version=state.STATE_VERSION), 52)
    s.apply(state.RemoveNode(rid="5", ts=TS, node_id="w"), 53)
    s.apply(state.CreateSecret(rid="e", ts=TS, id="s3", name="upper", data=b"c", key_id="k"), 54)  # an Err
    return s


def test_the_framed_snapshot_restores_every_table_frame_by_frame() -> None:
    s = _every_table_filled()
    frames = [_loads(pickle.dumps(f, protocol=4)) for f in codec.LogStateMachine(s).snapshot()]  # plain data
    assert frames[0]["format"] == codec.FRAMED and frames[0]["state_version"] == codec.FRAMED_SINCE
    again = Store()
    codec.LogStateMachine(again).restore(iter(frames))
    assert again.tables() == s.tables() and again.applied_index == s.applied_index == 54
    assert all(t.requests for t in (s.tables(), again.tables())) and again.tables().removed_nodes
    with pytest.raises(errors.AlreadyExists):  # the name index is rebuilt
        state.unwrap(again.apply(state.CreateSecret(rid="z", ts=TS, id="s4", name="UPPER", data=b"c", key_id="k"), 55))
    with pytest.raises(codec.Malformed, match="end frame"):
        codec.LogStateMachine(Store()).restore(iter(frames[:-2]))  # cut short: refused, not half loaded


def test_a_manager_of_an_earlier_version_gets_whole_state_snapshots() -> None:
    s = _every_table_filled()
    s.apply(state.UpdateNode(rid="old", ts=TS, id="m", state_version=codec.FRAMED_SINCE - 1), 60)
    snap = codec.LogStateMachine(s).snapshot()
    assert isinstance(snap, dict) and codec.decode_snapshot(snap)[0] == s.tables()


def test_a_snapshot_of_a_later_version_is_refused() -> None:
    snap = codec.encode_snapshot(Store().tables(), 3)
    snap["state_version"] = state.STATE_VERSION + 1
    with pytest.raises(codec.SnapshotTooNew, match="upgrade"):
        codec.LogStateMachine(Store()).restore(snap)


EVERY_COMMAND: list[state.Command] = [
    state.InitCluster(rid="1", ts=TS, cluster=state.Cluster(
        id="c", root_ca_cert="pem", join_tokens=state.JoinTokens(worker=b"w", manager=b"m"), unlock_key=b"u"),
        node=state.Node(id="n", role="manager", raft_addr="a:1", state_version=1)),
    state.UpdateCluster(rid="2", ts=TS, join_tokens=state.JoinTokens(worker=b"w2", manager=b"m")),
    state.AddNode(rid="3", ts=TS, node=state.Node(id="w", role="worker", hostname="h")),
    state.UpdateNode(rid="4", ts=TS, id="w", status="down", status_message="heartbeat failure"),
    state.RemoveNode(rid="5", ts=TS, node_id="w"),
    state.CreateSecret(rid="6", ts=TS, id="s", name="n", data=b"\x00ct", key_id="k", labels={"a": "b"}),
    state.UpdateSecret(rid="7", ts=TS, id="s", version=6, labels={}),
    state.RemoveSecret(rid="8", ts=TS, id="s"),
    state.CreateService(rid="9", ts=TS, service=state.Service(
        id="v", name="web", mode="global", command=("a", "b"), env={"K": "V"},
        secrets=(state.SecretRef(secret_id="s", secret_name="n", target="t", uid="1", gid="2", mode=0o400),))),
    state.UpdateService(rid="10", ts=TS, id="v", version=9, replicas=2, force=True),
    state.RemoveService(rid="11", ts=TS, id="v"),
    state.Schedule(rid="12", ts=TS,
                   create=(state.Task(id="t", service_id="v", service_name="web", slot=0, node_id="w"),),
                   update=(state.TaskChange(id="t0", desired_state="shutdown", state="orphaned"),), delete=("t9",)),
    state.TaskStatus(rid="13", ts=TS, reports=(state.StatusReport(node_id="w", updates=(
        state.TaskStatusUpdate(task_id="t", state="running", exit_code=0, spec_version=1, ts=TS),)),)),
]


@pytest.mark.parametrize("cmd", EVERY_COMMAND, ids=lambda c: c.KIND)
def test_every_command_round_trips_through_plain_data(cmd: state.Command) -> None:
    entry = codec.encode_command(cmd)
    assert entry["op"] == cmd.KIND and entry["v"] == cmd.SINCE
    assert codec.decode_command(_loads(pickle.dumps(entry, protocol=4))) == cmd


def test_an_entry_without_a_request_id_decodes_alike_everywhere() -> None:
    entry = {"op": "remove_node", "ts": TS, "node_id": "n"}
    assert codec.decode_command(entry) == codec.decode_command(entry)
    assert codec.decode_command(entry).rid == ""  # no idempotency record, on every member alike


def test_entries_keep_the_layout_the_previous_release_reads() -> None:
    # A member of the previous release reads what an upgraded leader writes (it ignores "v").
    assert codec.encode_command(state.UpdateNode(rid="r", ts=5, id="n", availability="drain")) == {
        "op": "update_node", "v": 1, "rid": "r", "ts": 5, "node": {"id": "n", "availability": "drain"}}
    assert codec.encode_command(state.UpdateService(rid="r", ts=5, id="v", replicas=3)) == {
        "op": "update_service", "v": 1, "rid": "r", "ts": 5, "id": "v", "version": 0, "force": False,
        "changes": {"replicas": 3}}
    assert codec.encode_command(state.RemoveNode(rid="r", ts=5, node_id="n")) == {
        "op": "remove_node", "v": 1, "rid": "r", "ts": 5, "node_id": "n"}


# Node's fields as the previous release defines them; a member of that release decodes an
# add_node strictly against them.
PREVIOUS_NODE_FIELDS = frozenset({"id", "role", "hostname", "addr", "raft_addr", "engine_version", "arch",
                                  "availability", "status", "status_message", "labels", "cert_serial",
                                  "state_version"})


def test_an_object_written_now_reads_on_a_member_that_predates_its_new_fields() -> None:
    node = state.Node(id="n", role="manager", hostname="h", addr="10.0.0.1:4242", raft_addr="10.0.0.1:4243")
    entry = codec.encode_command(state.AddNode(rid="r", ts=5, node=node))
    assert set(entry["node"]) <= PREVIOUS_NODE_FIELDS
    # ... and what a field holds once set is kept.
    recorded = codec.encode_command(state.AddNode(rid="r", ts=5, node=replace(node, cert_not_after=7)))
    assert recorded["node"]["cert_not_after"] == 7
    assert codec.decode_command(recorded) == state.AddNode(rid="r", ts=5, node=replace(node, cert_not_after=7))


def _populated() -> tuple[Store, codec.LogStateMachine]:
    s = Store()
    machine = codec.LogStateMachine(s)
    assert isinstance(machine.apply(codec.encode_command(EVERY_COMMAND[0]), 1), state.Ok)
    return s, machine


@pytest.mark.parametrize("entry", [
    {"op": "rotate_ca", "v": state.STATE_VERSION + 1, "rid": "x", "ts": TS},  # a kind from a later release
    {"op": "create_secret", "v": state.STATE_VERSION + 1, "rid": "x", "ts": TS, "id": "s", "name": "n",
     "data": b"c", "key_id": "k"},  # a known kind in a later version
    {"op": "create_secret", "v": 1, "rid": "x", "ts": TS, "id": "s", "name": "n", "data": b"c", "key_id": "k",
     "expires_at": 5},  # a field this version does not define
    {"op": "create_secret", "v": 1, "rid": "x", "ts": TS, "id": "s", "name": 7, "data": b"c", "key_id": "k"},
])
def test_an_unknown_command_is_refused_cleanly(entry: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    s, machine = _populated()
    before = codec.encode_snapshot(s.tables(), 0)
    with caplog.at_level(logging.ERROR):
        result = machine.apply(entry, 2)
    assert isinstance(result, state.Err) and "cannot apply" in result.message
    assert "refused raft entry 2" in caplog.text
    assert codec.encode_snapshot(s.tables(), 0) == before and s.applied_index == 2  # nothing half applied
    assert isinstance(machine.apply(codec.encode_command(EVERY_COMMAND[2]), 3), state.Ok)  # and the log goes on


@dataclass(frozen=True, slots=True, kw_only=True)
class FutureCommand(state.Command):
    """A command kind of the next state version (not registered: this release cannot apply it)."""

    KIND = "future"
    SINCE = state.STATE_VERSION + 1


def test_apply_refuses_a_command_class_it_has_no_handler_for() -> None:
    s, _ = _populated()
    result = s.apply(FutureCommand(rid="f", ts=TS), 2)
    assert isinstance(result, state.Err) and s.applied_index == 2


def _managers(*versions: int) -> list[state.Node]:
    return [state.Node(id=f"m{i}", role="manager", state_version=v) for i, v in enumerate(versions)]


def test_commands_of_this_version_go_to_managers_of_any_release() -> None:
    for cmd in EVERY_COMMAND:
        state.require_supported(cmd, _managers(0, 1, state.STATE_VERSION))  # 0: never advertised = 1


def test_a_newer_command_waits_until_every_manager_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = FutureCommand(rid="f")
    # This release does not know it at all.
    with pytest.raises(errors.FailedPrecondition, match="this manager supports"):
        state.require_supported(cmd, _managers(FutureCommand.SINCE, FutureCommand.SINCE))
    # The next release knows it, but proposes it only once the last manager is upgraded.
    monkeypatch.setattr(commands, "STATE_VERSION", FutureCommand.SINCE)
    with pytest.raises(errors.FailedPrecondition, match="upgrade every manager first"):
        state.require_supported(cmd, _managers(FutureCommand.SINCE, 0))
    state.require_supported(cmd, _managers(FutureCommand.SINCE, FutureCommand.SINCE))
