#!/usr/bin/env python3
"""Write benchmark: ``secret create`` latency and throughput on a 3-manager loopback cluster,
beside a 3-member etcd measured the same way in the same run.

Usage (from the repository root; any Python with the project's dependencies and psutil)::

    .venv/bin/python -m scripts.bench.write                  # latency + throughput, etcd if installed
    .venv/bin/python -m scripts.bench.write --quick          # < 30 s smoke run: n=50, 1 s points, no etcd
    .venv/bin/python -m scripts.bench.write --scale --count 100000   # fill, RSS, restart, catch-up
    .venv/bin/python -m scripts.bench.write --json out.json  # also dump every figure
    .venv/bin/python -m scripts.bench.write --profile prof/  # + py-spy profiles of the leader (see profile.py)

What it measures (all traffic on 127.0.0.1 / unix sockets; every loop is bounded in count and time):

* **Sequential latency**: one client, one request in flight, ``--n`` creates per row, to the leader and
  to a follower (which forwards to the leader), at each ``--size`` (default 200 B and 4 KiB).
* **Throughput**: 1, 16 and 32 client threads creating secrets for ``--duration`` seconds each, all to
  the leader; ops/s and the latency percentiles under load. swarmsecrets clients speak the local API
  (HTTP/1.1 on the unix socket), one kept-alive connection per client thread; etcd's clients share
  ``--channels`` gRPC channels (separate connections), as the etcd anchors used 4 shared channels.
* **etcd** (``etcd`` must be on PATH unless ``--no-etcd``; never installed by this script: ``apt-get
  install etcd-server etcd-client``): 3 members on 127.0.0.1, fresh data dirs next to ours (same filesystem), default
  heartbeat 100 ms / election 1000 ms, the same workload as puts of values of the same size; then the
  ratios and the targets (not tests): p50 within 1.25x etcd, throughput at 32 clients >= etcd's.
* ``--scale``: a fresh cluster is filled with ``--count`` secrets of 1 KiB; one follower is stopped
  (SIGTERM) at ~30 % of the fill and restarted after it. Prints the fill rate, RSS and data-dir size per
  manager, the catch-up time of that follower (start until its linearizable ``ListSecrets`` returns the
  full count), restart-to-ready times (SIGTERM or SIGKILL, then start, until the same condition) and
  whether ``swarmsecrets secret ls -q`` copes with the full count. RSS is each server process's
  own, now and at its peak (VmHWM); a forked snapshot child is listed apart. Then the same fill on a
  3-member etcd (unless ``--no-etcd``) for its members' RSS, and every figure beside its goal
  (RSS <= 200 MB per manager, restart < 3 s, catch-up < 5 s). Without psutil it stops with the reason.

How etcd is driven: by default through its native gRPC API (``/etcdserverpb.KV/Put``) with the same
grpcio, the same client threads and the same channel sharing as the swarmsecrets client, so the two
columns differ only in the server. No etcd client package is involved: the ``etcd3`` package needs
``protobuf<4`` for its generated stubs, which cannot share a venv with this project's ``protobuf>=6``,
so the two-field ``PutRequest`` is encoded by hand (``etcd_put_request``) and the response is taken as
raw bytes. ``--etcd-transport http`` uses the v3 JSON gateway instead (``POST /v3/kv/put`` with base64
key/value, one keep-alive ``http.client`` connection per client thread). etcd's own
benchmark figures show the gateway costs about the same as gRPC for one sequential
client at <= 4 KiB (put p50 200 B 1.06 vs 0.99 ms, 4 KiB 1.34 vs 1.33 ms), but on this 2-core machine
it measured 15-20 % fewer puts/s at 16-32 clients (JSON work on the CPU-bound servers), which would make
the throughput target look easier than it is; hence gRPC by default.

Caveat printed with the results: on a 2-core machine the client threads compete with the three server
processes for CPU; the client/server CPU columns show how much each used.

``main(argv)`` returns the exit status; the shared pieces (statistics, tables, processes) are in
scripts/bench/common.py, the etcd side in scripts/bench/etcd.py, the cluster in tests/framework.
Exit status: 0 when the swarmsecrets part ran without errors (a MISS against a target is not a failure),
1 when some requests failed, 2 when a figure could not be measured (a cluster that could not be formed, a
row without one successful request, etcd failing) or the run was interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from scripts.bench.common import (
    CpuMeter,
    count_secrets,
    describe_error,
    dir_size,
    fmt_bytes,
    fmt_num,
    fmt_size,
    json_clean,
    machine_info,
    psutil,
    raise_interrupt,
    summarize,
    table,
    tail,
    terminate_all,
)
from scripts.bench import profile as profiling
from scripts.bench.etcd import ETCD_INSTALL_HINT, EtcdCluster, EtcdGrpcWriter, EtcdMember, EtcdWriter
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalClient, LocalError, Status
from tests.framework import DEFAULT_TIMINGS, Cluster, Node

SIZES_DEFAULT = (200, 4096)
CLIENTS_DEFAULT = (1, 16, 32)
RPC_TIMEOUT = 15.0  # per request; the server gives up on raft after 5 s
LEADER_TIMEOUT = 60.0
FORM_TIMEOUT = 90.0


def swarm_cluster(root: Path, args: argparse.Namespace) -> Cluster:
    """Three managers with the daemon's own timings and ``--daemon-arg``s (``--log-level info`` unless given)."""
    root.mkdir(parents=True, exist_ok=True)
    return Cluster(root, 3, timings=DEFAULT_TIMINGS, log_level=None, extra_args=tuple(args.daemon_arg_list))


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Row:
    system: str  # "swarmsecrets" | "etcd"
    kind: str  # "seq" | "tput"
    target: str  # "leader" | "follower"
    size: int
    clients: int
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    ops_per_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    client_cpu: float | None = None  # cores used by this process during the row
    server_cpu: float | None = None  # cores used by the three servers together
    server_cpus: list[float] | None = None  # the same per server, leader first
    capped: bool = False  # stopped by the time cap before --n samples
    first_error: str = ""


# --------------------------------------------------------------------------------------------
# swarmsecrets client


class SwarmWriter:
    """One benchmark client: CreateSecret through a (possibly shared) local API client."""

    def __init__(self, client: LocalClient) -> None:
        self.control = client.control

    def put(self, name: str, data: bytes) -> None:
        self.control.CreateSecret(control_pb2.CreateSecretRequest(
            spec=objects_pb2.SecretSpec(name=name, data=data), request_id=str(uuid.uuid4())),
            timeout=RPC_TIMEOUT)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# workloads


def run_sequential(writer: Any, data: bytes, names: Iterator[str], n: int, max_seconds: float,
                   warmup: int = 10) -> tuple[list[float], int, str, float, bool]:
    """n one-at-a-time puts; returns (latencies s, errors, first error, elapsed s, capped)."""
    for _ in range(warmup):
        with contextlib.suppress(Exception):
            writer.put(next(names), data)
    lat: list[float] = []
    errors = 0
    first_error = ""
    t_start = time.perf_counter()
    deadline = t_start + max_seconds
    capped = False
    for i in range(n):
        if time.perf_counter() > deadline:
            capped = True
            break
        name = next(names)
        t0 = time.perf_counter()
        try:
            writer.put(name, data)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors += 1
            first_error = first_error or describe_error(e)
            if errors >= max(20, n // 10) and errors > i // 2:
                break  # mostly failing: stop early, the row says so
            continue
        lat.append(time.perf_counter() - t0)
    return lat, errors, first_error, time.perf_counter() - t_start, capped


def run_concurrent(make_writer: Callable[[int], Any], clients: int, data: bytes,
                   namegen: Callable[[int], Iterator[str]], duration: float) -> tuple[list[float], int, str, float]:
    """`clients` threads putting for `duration` s; returns (latencies of ops completed in the window,
    errors, first error, window length s). Ops still in flight when the window closes are not counted."""
    barrier = threading.Barrier(clients + 1, timeout=60)
    stop = threading.Event()
    results: list[tuple[list[float], list[float], int, str]] = [([], [], 0, "")] * clients
    window: dict[str, float] = {}

    def worker(idx: int) -> None:
        writer = make_writer(idx)
        names = namegen(idx)
        lat: list[float] = []
        done_at: list[float] = []
        errors = 0
        first = ""
        try:
            with contextlib.suppress(Exception):  # warm the connection
                writer.put(next(names), data)
            barrier.wait()
            max_ops = 10_000_000  # a bound that a few seconds never reach
            for _ in range(max_ops):
                if stop.is_set():
                    break
                t0 = time.perf_counter()
                try:
                    writer.put(next(names), data)
                except Exception as e:  # noqa: BLE001
                    errors += 1
                    first = first or describe_error(e)
                    time.sleep(0.01)
                    continue
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                done_at.append(t1)
        except threading.BrokenBarrierError:
            first = first or "start barrier broken"
        finally:
            writer.close()
            results[idx] = (lat, done_at, errors, first)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"bench-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    window["start"] = time.perf_counter()
    time.sleep(duration)
    window["end"] = time.perf_counter()
    stop.set()
    for t in threads:
        t.join(timeout=RPC_TIMEOUT + 10)
    lat_all: list[float] = []
    errors = 0
    first = ""
    for lat, done_at, errs, f in results:
        lat_all.extend(x for x, d in zip(lat, done_at, strict=True) if d <= window["end"])
        errors += errs
        first = first or f
    return lat_all, errors, first, window["end"] - window["start"]


class NameGen:
    """Unique secret names / etcd keys: b<run><tag>t<thread>n<i> (valid swarm names, <= 64 chars)."""

    def __init__(self, run: str) -> None:
        self.run = run

    def stream(self, tag: str, thread: int = 0) -> Iterator[str]:
        return (f"b{self.run}{tag}t{thread}n{i}" for i in itertools.count())


@dataclass
class Target:
    """What the workload drives: a system, its leader/follower writers and server pids."""

    system: str
    leader_writer: Callable[[], Any]
    follower_writer: Callable[[], Any] | None
    concurrent_writer_factory: Callable[[int], Callable[[int], Any]]  # clients -> (idx -> writer)
    pids: Callable[[], list[int]]
    cleanup: Callable[[], None] = field(default=lambda: None)


def bench_target(t: Target, sizes: Sequence[int], clients_list: Sequence[int], n: int, duration: float,
                 max_seq_seconds: float, names: NameGen, log: Callable[[str], None],
                 rows: list[Row] | None = None,
                 profile: Callable[[str, Callable[[], int]], contextlib.AbstractContextManager[None]] | None = None,
                 ) -> list[Row]:
    """Every row for one system; appended to `rows` as each finishes (an interrupted run keeps them).
    ``profile(label, ops)``, when given, is entered around each throughput row with the most clients;
    ``ops()`` then tells how many requests it completed."""
    rows = rows if rows is not None else []
    for size in sizes:
        data = random.Random(size).randbytes(size)
        seq_targets: list[tuple[str, Callable[[], Any]]] = [("leader", t.leader_writer)]
        if t.follower_writer is not None:
            seq_targets.append(("follower", t.follower_writer))
        for target_name, mk in seq_targets:
            row = Row(t.system, "seq", target_name, size, 1)
            w = mk()
            meter = CpuMeter(t.pids())
            meter.start()
            try:
                lat, errs, first, elapsed, capped = run_sequential(
                    w, data, names.stream(f"{t.system[0]}s{size}{target_name[0]}"), n, max_seq_seconds)
            finally:
                w.close()
            row.client_cpu, row.server_cpus = meter.stop_each()
            row.server_cpu = sum(row.server_cpus) if row.server_cpus is not None else None
            row.ops, row.errors, row.first_error, row.seconds, row.capped = len(lat), errs, first, elapsed, capped
            row.ops_per_s = len(lat) / elapsed if elapsed > 0 else math.nan
            row.__dict__.update(summarize(lat))
            rows.append(row)
            require_samples(row)
            log(f"  {t.system:<12} seq  {target_name:<8} {fmt_size(size):>7}: n={row.ops} "
                f"p50 {fmt_num(row.p50_ms)} ms p99 {fmt_num(row.p99_ms)} ms errors {errs}"
                + (" (time-capped)" if capped else ""))
        for clients in clients_list:
            row = Row(t.system, "tput", "leader", size, clients)
            factory = t.concurrent_writer_factory(clients)
            meter = CpuMeter(t.pids())
            meter.start()
            tag = f"{t.system[0]}c{clients}s{size}"
            completed = [0]
            sampled = (profile(f"leader-c{clients}-{size}", functools.partial(completed.__getitem__, 0))
                       if profile is not None and clients == max(clients_list) else contextlib.nullcontext())
            with sampled:
                lat, errs, first, window = run_concurrent(
                    factory, clients, data, functools.partial(names.stream, tag), duration)
                completed[0] = len(lat)
            row.client_cpu, row.server_cpus = meter.stop_each()
            row.server_cpu = sum(row.server_cpus) if row.server_cpus is not None else None
            row.ops, row.errors, row.first_error, row.seconds = len(lat), errs, first, window
            row.ops_per_s = len(lat) / window if window > 0 else math.nan
            row.__dict__.update(summarize(lat))
            rows.append(row)
            require_samples(row)
            log(f"  {t.system:<12} tput c={clients:<3}     {fmt_size(size):>7}: {fmt_num(row.ops_per_s, 0)} ops/s "
                f"p50 {fmt_num(row.p50_ms)} ms p99 {fmt_num(row.p99_ms)} ms errors {errs}")
        t.cleanup()
    return rows


def require_samples(row: Row) -> None:
    """A row without one successful request has no figure: stop with the reason."""
    if not row.ops:
        raise RuntimeError(f"no {row.system} request succeeded in the {row.kind} row ({fmt_size(row.size)}, "
                           f"{row.clients} clients): {row.first_error or 'none completed in time'}")
    if row.client_cpu is None or row.server_cpus is None:
        raise RuntimeError("the CPU columns could not be measured (psutil)")


def _pids_leader_first(leader: Any, followers: Sequence[Any]) -> Callable[[], list[int]]:
    return lambda: [p for p in (n.pid for n in (leader, *followers)) if p is not None]


def swarm_target(cluster: Cluster) -> Target:
    leader = cluster.leader(LEADER_TIMEOUT)
    followers = [n for n in cluster.running() if n is not leader]
    opened: list[LocalClient] = []

    def writer_for(node: Node) -> Callable[[], Any]:
        def mk() -> SwarmWriter:
            client = LocalClient(node.sock)
            opened.append(client)
            return SwarmWriter(client)
        return mk

    def factory(clients: int) -> Callable[[int], Any]:
        # One client for all threads: HTTP/1.1 serves one request per connection at a time, so each
        # thread ends up with a kept-alive connection of its own.
        client = LocalClient(leader.sock)
        opened.append(client)
        return lambda idx: SwarmWriter(client)

    def cleanup() -> None:
        for ch in opened:
            with contextlib.suppress(Exception):
                ch.close()
        opened.clear()

    return Target("swarmsecrets", writer_for(leader), writer_for(followers[0]) if followers else None,
                  factory, _pids_leader_first(leader, followers), cleanup)


def etcd_target(cluster: EtcdCluster, transport: str, channels: int) -> Target:
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    if transport == "http":
        return Target("etcd", lambda: EtcdWriter(leader.client_port), lambda: EtcdWriter(follower.client_port),
                      lambda clients: (lambda idx: EtcdWriter(leader.client_port)),
                      _pids_leader_first(leader, [m for m in cluster.members if m is not leader]))
    opened: list[grpc.Channel] = []

    def channel(m: EtcdMember) -> grpc.Channel:
        ch = grpc.insecure_channel(f"127.0.0.1:{m.client_port}", options=[("grpc.use_local_subchannel_pool", 1)])
        opened.append(ch)
        return ch

    def factory(clients: int) -> Callable[[int], Any]:
        chans = [channel(leader) for _ in range(max(1, min(channels, clients)))]
        return lambda idx: EtcdGrpcWriter(chans[idx % len(chans)])

    def cleanup() -> None:
        for ch in opened:
            with contextlib.suppress(Exception):
                ch.close()
        opened.clear()

    return Target("etcd", lambda: EtcdGrpcWriter(channel(leader)), lambda: EtcdGrpcWriter(channel(follower)),
                  factory, _pids_leader_first(leader, [m for m in cluster.members if m is not leader]), cleanup)


# --------------------------------------------------------------------------------------------
# reporting


def rows_table(rows: Sequence[Row]) -> str:
    headers = ["system", "workload", "to", "size", "clients", "n", "ops/s", "p50 ms", "p99 ms", "mean ms",
               "max ms", "errors", "client CPU", "servers CPU", "leader/f1/f2"]
    out = []
    for r in rows:
        out.append([r.system, "sequential" if r.kind == "seq" else "throughput", r.target, fmt_size(r.size),
                    str(r.clients), f"{r.ops}{'*' if r.capped else ''}", fmt_num(r.ops_per_s, 0),
                    fmt_num(r.p50_ms), fmt_num(r.p99_ms), fmt_num(r.mean_ms), fmt_num(r.max_ms), str(r.errors),
                    fmt_num(r.client_cpu), fmt_num(r.server_cpu),
                    "/".join(f"{x:.2f}" for x in r.server_cpus) if r.server_cpus else "-"])
    return table(headers, out, right=set(range(3, len(headers))))


def find_row(rows: Sequence[Row], system: str, kind: str, target: str, size: int, clients: int) -> Row | None:
    for r in rows:
        if (r.system, r.kind, r.target, r.size, r.clients) == (system, kind, target, size, clients):
            return r
    return None


def compare(rows: Sequence[Row], sizes: Sequence[int], clients_list: Sequence[int]) -> tuple[list[list[str]],
                                                                                          list[dict[str, Any]]]:
    """Ratio rows (swarmsecrets / etcd) and target verdicts."""
    ratio_rows: list[list[str]] = []
    verdicts: list[dict[str, Any]] = []

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else math.nan

    for size in sizes:
        for target in ("leader", "follower"):
            s = find_row(rows, "swarmsecrets", "seq", target, size, 1)
            e = find_row(rows, "etcd", "seq", target, size, 1)
            if s and e:
                ratio_rows.append([f"sequential p50, {target}", fmt_size(size), fmt_num(s.p50_ms), fmt_num(e.p50_ms),
                                   fmt_num(ratio(s.p50_ms, e.p50_ms)) + "x"])
                ratio_rows.append([f"sequential p99, {target}", fmt_size(size), fmt_num(s.p99_ms), fmt_num(e.p99_ms),
                                   fmt_num(ratio(s.p99_ms, e.p99_ms)) + "x"])
                if target == "leader":
                    rr = ratio(s.p50_ms, e.p50_ms)
                    verdicts.append({"target": f"p50 within 1.25x etcd ({fmt_size(size)}, leader, sequential)",
                                     "ratio": rr, "limit": "<= 1.25x",
                                     "verdict": "PASS" if rr <= 1.25 else "MISS"})
        for c in clients_list:
            s = find_row(rows, "swarmsecrets", "tput", "leader", size, c)
            e = find_row(rows, "etcd", "tput", "leader", size, c)
            if s and e:
                ratio_rows.append([f"throughput ops/s, {c} clients", fmt_size(size), fmt_num(s.ops_per_s, 0),
                                   fmt_num(e.ops_per_s, 0), fmt_num(ratio(s.ops_per_s, e.ops_per_s)) + "x"])
                if c == 32:
                    rr = ratio(s.ops_per_s, e.ops_per_s)
                    verdicts.append({"target": f"throughput at 32 clients >= etcd's ({fmt_size(size)})",
                                     "ratio": rr, "limit": ">= 1.00x",
                                     "verdict": "PASS" if rr >= 1.0 else "MISS"})
    return ratio_rows, verdicts


# --------------------------------------------------------------------------------------------
# --scale

# The goals the --scale figures are printed beside.
GOAL_RSS = 200 * 10**6  # bytes per manager, a follower that caught up from a snapshot included
GOAL_RESTART_S = 3.0    # start of a restarted manager -> its full ListSecrets
GOAL_CATCHUP_S = 5.0    # start of a stale follower -> its full ListSecrets


class NotMeasurable(RuntimeError):
    """A --scale figure that cannot be measured on this machine: the run stops with the reason."""


def check_measurable() -> None:
    if psutil is None:
        raise NotMeasurable("--scale measures RSS with psutil, which is not installed (pip install psutil)")
    if not Path("/proc/self/status").exists():
        raise NotMeasurable("--scale reads peak RSS (VmHWM) from /proc/<pid>/status, which this system lacks")


def mem_of(pid: int | None, what: str) -> dict[str, int]:
    """RSS now and peak RSS (VmHWM) of one server process, and the RSS of its children (a snapshot
    child forked from it shares most of its pages, so it is shown apart rather than added)."""
    if pid is None:
        raise NotMeasurable(f"RSS of {what}: the process is not running")
    try:
        p = psutil.Process(pid)
        rss = p.memory_info().rss
        children = sum(c.memory_info().rss for c in p.children(recursive=True))
        status = Path(f"/proc/{pid}/status").read_text()
    except (psutil.Error, OSError) as e:
        raise NotMeasurable(f"RSS of {what} (pid {pid}): {e}") from e
    peak = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)
    if peak is None:
        raise NotMeasurable(f"peak RSS of {what}: no VmHWM in /proc/{pid}/status")
    return {"rss": rss, "peak": peak, "children": children}



def run_scale(args: argparse.Namespace, base: Path, names: NameGen, log: Callable[[str], None],
              res: dict[str, Any]) -> None:
    """Fill a fresh cluster, then measure; every figure goes into `res` as soon as it exists, so an
    interrupted or failed run still reports what it got."""
    res.update(count=args.count, size=args.scale_size, clients=args.scale_clients)
    cluster = swarm_cluster(base / "scale", args)
    (base / "scale").mkdir(parents=True, exist_ok=True)
    log(f"starting a fresh 3-manager cluster under {base / 'scale'} ...")
    t0 = time.monotonic()
    try:
        cluster.start(FORM_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - reported
        res["error"] = f"cluster did not form: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        log(f"cluster did not form: {e}\n{cluster.logs()}")
        cluster.stop()
        return
    try:
        _scale_phases(args, cluster, names, log, res, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - reported with what was measured before
        res["error"] = f"--scale stopped early: {describe_error(e)}"
        log(f"{res['error']}\n{cluster.logs()}")
    finally:
        cluster.stop()


def _scale_phases(args: argparse.Namespace, cluster: Cluster, names: NameGen, log: Callable[[str], None],
                  res: dict[str, Any], formation_s: float) -> None:
    res["formation_s"] = formation_s
    leader = cluster.leader(LEADER_TIMEOUT)
    victim = next(n for n in cluster.running() if n is not leader)
    res["victim"] = victim.name
    res["rss_empty"] = {n.name: mem_of(n.pid, n.name)["rss"] for n in cluster.managers}
    log(f"formed in {formation_s:.1f} s; leader {leader.name}; {victim.name} will be stopped at 30 % of the fill")

    # --- the fill: --scale-clients threads to the leader, each name once (retries keep the name)
    data = random.Random(1).randbytes(args.scale_size)
    total = args.count
    counter = itertools.count()
    lock = threading.Lock()
    done = [0]
    errors = [0]
    first_error = [""]
    last_ack = [""]  # the name of the create acknowledged last
    stop = threading.Event()
    fill_client = LocalClient(leader.sock)

    def filler(idx: int) -> None:
        w = SwarmWriter(fill_client)
        while not stop.is_set():
            with lock:
                i = next(counter)
            if i >= total:
                return
            name = f"b{names.run}x{i}"
            for attempt in range(5):  # same name, fresh request id; ALREADY_EXISTS = an earlier try landed
                try:
                    w.put(name, data)
                    break
                except LocalError as e:
                    if e.code is Status.ALREADY_EXISTS:
                        break
                    with lock:
                        errors[0] += 1
                        first_error[0] = first_error[0] or describe_error(e)
                    if stop.is_set() or attempt == 4:
                        return  # this thread gives up; the others go on
                    time.sleep(0.2)
            with lock:
                done[0] += 1
                last_ack[0] = name

    threads = [threading.Thread(target=filler, args=(i,), daemon=True, name=f"fill-{i}")
               for i in range(args.scale_clients)]
    meter = CpuMeter(cluster.pids())
    meter.start()
    t_fill = time.monotonic()
    for t in threads:
        t.start()
    stopped_at: int | None = None
    next_report = 0.1
    deadline = t_fill + args.scale_timeout
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.05)
            frac = done[0] / total
            if stopped_at is None and frac >= 0.3:
                stopped_at = done[0]
                ts = time.monotonic()
                victim.kill(signal.SIGTERM)
                res["victim_stop_s"] = time.monotonic() - ts
                res["victim_stopped_at"] = stopped_at
                log(f"  stopped follower {victim.name} (SIGTERM) at {stopped_at:,} secrets "
                    f"({res['victim_stop_s']:.2f} s to exit)")
            if frac >= next_report:
                el = time.monotonic() - t_fill
                log(f"  fill {done[0]:>9,} / {total:,}  {el:7.1f} s  {done[0] / el:8.0f} secrets/s  "
                    f"errors {errors[0]}")
                next_report += 0.1
            if time.monotonic() > deadline:
                log(f"  fill stopped by --scale-timeout ({args.scale_timeout:.0f} s)")
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=RPC_TIMEOUT + 5)
        fill_s = time.monotonic() - t_fill
        client_cpu, server_cpu = meter.stop()
        fill_client.close()
        res.update(fill_s=fill_s, filled=done[0], fill_rate=done[0] / fill_s if fill_s else math.nan,
                   fill_errors=errors[0], fill_first_error=first_error[0],
                   fill_client_cpu=client_cpu, fill_server_cpu=server_cpu)
    log(f"fill: {done[0]:,} secrets in {fill_s:.1f} s = {res['fill_rate']:.0f}/s, errors {errors[0]}")

    # --- the authoritative total: a linearizable list on the leader (a create that timed out may have landed)
    leader = cluster.leader(LEADER_TIMEOUT)
    ts = time.monotonic()
    expected = count_secrets(leader, timeout=300)
    res["list_leader_s"] = time.monotonic() - ts
    res["total"] = expected
    res["rss_full_running"] = {n.name: mem_of(n.pid, n.name)["rss"] for n in cluster.running()}
    res["leader"] = leader.name
    log(f"ListSecrets on the leader: {expected:,} secrets in {res['list_leader_s']:.2f} s")

    gate = control_pb2.ListSecretsRequest(filters=control_pb2.ListSecretsRequest.Filters(names=[last_ack[0]]))

    def ready_time(node: Node, t_start: float) -> dict[str, Any]:
        """After node.start(): times to socket, to a first answered linearizable ListSecrets, to the full count.

        Until the first answer it polls a cheap ListSecrets filtered to the last acknowledged name (the same
        read barrier, tiny answer), so the poll interval does not include listing every secret. A
        linearizable read must already see that secret: `stale_reads` counts answers that did not."""
        out: dict[str, Any] = {"socket_s": time.monotonic() - t_start, "first_list_s": math.nan,
                               "ready_s": math.nan, "last_count": -1, "last_error": "", "stale_reads": 0}
        poll_deadline = time.monotonic() + args.ready_timeout
        with LocalClient(node.sock) as client:
            stub = client.control
            for _ in range(1_000_000):  # bounded by poll_deadline long before this
                if time.monotonic() > poll_deadline:
                    out["last_error"] = out["last_error"] or "timed out"
                    break
                if node.proc is None or node.proc.poll() is not None:
                    out["last_error"] = f"the daemon exited:\n{tail(node.log_path, 1500)}"
                    break
                try:
                    remaining = max(1.0, poll_deadline - time.monotonic())
                    if math.isnan(out["first_list_s"]) and last_ack[0]:
                        seen = len(stub.ListSecrets(gate, timeout=min(10.0, remaining)).secrets)
                        out["first_list_s"] = time.monotonic() - t_start
                        out["stale_reads"] += seen == 0
                    out["last_count"] = count_secrets(node, timeout=min(60.0, remaining), client=client)
                    if math.isnan(out["first_list_s"]):
                        out["first_list_s"] = time.monotonic() - t_start
                    if out["last_count"] < expected:
                        out["stale_reads"] += 1
                    if out["last_count"] >= expected:
                        out["ready_s"] = time.monotonic() - t_start
                        out["last_error"] = ""
                        break
                except LocalError as e:
                    out["last_error"] = describe_error(e)
                time.sleep(0.1)
        return out

    # --- catch-up of the follower stopped during the fill
    if stopped_at is not None:
        log(f"restarting {victim.name} (stopped during the fill) ...")
        ts = time.monotonic()
        victim.start()
        res["catchup"] = ready_time(victim, ts)
        c = res["catchup"]
        log(f"  catch-up: socket {c['socket_s']:.2f} s, first ListSecrets {fmt_num(c['first_list_s'])} s, "
            f"full count {fmt_num(c['ready_s'])} s (last count {c['last_count']:,}) {c['last_error'][:300]}")
    res["mem_full"] = {n.name: mem_of(n.pid, n.name) for n in cluster.managers}
    res["rss_full"] = {name: m["rss"] for name, m in res["mem_full"].items()}
    res["disk_full"] = {n.name: dir_size(n.data_dir) for n in cluster.managers}

    # --- `secret ls` through the real CLI: does it cope with the full count?
    ts = time.monotonic()
    try:
        p = cluster.leader(LEADER_TIMEOUT).cli("secret", "ls", "-q", timeout=600)
        res["cli_ls"] = {"rc": p.returncode, "s": time.monotonic() - ts,
                         "lines": len(p.stdout.splitlines()), "stderr": p.stderr.strip()[-300:]}
    except subprocess.TimeoutExpired:
        res["cli_ls"] = {"rc": None, "s": time.monotonic() - ts, "lines": 0, "stderr": "timed out after 600 s"}
    log(f"  `secret ls -q` on the leader: rc {res['cli_ls']['rc']}, {res['cli_ls']['lines']:,} lines, "
        f"{res['cli_ls']['s']:.2f} s {res['cli_ls']['stderr'][:200]}")

    # --- restart-to-ready: a follower after SIGTERM, a follower after SIGKILL, the leader after SIGTERM
    res["restarts"] = []
    for label, sig, pick_leader in (("follower, SIGTERM", signal.SIGTERM, False),
                                    ("follower, SIGKILL", signal.SIGKILL, False),
                                    ("leader, SIGTERM", signal.SIGTERM, True)):
        r: dict[str, Any] = {"case": label}
        res["restarts"].append(r)
        try:
            lead = cluster.leader(LEADER_TIMEOUT)
            node = lead if pick_leader else next(n for n in cluster.running() if n is not lead)
            r["node"] = node.name
            r["leader_before"] = lead.name
            ts = time.monotonic()
            node.kill(sig)
            r["stop_s"] = time.monotonic() - ts
            ts = time.monotonic()
            node.start()
            r.update(ready_time(node, ts))
            with contextlib.suppress(Exception):
                r["leader_after"] = cluster.leader(timeout=10).name
            r["mem"] = mem_of(node.pid, node.name)
        except Exception as e:  # noqa: BLE001 - reported
            r["error"] = describe_error(e)
        log(f"  restart {label} ({r.get('node', '?')}): stop {fmt_num(r.get('stop_s'))} s, ready "
            f"{fmt_num(r.get('ready_s'))} s, count {r.get('last_count', -1):,} "
            f"{(r.get('error') or r.get('last_error') or '')[:300]}")


def etcd_scale(args: argparse.Namespace, base: Path, log: Callable[[str], None], res: dict[str, Any]) -> None:
    """The same fill (--count values of --scale-size, --scale-clients threads, gRPC puts to the
    leader) on a 3-member etcd, then each member's RSS and peak RSS."""
    etcd_bin = shutil.which("etcd")
    if etcd_bin is None:
        res["error"] = f"etcd not found on PATH: install it with `{ETCD_INSTALL_HINT}` (or pass --no-etcd)"
        return
    (base / "etcd-scale").mkdir(parents=True, exist_ok=True)
    cluster = EtcdCluster(base / "etcd-scale", etcd_bin)
    log(f"etcd: starting 3 members under {base / 'etcd-scale'} for the same fill ...")
    try:
        cluster.start()
        leader = cluster.leader()
        data = random.Random(1).randbytes(args.scale_size)
        counter = itertools.count()
        lock = threading.Lock()
        failed: list[str] = []
        chans = [grpc.insecure_channel(f"127.0.0.1:{leader.client_port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)])
                 for _ in range(max(1, min(args.channels, args.scale_clients)))]

        def filler(idx: int) -> None:
            w = EtcdGrpcWriter(chans[idx % len(chans)])
            while not failed:
                with lock:
                    i = next(counter)
                if i >= args.count:
                    return
                try:
                    w.put(f"scale{i}", data)
                except grpc.RpcError as e:
                    failed.append(describe_error(e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=filler, args=(i,), daemon=True) for i in range(args.scale_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.scale_timeout)
        res["fill_s"] = time.monotonic() - t0
        for ch in chans:
            ch.close()
        if failed:
            res["error"] = f"etcd fill failed: {failed[0]}"
            return
        res["leader"] = leader.name
        res["mem"] = {m.name: mem_of(m.pid, f"etcd {m.name}") for m in cluster.members}
        log(f"etcd: {args.count:,} puts in {res['fill_s']:.1f} s; RSS "
            + ", ".join(f"{n} {fmt_bytes(m['rss'])}" for n, m in res["mem"].items()))
    except NotMeasurable:
        raise
    except Exception as e:  # noqa: BLE001 - reported
        res["error"] = f"etcd: {describe_error(e)}\n{cluster.logs()}"
    finally:
        cluster.stop()


def scale_goals(res: dict[str, Any]) -> list[list[str]]:
    """The figures the goals are about, each beside its goal (and etcd's figure where it has one)."""
    rows: list[list[str]] = []
    mem = res.get("mem_full") or {}
    etcd = res.get("etcd", {}).get("mem") or {}
    etcd_max = max((m["rss"] for m in etcd.values()), default=None)
    roles = [(res.get("leader"), "leader"), (res.get("victim"), "follower that caught up from a snapshot")]
    roles += [(n, "follower") for n in sorted(mem) if n not in (res.get("leader"), res.get("victim"))]
    for name, role in roles:
        m = mem.get(name)
        if m is None:
            continue
        worst = max(m["rss"], m["peak"])
        child = f" (+ child {fmt_bytes(m['children'])})" if m["children"] else ""
        rows.append([f"RSS {role} ({name}): now / peak", f"{fmt_bytes(m['rss'])} / {fmt_bytes(m['peak'])}{child}",
                     fmt_bytes(etcd_max) if etcd_max else "not run",
                     f"{worst / etcd_max:.2f}x" if etcd_max else "",
                     f"<= {GOAL_RSS / 10**6:.0f} MB", "met" if worst <= GOAL_RSS else "MISSED"])
    if "catchup" in res:
        c = res["catchup"]
        rows.append(_time_row("catch-up of the stale follower, start -> full ListSecrets", c, GOAL_CATCHUP_S))
    for r in res.get("restarts", []):
        rows.append(_time_row(f"restart {r['case']}, start -> full ListSecrets", r, GOAL_RESTART_S))
    return rows


def _time_row(label: str, r: dict[str, Any], goal: float) -> list[str]:
    ready = r.get("ready_s", math.nan)
    if r.get("error") or math.isnan(ready):
        reason = (r.get("error") or r.get("last_error") or "never ready").splitlines()[0][:60]
        return [label, f"not measured: {reason}", "", "", f"< {goal:.0f} s", "MISSED"]
    return [label, f"{ready:.2f} s", "", "", f"< {goal:.0f} s", "met" if ready < goal else "MISSED"]


def print_scale(res: dict[str, Any]) -> None:
    print()
    print(f"== --scale: {res.get('count', 0):,} secrets of {fmt_size(res.get('size', 0))}, "
          f"{res.get('clients')} client threads to the leader ==")
    if "formation_s" in res:
        print(f"cluster formed in {res['formation_s']:.1f} s")
    if "fill_s" in res:
        first = f", first: {res['fill_first_error']}" if res.get("fill_first_error") else ""
        print(f"fill: {res['filled']:,} created in {res['fill_s']:.1f} s = {res['fill_rate']:,.0f} secrets/s "
              f"(errors {res['fill_errors']}{first}); client CPU {fmt_num(res['fill_client_cpu'])} cores, "
              f"servers {fmt_num(res['fill_server_cpu'])} cores")
    if "total" in res:
        print(f"total in a linearizable ListSecrets on the leader: {res['total']:,} "
              f"(the call took {res['list_leader_s']:.2f} s)")
    if "rss_empty" in res:
        rss_full = res.get("rss_full") or res.get("rss_full_running") or {}
        disk = res.get("disk_full", {})
        print()
        print(table(["manager", "RSS empty", "RSS after fill", "data dir after fill"],
                    [[n, fmt_bytes(res["rss_empty"].get(n)), fmt_bytes(rss_full.get(n)),
                      fmt_bytes(disk.get(n))] for n in sorted(res["rss_empty"])]))
    rows = []

    def cells(label: str, r: dict[str, Any]) -> list[str]:
        if r.get("error"):
            return [label, fmt_num(r.get("stop_s")), "-", "-", "error", "-", r["error"][:70]]
        count = f"{r.get('last_count', -1):,}"
        if math.isnan(r.get("ready_s", math.nan)) and r.get("last_error"):
            count += f" ({r['last_error'].splitlines()[0][:60]})"
        return [label, fmt_num(r.get("stop_s")), fmt_num(r.get("socket_s")), fmt_num(r.get("first_list_s")),
                fmt_num(r.get("ready_s")), str(r.get("stale_reads", 0)), count]

    if "catchup" in res:
        rows.append(cells(f"catch-up: {res['victim']} stopped at {res.get('victim_stopped_at') or 0:,}",
                          {**res["catchup"], "stop_s": res.get("victim_stop_s")}))
    for r in res.get("restarts", []):
        label = f"restart {r['case']} ({r.get('node', '?')})"
        if r.get("leader_after"):
            label += (f", leader {r['leader_before']}" + (f"->{r['leader_after']}"
                      if r["leader_after"] != r.get("leader_before") else " kept"))
        rows.append(cells(label, r))
    if rows:
        print()
        print(table(["case", "stop s", "start->socket s", "->first read s", "->full count s", "stale reads",
                     "count seen"], rows, right={1, 2, 3, 4, 5}))
        print("  times from the start of the process: first read = a linearizable ListSecrets (filtered to the last\n"
              "  acknowledged name) answered; full count = an unfiltered ListSecrets on that manager returned the\n"
              "  total (includes listing them all). stale reads = linearizable answers missing acknowledged secrets\n"
              "  (must be 0). Polled every 0.1 s.")
    if "cli_ls" in res:
        ls = res["cli_ls"]
        print(f"`swarmsecrets secret ls -q` on the leader: exit {ls['rc']}, {ls['lines']:,} lines, {ls['s']:.2f} s"
              + (f"; stderr: {ls['stderr']}" if ls["rc"] != 0 else ""))
    goals = scale_goals(res)
    if goals:
        print()
        print(table(["figure", "swarmsecrets", "etcd (largest member)", "ratio", "goal", ""], goals))
        if res.get("etcd", {}).get("error"):
            print(res["etcd"]["error"])
        print("  peak = VmHWM, the most the process ever held (for a restarted or caught-up manager: during\n"
              "  its load); a snapshot child forked from a manager shares its pages and is not added.")
    if "error" in res:
        print(res["error"])


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.write", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="sequential samples per latency row (default 1000)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput point (default 5)")
    p.add_argument("--size", type=int, action="append",
                   help="value size in bytes; repeat for several rows (default 200 and 4096)")
    p.add_argument("--clients", type=int, action="append",
                   help="concurrent clients per throughput point; repeatable (default 1, 16, 32)")
    p.add_argument("--channels", type=int, default=4,
                   help="etcd: gRPC channels (connections) shared by the concurrent clients (default 4)")
    p.add_argument("--max-seq-seconds", type=float, default=120.0,
                   help="time cap of one sequential row; the row reports how many it got (default 120)")
    p.add_argument("--no-etcd", action="store_true", help="skip the etcd comparison")
    p.add_argument("--etcd-transport", choices=["grpc", "http"], default="grpc",
                   help="etcd client: native gRPC KV.Put (default) or the v3 JSON gateway /v3/kv/put")
    p.add_argument("--etcd-only", action="store_true", help="only the etcd part (to develop/check the harness)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument("--quick", action="store_true",
                   help="smoke run in < 30 s: --n 50, --duration 1, 200 B only, no etcd")
    p.add_argument("--scale", action="store_true", help="fill/RSS/restart/catch-up run instead of the latency run")
    p.add_argument("--count", type=int, default=100_000, help="secrets loaded by --scale (default 100000)")
    p.add_argument("--scale-size", type=int, default=1024, help="value size for --scale (default 1024)")
    p.add_argument("--scale-clients", type=int, default=16, help="client threads for the --scale fill (default 16)")
    p.add_argument("--scale-timeout", type=float, default=3600.0, help="cap on the --scale fill, s (default 3600)")
    p.add_argument("--ready-timeout", type=float, default=600.0,
                   help="cap on each restart/catch-up wait in --scale, s (default 600)")
    p.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                   help="extra swarmsecretsd argument, repeatable, e.g. --daemon-arg=--raft-heartbeat "
                        "--daemon-arg=0.05 (default: the daemon's own defaults, --log-level info)")
    p.add_argument("--profile", metavar="DIR",
                   help="save py-spy flame graphs (.svg) and folded stacks (.txt) of the leader during the "
                        "throughput rows with the most clients into DIR (needs py-spy)")
    p.add_argument("--dir", help="parent of the temporary data dirs (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data dirs and logs (path printed)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.duration, a.no_etcd = 50, 1.0, True
        a.size = a.size or [200]
        a.max_seq_seconds = min(a.max_seq_seconds, 6.0)
    a.size = a.size or list(SIZES_DEFAULT)
    a.clients = a.clients or list(CLIENTS_DEFAULT)
    for name in ("n", "duration", "count", "scale_size", "scale_clients", "channels"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if any(s <= 0 or s >= 512_000 for s in a.size) or not 0 < a.scale_size < 512_000:
        p.error("sizes must be 1..511999 bytes (the secret payload limit)")
    if any(c <= 0 or c > 256 for c in a.clients):
        p.error("--clients must be 1..256")
    if psutil is None:
        p.error("the CPU columns need psutil: pip install psutil (it is in the dev extras)")
    if not (a.no_etcd or a.scale) and shutil.which("etcd") is None:
        p.error(f"etcd not found on PATH, so its figures cannot be measured: install it with "
                f"`{ETCD_INSTALL_HINT}`, or pass --no-etcd")
    a.py_spy = None
    if a.profile is not None:
        try:
            a.py_spy = profiling.find_py_spy()
        except ValueError as e:
            p.error(str(e))
    a.daemon_arg_list = list(a.daemon_arg)
    if not any(x.startswith("--log-level") for x in a.daemon_arg_list):
        a.daemon_arg_list += ["--log-level", "info"]
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    names = NameGen(run_id)
    base = Path(tempfile.mkdtemp(prefix="bench_write-", dir=args.dir))
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, raise_interrupt) if in_main_thread else None
    t_begin = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_begin:7.1f}s] {msg}", file=sys.stderr, flush=True)

    info = machine_info(base)
    result: dict[str, Any] = {"run": run_id, "machine": info, "args": {k: v for k, v in vars(args).items()}}
    status = 0
    try:
        if args.scale:
            res: dict[str, Any] = {}
            result["scale"] = res
            try:
                check_measurable()
                run_scale(args, base, names, log, res)
                if not args.no_etcd and "error" not in res:
                    res["etcd"] = {}
                    etcd_scale(args, base, log, res["etcd"])
                waits = [res.get("catchup", {}), *res.get("restarts", [])]
                not_ready = any(r.get("error") or math.isnan(r.get("ready_s", math.nan)) for r in waits)
                status = 2 if "error" in res or "error" in res.get("etcd", {}) else (
                    1 if res.get("fill_errors") or not_ready else 0)
            except NotMeasurable as e:
                res["error"] = f"--scale stopped: {e}"
                status = 2
            finally:  # also after Ctrl-C: print what was measured
                terminate_all()
                print_header(info, args)
                print_scale(res)
        else:
            status = run_bench(args, base, names, log, info, result)
    except KeyboardInterrupt:
        log("interrupted; stopping every process we started")
        status = 2
    finally:
        terminate_all()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        result["machine"]["loadavg_end"] = os.getloadavg()
        result["elapsed_s"] = time.monotonic() - t_begin
        if args.json:
            with open(args.json, "w") as f:
                json.dump(json_clean(result), f, indent=2, default=str)
            log(f"wrote {args.json}")
        if args.keep:
            log(f"kept data dirs and logs in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    log(f"done in {time.monotonic() - t_begin:.1f} s")
    return status


def print_header(info: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"bench_write: {info['cpus']} CPUs, {info.get('mem_gib', '?')} GiB, Python {info['python']}, "
          f"grpcio {info['grpcio']}, kernel {info['kernel']}; data dirs on {info['fs']} ({info['data_dir']}); "
          f"load average at start {' '.join(f'{x:.2f}' for x in info['loadavg_start'])}")
    if (info["cpus"] or 1) <= 4:
        print(f"NOTE: {info['cpus']} CPUs: the client threads run on the same cores as the three servers and "
              "compete with them;\n      the CPU columns give the cores used during each row: client = this "
              "process, servers = the three together, then leader/follower/follower.")


def run_bench(args: argparse.Namespace, base: Path, names: NameGen, log: Callable[[str], None],
              info: dict[str, Any], result: dict[str, Any]) -> int:
    rows: list[Row] = []
    status = 0
    swarm_error = ""
    interrupted = False
    if not args.etcd_only:
        cluster = swarm_cluster(base / "swarm", args)
        (base / "swarm").mkdir(parents=True, exist_ok=True)
        log(f"starting 3 swarmsecretsd managers under {base / 'swarm'} ...")
        try:
            t0 = time.monotonic()
            cluster.start(FORM_TIMEOUT)
            log(f"cluster formed in {time.monotonic() - t0:.1f} s; leader {cluster.leader(LEADER_TIMEOUT).name}")
            target = swarm_target(cluster)
            leader_pid = cluster.leader(LEADER_TIMEOUT).pid
            profile = (None if args.profile is None or leader_pid is None else
                       functools.partial(profiling.sampling, args.py_spy, leader_pid, Path(args.profile), log))
            bench_target(target, args.size, args.clients, args.n, args.duration, args.max_seq_seconds,
                         names, log, rows, profile)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:  # noqa: BLE001 - reported, then the etcd part still runs
            swarm_error = f"swarmsecrets cluster failed: {e}"
            log(swarm_error + "\n" + cluster.logs())
            status = 2
        finally:
            cluster.stop()
    etcd_note = ""
    if interrupted:
        etcd_note = "interrupted: the rows above are what was measured"
    elif args.no_etcd:
        etcd_note = "etcd comparison skipped (--no-etcd)"
    else:
        etcd_bin = shutil.which("etcd") or "etcd"  # on PATH: checked with the arguments
        ecluster = EtcdCluster(base / "etcd", etcd_bin)
        (base / "etcd").mkdir(parents=True, exist_ok=True)
        info["etcd"] = EtcdCluster.version(etcd_bin)
        log(f"starting 3 etcd {info['etcd']} members under {base / 'etcd'} ...")
        try:
            ecluster.start()
            bench_target(etcd_target(ecluster, args.etcd_transport, args.channels), args.size,
                         args.clients, args.n, args.duration, args.max_seq_seconds, names, log, rows)
        except KeyboardInterrupt:
            interrupted = True
            etcd_note = "interrupted: the rows above are what was measured"
        except Exception as e:  # noqa: BLE001
            etcd_note = f"etcd part failed: {e}"
            log(etcd_note + "\n" + ecluster.logs())
            status = 2
        finally:
            ecluster.stop()

    print_header(info, args)
    daemon_args = " ".join(args.daemon_arg_list)
    print(f"swarmsecrets: 3 managers on 127.0.0.1, clients on the unix socket (local API, HTTP/1.1), "
          f"swarmsecretsd {daemon_args}; one connection per concurrent client")
    if "etcd" in info:
        how = ("native gRPC KV.Put, same grpcio client and channel sharing as above"
               if args.etcd_transport == "grpc" else
               "the v3 JSON gateway /v3/kv/put (keep-alive HTTP/1.1, one connection per client)")
        print(f"etcd {info['etcd']}: 3 members on 127.0.0.1, hb 100 ms / election 1000 ms, fresh data dirs on the "
              f"same filesystem; puts of the same values via {how}")
    print(f"sequential rows: --n {args.n} (time cap {args.max_seq_seconds:.0f} s, '*' = capped); throughput rows: "
          f"{args.duration:g} s each, all clients to the leader; unique name per op (b{names.run}...)")
    print()
    if rows:
        print(rows_table(rows))
    if swarm_error:
        print()
        print(swarm_error.splitlines()[0])
    if etcd_note:
        print()
        print(etcd_note)
    ratio_rows, verdicts = compare(rows, args.size, args.clients)
    if ratio_rows:
        print()
        print("swarmsecrets / etcd:")
        print(table(["metric", "size", "swarmsecrets", "etcd", "ratio"], ratio_rows, right={1, 2, 3, 4}))
        print()
        print("targets (not tests):")
        print(table(["target", "ratio", "limit", "result"],
                    [[v["target"], fmt_num(v["ratio"]) + "x", v["limit"], v["verdict"]] for v in verdicts],
                    right={1, 2}))
    elif not args.no_etcd and not args.etcd_only:
        print()
        print("targets (not tests): not evaluated (needs both swarmsecrets and etcd rows)")
    failed = [r for r in rows if r.errors]
    for r in failed:
        print(f"errors in {r.system} {r.kind} {r.target} {fmt_size(r.size)} c={r.clients}: {r.errors}; "
              f"first: {r.first_error}")
    if status == 0 and any(r.system == "swarmsecrets" for r in failed):
        status = 1
    if status == 0 and not args.etcd_only and not any(r.system == "swarmsecrets" and r.ops for r in rows):
        status = 1
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    result["rows"] = [asdict(r) for r in rows]
    result["ratios"] = ratio_rows
    result["targets"] = verdicts
    result["notes"] = [n for n in (swarm_error, etcd_note) if n]
    return 2 if interrupted else status


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        terminate_all()
