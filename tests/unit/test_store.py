"""The state machine: deterministic apply, Swarm's rules, idempotent retries, snapshots."""

from __future__ import annotations

import copy

import pytest

from swarmsecrets import errors
from swarmsecrets.manager.store import Store, unwrap

TS = 1_700_000_000_000_000_000


def create(store: Store, name: str, index: int, rid: str | None = None, sid: str | None = None, **kw):  # type: ignore[no-untyped-def]
    cmd = {"op": "create_secret", "rid": rid or f"r-{name}-{index}", "ts": TS + index, "id": sid or f"id{index:023d}",
           "name": name, "labels": kw.get("labels", {}), "data": b"ciphertext", "key_id": "k"}
    return store.apply(cmd, index)


def test_create_sets_version_to_raft_index_and_never_returns_data() -> None:
    s = Store()
    res = unwrap(create(s, "db_pass", 7))
    assert res["version"] == 7 and res["name"] == "db_pass"
    assert "data" not in res


def test_names_are_unique_regardless_of_case() -> None:
    s = Store()
    unwrap(create(s, "Name", 1))
    with pytest.raises(errors.AlreadyExists, match="secret name already exists"):
        unwrap(create(s, "name", 2))


def test_a_retried_command_returns_its_first_outcome() -> None:
    s = Store()
    first = unwrap(create(s, "once", 1, rid="same", sid="a" * 25))
    # The retry is a new log entry with a new proposed ID, but the same request id.
    again = unwrap(create(s, "once", 2, rid="same", sid="b" * 25))
    assert again == first
    assert len(s.secrets()) == 1
    # Without the request id, the same create is a conflict.
    with pytest.raises(errors.AlreadyExists):
        unwrap(create(s, "once", 3, rid="other"))


def test_remove_retry_is_not_a_false_not_found() -> None:
    s = Store()
    sid = unwrap(create(s, "gone", 1))["id"]
    rm = {"op": "remove_secret", "rid": "rm-1", "ts": TS + 2, "id": sid}
    assert unwrap(s.apply(rm, 2)) is None
    assert unwrap(s.apply(dict(rm), 3)) is None
    with pytest.raises(errors.NotFound, match=f"could not find secret {sid}"):
        unwrap(s.apply({**rm, "rid": "rm-2"}, 4))


def test_label_update_checks_the_version() -> None:
    s = Store()
    sid = unwrap(create(s, "lbl", 1))["id"]
    upd = {"op": "update_secret", "rid": "u1", "ts": TS + 2, "id": sid, "version": 1, "labels": {"a": "b"}}
    assert unwrap(s.apply(upd, 2))["labels"] == {"a": "b"}
    with pytest.raises(errors.SwarmError, match="update out of sequence"):
        unwrap(s.apply({**upd, "rid": "u2"}, 3))


def test_in_use_secret_cannot_be_removed() -> None:
    s = Store()
    sid = unwrap(create(s, "used", 1))["id"]
    s.state["services"]["svc1"] = {"name": "app", "secrets": [{"secret_id": sid}]}
    s.state["services"]["svc2"] = {"name": "web", "secrets": [{"secret_id": sid}]}
    with pytest.raises(errors.InvalidArgument,
                       match="secret 'used' is in use by the following services: app, web"):
        unwrap(s.apply({"op": "remove_secret", "rid": "x", "ts": TS, "id": sid}, 2))


def test_a_bad_command_fails_alone_and_apply_never_raises() -> None:
    s = Store()
    res = s.apply({"op": "create_secret", "rid": "bad", "ts": TS}, 1)  # missing fields
    assert "err" in res
    res = s.apply({"op": "no_such_op", "rid": "bad2", "ts": TS}, 2)
    assert "err" in res
    assert unwrap(create(s, "fine", 3))["name"] == "fine"


def test_apply_is_deterministic_and_snapshots_restore_everything() -> None:
    cmds = []
    for i in range(1, 50):
        cmds.append({"op": "create_secret", "rid": f"r{i}", "ts": TS + i, "id": f"{i:025d}",
                     "name": f"s{i % 30}", "labels": {}, "data": b"c", "key_id": "k"})
    a, b = Store(), Store()
    ra = [a.apply(copy.deepcopy(c), i) for i, c in enumerate(cmds, 1)]
    rb = [b.apply(copy.deepcopy(c), i) for i, c in enumerate(cmds, 1)]
    assert ra == rb and a.state == b.state
    c = Store()
    c.restore(copy.deepcopy(a.snapshot()))
    assert c.state == a.state
    # The name index is rebuilt: duplicates are still refused after a restore.
    with pytest.raises(errors.AlreadyExists):
        unwrap(create(c, "S1", 99))


def test_request_records_expire_by_the_proposers_clock() -> None:
    s = Store()
    unwrap(create(s, "old", 1, rid="old-rid"))
    later = {"op": "create_secret", "rid": "new-rid", "ts": TS + 25 * 3600 * 10**9, "id": "n" * 25,
             "name": "new", "labels": {}, "data": b"c", "key_id": "k"}
    unwrap(s.apply(later, 2))
    assert not s.has_request("old-rid") and s.has_request("new-rid")


def _service(store: Store, name: str, refs: list[dict], index: int):  # type: ignore[no-untyped-def]
    svc = {"id": f"svc{index:022d}", "name": name, "labels": {}, "mode": "replicated", "replicas": 1,
           "command": [], "env": {}, "user": "", "secrets": refs, "update_action": "restart"}
    return store.apply({"op": "create_service", "rid": f"svc-{index}", "ts": TS + index, "service": svc}, index)


def test_services_reference_existing_secrets_by_id_and_current_name() -> None:
    s = Store()
    sid = unwrap(create(s, "db_pass", 1))["id"]
    ref = {"secret_id": sid, "secret_name": "db_pass", "target": "password", "uid": "0", "gid": "0", "mode": 0o444}
    with pytest.raises(errors.InvalidArgument, match="secrets not found: a, b"):
        unwrap(_service(s, "x", [dict(ref, secret_id="nope", secret_name="a"),
                                 dict(ref, secret_id="nope2", secret_name="b")], 2))
    with pytest.raises(errors.InvalidArgument, match="secret not found: renamed"):
        unwrap(_service(s, "x", [dict(ref, secret_name="renamed")], 3))
    svc = unwrap(_service(s, "app", [ref], 4))
    assert svc["spec_version"] == 1
    with pytest.raises(errors.AlreadyExists, match="service APP already exists"):
        unwrap(_service(s, "APP", [ref], 5))
    # A secret-changing update bumps the spec version; a replica change alone does not.
    upd = {"op": "update_service", "rid": "u", "ts": TS, "id": svc["id"], "version": 0, "changes": {"secrets": []}}
    assert unwrap(s.apply(upd, 6))["spec_version"] == 2
    upd2 = {**upd, "rid": "u2", "changes": {"replicas": 3}}
    assert unwrap(s.apply(upd2, 7))["spec_version"] == 2


def test_a_node_reports_only_on_its_own_tasks() -> None:
    s = Store()
    task = {"id": "t1", "service_id": "svc", "service_name": "app", "slot": 1, "node_id": "n1",
            "desired_state": "running", "state": "assigned", "spec_version": 1}
    s.state["services"]["svc"] = {"id": "svc"}
    unwrap(s.apply({"op": "schedule", "rid": "s", "ts": TS, "create": [task]}, 1))
    def report(rid: str, node: str) -> dict:  # type: ignore[type-arg]
        return {"op": "task_status", "rid": rid, "ts": TS,
                "reports": [{"node_id": node, "updates": [{"task_id": "t1", "state": "failed", "spec_version": 1}]}]}

    unwrap(s.apply(report("r1", "n2"), 2))
    assert s.tasks()[0]["state"] == "assigned"
    unwrap(s.apply(report("r2", "n1"), 3))
    assert s.tasks()[0]["state"] == "failed"


def test_removed_nodes_are_remembered_and_their_tasks_orphaned() -> None:
    s = Store()
    unwrap(s.apply({"op": "add_node", "rid": "a", "ts": TS, "node": {"id": "n1", "role": "worker"}}, 1))
    s.state["services"]["svc"] = {"id": "svc"}
    unwrap(s.apply({"op": "schedule", "rid": "s", "ts": TS, "create": [
        {"id": "t1", "service_id": "svc", "service_name": "app", "slot": 1, "node_id": "n1",
         "desired_state": "running", "state": "running"}]}, 2))
    unwrap(s.apply({"op": "remove_node", "rid": "r", "ts": TS, "node_id": "n1"}, 3))
    assert s.is_removed_node("n1") and s.node("n1") is None
    assert s.tasks()[0]["desired_state"] == "shutdown" and s.tasks()[0]["state"] == "orphaned"
