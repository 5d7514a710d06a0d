#!/usr/bin/env python3
"""Recovery timings: ``swarm backup``, ``swarm init --force-new-cluster`` and ``swarm init --restore``
on a 3-manager, 1-worker loopback cluster holding ``--count`` secrets (outside CI: it takes minutes).

Usage (from the repository root, as root: the worker mounts tmpfs)::

    .venv/bin/python -m scripts.bench.recovery --count 10000
    .venv/bin/python -m scripts.bench.recovery --count 10000 --autolock   # the same under autolock

Steps, each timed from the CLI command's start to its return, then to the condition after it:

1. fill: ``--count`` secrets of 1 KiB through the Control API (16 client threads);
2. backup: ``swarm backup FILE`` on a follower, under no other load;
3. force-new-cluster: SIGKILL two managers, then ``swarm init --force-new-cluster`` on the third,
   until a ``secret create`` succeeds and ``secret ls`` lists every secret;
4. restore: SIGKILL the last manager and delete its data dir, start a new node at its address,
   ``swarm init --restore FILE`` (key on stdin) until ``secret ls`` lists every secret and a new
   task's secret reaches the worker.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2
from scripts.bench.common import count_secrets, swarm_channel
from tests.framework import Cluster, Node, wait_until

KEY = re.compile(r"SWMKEY-1-[A-Za-z0-9+/]+")


def fill(m: Node, count: int) -> float:
    t0 = time.monotonic()
    data = b"x" * 1024

    def put(i: int) -> None:
        with swarm_channel(m.sock, own_connection=False) as ch:
            control_pb2_grpc.ControlStub(ch).CreateSecret(control_pb2.CreateSecretRequest(
                spec=objects_pb2.SecretSpec(name=f"s{i:06d}", data=data), request_id=str(uuid.uuid4())), timeout=60)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    return time.monotonic() - t0


def timed(what: str, fn: object) -> float:
    t0 = time.monotonic()
    fn()  # type: ignore[operator]
    took = time.monotonic() - t0
    print(f"{what:<58} {took:8.2f} s", flush=True)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--autolock", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="swarmsecrets-recovery-"))
    fleet = Cluster(root, managers=3, workers=1, autolock=args.autolock, log_level="info")
    try:
        fleet.start()
        m1, m2, m3 = fleet.managers
        (w1,) = fleet.workers
        print(f"fill {args.count} secrets: {fill(m1, args.count):.1f} s", flush=True)
        path = root / "swarm.backup"
        out: dict[str, str] = {}
        timed("swarm backup (on a follower)", lambda: out.update(b=m2.ok("swarm", "backup", str(path), timeout=600)))
        key = fleet.unlock_key if args.autolock else KEY.findall(out["b"])[0]
        print(f"backup file: {path.stat().st_size} bytes", flush=True)

        m2.kill()
        m3.kill()
        timed("swarm init --force-new-cluster (command)",
              lambda: m1.ok("swarm", "init", "--force-new-cluster", timeout=600))
        timed("  then a write and a full secret ls",
              lambda: (m1.ok("secret", "create", "after", "-", input="x"),
                       wait_until(lambda: count_secrets(m1) == args.count + 1, 600, 0.5, "every secret")))

        m1.kill()
        shutil.rmtree(m1.data_dir)
        r1 = Node("r1", root, role="manager", host=len(fleet.members) + 1, log_level="info")
        r1.ip, r1.port = m1.ip, m1.port
        fleet.members.append(r1)
        r1.start()
        timed("swarm init --restore (command)",
              lambda: r1.ok("swarm", "init", "--restore", str(path), "--advertise-addr", r1.addr,
                            "--availability", "drain", input=key + "\n", timeout=600))
        timed("  then a full secret ls",
              lambda: wait_until(lambda: count_secrets(r1) == args.count, 600, 0.5, "every secret"))
        # The worker's record says Ready as the backup saw it: a new task's secret on it shows it is back.
        probe = w1.secrets_root / "services" / "probe" / "s000000"
        timed("  then a new task's secret on the worker",
              lambda: (r1.ok("service", "create", "--name", "probe", "--secret", "s000000", "--",
                             "python3", "-c", "import time; time.sleep(600)"),
                       wait_until(probe.exists, 600, 0.2, "the probe task's secret on w1")))
        return 0
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        fleet.stop()
        if args.keep:
            print(f"work dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
