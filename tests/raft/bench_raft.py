"""Raft write latency and throughput: 3 managers as separate processes on loopback.

    python -m tests.raft.bench_raft [--n 2000]

Each figure is measured by a client inside one node's process (so no client round trip is counted):
sequential writes (p50/p99 per write) and pipelined writes (ops/s). Not a test: numbers only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.raft.raft_harness import Ctl, Pki, ProcCluster

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="sequential writes per small-value row")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raft-bench-"))
    (root / "data").mkdir()
    c = ProcCluster(root / "data", Pki(root / "pki"))
    addrs = c.addrs
    try:
        c.start()
        leader = c.leader()
        follower = next(a for a in addrs if a != leader)
        on_leader, on_follower = Ctl(c.ctl[leader], timeout=600), Ctl(c.ctl[follower], timeout=600)
        rows = [("200 B, leader", on_leader, "bench", args.n, 200),
                ("200 B, via a follower", on_follower, "bench", args.n, 200),
                ("4 KiB, leader", on_leader, "bench", args.n // 2, 4096),
                ("100 KiB, leader", on_leader, "bench", 200, 100 * 1024),
                ("511,999 B, leader", on_leader, "bench", 100, 511_999),
                ("511,999 B, via a follower", on_follower, "bench", 100, 511_999)]
        print(f"{'sequential writes':28} {'p50 ms':>8} {'p99 ms':>8}")
        for label, ctl, op, n, size in rows:
            r = ctl.call(op=op, n=n, size=size)["ok"]
            print(f"{label:28} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
        print(f"{'pipelined writes':28} {'ops/s':>8}")
        for label, ctl, n, size, inflight in [("200 B, leader, 256 in flight", on_leader, 20000, 200, 256),
                                              ("200 B, via a follower, 256", on_follower, 20000, 200, 256),
                                              ("4 KiB, leader, 256 in flight", on_leader, 10000, 4096, 256)]:
            r = ctl.call(op="bench_tput", n=n, size=size, inflight=inflight)["ok"]
            print(f"{label:28} {r['ops_per_s']:8.0f}")
    finally:
        c.terminate()


if __name__ == "__main__":
    main()
