#!/usr/bin/env python3
"""Root CA rotation benchmark: how long ``swarmsecrets swarm ca --rotate`` takes, on a loopback
cluster of 3 managers and ``--workers`` workers holding ``--secrets`` secrets, while a writer keeps
creating secrets.

Usage (from the repository root, as root)::

    .venv/bin/python -m scripts.bench.ca_rotation                       # 10,000 secrets, 2 workers
    .venv/bin/python -m scripts.bench.ca_rotation --secrets 1000 --workers 1 --no-writer

It fills the swarm (16 clients over the leader's socket, 1 KiB each), then runs the CLI exactly as
an operator does, on a follower, and prints the wall time of the command (from the call until every
node holds a certificate from the new root and trusts only it), the progress lines it printed, and
how many writes failed meanwhile (a failure is an error: exit status 1).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc

from scripts.bench.common import swarm_channel
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2
from tests.framework import Cluster

FILL_CLIENTS = 16


def fill(cluster: Cluster, count: int) -> float:
    leader = cluster.leader()
    counter = itertools.count()
    lock = threading.Lock()
    failed: list[str] = []

    def filler() -> None:
        with swarm_channel(leader.sock) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            while True:
                with lock:
                    i = next(counter)
                if i >= count:
                    return
                try:
                    stub.CreateSecret(control_pb2.CreateSecretRequest(
                        spec=objects_pb2.SecretSpec(name=f"fill{i}", data=b"x" * 1024),
                        request_id=str(uuid.uuid4())), timeout=30)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                        failed.append(str(e.details()))

    start = time.monotonic()
    threads = [threading.Thread(target=filler) for _ in range(FILL_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"fill failed: {failed[0]}")
    return time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--secrets", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-writer", action="store_true", help="no writes during the rotation")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ca-rotation-") as tmp, \
            Cluster(Path(tmp), managers=3, workers=args.workers).started() as cluster:
        print(f"filled {args.secrets} secrets in {fill(cluster, args.secrets):.1f} s")
        leader = cluster.leader()
        follower = next(m for m in cluster.managers if m is not leader)
        stop = threading.Event()
        writes, failures = [0], [0]

        def writer() -> None:
            with swarm_channel(leader.sock) as ch:
                stub = control_pb2_grpc.ControlStub(ch)
                while not stop.is_set():
                    try:
                        stub.CreateSecret(control_pb2.CreateSecretRequest(
                            spec=objects_pb2.SecretSpec(name=f"during{writes[0]}", data=b"y"),
                            request_id=str(uuid.uuid4())), timeout=30)
                    except grpc.RpcError:
                        failures[0] += 1
                    writes[0] += 1

        t = threading.Thread(target=writer)
        if not args.no_writer:
            t.start()
        start = time.monotonic()
        out = follower.ok("swarm", "ca", "--rotate", timeout=600)
        took = time.monotonic() - start
        stop.set()
        if not args.no_writer:
            t.join()
        print("\n".join(line for line in out.splitlines() if "rotated" in line or "digest" in line))
        print(f"swarm ca --rotate: {took:.2f} s on 3 managers + {args.workers} workers, {args.secrets} secrets; "
              f"{writes[0]} writes meanwhile, {failures[0]} failed")
        return 1 if failures[0] else 0


if __name__ == "__main__":
    raise SystemExit(main())
