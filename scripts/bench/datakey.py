#!/usr/bin/env python3
"""Data-key rotation time on a 3-manager loopback cluster holding ``--count`` secrets.

Usage (from the repository root, as root or not: no worker is started)::

    .venv/bin/python -m scripts.bench.datakey                    # 10,000 secrets of 1 KiB
    .venv/bin/python -m scripts.bench.datakey --count 1000 --scan

It fills the cluster (``--threads`` clients through the leader), then runs the real command
``swarmsecrets swarm data-key --rotate`` against a follower while one client keeps creating secrets,
and prints:

* ``rotate``: the command's wall time (it answers once every secret is re-encrypted and the rotation
  is finished in the replicated state);
* ``erased``: from the command's start until every manager's key file holds the new key alone (each
  manager has taken a snapshot and compacted its journal past the rotation, which erases the files it
  replaces);
* the writes made during the rotation and how many failed (expected 0);
* with ``--scan``: whether anything on any manager's disk still opens under the old key (the
  integration test's probe; slow on large data dirs).

Exit status: 0 on success, 1 if a write failed or the scan found something, 2 if the cluster could not
be formed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.crypto import keys
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import opened_under, sealed_candidates


def ring(m: Node) -> tuple[bytes, ...]:
    got = keys.WrappedKeys(str(m.data_dir / "keys")).load()
    return (got.dek, *got.previous)


def fill(m: Node, count: int, size: int, threads: int) -> float:
    control = m.control()
    payload = b"x" * size

    def create(i: int) -> None:
        control.CreateSecret(control_pb2.CreateSecretRequest(
            spec=objects_pb2.SecretSpec(name=f"bench-{i}", data=payload)), timeout=60)

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(count)))
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--scan", action="store_true", help="scan every manager's disk for the old key afterwards")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-datakey-") as tmp:
        try:
            cluster = Cluster(Path(tmp), managers=3, log_level="info").start()
        except Exception as e:
            print(f"could not form the cluster: {e}", file=sys.stderr)
            return 2
        try:
            leader = cluster.leader()
            follower = next(m for m in cluster.managers if m is not leader)
            took = fill(leader, args.count, args.size, args.threads)
            print(f"filled {args.count} secrets of {args.size} B in {took:.1f} s")
            old = {m.name: ring(m) for m in cluster.managers}
            made, failed = [0], [0]
            stop = threading.Event()

            def write() -> None:
                control, i = leader.control(), 0
                while not stop.is_set():
                    try:
                        control.CreateSecret(control_pb2.CreateSecretRequest(
                            spec=objects_pb2.SecretSpec(name=f"during-{i}", data=b"d")), timeout=60)
                        made[0] += 1
                    except Exception:
                        failed[0] += 1
                    i += 1

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            start = time.monotonic()
            follower.ok("swarm", "data-key", "--rotate", timeout=900)
            rotated = time.monotonic() - start
            wait_until(lambda: all(len(ring(m)) == 1 and ring(m) != old[m.name] for m in cluster.managers),
                       900, 0.05, "every manager's key file without the old key")
            erased = time.monotonic() - start
            stop.set()
            writer.join(60)
            print(f"rotate: {rotated:.2f} s   erased on every manager: {erased:.2f} s   "
                  f"writes during: {made[0]} ({failed[0]} failed)")
            status = 1 if failed[0] else 0
            if args.scan:
                old_key = old[cluster.managers[0].name][0]
                found = sum(len(opened_under(old_key, sealed_candidates(m.data_dir))) for m in cluster.managers)
                print(f"values on the managers' disks that open under the old key: {found}")
                status = status or (1 if found else 0)
            return status
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
