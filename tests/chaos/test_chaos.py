"""Chaos scenarios: each runs the real swarm in a netns lab under one kind of fault, then requires zero
anomalies from the history checker and a lab with nothing left behind (tests/chaoskit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaoskit.nemesis import FaultSpec
from tests.chaoskit.runner import RunConfig, RunResult, leftovers, run

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

PREFIX = f"ct{os.getpid()}"


def scenario(tmp_path: Path, seed: int, duration: float, schedule: list[FaultSpec], workers: int = 1,
             converge_timeout: float = 45.0) -> RunResult:
    result = run(RunConfig(duration=duration, workers=workers, schedule=schedule, seed=seed, rate=20.0,
                           out=tmp_path / "chaos", prefix=PREFIX, command=f"tests/chaos seed {seed}",
                           converge_timeout=converge_timeout))
    print(result.summary())
    print(f"phases: {result.timings}")
    assert not result.error, f"harness error: {result.error}\nsee {result.out}"
    assert result.anomalies == {}, f"anomalies, see {result.out / 'report.md'}: {result.anomalies}"
    assert result.leftovers_after == [] and leftovers(PREFIX) == []
    assert len(result.faults) == len(schedule), result.faults
    ok = [o for o in result.ops if o.type == "ok" and o.process >= 0]
    assert len(ok) > 5 * duration, f"too little progress: {len(ok)} ok ops"
    return result


def ops_during(result: RunResult, node: str, start: float, end: float) -> list[str]:
    return [o.type for o in result.ops if o.node == node and start <= o.start and o.end <= end]


def test_leader_kill_9_loop(tmp_path: Path) -> None:
    result = scenario(tmp_path, 101, 16.0, [FaultSpec("kill", t, 2.5, "leader") for t in (2.0, 7.0, 12.0)])
    assert len({f["nodes"][0] for f in result.faults}) >= 2 or len(result.leaders) >= 3


def test_leader_sigstop(tmp_path: Path) -> None:
    result = scenario(tmp_path, 102, 14.0, [FaultSpec("pause", t, 3.0, "leader") for t in (2.0, 8.5)])
    for f in result.faults:
        paused = f["nodes"][0]
        later = [ld for ld in result.leaders if f["start"] < ld["t"] <= f["heal_start"] + 0.5]
        assert any(ld["leaders"] and paused not in ld["leaders"] for ld in later), (f, result.leaders)


def test_leader_paused_longer_than_the_worker_session_timeout(tmp_path: Path) -> None:
    """Found by this harness: the resumed ex-leader used to mark its stale workers down through the new
    leader (now its decisions are fenced to its own term, and a stalled monitor restarts every grace)."""
    scenario(tmp_path, 108, 14.0, [FaultSpec("pause", 2.0, 9.0, "leader")], converge_timeout=10.0)


def test_leader_isolated_from_both_followers(tmp_path: Path) -> None:
    """The minority side stops acknowledging: no op sent to the isolated manager after the cut returns
    ok before the heal (checked for every op by the checker's minority-ack), and the other two elect a
    leader meanwhile."""
    result = scenario(tmp_path, 103, 16.0, [FaultSpec("partition-leader", t, 4.0) for t in (2.0, 9.5)])
    for f in result.faults:
        isolated = f["cut"][0]
        sent = ops_during(result, isolated, f["start"], f["heal_start"] + 30)
        assert sent and all(t != "ok" for t in ops_during(result, isolated, f["start"], f["heal_start"]))
        assert any(ld["leaders"] and isolated not in ld["leaders"]
                   for ld in result.leaders if f["start"] < ld["t"] <= f["heal_start"]), (f, result.leaders)


def test_majority_minority_partition(tmp_path: Path) -> None:
    result = scenario(tmp_path, 104, 16.0, [FaultSpec("partition", t, 4.0) for t in (2.0, 9.5)])
    assert all(f["cut"] for f in result.faults)


def test_loss_and_delay_on_one_follower(tmp_path: Path) -> None:
    result = scenario(tmp_path, 105, 13.0, [FaultSpec("loss+delay", 2.0, 9.0, "follower")])
    assert result.faults[0]["detail"] == "10% loss out, 100±20 ms delay in"


def test_worker_partitioned_longer_than_the_heartbeat_grace(tmp_path: Path) -> None:
    """w1 is cut from every manager for 6 s (down after 3 missed 1 s heartbeats): its tmpfs stays as it was
    (worker-changed-while-cut), bindings flipped meanwhile, and afterwards it converges (worker-*-at-end)."""
    result = scenario(tmp_path, 106, 14.0, [FaultSpec("worker-partition", 2.0, 6.0, "w1")], workers=2)
    f = result.faults[0]
    flips = [o for o in result.ops if o.f == "svc-update" and o.type == "ok" and f["start"] < o.start < f["heal_start"]]
    assert flips, "no binding changed while the worker was cut off"


STALE_WORKER = '''
import os
from swarmsecrets.worker import secretsfs
_materialize = secretsfs.SecretsFS.materialize
def materialize(self, task_id, service_name, files, *, owner=None):
    if os.path.ismount(self.task_dir(task_id)):
        return self.task_dir(task_id)  # the bug: a task's files are written once, never rotated
    return _materialize(self, task_id, service_name, files, owner=owner)
secretsfs.SecretsFS.materialize = materialize
'''


def test_the_harness_fails_a_worker_that_never_rotates_secrets(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole pipeline catches a real bug: daemons started with a sitecustomize that breaks rotation."""
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "sitecustomize.py").write_text(STALE_WORKER)
    monkeypatch.setenv("PYTHONPATH", str(bug))
    result = run(RunConfig(duration=8.0, workers=1, schedule=[], seed=107, out=tmp_path / "chaos", prefix=PREFIX,
                           converge_timeout=3.0))
    print(result.summary())
    assert not result.error and result.leftovers_after == []
    assert set(result.anomalies) & {"worker-outside-window", "worker-wrong-bytes"}, result.anomalies
