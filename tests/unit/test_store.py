"""The state machine: deterministic apply, Swarm's rules, idempotent retries, snapshots."""

from __future__ import annotations

from dataclasses import replace

import pytest

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import Store

TS = 1_700_000_000_000_000_000


def create(store: Store, name: str, index: int, rid: str | None = None, sid: str | None = None,
           labels: dict[str, str] | None = None) -> state.Result:
    return store.apply(state.CreateSecret(rid=rid or f"r-{name}-{index}", ts=TS + index, id=sid or f"id{index:023d}",
                                          name=name, labels=labels or {}, data=b"ciphertext", key_id="k"), index)


def service(sid: str, name: str, refs: tuple[state.SecretRef, ...] = ()) -> state.Service:
    return state.Service(id=sid, name=name, mode="replicated", replicas=1, secrets=refs)


def add_service(store: Store, svc: state.Service, index: int) -> state.Result:
    return store.apply(state.CreateService(rid=f"svc-{index}", ts=TS + index, service=svc), index)


def test_create_sets_version_to_raft_index_and_never_returns_data() -> None:
    s = Store()
    res = state.unwrap(create(s, "db_pass", 7))
    assert res.version == 7 and res.name == "db_pass" and res.created_at == TS + 7
    assert res.data == b""
    assert s.secret(res.id).data == b"ciphertext"  # type: ignore[union-attr]


def test_names_are_unique_regardless_of_case() -> None:
    s = Store()
    state.unwrap(create(s, "Name", 1))
    with pytest.raises(errors.AlreadyExists, match="secret name already exists"):
        state.unwrap(create(s, "name", 2))


def test_a_retried_command_returns_its_first_outcome() -> None:
    s = Store()
    first = state.unwrap(create(s, "once", 1, rid="same", sid="a" * 25))
    # The retry is a new log entry with a new proposed ID, but the same request id.
    again = state.unwrap(create(s, "once", 2, rid="same", sid="b" * 25))
    assert again == first
    assert len(s.secrets()) == 1
    # Without the request id, the same create is a conflict.
    with pytest.raises(errors.AlreadyExists):
        state.unwrap(create(s, "once", 3, rid="other"))


def test_remove_retry_is_not_a_false_not_found() -> None:
    s = Store()
    sid = state.unwrap(create(s, "gone", 1)).id
    rm = state.RemoveSecret(rid="rm-1", ts=TS + 2, id=sid)
    assert state.unwrap(s.apply(rm, 2)) is None
    assert state.unwrap(s.apply(replace(rm), 3)) is None
    with pytest.raises(errors.NotFound, match=f"could not find secret {sid}"):
        state.unwrap(s.apply(replace(rm, rid="rm-2"), 4))


def test_label_update_checks_the_version() -> None:
    s = Store()
    sid = state.unwrap(create(s, "lbl", 1)).id
    upd = state.UpdateSecret(rid="u1", ts=TS + 2, id=sid, version=1, labels={"a": "b"})
    assert state.unwrap(s.apply(upd, 2)).labels == {"a": "b"}
    with pytest.raises(errors.SwarmError, match="update out of sequence"):
        state.unwrap(s.apply(replace(upd, rid="u2"), 3))


def test_in_use_secret_cannot_be_removed() -> None:
    s = Store()
    sid = state.unwrap(create(s, "used", 1)).id
    ref = state.SecretRef(secret_id=sid, secret_name="used", target="used")
    state.unwrap(add_service(s, service("svc1", "app", (ref,)), 2))
    state.unwrap(add_service(s, service("svc2", "web", (ref,)), 3))
    with pytest.raises(errors.InvalidArgument,
                       match="secret 'used' is in use by the following services: app, web"):
        state.unwrap(s.apply(state.RemoveSecret(rid="x", ts=TS, id=sid), 4))


def test_a_bad_command_fails_alone_and_apply_never_raises() -> None:
    s = Store()
    machine = codec.LogStateMachine(s)
    res = machine.apply({"op": "create_secret", "rid": "bad", "ts": TS}, 1)  # missing fields
    assert isinstance(res, state.Err)
    res = machine.apply({"op": "no_such_op", "rid": "bad2", "ts": TS}, 2)
    assert isinstance(res, state.Err)
    res = machine.apply(["not", "a", "command"], 3)
    assert isinstance(res, state.Err)
    # A command that a rule refuses fails alone too.
    res = s.apply(state.UpdateService(rid="boom", ts=TS, id="nope", replicas=1), 4)
    assert isinstance(res, state.Err)
    assert state.unwrap(create(s, "fine", 5)).name == "fine"
    assert s.applied_index == 5


def test_apply_is_deterministic_and_snapshots_restore_everything() -> None:
    cmds = [state.CreateSecret(rid=f"r{i}", ts=TS + i, id=f"{i:025d}", name=f"s{i % 30}", data=b"c", key_id="k")
            for i in range(1, 50)]
    a, b = Store(), Store()
    ra = [a.apply(c, i) for i, c in enumerate(cmds, 1)]
    rb = [b.apply(c, i) for i, c in enumerate(cmds, 1)]
    assert ra == rb and a.tables() == b.tables()
    snap = codec.LogStateMachine(a).snapshot()
    c = Store()
    codec.LogStateMachine(c).restore(snap)
    assert c.tables() == a.tables() and c.applied_index == a.applied_index == 49
    # The name index is rebuilt: duplicates are still refused after a restore.
    with pytest.raises(errors.AlreadyExists):
        state.unwrap(create(c, "S1", 99))
    # And a retried request still gets its first outcome.
    assert c.apply(cmds[0], 100) == ra[0]


def test_reads_hand_out_immutable_objects() -> None:
    s = Store()
    secret = state.unwrap(create(s, "ro", 1))
    with pytest.raises(AttributeError):
        secret.name = "changed"  # type: ignore[misc]
    stored = s.resolve_secret("ro")
    assert stored is s.resolve_secret(stored.id[:5])  # the stored object itself, no copy


def test_request_records_expire_by_the_proposers_clock() -> None:
    s = Store()
    state.unwrap(create(s, "old", 1, rid="old-rid"))
    later = state.CreateSecret(rid="new-rid", ts=TS + 25 * 3600 * 10**9, id="n" * 25, name="new", data=b"c",
                               key_id="k")
    state.unwrap(s.apply(later, 2))
    assert not s.has_request("old-rid") and s.has_request("new-rid")


def test_services_reference_existing_secrets_by_id_and_current_name() -> None:
    s = Store()
    sid = state.unwrap(create(s, "db_pass", 1)).id
    ref = state.SecretRef(secret_id=sid, secret_name="db_pass", target="password")
    with pytest.raises(errors.InvalidArgument, match="secrets not found: a, b"):
        state.unwrap(add_service(s, service("x", "x", (replace(ref, secret_id="nope", secret_name="a"),
                                                        replace(ref, secret_id="nope2", secret_name="b"))), 2))
    with pytest.raises(errors.InvalidArgument, match="secret not found: renamed"):
        state.unwrap(add_service(s, service("x", "x", (replace(ref, secret_name="renamed"),)), 3))
    svc = state.unwrap(add_service(s, service("svc" + "0" * 22, "app", (ref,)), 4))
    assert svc.spec_version == 1
    with pytest.raises(errors.AlreadyExists, match="service APP already exists"):
        state.unwrap(add_service(s, service("y", "APP", (ref,)), 5))
    # A secret-changing update bumps the spec version; a replica change alone does not.
    upd = state.UpdateService(rid="u", ts=TS, id=svc.id, version=0, secrets=())
    assert state.unwrap(s.apply(upd, 6)).spec_version == 2
    upd2 = state.UpdateService(rid="u2", ts=TS, id=svc.id, version=0, replicas=3)
    assert state.unwrap(s.apply(upd2, 7)).spec_version == 2
    assert s.service(svc.id).replicas == 3  # type: ignore[union-attr]


def _task(tid: str, node: str, **kw: str) -> state.Task:
    return state.Task(id=tid, service_id="svc", service_name="app", slot=1, node_id=node, **kw)  # type: ignore[arg-type]


def test_a_node_reports_only_on_its_own_tasks() -> None:
    s = Store()
    state.unwrap(add_service(s, service("svc", "app"), 1))
    state.unwrap(s.apply(state.Schedule(rid="s", ts=TS, create=(_task("t1", "n1"),)), 2))

    def report(rid: str, node: str) -> state.TaskStatus:
        return state.TaskStatus(rid=rid, ts=TS, reports=(state.StatusReport(node_id=node, updates=(
            state.TaskStatusUpdate(task_id="t1", state="failed", spec_version=1),)),))

    state.unwrap(s.apply(report("r1", "n2"), 3))
    assert s.tasks()[0].state == "assigned"
    state.unwrap(s.apply(report("r2", "n1"), 4))
    assert s.tasks()[0].state == "failed" and s.tasks()[0].status_ts == TS


def test_removed_nodes_are_remembered_and_their_tasks_orphaned() -> None:
    s = Store()
    state.unwrap(s.apply(state.AddNode(rid="a", ts=TS, node=state.Node(id="n1", role="worker")), 1))
    state.unwrap(add_service(s, service("svc", "app"), 2))
    state.unwrap(s.apply(state.Schedule(rid="s", ts=TS, create=(_task("t1", "n1", state="running"),)), 3))
    state.unwrap(s.apply(state.RemoveNode(rid="r", ts=TS, node_id="n1"), 4))
    assert s.is_removed_node("n1") and s.node("n1") is None
    assert s.tasks()[0].desired_state == "shutdown" and s.tasks()[0].state == "orphaned"


def test_subscribers_receive_typed_events_after_apply() -> None:
    s = Store()
    seen: list[state.Applied] = []
    s.subscribe(seen.append)
    s.subscribe(lambda ev: 1 / 0)  # a failing subscriber breaks nothing
    cmd = state.AddNode(rid="a", ts=TS, node=state.Node(id="n1", role="manager"))
    state.unwrap(s.apply(cmd, 1))
    state.unwrap(s.apply(state.UpdateNode(rid="b", ts=TS, id="n1", role="worker", raft_addr=""), 2))
    assert [ev.index for ev in seen] == [1, 2] and seen[0].command is cmd and seen[1].ok
    assert isinstance(seen[1].result, state.Ok) and seen[1].result.value.role == "worker"


def test_the_view_is_frozen_at_its_index() -> None:
    s = Store()
    state.unwrap(s.apply(state.AddNode(rid="a", ts=TS, node=state.Node(id="n1", role="worker")), 1))
    view = s.view()
    assert s.view() is view  # cached until the next apply
    state.unwrap(s.apply(state.AddNode(rid="b", ts=TS, node=state.Node(id="n2", role="worker")), 2))
    assert list(view.nodes) == ["n1"] and view.index == 1
    assert sorted(s.view().nodes) == ["n1", "n2"]
    with pytest.raises(TypeError):
        view.nodes["x"] = state.Node(id="x", role="worker")  # type: ignore[index]


def test_a_hostname_never_shadows_another_nodes_id_prefix() -> None:
    store = Store()
    store.apply(state.AddNode(rid="a", node=state.Node(id="abc123victim", role="manager", hostname="m1")), 1)
    store.apply(state.AddNode(rid="b", node=state.Node(id="zzz999shadow", role="worker", hostname="abc")), 2)
    # Docker would resolve "abc" to the node named abc; a joiner picks its hostname, so it is ambiguous.
    with pytest.raises(errors.InvalidArgument) as e:
        store.resolve_node("abc")
    assert e.value.message == "node abc is ambiguous (2 matches found)"
    assert store.resolve_node("abc123victim").id == "abc123victim"
    assert store.resolve_node("abc1").id == "abc123victim"
    assert store.resolve_node("m1").id == "abc123victim"
    assert store.resolve_node("zzz").id == "zzz999shadow"
    # A node whose hostname is its own ID prefix is one match, not two.
    store.apply(state.AddNode(rid="c", node=state.Node(id="qqq111self", role="worker", hostname="qqq")), 3)
    assert store.resolve_node("qqq").id == "qqq111self"
    with pytest.raises(errors.NotFound):
        store.resolve_node("nope")


def test_an_unlock_key_rotation_that_loses_the_race_to_autolock_off_is_refused() -> None:
    store = Store()
    store.apply(state.InitCluster(rid="i", ts=1, cluster=state.Cluster(
        id="c", root_ca_cert="pem", join_tokens=state.JoinTokens(worker=b"w", manager=b"m"),
        autolock=True, unlock_key=b"k1"), node=state.Node(id="n", role="manager", raft_addr="a:1")), 1)
    store.apply(state.SetAutolock(rid="off", ts=2, autolock=False, unlock_key=None), 2)
    result = store.apply(state.UpdateCluster(rid="rot", ts=3, unlock_key=b"k2"), 3)
    assert isinstance(result, state.Err) and "autolock is not turned on" in str(result.error())
    assert store.cluster is not None and (store.cluster.autolock, store.cluster.unlock_key) == (False, None)
