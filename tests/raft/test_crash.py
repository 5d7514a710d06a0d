"""Whole-cluster kill -9 and restart, with real processes: no acknowledged write is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.raft.conftest import Pki
from tests.raft.raft_harness import Ctl, ProcCluster


@pytest.fixture
def procs(pki: Pki, tmp_path: Path) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path, pki, snapshot_entries=300)
    yield c
    c.terminate()


def _dump_when_ready(port: int, deadline_s: float = 60.0) -> dict:  # type: ignore[type-arg]
    """The node's state after a linearizable read; right after a whole-cluster restart the read
    barrier may meet an election (no leader yet), so ask again until it answers."""
    ctl = Ctl(port, timeout=30)
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            reply = ctl.call(op="dump")
            if "ok" in reply or time.monotonic() > deadline:
                assert "ok" in reply, reply
                return reply["ok"]
            time.sleep(0.2)
    finally:
        ctl.close()


@pytest.mark.slow
def test_kill_9_of_the_whole_cluster_loses_no_acknowledged_write(procs: ProcCluster) -> None:
    acked: dict[str, int] = {}
    lock = threading.Lock()
    procs.start()
    procs.leader()
    for rnd in range(2):
        stop = threading.Event()

        def writer(w: int, rnd: int = rnd, stop: threading.Event = stop) -> None:
            ctls = [Ctl(procs.ctl[a]) for a in procs.addrs]
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    key = f"r{rnd}-w{w}-{i}"
                    reply = ctls[(w + i) % 3].call(op="put", k=key, v=i, timeout=2.0)
                    if "ok" in reply:
                        with lock:
                            acked[key] = i
            except (OSError, ValueError):
                pass  # the harness was killed under us

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) <= 100 * (rnd + 1):  # a few hundred writes, across a snapshot (every 300)
            assert time.monotonic() < deadline, f"writes stalled at {len(acked)}\n{procs.logs()}"
            time.sleep(0.05)
        procs.kill_all()  # while writes are in flight, possibly mid-snapshot
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) > 100 * (rnd + 1), procs.logs()
        procs.start()
        procs.leader()
        dumps = [_dump_when_ready(procs.ctl[a]) for a in procs.addrs]
        lost = {k: v for k, v in acked.items() if dumps[0].get(k) != v}
        assert not lost, f"round {rnd}: {len(lost)} of {len(acked)} acknowledged writes lost\n{procs.logs()}"
        assert dumps[0] == dumps[1] == dumps[2]
