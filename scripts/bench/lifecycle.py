#!/usr/bin/env python3
"""How long the keys-and-disasters procedures take on a 3-manager, 2-worker loopback cluster
holding ``--count`` secrets (outside CI: a run takes a few minutes).

Usage (from the repository root, as root: the workers mount tmpfs)::

    .venv/bin/python -m scripts.bench.lifecycle                    # 10,000 secrets of 1 KiB
    .venv/bin/python -m scripts.bench.lifecycle --count 1000 --scan --autolock

One cluster goes through every procedure in order, each run through the real CLI and timed from
the command's start until the swarm is in the state the procedure promises:

1. renewal of every node: ``swarm update --cert-expiry 400h`` (shorter than any certificate's life
   left, so every node renews at once) until every node's record holds a certificate of that life;
2. root CA rotation: ``swarm ca --rotate`` (it returns once every node holds a certificate from the
   new root and trusts only it);
3. data-key rotation: ``swarm data-key --rotate`` (it returns once every secret is re-encrypted),
   then until every manager's key file holds the new key alone (the old one is erased there);
   with ``--scan``, whether anything on a manager's disk still opens under the old key;
4. backup: ``swarm backup FILE`` on a follower;
5. force-new-cluster: SIGKILL two managers, ``swarm init --force-new-cluster`` on the third, until a
   write succeeds and ``secret ls`` lists every secret;
6. restore: SIGKILL the last manager and delete its data dir, start a new node at its address,
   ``swarm init --restore FILE`` (key on stdin) until ``secret ls`` lists every secret and a new
   task's secret reaches a worker.

A writer creates secrets through a manager during 1-4 (its failures are counted: expected 0).
Exit status: 0 on success, 1 if a write failed or the scan found something, 2 if the cluster could
not be formed.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path



from scripts.bench.common import count_secrets, describe_error, machine_info
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalClient, LocalError, Status
from swarmsecrets.crypto import keys
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import opened_under, sealed_candidates

FILL_CLIENTS = 16
TIMEOUT = 900.0  # per step; a step that takes this long is a finding, not a slow machine
UNLOCK_KEY = re.compile(r"SWMKEY-1-[A-Za-z0-9+/]+")
BACKED_UP = re.compile(r"Backup written to .*: (\d+) secrets")
RENEWED_LIFE_S = 400 * 3600


def fill(m: Node, count: int) -> float:
    """``count`` secrets of 1 KiB through ``m`` by FILL_CLIENTS clients; returns the seconds taken."""
    counter = itertools.count()
    lock = threading.Lock()
    failed: list[str] = []

    def filler() -> None:
        with LocalClient(m.sock) as client:
            stub = client.control
            while True:
                with lock:
                    i = next(counter)
                if i >= count:
                    return
                try:
                    stub.CreateSecret(control_pb2.CreateSecretRequest(
                        spec=objects_pb2.SecretSpec(name=f"s{i:06d}", data=b"x" * 1024),
                        request_id=str(uuid.uuid4())), timeout=60)
                except LocalError as e:
                    if e.code is not Status.ALREADY_EXISTS:
                        failed.append(describe_error(e))

    start = time.monotonic()
    threads = [threading.Thread(target=filler) for _ in range(FILL_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"fill failed: {failed[0]}")
    return time.monotonic() - start


class Writer:
    """One client creating secrets through a manager until stopped; counts writes and failures."""

    def __init__(self, m: Node) -> None:
        self.m = m
        self.writes = self.failures = 0
        self.first_failure = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with LocalClient(self.m.sock) as client:
            stub = client.control
            for i in itertools.count():
                if self._stop.is_set():
                    return
                try:
                    stub.CreateSecret(control_pb2.CreateSecretRequest(
                        spec=objects_pb2.SecretSpec(name=f"during{i}", data=b"y"),
                        request_id=str(uuid.uuid4())), timeout=60)
                    self.writes += 1
                except LocalError as e:
                    self.failures += 1
                    self.first_failure = self.first_failure or describe_error(e)

    @contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(60)


def timed(results: list[tuple[str, float]], what: str, fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    took = time.monotonic() - start
    results.append((what, took))
    print(f"{what:<62} {took:8.2f} s", flush=True)
    return took


def cert_lives(m: Node) -> dict[str, int]:
    """Each node's recorded certificate life in seconds (notAfter - now), by node id."""
    nodes = m.control().ListNodes(control_pb2.ListNodesRequest(), timeout=30).nodes
    now = time.time()
    return {n.id: int(datetime.datetime.fromisoformat(n.tls_info.cert_not_after).timestamp() - now)
            if n.tls_info.cert_not_after else 0 for n in nodes}


def key_ring(m: Node, unlock_key: str) -> tuple[bytes, ...]:
    """The data keys in a manager's key file, current first."""
    got = keys.WrappedKeys(str(m.data_dir / "keys")).load(keys.parse_unlock_key(unlock_key) if unlock_key else None)
    return (got.dek, *got.previous)


def run(args: argparse.Namespace, root: Path) -> int:
    fleet = Cluster(root, managers=3, workers=2, log_level="info", autolock=args.autolock)
    try:
        fleet.start()
    except Exception as e:
        print(f"could not form the cluster: {e}\n{fleet.logs()}", file=sys.stderr)
        fleet.stop()
        return 2
    results: list[tuple[str, float]] = []
    status = 0
    try:
        leader = fleet.leader()
        follower = next(m for m in fleet.managers if m is not leader)
        fill_s = fill(leader, args.count)
        print(f"fill {args.count} secrets of 1 KiB: {fill_s:.1f} s", flush=True)
        backup_path = root / "swarm.backup"
        backup_out: dict[str, str] = {}
        with Writer(leader).running() as writer:
            timed(results, "renewal of every node (swarm update --cert-expiry)", lambda: (
                follower.ok("swarm", "update", "--cert-expiry", "400h"),
                wait_until(lambda: all(0 < life <= RENEWED_LIFE_S for life in cert_lives(follower).values()),
                           TIMEOUT, 0.1, "every node renewed")))
            timed(results, "root CA rotation (swarm ca --rotate)",
                  lambda: follower.ok("swarm", "ca", "--rotate", "-q", timeout=TIMEOUT))
            ring = lambda m: key_ring(m, fleet.unlock_key)  # noqa: E731
            old = {m.name: ring(m) for m in fleet.managers}
            timed(results, "data-key rotation (swarm data-key --rotate)",
                  lambda: follower.ok("swarm", "data-key", "--rotate", timeout=TIMEOUT))
            timed(results, "  then the old data key erased on every manager", lambda: wait_until(
                lambda: all(len(ring(m)) == 1 and ring(m) != old[m.name] for m in fleet.managers),
                TIMEOUT, 0.05, "every manager's key file without the old key"))
            timed(results, "backup (swarm backup, on a follower)", lambda: backup_out.update(
                out=follower.ok("swarm", "backup", str(backup_path), timeout=TIMEOUT)))
        print(f"writes during 1-4: {writer.writes}, failed: {writer.failures} {writer.first_failure}", flush=True)
        status = 1 if writer.failures else 0
        if args.scan:
            old_key = old[leader.name][0]
            found = sum(len(opened_under(old_key, sealed_candidates(m.data_dir))) for m in fleet.managers)
            print(f"values on the managers' disks that open under the old data key: {found}", flush=True)
            status = status or (1 if found else 0)
        total = count_secrets(leader)
        # The writer ran during the backup: the file holds what was committed when it was taken.
        in_backup = int(BACKED_UP.findall(backup_out["out"])[0])
        print(f"backup file: {backup_path.stat().st_size} bytes, {in_backup} secrets", flush=True)

        survivor = fleet.managers[0]
        for m in fleet.managers[1:]:
            m.kill()
        timed(results, "force-new-cluster (swarm init --force-new-cluster)", lambda: (
            survivor.ok("swarm", "init", "--force-new-cluster", timeout=TIMEOUT),
            survivor.ok("secret", "create", "after-recovery", "-", input="x"),
            wait_until(lambda: count_secrets(survivor) == total + 1, TIMEOUT, 0.2, "every secret")))

        survivor.kill()
        shutil.rmtree(survivor.data_dir)
        restored = Node("r1", root, role="manager", host=len(fleet.members) + 1, log_level="info")
        restored.ip, restored.port = survivor.ip, survivor.port  # the workers know this address
        fleet.members.append(restored)
        restored.start()
        # Under autolock a backup opens with the unlock key; otherwise with the key it printed.
        key = fleet.unlock_key or UNLOCK_KEY.findall(backup_out["out"])[0]
        probe = fleet.workers[0].secrets_root / "services" / "probe" / "s000000"
        probe_other = fleet.workers[1].secrets_root / "services" / "probe" / "s000000"
        timed(results, "restore (swarm init --restore) until a worker's task reads", lambda: (
            restored.ok("swarm", "init", "--restore", str(backup_path), "--advertise-addr", restored.addr,
                        "--availability", "drain", input=key + "\n", timeout=TIMEOUT),
            wait_until(lambda: count_secrets(restored) == in_backup, TIMEOUT, 0.2, "every secret of the backup"),
            restored.ok("service", "create", "--name", "probe", "--secret", "s000000", "--",
                        "python3", "-c", "import time; time.sleep(600)"),
            wait_until(lambda: probe.exists() or probe_other.exists(), TIMEOUT, 0.2, "the probe's secret")))
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        fleet.stop()
    print(f"\n{args.count} secrets, 3 managers + 2 workers:")
    for what, took in results:
        print(f"  {what:<62} {took:8.2f} s")
    if args.json:
        record = {"bench": "lifecycle", "secrets": args.count, "autolock": args.autolock, "fill_s": fill_s,
                  "writes": writer.writes, "failed_writes": writer.failures,
                  "operations": [{"operation": what.strip(), "seconds": took} for what, took in results],
                  "machine": machine_info(root)}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=10_000, help="secrets of 1 KiB to fill the swarm with")
    p.add_argument("--scan", action="store_true",
                   help="after the data-key rotation, scan every manager's disk for the old key (slow)")
    p.add_argument("--autolock", action="store_true", help="the same with an autolocked swarm")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="swarmsecrets-lifecycle-"))
    try:
        return run(args, root)
    finally:
        if args.keep:
            print(f"work dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
