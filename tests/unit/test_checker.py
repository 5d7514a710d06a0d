"""The chaos checker on hand-made histories: each anomaly is caught, and clean histories (with
indeterminate ops) are not flagged."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.chaoskit.checker import (
    Cut,
    Expected,
    FileObs,
    Op,
    Snapshot,
    binding_windows,
    check_history,
    check_minority,
    check_untouched,
    check_worker_final,
    check_workers,
    delivery_deadline,
)

INF = math.inf


def op(p: int, f: str, name: str, start: float, end: float, type: str = "ok", value: Any = None,
       node: str = "m1") -> Op:
    return Op(p, f, name, start, end, type, value, node)


def create(p: int, name: str, start: float, end: float, type: str = "ok", value: Any = None) -> Op:
    return op(p, "create", name, start, end, type, value)


def remove(p: int, name: str, start: float, end: float, type: str = "ok", value: Any = None) -> Op:
    return op(p, "remove", name, start, end, type, value)


def lst(p: int, start: float, end: float, entries: list[tuple[str, str]], node: str = "m1") -> Op:
    return op(p, "list", "", start, end, "ok", entries, node)


def kinds(result: dict[str, list[dict[str, Any]]]) -> set[str]:
    return set(result)


# --- clean histories -----------------------------------------------------------------------------


def test_a_clean_history_with_indeterminate_ops_has_no_anomaly() -> None:
    ops = [
        create(0, "U_0_1", 0.0, 0.1, value="id1"),
        create(1, "C_0", 0.0, 0.2, value="id2"),
        create(2, "C_0", 0.1, 0.3, "fail", "conflict"),       # id2 exists
        lst(3, 0.4, 0.5, [("U_0_1", "id1"), ("C_0", "id2")]),
        remove(0, "C_0", 0.6, 0.7),
        remove(1, "C_0", 0.8, 0.9, "fail", "not-found"),       # removed just before
        create(2, "C_0", 1.0, 5.0, "info"),                    # timed out, but happened
        create(3, "U_3_1", 1.0, 1.5, "info"),                  # timed out, never happened
        remove(0, "C_1", 1.1, 1.2, "info"),                    # indeterminate, nothing there anyway
        lst(1, 6.0, 6.1, [("U_0_1", "id1"), ("C_0", "id9")]),  # the info create's id
        create(2, "C_1", 6.2, 6.3, value="id10"),
        remove(3, "C_1", 6.4, 9.0, "info"),                    # may or may not have removed id10
        create(0, "C_2", 6.5, 6.6, "fail", "not-a-conflict"),
    ]
    finals = {m: [("U_0_1", "id1"), ("C_0", "id9")] for m in ("m1", "m2", "m3")}
    assert check_history(ops, finals) == {}


def test_a_retried_create_that_reports_its_own_first_outcome_is_fine() -> None:
    ops = [create(0, "U_0_1", 0.0, 3.0, value="id1"), lst(1, 3.5, 3.6, [("U_0_1", "id1")])]
    assert check_history(ops, {"m1": [("U_0_1", "id1")]}) == {}


# --- each anomaly -------------------------------------------------------------------------------


def test_lost() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.1, value="id1"), create(1, "U_1_1", 0.0, 0.1, value="id2")]
    result = check_history(ops, {"m1": [("U_1_1", "id2")]})
    assert kinds(result) == {"lost"}
    assert result["lost"][0]["create"]["value"] == "id1"


def test_a_missing_create_is_not_lost_when_a_remove_may_explain_it() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(1, "C_0", 0.05, 0.5, "info")]
    assert check_history(ops, {"m1": []}) == {}


def test_resurrected() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(1, "C_0", 0.2, 0.3)]
    assert kinds(check_history(ops, {"m1": [("C_0", "id1")]})) == {"resurrected"}


def test_double_create() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), create(1, "C_0", 0.2, 0.3, value="id2"),
           remove(2, "C_0", 0.5, 0.6)]  # after both: cannot fall between
    assert "double-create" in kinds(check_history(ops, {"m1": []}, linearizable_lists=False))


def test_two_creates_with_a_remove_between_are_fine() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(2, "C_0", 0.15, 0.18),
           create(1, "C_0", 0.2, 0.3, value="id2")]
    assert check_history(ops, {"m1": [("C_0", "id2")]}) == {}


def test_duplicate_name_in_a_list_and_in_the_final_read() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), create(1, "C_0", 0.0, 0.1, "info"),
           lst(2, 0.5, 0.6, [("C_0", "id1"), ("c_0", "id7")])]
    result = check_history(ops, {"m1": [("C_0", "id1"), ("C_0", "id7")]})
    assert "duplicate-name" in result
    assert {e["read"] for e in result["duplicate-name"]} == {"list p2@m1", "final@m1"}


def test_duplicate_id() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.1, value="id1"), create(1, "U_1_1", 0.0, 0.1, value="id1")]
    result = check_history(ops, {"m1": [("U_0_1", "id1"), ("U_1_1", "id1")]})
    assert "duplicate-id" in result


def test_id_changed_name() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.1, value="id1"), lst(1, 0.2, 0.3, [("U_0_2", "id1")])]
    assert "id-changed-name" in kinds(check_history(ops, {"m1": [("U_0_1", "id1")]}))


def test_phantom() -> None:
    ops = [lst(1, 0.2, 0.3, [("C_5", "idX")])]
    assert kinds(check_history(ops, {"m1": []})) == {"phantom"}


def test_phantom_when_more_ids_show_up_than_indeterminate_creates_could_make() -> None:
    ops = [create(0, "C_5", 0.0, 0.1, "info"), remove(1, "C_5", 0.3, 0.4, "info"),
           lst(1, 0.2, 0.25, [("C_5", "idX")]), lst(2, 0.5, 0.6, [("C_5", "idY")])]
    result = check_history(ops, {"m1": []})
    assert "phantom" in result and result["phantom"][0]["ids"] == ["idX", "idY"]


def test_read_from_future() -> None:
    ops = [lst(1, 0.0, 0.1, [("U_0_1", "id1")]), create(0, "U_0_1", 0.2, 0.3, value="id1")]
    assert kinds(check_history(ops, {"m1": [("U_0_1", "id1")]})) == {"read-from-future"}


def test_spurious_conflict_of_a_retried_create_with_itself() -> None:
    ops = [create(0, "U_0_1", 0.0, 3.0, "fail", "conflict")]
    assert kinds(check_history(ops, {"m1": [("U_0_1", "idZ")]}, linearizable_lists=False)) >= {"spurious-conflict"}


def test_a_conflict_with_a_concurrent_indeterminate_create_is_fine() -> None:
    ops = [create(1, "C_0", 0.0, 9.0, "info"), create(0, "C_0", 0.5, 0.6, "fail", "conflict")]
    assert check_history(ops, {"m1": [("C_0", "idZ")]}) == {}


def test_stale_not_found() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(1, "C_0", 0.2, 0.3, "fail", "not-found")]
    assert kinds(check_history(ops, {"m1": [("C_0", "id1")]})) == {"stale-not-found"}


def test_not_found_after_a_concurrent_remove_is_fine() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(2, "C_0", 0.15, 0.4),
           remove(1, "C_0", 0.2, 0.3, "fail", "not-found")]
    assert check_history(ops, {"m1": []}) == {}


def test_stale_list_misses_a_created_id() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.1, value="id1"), lst(1, 0.2, 0.3, [])]
    final = {"m1": [("U_0_1", "id1")]}
    assert kinds(check_history(ops, final)) == {"stale-list"}
    assert check_history(ops, final, linearizable_lists=False) == {}


def test_stale_list_shows_a_removed_id() -> None:
    ops = [create(0, "C_0", 0.0, 0.1, value="id1"), remove(1, "C_0", 0.2, 0.3),
           lst(2, 0.4, 0.5, [("C_0", "id1")])]
    assert kinds(check_history(ops, {"m1": []})) == {"stale-list"}


def test_a_list_concurrent_with_the_create_may_miss_it() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.3, value="id1"), lst(1, 0.1, 0.2, [])]
    assert check_history(ops, {"m1": [("U_0_1", "id1")]}) == {}


def test_managers_disagree() -> None:
    ops = [create(0, "U_0_1", 0.0, 0.1, value="id1"), create(0, "U_0_2", 0.2, 0.3, "info")]
    result = check_history(ops, {"m1": [("U_0_1", "id1"), ("U_0_2", "id2")], "m2": [("U_0_1", "id1")]})
    assert kinds(result) == {"managers-disagree"}
    assert result["managers-disagree"][0]["missing"] == {"m2": [("U_0_2", "id2")]}


def test_minority_ack() -> None:
    cut = Cut(frozenset({"m1"}), 10.0, 20.0)
    ops = [op(0, "create", "U_0_1", 9.0, 10.5, value="id1"),       # started before the cut
           op(0, "create", "U_0_2", 11.0, 21.0, value="id2"),      # retried until after the heal
           op(1, "list", "", 12.0, 12.1, value=[], node="m2"),     # majority side
           op(0, "create", "U_0_3", 11.0, 15.0, "info")]           # not acknowledged
    assert check_minority(ops, [cut]) == {}
    bad = [*ops, op(0, "list", "", 12.0, 12.5, value=[])]
    assert kinds(check_minority(bad, [cut])) == {"minority-ack"}


# --- bindings and workers -----------------------------------------------------------------------


def upd(p: int, name: str, start: float, end: float, type: str, cond: int, version: int | None = None,
        target: str = "cur") -> Op:
    value: dict[str, Any] = {"target": target, "cond": cond}
    if version is not None:
        value["version"] = version
    return op(p, "svc-update", name, start, end, type, value)


def test_binding_windows_follow_versioned_updates() -> None:
    ops = [upd(-1, "B_0", 0.0, 0.1, "ok", 0, 10),       # service created with B_0
           upd(0, "B_1", 1.0, 1.1, "ok", 10, 11),
           upd(0, "B_2", 2.0, 7.0, "info", 11),          # may apply any time until killed
           upd(0, "B_0", 8.0, 8.1, "fail", 11),          # out of sequence: B_2 did apply
           upd(0, "B_0", 9.0, 9.1, "ok", 12, 13),        # kills everything conditioned on <= 12
           upd(0, "B_1", 10.0, 10.1, "fail", 13)]        # never applied: no window
    w = binding_windows(ops)
    assert w[("cur", "B_0")] == [(0.0, 1.1), (9.0, INF)]
    assert w[("cur", "B_1")] == [(1.0, 9.1)]
    assert w[("cur", "B_2")] == [(2.0, 9.1)]


def test_delivery_deadline_is_extended_by_overlapping_disruptions() -> None:
    assert delivery_deadline(10.0, [], 3.0, 15.0) == 13.0
    assert delivery_deadline(10.0, [(-20.0, -6.0)], 3.0, 15.0) == 13.0      # long over
    assert delivery_deadline(10.0, [(0.0, 1.0)], 3.0, 15.0) == 16.0        # still reconnecting
    assert delivery_deadline(10.0, [(12.0, 14.0)], 3.0, 15.0) == 29.0      # starts within the grace
    assert delivery_deadline(10.0, [(12.0, 14.0), (28.0, 30.0)], 3.0, 15.0) == 45.0  # chained


def files(target: str, sha: str, task: str = "t1", uid: int = 0, gid: int = 0, mode: int = 0o444,
          tmpfs: bool = True) -> FileObs:
    return FileObs(task, target, sha, uid, gid, mode, tmpfs)


WINDOWS = {("cur", "B_0"): [(0.0, 5.0)], ("cur", "B_1"): [(4.0, INF)], ("static", "B_s"): [(0.0, INF)]}
NAMES = {"h0": "B_0", "h1": "B_1", "hs": "B_s"}
META = {"cur": (0, 0, 0o444), "static": (0, 0, 0o444)}


def test_worker_files_inside_their_windows_are_fine() -> None:
    snaps = [Snapshot("w1", 1.0, (files("cur", "h0"), files("static", "hs"))),
             Snapshot("w1", 4.5, (files("cur", "h1"), files("static", "hs"))),
             Snapshot("w2", 7.5, (files("cur", "h0"), files("static", "hs"))),   # within 3 s of the end
             Snapshot("w2", 9.0, ())]
    assert check_workers(snaps, WINDOWS, NAMES, META, [], 3.0, 15.0) == {}


def test_worker_outside_window() -> None:
    early = [Snapshot("w1", 3.0, (files("cur", "h1"),))]                        # before its update began
    late = [Snapshot("w1", 8.5, (files("cur", "h0"),))]                         # 3.5 s after B_0 ended
    wrong_target = [Snapshot("w1", 1.0, (files("static", "h0"),))]
    for snaps in (early, late, wrong_target):
        assert kinds(check_workers(snaps, WINDOWS, NAMES, META, [], 3.0, 15.0)) == {"worker-outside-window"}
    assert check_workers(late, WINDOWS, NAMES, META, [(6.0, 7.0)], 3.0, 15.0) == {}  # a fault delayed it


def test_a_file_seen_by_a_read_that_spans_its_update_start_is_inside() -> None:
    """A read that began before the update that binds the file and ended after it started may have
    seen the file legitimately; a read that ended before the update began may not have."""
    spanning = [Snapshot("w1", 3.9, (files("cur", "h1"),), t_end=4.1)]
    assert check_workers(spanning, WINDOWS, NAMES, META, [], 3.0, 15.0) == {}
    ended_before = [Snapshot("w1", 3.7, (files("cur", "h1"),), t_end=3.9)]
    assert kinds(check_workers(ended_before, WINDOWS, NAMES, META, [], 3.0, 15.0)) == {"worker-outside-window"}


def test_worker_wrong_bytes_and_mode() -> None:
    snaps = [Snapshot("w1", 1.0, (files("cur", "unknown"), files("static", "hs", mode=0o644)))]
    assert kinds(check_workers(snaps, WINDOWS, NAMES, META, [], 3.0, 15.0)) == {"worker-wrong-bytes",
                                                                                  "worker-wrong-mode"}


EXPECTED = {"cur": Expected("h1"), "static": Expected("hs")}


def test_worker_final_state_matching_the_binding_is_fine() -> None:
    final = {"w1": Snapshot("w1", 30.0, (files("cur", "h1"), files("static", "hs")))}
    assert check_worker_final(final, EXPECTED) == {}


@pytest.mark.parametrize(("snap_files", "kind"), [
    ((files("static", "hs"),), "worker-missing-at-end"),
    ((), "worker-missing-at-end"),
    ((files("cur", "h0"), files("static", "hs")), "worker-wrong-bytes"),
    ((files("cur", "h1", uid=1000), files("static", "hs")), "worker-wrong-mode"),
    ((files("cur", "h1", mode=0o400), files("static", "hs")), "worker-wrong-mode"),
    ((files("cur", "h1"), files("static", "hs"), files("old", "h0")), "worker-extra-at-end"),
    ((files("cur", "h1"), files("static", "hs"), files("cur", "h1", task="t2"), files("static", "hs", task="t2")),
     "worker-extra-at-end"),
    ((files("cur", "h1", tmpfs=False), files("static", "hs")), "worker-not-tmpfs"),
])
def test_worker_final_anomalies(snap_files: tuple[FileObs, ...], kind: str) -> None:
    assert kinds(check_worker_final({"w1": Snapshot("w1", 30.0, snap_files)}, EXPECTED)) == {kind}


def test_a_cut_off_worker_must_not_touch_its_files() -> None:
    before = (files("cur", "h0"), files("static", "hs"))
    snaps = [Snapshot("w1", 5.0, before), Snapshot("w1", 6.0, before), Snapshot("w2", 6.0, ()),
             Snapshot("w1", 7.0, before), Snapshot("w1", 12.0, (files("cur", "h1"), files("static", "hs")))]
    assert check_untouched(snaps, "w1", 5.0, 10.0) == {}
    changed = [*snaps[:2], Snapshot("w1", 6.5, (files("static", "hs"),))]
    assert kinds(check_untouched(changed, "w1", 5.0, 10.0)) == {"worker-changed-while-cut"}
