"""The host's measurements: a RaftObserver hears of every group commit and snapshot, and the
status names the newest snapshot's index."""

from __future__ import annotations

from pathlib import Path

from swarmsecrets.raft import RaftNode, RaftObserver
from tests.framework import wait_until
from tests.raft.conftest import IN_PROCESS_TIMING
from tests.raft.raft_harness import DictMachine, Pki, free_ports


def test_observer_hears_fsyncs_and_snapshots(pki: Pki, tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    fsyncs: list[float] = []
    snapshots: list[float] = []
    node = RaftNode(self_addr=addr, members=[addr], data_dir=str(tmp_path / "n"), tls=pki.tls(addr),
                    state_machine=DictMachine(), timing=IN_PROCESS_TIMING,
                    observer=RaftObserver(fsync=fsyncs.append, snapshot=snapshots.append))
    node.start()
    try:
        wait_until(lambda: node.status().is_leader, timeout=10, what="a leader")
        assert node.status().snapshot_index == 0
        before = len(fsyncs)
        for i in range(5):
            node.propose({"op": "set", "k": f"k{i}", "v": i}, 5.0)
        assert len(fsyncs) > before and all(s >= 0 for s in fsyncs)
        applied = node.status().last_applied
        node.compact()
        wait_until(lambda: node.status().snapshot_index > 0, timeout=10, what="the snapshot")
        assert len(snapshots) == 1 and snapshots[0] >= 0
        assert 0 < node.status().snapshot_index <= applied
    finally:
        node.stop()
