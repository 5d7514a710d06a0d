#!/usr/bin/env python3
"""Delivery benchmark: from ``service update --secret-add`` acknowledgement until the file is on tmpfs on
every worker, with N simulated workers on a real 3-manager loopback cluster; and the leader's RSS and CPU
with N idle worker streams.

Usage (from the repository root; any Python with the project's dependencies and psutil)::

    .venv/bin/python -m scripts.bench.delivery --quick                  # N=10, 3 rounds, < 60 s
    .venv/bin/python -m scripts.bench.delivery --workers 10,100 --rounds 20
    .venv/bin/python -m scripts.bench.delivery --workers 500 --rounds 10
    .venv/bin/python -m scripts.bench.delivery --idle-only 1000         # connect N sessions, RSS/CPU only
    .venv/bin/python -m scripts.bench.delivery --workers 10,100 --json out.json   # also dump every figure
    .venv/bin/python -m scripts.bench.delivery --quick --json           # JSON on stdout, the table on stderr

(Without the project's venv: ``/some/python -m scripts.bench.delivery`` from the repository root; the
daemons it starts import the same tree.)

How it works, per N (a fresh cluster for every N, so the figures of one N do not carry the heap of another):

1. ``Cluster(root).start()`` from tests/framework: 3 real swarmsecretsd managers on 127.0.0.1 (the
   framework's fast raft timings and ``--log-level debug``, as the integration tests run them; the
   dispatcher heartbeat is the daemon's default 5 s, not the framework's 1 s: ``--dispatcher-heartbeat``).
2. N worker identities, each a real certificate: the join token's digest pins the root CA
   (``certs.fetch_unverified_root``), then ``NodeCA.IssueNodeCertificate`` with the worker join token over a
   bootstrap client certificate, as ``swarmsecretsd`` does in ``join`` (concurrently, ``--join-concurrency``).
3. A global service without a command (files only), created through the Control API on the leader's unix
   socket; the scheduler places one task on each worker once its session makes it Ready.
4. N simulated agents in ``--procs`` processes (one asyncio loop each; auto: 1 for N < 100, else 2 = the
   cores of this box). Each has its own mutual-TLS ``grpc.aio`` channel (its own TCP/TLS connection), opens
   Connect (heartbeats on that stream, at the period the server returns; with ``--heartbeats calls``
   Session and Heartbeat calls, as agents of the previous release) and Assignments like swarmsecrets/worker/agent.py:
   it starts at manager i mod 3 and follows the ``swarmsecrets-leader`` trailing metadata of a follower,
   checks applies_to/results_in (a gap: resubscribe), converges to the assigned tasks' secret files and
   reports task status (``running``) with UpdateTaskStatus as the real agent does (what 100 ms after
   the first report gathered, in one call). A file is
   written as ``/dev/shm/<benchdir>/<worker>/<target>`` (tmp + rename); the monotonic time after the rename
   is "the file is on tmpfs" and goes back to the coordinator keyed by the secret's name.
5. Idle: ``--idle-seconds`` with all N sessions and streams open and nothing changing; psutil on the leader
   process: RSS (mean/max of 0.5 s samples) and CPU % (of one core: user+system time / wall time).
6. ``--rounds`` rounds: ``secret create bNNN``; ``UpdateService --secret-add source=bNNN,target=t`` on the
   leader's unix socket, ack = when the RPC returns; wait until all N workers have the file; per-worker
   latency = arrival - ack (negative = the file was in place before the ack came back: clamped to 0 and
   counted); then ``--secret-rm`` it, wait until every worker removed the file and every task reported the
   new spec version (so the next round starts on a quiet cluster), ``secret rm``.

Printed: one row per N (rounds, p50/p99/max over all rounds x workers, negatives, leader RSS and CPU idle),
a second table of context (join/connect times, CPU of followers and of the simulated agents, redirects,
reconnects, ...), and the targets (not tests): p99 < 250 ms at N = 100; leader RSS < 300 MB at N = 1,000.

Honest limits (also printed): this is a 2-core box; the simulated agents, the coordinator and the three
managers share it, so the figures include CPU contention that separate machines would not have. The
simulated agents do what the real agent does on the wire but do not mount a tmpfs per task, chown files or
run commands. All traffic stays on 127.0.0.1 and unix sockets; every wait is bounded; the script removes
every process, temp dir and /dev/shm dir it made, also on Ctrl-C, SIGTERM and errors (not on SIGKILL: the
managers run in their own sessions; the simulated agents exit by themselves once the coordinator is gone).

Exit status: 0 when every N ran (a MISS is not a failure), 1 when some round or wait timed out or a worker
process died, 2 when a cluster could not be formed or the run was interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import multiprocessing as mp
import os
import pickle
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

try:
    import psutil
except ImportError:  # the dev extras have it; without it the RSS/CPU columns are empty
    psutil = None  # type: ignore[assignment]

from swarmsecrets import __version__, ids, wire
from swarmsecrets.api.v1 import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    objects_pb2,
)
from swarmsecrets.ca import certs, tokens
from swarmsecrets.client import LocalClient, LocalError, Status
from scripts.bench import profile as profiling
from scripts.bench.common import fmt_num, json_clean, percentile, summarize, table
from tests.framework import FAST_TIMINGS, Cluster

SERVICE = "bench"
TARGET = "t"
RPC_TIMEOUT = 30.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 8.0
REPORT_INTERVAL = 0.1  # as the real agent's reporter
HEARTBEAT_TIMEOUT = 5.0  # as the real agent's: a heartbeat not answered this long after it was due is missed
# Goals (not tests): the idle leader with 1,000 sessions; delivery at 500 and 1,000 workers.
GOAL_IDLE_N, GOAL_IDLE_CPU_PCT, GOAL_MISSED = 1000, 5.0, 0
GOAL_P99_MS = {500: 250.0, 1000: 500.0}
LAG_TICK = 0.05  # how often each worker process looks at its own event loop's lateness


class MeasurementError(RuntimeError):
    """A figure the benchmark promises cannot be measured: the run stops and says why."""


@dataclass(frozen=True)
class Beat:
    """One heartbeat from an agent's side, in seconds: how late the agent sent it after it was due;
    agent send -> leader handler start ("up"), the leader's handler, leader reply -> agent receive
    ("down") and the round trip; for a call that failed (nan legs: no reply), ``lag`` is the worst
    lateness of the agent's own event loop while it was out and ``error`` the status code."""
    late: float
    up: float
    handle: float
    down: float
    rtt: float
    lag: float = 0.0
    error: str = ""


class LoopLag:
    """The lateness of this process's event loop, sampled every LAG_TICK (the simulated agents share
    one loop per process: when it is starved, so is every agent on it)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=int(60 / LAG_TICK))

    async def run(self) -> None:
        while True:
            due = time.time() + LAG_TICK
            await asyncio.sleep(LAG_TICK)
            now = time.time()
            self.samples.append((now, max(0.0, now - due)))

    def worst_since(self, t: float) -> float:
        return max((lag for when, lag in self.samples if when >= t), default=0.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# statistics and formatting




# --------------------------------------------------------------------------------------------
# simulated workers (run in child processes)


@dataclass(frozen=True)
class WorkerSpec:
    idx: int
    name: str
    node_id: str
    key_pem: bytes
    cert_pem: bytes


class Resubscribe(Exception):
    """applies_to did not match the previous results_in."""


def _client_options() -> list[tuple[str, Any]]:
    # The real agent's channel options, and one connection per simulated node, as N machines would have.
    return [*wire.TLS_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


class SimWorker:
    """One simulated agent: the wire protocol of swarmsecrets/worker/agent.py, files instead of tasks."""

    def __init__(self, spec: WorkerSpec, ca_pem: bytes, managers: list[str], benchdir: str,
                 emit: Callable[[tuple[Any, ...]], None], counters: Counter[str], lag: LoopLag, beats: list[Beat],
                 report_status: bool = True, beats_on_stream: bool = True) -> None:
        self.spec = spec
        self.lag = lag
        self.beats = beats
        self.report_status = report_status
        self.beats_on_stream = beats_on_stream
        self.period = 5.0  # the heartbeat period the leader said last
        self.unanswered: tuple[float, int] | None = None  # (how late, wall ns when sent) of the beat on the stream
        self.creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=spec.key_pem,
                                                  certificate_chain=spec.cert_pem)
        self.managers = list(managers)
        self.turn = spec.idx
        self.leader_hint = ""
        self.dir = os.path.join(benchdir, spec.name)
        os.makedirs(self.dir, exist_ok=True)
        self.emit = emit
        self.c = counters
        self.tasks: dict[str, dispatcher_pb2.AssignedTask] = {}
        self.secrets: dict[str, tuple[str, bytes]] = {}  # id -> (name, data)
        self.files: dict[str, str] = {}  # target -> secret id it holds now
        self.arrived: set[str] = set()  # secret names already reported
        self.reported: dict[str, int] = {}  # task id -> spec version reported
        self.pending: dict[str, dispatcher_pb2.TaskStatusUpdate] = {}
        self.has_reports = asyncio.Event()
        self.had_task = False
        self.connected_once = False

    async def run(self, stop: asyncio.Event, ramp: asyncio.Semaphore) -> None:
        backoff = BACKOFF_FIRST
        while not stop.is_set():
            target = self.leader_hint or self.managers[self.turn % len(self.managers)]
            self.leader_hint = ""
            try:
                await self._session(target, ramp)
                backoff = BACKOFF_FIRST
            except Resubscribe:
                self.c["resubscribes"] += 1
                continue
            except grpc.aio.AioRpcError as e:
                hint = dict(e.trailing_metadata() or ()).get(wire.LEADER_METADATA, "")
                if hint:
                    self.leader_hint = str(hint)
                    self.c["redirects"] += 1
                    backoff = BACKOFF_FIRST
                else:
                    self.turn += 1
                    self.c[f"session_error:{e.code().name}"] += 1
                    if self.c["session_error_samples"] < 5:
                        self.c["session_error_samples"] += 1
                        self.emit(("error", self.spec.idx, f"{target}: {e.code().name} {e.details()}"))
            except (OSError, ValueError) as e:
                self.turn += 1
                self.c["session_error:os"] += 1
                if self.c["session_error_samples"] < 5:
                    self.c["session_error_samples"] += 1
                    self.emit(("error", self.spec.idx, f"{target}: {e}"))
            if stop.is_set():
                return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, target: str, ramp: asyncio.Semaphore) -> None:
        host, _, port = target.rpartition(":")
        grpc_target = f"[{host}]:{port}" if ":" in host else target
        async with grpc.aio.secure_channel(grpc_target, self.creds, options=_client_options()) as ch:
            stub = dispatcher_pb2_grpc.DispatcherStub(ch)
            first_time = not self.connected_once
            if first_time:
                await ramp.acquire()
            try:
                opening = dispatcher_pb2.SessionRequest(hostname=self.spec.name, engine_version=__version__)
                if self.beats_on_stream:
                    session = stub.Connect()
                    await session.write(dispatcher_pb2.AgentMessage(open=opening))
                else:
                    session = stub.Session(opening)
                first = await session.read()
            finally:
                if first_time:
                    ramp.release()
            if first is grpc.aio.EOF:
                raise OSError("the session closed before it started")
            if list(first.managers):
                self.managers = list(first.managers)
            self.connected_once = True
            self.c["heartbeat_period_ms"] = max(self.c["heartbeat_period_ms"], first.heartbeat_period_ms)
            self.c["sessions"] += 1
            self.c["streams_open"] += 1
            self.emit(("up", self.spec.idx, time.monotonic()))
            self.period = first.heartbeat_period_ms / 1000 if first.heartbeat_period_ms else 5.0
            self.unanswered = None
            beats = self._beats_on_stream(session) if self.beats_on_stream else self._heartbeats(stub, first.session_id)
            helpers = [asyncio.create_task(beats),
                       asyncio.create_task(self._reporter(stub, first.session_id)),
                       asyncio.create_task(self._watch_session(session))]
            try:
                await self._assignments(stub, first.session_id)
            finally:
                self.c["streams_open"] -= 1
                for h in helpers:
                    h.cancel()
                session.cancel()

    async def _watch_session(self, session: Any) -> None:
        """Read the rest of the session stream as agent.py does (a promotion would arrive here, and
        the answers to the heartbeats sent on it)."""
        while True:
            msg = await session.read()
            if msg is grpc.aio.EOF:
                return
            if msg.HasField("heartbeat"):
                got = time.time_ns()
                if self.unanswered is not None:
                    late, sent = self.unanswered
                    self.unanswered = None
                    self._answered(msg.heartbeat, late, sent, got)
                continue
            self.c["session_messages"] += 1

    def _answered(self, resp: dispatcher_pb2.HeartbeatResponse, late: float, sent: int, got: int) -> None:
        self.c["heartbeats"] += 1
        if not resp.received_ns:
            self.emit(("fatal", self.spec.idx, "the leader's heartbeat reply carries no timestamps (an older "
                                               "manager?): the heartbeat legs cannot be measured"))
            return
        self.beats.append(Beat(late, (resp.received_ns - sent) / 1e9, (resp.replied_ns - resp.received_ns) / 1e9,
                               (got - resp.replied_ns) / 1e9, (got - sent) / 1e9))
        self.period = resp.period_ms / 1000 if resp.period_ms else self.period

    async def _beats_on_stream(self, session: Any) -> None:
        # As agent.py's: beat on the session stream every period after the last beat; the answer comes
        # in _watch_session. A beat still unanswered when the next is due (a period later, at least
        # HEARTBEAT_TIMEOUT) counts as timed out, as a call would have.
        due = time.monotonic() + self.period
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.unanswered is not None:
                late, sent = self.unanswered
                if time.time_ns() - sent >= HEARTBEAT_TIMEOUT * 1e9:
                    self.unanswered = None
                    self.c["heartbeat_error:DEADLINE_EXCEEDED"] += 1
                    self.beats.append(Beat(late, math.nan, math.nan, math.nan, (time.time_ns() - sent) / 1e9,
                                           self.lag.worst_since(sent / 1e9), "DEADLINE_EXCEEDED"))
            late = max(0.0, time.monotonic() - due)
            self.unanswered = (late, time.time_ns())
            await session.write(dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.HeartbeatRequest()))
            due = time.monotonic() + self.period

    async def _heartbeats(self, stub: Any, session_id: str) -> None:
        # Unlike agent.py (whose heartbeat task dies on the first failed call), retry at the next period
        # and count the failures: the benchmark should measure the managers, not that agent quirk.
        # Each heartbeat is split into its legs on the one wall clock this box shares: how late this
        # agent sent it, agent send -> leader handler, leader handler, leader reply -> agent receive.
        due = time.monotonic() + self.period
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            late = max(0.0, time.monotonic() - due)
            sent = time.time_ns()
            try:
                resp = await stub.Heartbeat(dispatcher_pb2.HeartbeatRequest(session_id=session_id),
                                            timeout=HEARTBEAT_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                self.c[f"heartbeat_error:{e.code().name}"] += 1
                lag = self.lag.worst_since(sent / 1e9)
                self.beats.append(Beat(late, math.nan, math.nan, math.nan, (time.time_ns() - sent) / 1e9, lag,
                                       e.code().name))
                due = time.monotonic() + self.period
                continue
            self._answered(resp, late, sent, time.time_ns())
            due = time.monotonic() + self.period

    async def _reporter(self, stub: Any, session_id: str) -> None:
        # As agent.py's: woken by a report to send, it sends what REPORT_INTERVAL gathered in one call.
        while True:
            await self.has_reports.wait()
            await asyncio.sleep(REPORT_INTERVAL)
            self.has_reports.clear()
            if self.pending:
                updates, self.pending = list(self.pending.values()), {}
                try:
                    await stub.UpdateTaskStatus(
                        dispatcher_pb2.UpdateTaskStatusRequest(session_id=session_id, updates=updates), timeout=10)
                    self.c["status_reports"] += 1
                    # Committed by raft when the call returns: the coordinator waits for these between rounds.
                    self.emit(("st", self.spec.idx, max(u.spec_version for u in updates)))
                except grpc.aio.AioRpcError as e:
                    self.c[f"status_error:{e.code().name}"] += 1
                    self._requeue(updates)
                except asyncio.CancelledError:  # the session ended during the call: the next one sends them
                    self._requeue(updates)
                    raise

    def _requeue(self, updates: list[dispatcher_pb2.TaskStatusUpdate]) -> None:
        for u in updates:
            self.pending.setdefault(u.task_id, u)
        self.has_reports.set()

    async def _assignments(self, stub: Any, session_id: str) -> None:
        stream = stub.Assignments(dispatcher_pb2.AssignmentsRequest(session_id=session_id))
        last: str | None = None
        async for msg in stream:
            self.c["messages"] += 1
            if msg.type == dispatcher_pb2.AssignmentsMessage.COMPLETE:
                self.c["complete_messages"] += 1
                self.tasks.clear()
                self.secrets.clear()
            elif msg.applies_to != last:
                self.c["sequence_gaps"] += 1
                raise Resubscribe()
            last = msg.results_in
            removed_secrets: list[str] = []
            for change in msg.changes:
                remove = change.action == dispatcher_pb2.AssignmentChange.REMOVE
                if change.HasField("task"):
                    if remove:
                        self.tasks.pop(change.task.id, None)
                    else:
                        self.tasks[change.task.id] = change.task
                elif change.HasField("secret"):
                    if remove:
                        old = self.secrets.pop(change.secret.id, None)
                        if old is not None:
                            removed_secrets.append(old[0])
                    else:
                        self.secrets[change.secret.id] = (change.secret.name, change.secret.data)
            self._converge()
            now = time.monotonic()
            for name in removed_secrets:
                self.emit(("rm", name, self.spec.idx, now))
        raise OSError("the assignments stream ended")

    def _converge(self) -> None:
        """Make the worker's directory hold exactly the files its running tasks reference."""
        want: dict[str, str] = {}
        for task in self.tasks.values():
            if task.desired_state != "running":
                continue
            for f in task.secrets:
                if f.secret_id in self.secrets:
                    want[f.target] = f.secret_id
        for target in [t for t in self.files if t not in want]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, target))
            del self.files[target]
        for target, sid in want.items():
            if self.files.get(target) == sid:
                continue
            name, data = self.secrets[sid]
            path = os.path.join(self.dir, target)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            t = time.monotonic()  # the file is on tmpfs
            self.files[target] = sid
            self.c["files_written"] += 1
            if name not in self.arrived:
                self.arrived.add(name)
                self.emit(("arr", name, self.spec.idx, t))
        if not self.report_status:
            self.tasks_seen_first_time()
            return
        for tid, task in self.tasks.items():
            if self.reported.get(tid) != task.spec_version:
                msg = "secrets materialized" if tid not in self.reported else "secrets updated"
                self.reported[tid] = task.spec_version
                self.pending[tid] = dispatcher_pb2.TaskStatusUpdate(
                    task_id=tid, spec_version=task.spec_version,
                    status=objects_pb2.TaskStatus(state="running", message=msg))
                self.has_reports.set()
        for tid in [t for t in self.reported if t not in self.tasks]:
            del self.reported[tid]
        self.tasks_seen_first_time()

    def tasks_seen_first_time(self) -> None:
        if self.tasks and not self.had_task:
            self.had_task = True
            self.emit(("task", self.spec.idx, time.monotonic()))


def _worker_process(pidx: int, specs_path: str, ca_pem: bytes, managers: list[str], benchdir: str,
                    q: Any, stop_ev: Any, hard_deadline: float, parent_pid: int, ramp: int,
                    report_status: bool, beats_on_stream: bool) -> None:
    """Child process entry: one asyncio loop for its share of the simulated workers.

    The identities come in a file (0600, in the run's temp dir), not as spawn arguments: hundreds of keys and
    certificates exceed a pipe buffer, and a child that died before reading them would block the parent.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops us
    try:
        with open(specs_path, "rb") as f:
            specs = [WorkerSpec(**d) for d in pickle.load(f)]
        os.unlink(specs_path)
        asyncio.run(_worker_main(pidx, specs, ca_pem, managers, benchdir, q, stop_ev, hard_deadline,
                                 parent_pid, ramp, report_status, beats_on_stream))
    except BaseException as e:  # noqa: BLE001 - report anything to the coordinator
        with contextlib.suppress(Exception):
            q.put(("fatal", pidx, repr(e)))


async def _worker_main(pidx: int, specs: list[WorkerSpec], ca_pem: bytes, managers: list[str], benchdir: str,
                       q: Any, stop_ev: Any, hard_deadline: float, parent_pid: int, ramp: int,
                       report_status: bool, beats_on_stream: bool) -> None:
    counters: Counter[str] = Counter()
    emit = q.put_nowait
    stop = asyncio.Event()
    sem = asyncio.Semaphore(ramp)
    lag = LoopLag()
    beats: list[Beat] = []
    workers = [SimWorker(s, ca_pem, managers, benchdir, emit, counters, lag, beats, report_status, beats_on_stream)
               for s in specs]
    tasks = [asyncio.create_task(w.run(stop, sem)) for w in workers]
    lag_task = asyncio.create_task(lag.run())
    last_stats = 0.0
    while True:
        await asyncio.sleep(0.2)
        if stop_ev.is_set() or os.getppid() != parent_pid or time.time() > hard_deadline:
            break
        if time.monotonic() - last_stats > 2.0:
            last_stats = time.monotonic()
            emit(("stats", pidx, dict(counters)))
        dead = [t for t in tasks if t.done()]
        if dead:  # a worker coroutine crashed: say why (once) instead of silently losing a node
            for t in dead:
                if not t.cancelled() and t.exception() is not None:
                    emit(("fatal", pidx, f"worker crashed: {t.exception()!r}"))
            tasks = [t for t in tasks if not t.done()]
    stop.set()
    lag_task.cancel()
    for t in tasks:
        t.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    emit(("stats", pidx, dict(counters)))
    emit(("beats", pidx, [tuple(vars(b).values()) for b in beats]))
    emit(("exit", pidx, 0))


# --------------------------------------------------------------------------------------------
# coordinator side


class Collector:
    """Drains the workers' event queue on a thread; waiters use the condition."""

    def __init__(self, q: Any) -> None:
        self.q = q
        self.cond = threading.Condition()
        self.up_first: dict[int, float] = {}
        self.up_count: Counter[int] = Counter()
        self.with_task: dict[int, float] = {}
        self.status_version: dict[int, int] = {}
        self.arrivals: dict[str, dict[int, float]] = defaultdict(dict)
        self.removals: dict[str, dict[int, float]] = defaultdict(dict)
        self.proc_stats: dict[int, dict[str, int]] = {}
        self.beats: list[Beat] = []
        self.fatal: list[str] = []
        self.errors: list[str] = []
        self.exited: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            with self.cond:
                kind = ev[0]
                if kind == "arr":
                    self.arrivals[ev[1]].setdefault(ev[2], ev[3])
                elif kind == "rm":
                    self.removals[ev[1]].setdefault(ev[2], ev[3])
                elif kind == "up":
                    self.up_first.setdefault(ev[1], ev[2])
                    self.up_count[ev[1]] += 1
                elif kind == "st":
                    self.status_version[ev[1]] = max(self.status_version.get(ev[1], 0), ev[2])
                elif kind == "task":
                    self.with_task.setdefault(ev[1], ev[2])
                elif kind == "stats":
                    self.proc_stats[ev[1]] = ev[2]
                elif kind == "beats":
                    self.beats += [Beat(*b) for b in ev[2]]
                elif kind == "error":
                    if len(self.errors) < 20:
                        self.errors.append(f"worker {ev[1]}: {ev[2]}")
                elif kind == "fatal":
                    self.fatal.append(f"process {ev[1]}: {ev[2]}")
                elif kind == "exit":
                    self.exited.add(ev[1])
                self.cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def have(self, events: dict[str, dict[int, float]], name: str, count: int) -> bool:
        """(Under the condition.) `count` workers sent this event for this secret, or a process failed."""
        return len(events[name]) >= count or bool(self.fatal)

    def reported(self, version: int, count: int) -> bool:
        """(Under the condition.) `count` workers had a status report at `version` committed."""
        return sum(1 for x in self.status_version.values() if x >= version) >= count or bool(self.fatal)

    def totals(self) -> Counter[str]:
        with self.cond:
            total: Counter[str] = Counter()
            for st in self.proc_stats.values():
                for k, v in st.items():
                    if k in ("heartbeat_max_rtt_ms", "heartbeat_period_ms"):
                        total[k] = max(total[k], v)
                    else:
                        total[k] += v
            return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class Control:
    """Control API on a manager's unix socket (what the CLI uses), with bounded retries of UNAVAILABLE."""

    def __init__(self, sock: Path) -> None:
        self.client = LocalClient(sock)

    def call(self, method: str, request: Any, timeout: float = RPC_TIMEOUT, retries: int = 5) -> Any:
        fn = getattr(self.client.control, method)
        for attempt in range(retries + 1):
            try:
                return fn(request, timeout=timeout)
            except LocalError as e:
                if e.code is not Status.UNAVAILABLE or attempt == retries:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


async def issue_certificates(addr: str, token: tokens.JoinToken, ca_pem: bytes, names: list[str],
                             concurrency: int) -> list[tuple[str, str, bytes, bytes]]:
    """(name, node id, key PEM, cert PEM) per name, through NodeCA.IssueNodeCertificate as `swarm join` does."""
    boot_key, boot_cert = certs.bootstrap_client_cert(token.ca_digest)
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=boot_key, certificate_chain=boot_cert)
    channels = [grpc.aio.secure_channel(addr, creds, options=_client_options()) for _ in range(min(8, concurrency))]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, name: str) -> tuple[str, str, bytes, bytes]:
        key_pem, csr = certs.generate_key_and_csr()
        rid = ids.new_request_id()  # the same id on a retry: issued at most once
        stub = ca_pb2_grpc.NodeCAStub(channels[i % len(channels)])
        async with sem:
            for attempt in range(6):
                try:
                    resp = await stub.IssueNodeCertificate(ca_pb2.IssueNodeCertificateRequest(
                        csr=csr, token=str(token), hostname=name, request_id=rid), timeout=RPC_TIMEOUT)
                    break
                except grpc.aio.AioRpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or attempt == 5:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
        if resp.role != "worker":
            raise RuntimeError(f"expected a worker certificate, got role {resp.role!r}")
        return name, resp.node_id, key_pem, resp.certificate

    try:
        return list(await asyncio.gather(*(one(i, n) for i, n in enumerate(names))))
    finally:
        for ch in channels:
            await ch.close()


@dataclass
class ProcStats:
    rss_mb_mean: float = math.nan
    rss_mb_max: float = math.nan
    cpu_pct: float = math.nan


def measure(pids: dict[str, list[int]], seconds: float) -> dict[str, ProcStats]:
    """CPU % (of one core) and RSS of groups of processes over `seconds` of wall time."""
    out = {k: ProcStats() for k in pids}
    if psutil is None:
        time.sleep(seconds)
        return out
    procs = {k: [psutil.Process(p) for p in v] for k, v in pids.items()}

    def cpu(ps: list[Any]) -> float:
        total = 0.0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(ps: list[Any]) -> float:
        total = 0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    c0 = {k: cpu(v) for k, v in procs.items()}
    b0 = _busy_seconds()
    t0 = time.monotonic()
    samples: dict[str, list[float]] = {k: [rss(v)] for k, v in procs.items()}
    while time.monotonic() - t0 < seconds:
        time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - t0))))
        for k, v in procs.items():
            samples[k].append(rss(v))
    wall = time.monotonic() - t0
    for k, v in procs.items():
        out[k] = ProcStats(rss_mb_mean=sum(samples[k]) / len(samples[k]), rss_mb_max=max(samples[k]),
                           cpu_pct=(cpu(v) - c0[k]) / wall * 100)
    busy = (_busy_seconds() - b0) / wall * 100
    out["others"] = ProcStats(cpu_pct=max(0.0, busy - sum(x.cpu_pct for x in out.values())))
    return out


def _busy_seconds() -> float:
    """CPU seconds the whole box has spent busy (all cores), for the share of processes not ours."""
    if psutil is None:
        return 0.0
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def heartbeat_figures(beats: list[Beat]) -> dict[str, Any]:
    """Per side: the heartbeats it made miss their deadline (not answered HEARTBEAT_TIMEOUT after
    they were due) and its share of each heartbeat's time. The agent's share: how late it sent
    plus reply -> receive (its loop was busy); the leader's: send -> its handler plus the handler.
    A missed heartbeat counts on the side with the larger share; one that timed out counts on the
    agent's side if the agent's loop was stalled for half the timeout meanwhile, else the leader's.
    A call cut short by its session's end (CANCELLED, UNAVAILABLE) is counted as failed only."""
    answered = [b for b in beats if not math.isnan(b.up)]
    missed = Counter[str]()
    for b in beats:
        if b.error and b.error != "DEADLINE_EXCEEDED":
            continue
        if b.error:
            agent = max(b.lag, b.late) >= HEARTBEAT_TIMEOUT / 2
        elif b.late + b.rtt > HEARTBEAT_TIMEOUT:
            agent = b.late + b.down >= b.up + b.handle
        else:
            continue
        missed["agent" if agent else "leader"] += 1
    return {
        "heartbeats": len(beats), "failed": len(beats) - len(answered),
        "missed_agent": missed["agent"], "missed_leader": missed["leader"],
        "agent_ms": summarize([b.late + b.down for b in answered]),
        "agent_late_ms": summarize([b.late for b in answered]),
        "leader_ms": summarize([b.up + b.handle for b in answered]),
        "leader_handler_ms": summarize([b.handle for b in answered]),
        "rtt_ms": summarize([b.rtt for b in answered]),
    }


def leader_expiries(log_path: Path) -> int:
    """Sessions the leader ended for missed heartbeats (its node_down events)."""
    text = log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "node_down" in line and "heartbeat failure" in line)


@dataclass
class Result:
    n: int
    mode: str  # "delivery" | "idle"
    rounds_requested: int = 0
    rounds_done: int = 0
    latency: dict[str, float] = field(default_factory=dict)
    from_send: dict[str, float] = field(default_factory=dict)
    ack_ms: dict[str, float] = field(default_factory=dict)
    negatives: int = 0
    samples: int = 0
    per_round: list[dict[str, Any]] = field(default_factory=list)
    idle: dict[str, Any] = field(default_factory=dict)
    after_rounds: dict[str, Any] = field(default_factory=dict)
    join_s: float = math.nan
    connect_s: float = math.nan
    placed_s: float = math.nan
    procs: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    leader_changed: bool = False
    nodes_not_ready: int = 0
    problems: list[str] = field(default_factory=list)
    leader_log_growth_kb_s: float = math.nan
    wall_s: float = math.nan
    manager_flags: list[str] = field(default_factory=list)
    latency_by_proc: dict[int, dict[str, float]] = field(default_factory=dict)
    heartbeat_period_ms: int = 0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    leader_expired_sessions: int = 0


class Bench:
    """One N: a fresh cluster, N simulated workers, idle measurement, delivery rounds; always cleaned up."""

    def __init__(self, args: argparse.Namespace, n: int, rounds: int, idle_only: bool) -> None:
        self.args = args
        self.n = n
        self.rounds = rounds
        self.idle_only = idle_only
        mode = "idle" if idle_only else "delivery"
        if args.no_status_reports:
            mode += "/no-status"
        if args.heartbeats == "calls":
            mode += "/hb-calls"
        self.result = Result(n=n, mode=mode, rounds_requested=rounds)
        self.root: Path | None = None
        self.benchdir: Path | None = None
        self.cluster: Any = None
        self.control: Control | None = None
        self.procs: list[Any] = []
        self.collector: Collector | None = None
        self.stop_ev: Any = None
        self.q: Any = None

    # --- setup ------------------------------------------------------------------------------

    def run(self) -> Result:
        timings = FAST_TIMINGS
        if self.args.dispatcher_heartbeat > 0:
            timings = replace(timings, dispatcher_heartbeat=self.args.dispatcher_heartbeat)
        self.result.manager_flags = timings.flags()
        t_start = time.monotonic()
        r = self.result
        self.root = Path(tempfile.mkdtemp(prefix="swarmsecrets-bench-delivery-"))
        self.benchdir = Path(tempfile.mkdtemp(prefix="swarmsecrets-bench-delivery-", dir="/dev/shm"))
        log(f"N={self.n}: starting 3 managers under {self.root} (files under {self.benchdir})")
        self.cluster = Cluster(self.root, 3, timings=timings, log_level="debug")
        self.cluster.start()
        leader = self.cluster.leader()
        managers = [n.addr for n in self.cluster.managers]
        log(f"N={self.n}: cluster formed; leader {leader.name} {leader.addr} pid {leader.pid}")
        self.control = Control(leader.sock)

        token = tokens.parse_token(leader.ok("swarm", "join-token", "-q", "worker").strip())
        host, port = leader.addr.rsplit(":", 1)
        ca_pem = certs.fetch_unverified_root(host, int(port), token.ca_digest)
        if certs.ca_digest(ca_pem) != token.ca_digest:
            raise RuntimeError("the manager's root CA does not match the join token's digest")

        t0 = time.monotonic()
        names = [f"bench-w{i:04d}" for i in range(self.n)]
        issued = asyncio.run(issue_certificates(leader.addr, token, ca_pem, names, self.args.join_concurrency))
        r.join_s = time.monotonic() - t0
        specs = [WorkerSpec(i, name, node_id, key, cert) for i, (name, node_id, key, cert) in enumerate(issued)]
        node_ids = {s.node_id for s in specs}
        log(f"N={self.n}: {self.n} worker certificates issued in {r.join_s:.1f} s")

        self.control.call("CreateService", control_pb2.CreateServiceRequest(
            spec=objects_pb2.ServiceSpec(name=SERVICE, mode="global"), request_id=ids.new_request_id()))

        nprocs = self.args.procs or (1 if self.n < 100 else 2)
        nprocs = max(1, min(nprocs, self.n))
        r.procs = nprocs
        ctx = mp.get_context("spawn")
        self.q = ctx.Queue()
        self.stop_ev = ctx.Event()
        self.collector = Collector(self.q)
        hard_deadline = time.time() + self.args.max_seconds + 120
        t0 = time.monotonic()
        for p in range(nprocs):
            specs_path = self.root / f"workers-{p}.pickle"
            fd = os.open(specs_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                pickle.dump([vars(s) for s in specs[p::nprocs]], f)
            proc = ctx.Process(target=_worker_process, name=f"bench-workers-{p}", daemon=True,
                               args=(p, str(specs_path), ca_pem, managers, str(self.benchdir), self.q, self.stop_ev,
                                     hard_deadline, os.getpid(), self.args.ramp, not self.args.no_status_reports,
                                     self.args.heartbeats == "stream"))
            proc.start()
            self.procs.append(proc)
        col = self.collector
        budget = 60 + 0.2 * self.n
        if not col.wait(lambda: len(col.up_first) >= self.n or bool(col.fatal)
                        or any(not p.is_alive() for p in self.procs), budget):
            raise RuntimeError(f"only {len(col.up_first)}/{self.n} sessions opened in {budget:.0f} s; "
                               f"errors: {col.errors[:3]}")
        self._check_fatal()
        r.connect_s = time.monotonic() - t0
        log(f"N={self.n}: {self.n} sessions open in {r.connect_s:.1f} s ({nprocs} worker process(es))")
        if self.args.no_status_reports:  # tasks stay "assigned": wait until every agent has its task
            if not col.wait(lambda: len(col.with_task) >= self.n or bool(col.fatal), budget):
                raise TimeoutError(f"only {len(col.with_task)}/{self.n} workers got their task in {budget:.0f} s")
            self._check_fatal()
        else:
            self._wait_converged(node_ids, budget, what="global service placed and running")
        r.placed_s = time.monotonic() - t0
        log(f"N={self.n}: one running task per worker {r.placed_s:.1f} s after the first connect")

        # --- idle ---------------------------------------------------------------------------
        time.sleep(self.args.settle)
        # The leader may have changed while N sessions opened (a loaded box): measure the one that leads now.
        now_leading = self.cluster.leader()
        if now_leading is not leader:
            r.problems.append(f"the leader changed while the sessions opened ({leader.name} -> "
                              f"{now_leading.name}); measured: {now_leading.name}")
            leader = now_leading
            self.control.close()
            self.control = Control(leader.sock)
            log(f"N={self.n}: the leader is now {leader.name} pid {leader.pid}")
        pids = self._pids(leader)
        log_size0 = leader.log_path.stat().st_size
        log(f"N={self.n}: measuring {self.args.idle_seconds:.0f} s idle with {self.n} streams")
        idle = measure(pids, self.args.idle_seconds)
        r.leader_log_growth_kb_s = (leader.log_path.stat().st_size - log_size0) / 1024 / self.args.idle_seconds
        r.idle = {k: vars(v) for k, v in idle.items()}
        r.idle["streams_open"] = self.collector.totals()["streams_open"]
        r.idle["seconds"] = self.args.idle_seconds
        log(f"N={self.n}: idle leader RSS {idle['leader'].rss_mb_max:.1f} MB, CPU {idle['leader'].cpu_pct:.1f} %")
        if self.args.profile_idle:
            self._profile_idle(leader)

        # --- rounds -------------------------------------------------------------------------
        if not self.idle_only:
            sampled = (profiling.sampling(self.args.py_spy, leader.pid, Path(self.args.profile), log,
                                          f"leader-rounds-n{self.n}", lambda: self.result.samples)
                       if self.args.profile else contextlib.nullcontext())
            with sampled:
                self._rounds(node_ids, pids)

        # --- wrap up ------------------------------------------------------------------------
        now_leader = leader.cli("node", "inspect", "self", "--format", "{{.ManagerStatus.Leader}}")
        r.leader_changed = now_leader.returncode != 0 or now_leader.stdout.strip() != "true"
        if r.leader_changed:
            r.problems.append("the leader changed during the run (figures of the old leader's process)")
        nodes = self.control.call("ListNodes", control_pb2.ListNodesRequest()).nodes
        r.nodes_not_ready = len([nd for nd in nodes if nd.id in node_ids and nd.status.state != "ready"])
        if r.nodes_not_ready:
            r.problems.append(f"{r.nodes_not_ready} worker node(s) not ready at the end")
        self._stop_workers()  # their final counters
        r.counters = dict(self.collector.totals())
        r.heartbeat = heartbeat_figures(self.collector.beats)
        if not self.collector.beats:
            raise MeasurementError("no heartbeat was recorded: the run was too short for one heartbeat period")
        r.leader_expired_sessions = leader_expiries(leader.log_path)
        r.reconnects = sum(self.collector.up_count.values()) - len(self.collector.up_count)
        gaps = r.counters.get("sequence_gaps", 0)
        if gaps:
            r.problems.append(f"{gaps} assignments sequence gap(s) (applies_to != previous results_in)")
        for k, v in sorted(r.counters.items()):
            if k.startswith(("heartbeat_error", "status_error")):
                r.problems.append(f"{v} x {k}")
        r.problems += self.collector.fatal
        r.wall_s = time.monotonic() - t_start
        return r

    def _profile_idle(self, leader: Any) -> None:
        """py-spy on the idle leader, after the measured window (the sampler costs CPU of its own):
        collapsed stacks (one line per stack and its sample count) for a flame graph or a share table."""
        spy = shutil.which("py-spy") or next((p for p in ("/tmp/spyenv/bin/py-spy",) if os.path.exists(p)), None)
        if spy is None:
            raise MeasurementError("--profile-idle needs py-spy on PATH (pip install py-spy)")
        dest = Path(self.args.profile_idle) / f"leader-idle-n{self.n}.txt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        log(f"N={self.n}: py-spy on the idle leader for {self.args.idle_seconds:.0f} s -> {dest}")
        done = subprocess.run([spy, "record", "--pid", str(leader.pid), "--duration", str(int(self.args.idle_seconds)),
                               "--rate", "100", "--format", "raw", "--output", str(dest), "--nonblocking"],
                              capture_output=True, text=True, timeout=self.args.idle_seconds + 60)
        if done.returncode != 0:
            raise MeasurementError(f"py-spy failed: {done.stderr.strip().splitlines()[-1:]}")

    def _pids(self, leader: Any) -> dict[str, list[int]]:
        return {
            "leader": [leader.proc.pid],
            "followers": [n.proc.pid for n in self.cluster.managers if n is not leader and n.proc],
            "workers": [p.pid for p in self.procs if p.pid],
            "coordinator": [os.getpid()],
        }

    def _check_fatal(self) -> None:
        assert self.collector is not None
        if self.collector.fatal:
            raise RuntimeError(f"simulated worker process failed: {self.collector.fatal[0]}")
        dead = [p for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"simulated worker process {dead[0].name} exited with {dead[0].exitcode}")

    def _wait_converged(self, node_ids: set[str], timeout: float, what: str) -> float | None:
        """Until every worker has one task of the service, running at the service's current spec version."""
        assert self.control is not None
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        last = ""
        while time.monotonic() < deadline:
            svc = self.control.call("GetService", control_pb2.GetServiceRequest(service_id=SERVICE)).service
            tasks = self.control.call("ListTasks", control_pb2.ListTasksRequest(service_id=SERVICE)).tasks
            good = {t.node_id for t in tasks if t.desired_state == "running" and t.status.state == "running"
                    and t.spec_version == svc.spec_version and t.node_id in node_ids}
            if len(good) == len(node_ids):
                return time.monotonic() - t0
            last = f"{len(good)}/{len(node_ids)} at spec version {svc.spec_version}"
            self._check_fatal()
            time.sleep(0.1)
        raise TimeoutError(f"{what}: only {last} after {timeout:.0f} s")

    # --- delivery rounds ----------------------------------------------------------------------

    def _rounds(self, node_ids: set[str], pids: dict[str, list[int]]) -> None:
        assert self.control is not None and self.collector is not None and self.benchdir is not None
        r, col, ctl = self.result, self.collector, self.control
        lat_all: list[float] = []
        by_proc: dict[int, list[float]] = defaultdict(list)  # worker i runs in process i % procs
        send_all: list[float] = []
        acks: list[float] = []
        budget = self.args.round_timeout or (30 + 0.1 * self.n)
        cpu_pids = {k: pids[k] for k in ("leader", "followers", "workers", "coordinator")}
        cpu0 = _cpu_snapshot(cpu_pids)
        busy0 = _busy_seconds()
        t_rounds = time.monotonic()
        try:
            for i in range(self.rounds):
                if time.monotonic() - _RUN_START > self.args.max_seconds:
                    r.problems.append(f"--max-seconds reached after {i} round(s) at N={self.n}")
                    break
                name = f"b{i:03d}"
                payload = os.urandom(16).hex().encode()
                ctl.call("CreateSecret", control_pb2.CreateSecretRequest(
                    spec=objects_pb2.SecretSpec(name=name, data=payload), request_id=ids.new_request_id()))
                ref = objects_pb2.SecretReference(secret_name=name, file=objects_pb2.FileTarget(
                    name=TARGET, uid="0", gid="0", mode=0o444))
                t_send = time.monotonic()
                ctl.call("UpdateService", control_pb2.UpdateServiceRequest(
                    service_id=SERVICE, secret_add=[ref], request_id=ids.new_request_id()), retries=0)
                t_ack = time.monotonic()
                ok = col.wait(functools.partial(col.have, col.arrivals, name, self.n), budget)
                with col.cond:
                    got = dict(col.arrivals[name])
                raw = [t - t_ack for t in got.values()]
                neg = sum(1 for x in raw if x < 0)
                lat = [max(0.0, x) for x in raw]
                for idx, t in got.items():
                    by_proc[idx % r.procs].append(max(0.0, t - t_ack))
                lat_all += lat
                send_all += [t - t_send for t in got.values()]
                acks.append(t_ack - t_send)
                r.negatives += neg
                rs: dict[str, Any] = dict(summarize(lat))
                rs.update(round=i, secret=name, arrived=len(got), negatives=neg, ack_ms=(t_ack - t_send) * 1e3,
                          all_in_ms=(max(got.values()) - t_ack) * 1e3 if got else math.nan,
                          # per worker (index order), unclamped: for a closer look in the JSON
                          latencies_ms=[round((got[k] - t_ack) * 1e3, 2) for k in sorted(got)])
                if not ok:
                    r.problems.append(f"round {i}: only {len(got)}/{self.n} workers got {name} in {budget:.0f} s")
                    rs["timed_out"] = True
                bad = self._verify_files(got, payload)
                if bad:
                    r.problems.append(f"round {i}: {bad} file(s) with the wrong content")
                # Remove it, wait for every worker to drop the file and report the new spec version.
                t_rm = time.monotonic()
                svc = ctl.call("UpdateService", control_pb2.UpdateServiceRequest(
                    service_id=SERVICE, secret_rm=[name], request_id=ids.new_request_id())).service
                want = len(got)
                if not col.wait(functools.partial(col.have, col.removals, name, want), budget):
                    r.problems.append(f"round {i}: only {len(col.removals[name])}/{len(got)} workers removed {name}")
                rs["rm_all_ms"] = (time.monotonic() - t_rm) * 1e3
                if not self.args.no_status_reports:
                    # Every worker's status report at the new spec version is committed: a quiet cluster again.
                    # (From the agents' side, so the coordinator does not poll ListTasks on the leader meanwhile.)
                    v = svc.spec_version
                    if col.wait(functools.partial(col.reported, v, self.n), budget):
                        rs["settle_ms"] = (time.monotonic() - t_rm) * 1e3
                    else:
                        r.problems.append(f"round {i}: status reports at spec version {v} not all committed "
                                          f"in {budget:.0f} s")
                ctl.call("RemoveSecret", control_pb2.RemoveSecretRequest(secret_id=name,
                                                                         request_id=ids.new_request_id()))
                r.per_round.append(rs)
                r.rounds_done += 1
                log(f"N={self.n} round {i + 1}/{self.rounds}: {len(got)}/{self.n} in {rs['all_in_ms']:.0f} ms "
                    f"after the ack (p50 {rs['p50_ms']:.1f} p99 {rs['p99_ms']:.1f} ms, ack {rs['ack_ms']:.1f} ms, "
                    f"neg {neg}); removed+settled in {rs.get('settle_ms', math.nan):.0f} ms")
                if not ok:
                    break
                time.sleep(self.args.pause)
        finally:  # also after Ctrl-C: the rounds done so far
            wall = time.monotonic() - t_rounds
            cpu1 = _cpu_snapshot(cpu_pids)
            r.samples = len(lat_all)
            r.latency = summarize(lat_all)
            r.latency_by_proc = {p: summarize(v) for p, v in sorted(by_proc.items())}
            r.from_send = summarize(send_all)
            r.ack_ms = summarize(acks)
            r.after_rounds = {k: {"cpu_pct": (cpu1[k] - cpu0[k]) / wall * 100 if wall > 0 else math.nan}
                              for k in cpu_pids}
            r.after_rounds["wall_s"] = wall
            if wall > 0:
                ours = sum(v["cpu_pct"] for v in r.after_rounds.values() if isinstance(v, dict))
                r.after_rounds["others"] = {"cpu_pct": max(0.0, (_busy_seconds() - busy0) / wall * 100 - ours)}
            if psutil is not None:
                with contextlib.suppress(psutil.Error):
                    r.after_rounds["leader_rss_mb"] = psutil.Process(pids["leader"][0]).memory_info().rss / 2**20

    def _verify_files(self, got: dict[int, float], payload: bytes) -> int:
        assert self.benchdir is not None
        bad = 0
        for idx in got:
            path = self.benchdir / f"bench-w{idx:04d}" / TARGET
            try:
                if path.read_bytes() != payload:
                    bad += 1
            except FileNotFoundError:
                bad += 1
        return bad

    # --- teardown -----------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        """Ask the worker processes to stop and wait (bounded) for their final counters."""
        if self.stop_ev is None or self.collector is None:
            return
        self.stop_ev.set()
        col, expect = self.collector, {i for i, p in enumerate(self.procs)}
        col.wait(lambda: expect <= col.exited or bool(col.fatal), 15)

    def close(self) -> None:
        """Stop everything this N started; never raises."""
        if self.stop_ev is not None:
            with contextlib.suppress(Exception):
                self.stop_ev.set()
        deadline = time.monotonic() + 10
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.join(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            with contextlib.suppress(Exception):
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=3)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=3)
        if self.collector is not None:
            with contextlib.suppress(Exception):
                self.collector.stop()
        if self.q is not None:
            with contextlib.suppress(Exception):
                self.q.close()
                self.q.join_thread()
        if self.control is not None:
            with contextlib.suppress(Exception):
                self.control.close()
        if self.cluster is not None:
            if self.args.keep_logs:
                with contextlib.suppress(Exception):
                    dest = Path(self.args.keep_logs) / f"n{self.n}"
                    dest.mkdir(parents=True, exist_ok=True)
                    for node in self.cluster.managers:
                        if node.log_path.exists():
                            shutil.copy(node.log_path, dest / node.log_path.name)
            with contextlib.suppress(Exception):
                self.cluster.stop()
        for d in (self.benchdir, self.root):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def _cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in pids.items():
        total = 0.0
        if psutil is not None:
            for pid in v:
                with contextlib.suppress(psutil.Error):
                    t = psutil.Process(pid).cpu_times()
                    total += t.user + t.system
        out[k] = total
    return out


# --------------------------------------------------------------------------------------------
# report


def render(results: list[Result], args: argparse.Namespace) -> str:
    out: list[str] = []
    out.append(f"swarmsecrets delivery benchmark — {platform.node()}, {os.cpu_count()} CPU(s), "
               f"Python {platform.python_version()}, grpcio {grpc.__version__}")
    periods = sorted({r.counters.get("heartbeat_period_ms", 0) for r in results} - {0})
    out.append("worker heartbeat period (from the session): "
               + (", ".join(f"{p / 1000:g} s" for p in periods) if periods else "-")
               + f"; idle window {args.idle_seconds:g} s")
    out.append("latency = file on tmpfs (after rename) on a worker - UpdateService(--secret-add) ack; "
               "p50/p99/max over rounds x workers")
    out.append("")
    headers = ["N", "mode", "rounds", "p50 ms", "p99 ms", "max ms", "neg", "leader RSS MB", "leader CPU % idle"]
    rows = []
    for r in results:
        idle = r.idle.get("leader", {})
        delivery = r.mode.startswith("delivery")
        rows.append([str(r.n), r.mode, f"{r.rounds_done}/{r.rounds_requested}" if delivery else "-",
                     fmt_num(r.latency.get("p50_ms"), 1), fmt_num(r.latency.get("p99_ms"), 1),
                     fmt_num(r.latency.get("max_ms"), 1),
                     f"{r.negatives}/{r.samples}" if delivery else "-",
                     fmt_num(idle.get("rss_mb_max"), 1), fmt_num(idle.get("cpu_pct"), 1)])
    out.append(table(headers, rows))
    out.append("")
    out.append("context: CPU % of one core; 'idle' = the idle window with N open streams, 'rounds' = the whole")
    out.append("round loop; 'others' = processes on this box that are not this benchmark's (e.g. other test runs)")
    headers = ["N", "procs", "join s", "connect s", "placed s", "p99 ms by proc", "ack p50 ms", "from-send p99 ms",
               "settle p50 ms", "followers CPU % idle", "agents CPU % idle", "others CPU % idle",
               "leader CPU % rounds", "agents CPU % rounds", "others CPU % rounds", "leader RSS MB after"]
    rows = []
    for r in results:
        settles = sorted(x["settle_ms"] for x in r.per_round if "settle_ms" in x)
        by_proc = "/".join(fmt_num(v.get("p99_ms"), 0) for v in r.latency_by_proc.values()) or "-"
        rows.append([str(r.n), str(r.procs), fmt_num(r.join_s, 1), fmt_num(r.connect_s, 1),
                     fmt_num(r.placed_s, 1), by_proc,
                     fmt_num(r.ack_ms.get("p50_ms"), 1), fmt_num(r.from_send.get("p99_ms"), 1),
                     fmt_num(percentile(settles, 50), 1),
                     fmt_num(r.idle.get("followers", {}).get("cpu_pct"), 1),
                     fmt_num(r.idle.get("workers", {}).get("cpu_pct"), 1),
                     fmt_num(r.idle.get("others", {}).get("cpu_pct"), 1),
                     fmt_num(r.after_rounds.get("leader", {}).get("cpu_pct"), 1),
                     fmt_num(r.after_rounds.get("workers", {}).get("cpu_pct"), 1),
                     fmt_num(r.after_rounds.get("others", {}).get("cpu_pct"), 1),
                     fmt_num(r.after_rounds.get("leader_rss_mb"), 1)])
    out.append(table(headers, rows))
    out.append("")
    headers = ["N", "sessions", "reconnects", "redirects", "heartbeats", "messages",
               "status reports", "seq gaps", "wall s"]
    rows = []
    for r in results:
        c = r.counters
        rows.append([str(r.n), str(c.get("sessions", 0)), str(r.reconnects), str(c.get("redirects", 0)),
                     str(c.get("heartbeats", 0)), str(c.get("messages", 0)),
                     str(c.get("status_reports", 0)), str(c.get("sequence_gaps", 0)), fmt_num(r.wall_s, 1)])
    out.append(table(headers, rows))
    out.append("")
    out.append("heartbeats over the whole run, split by side on this box's shared clock (ms): the agent's share"
               " = sent late + leader reply -> agent receive; the leader's = agent send -> leader handler + handler;"
               f" missed = not answered {HEARTBEAT_TIMEOUT:g} s after due, counted on the side with the larger share")
    headers = ["N", "heartbeats", "failed", "missed agent", "missed leader", "leader expired", "agent p50/p99/max",
               "leader p50/p99/max", "leader handler p99", "rtt p50/p99/max"]
    rows = []
    for r in results:
        h = r.heartbeat
        if not h:
            continue

        def three(d: dict[str, float]) -> str:
            return "/".join(fmt_num(d.get(k), 1) for k in ("p50_ms", "p99_ms", "max_ms"))

        rows.append([str(r.n), str(h["heartbeats"]), str(h["failed"]), str(h["missed_agent"]),
                     str(h["missed_leader"]), str(r.leader_expired_sessions), three(h["agent_ms"]),
                     three(h["leader_ms"]), fmt_num(h["leader_handler_ms"].get("p99_ms"), 2), three(h["rtt_ms"])])
    out.append(table(headers, rows))
    out.append("")
    out.append("goals (not tests):")
    for r in results:
        idle = r.idle.get("leader", {})
        h = r.heartbeat
        if r.n == GOAL_IDLE_N and idle:
            cpu = idle["cpu_pct"]
            verdict = "PASS" if cpu < GOAL_IDLE_CPU_PCT else "MISS"
            out.append(f"  N={r.n:,} idle leader CPU < {GOAL_IDLE_CPU_PCT:g} % of a core: {verdict} "
                       f"({cpu:.1f} %, RSS {idle['rss_mb_max']:.0f} MB)")
        if h:
            missed = h["missed_agent"] + h["missed_leader"] + r.leader_expired_sessions
            out.append(f"  N={r.n:,} missed heartbeats = {GOAL_MISSED}: {'PASS' if missed <= GOAL_MISSED else 'MISS'} "
                       f"(agent {h['missed_agent']}, leader {h['missed_leader']}, sessions the leader expired "
                       f"{r.leader_expired_sessions}, reconnects {r.reconnects})")
        goal = GOAL_P99_MS.get(r.n)
        if goal is not None and r.mode == "delivery" and r.samples:
            p99 = r.latency["p99_ms"]
            ok = p99 < goal and r.rounds_done == r.rounds_requested
            out.append(f"  N={r.n:,} delivery p99 < {goal:g} ms: {'PASS' if ok else 'MISS'} "
                       f"(p99 {p99:.1f} ms, p50 {r.latency['p50_ms']:.1f} ms over {r.rounds_done} rounds)")
    out.append("")
    problems = [(r.n, p) for r in results for p in r.problems]
    if problems:
        out.append("")
        out.append("problems seen:")
        out += [f"  N={n}: {p}" for n, p in problems]
    out.append("")
    out.append("limits: a 2-core box runs the 3 managers, the simulated agents and this coordinator together, so")
    out.append("  the figures include CPU contention (see the CPU columns); the agents speak the real protocol over")
    out.append("  real mTLS connections but write plain files (no per-task tmpfs mount, chown or process); the")
    out.append("  managers log at debug level (as tests/framework runs them); a fresh cluster per N.")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# main

_RUN_START = time.monotonic()


def _parse_ns(text: str) -> list[int]:
    try:
        ns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not ns or any(n < 1 or n > 5000 for n in ns):
        raise argparse.ArgumentTypeError("each N must be between 1 and 5000")
    return ns


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=_parse_ns, default=[10, 100, 500], help="N values (default 10,100,500)")
    p.add_argument("--rounds", type=int, default=20, help="delivery rounds per N (default 20)")
    p.add_argument("--idle-only", type=_parse_ns, metavar="N[,N]",
                   help="only connect N sessions and measure the leader's RSS/CPU idle (no rounds)")
    p.add_argument("--quick", action="store_true", help="N=10, 3 rounds, 5 s idle: < 60 s")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle measurement window (default 10)")
    p.add_argument("--settle", type=float, default=2.0, help="pause before the idle window (default 2 s)")
    p.add_argument("--pause", type=float, default=0.2, help="pause between rounds (default 0.2 s)")
    p.add_argument("--dispatcher-heartbeat", type=float, default=5.0, metavar="SECONDS",
                   help="the managers' --dispatcher-heartbeat (default 5 = the daemon's default; "
                        "0 keeps the framework's fast timings, which use 1 s)")
    p.add_argument("--heartbeats", choices=("stream", "calls"), default="stream",
                   help="how the simulated agents beat: on their session stream (Connect, as this release's agent; "
                        "the default) or as Heartbeat calls (Session + Heartbeat, as agents of the previous release)")
    p.add_argument("--no-status-reports", action="store_true",
                   help="what-if: the simulated agents never call UpdateTaskStatus (the real agent does)")
    p.add_argument("--procs", type=int, default=0, help="worker processes (default: 1 for N < 100, else 2)")
    p.add_argument("--ramp", type=int, default=64, help="sessions being opened at once per process (default 64)")
    p.add_argument("--join-concurrency", type=int, default=32, help="IssueNodeCertificate calls in flight")
    p.add_argument("--round-timeout", type=float, default=0.0, help="per wait in a round (default 30 s + 0.1 s x N)")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop starting new rounds after this")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the managers' logs here before cleaning up")
    p.add_argument("--profile-idle", metavar="DIR",
                   help="after the idle window, py-spy the idle leader as long again: collapsed stacks in DIR")
    p.add_argument("--profile", metavar="DIR",
                   help="py-spy the leader during the delivery rounds: flame graph, folded stacks and the CPU per "
                        "layer in DIR (see scripts/bench/profile.py; 'ops' there = files delivered)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write every figure as JSON to FILE; without FILE: JSON on stdout, the table on stderr")
    a = p.parse_args(argv)
    if a.quick:
        a.workers, a.rounds, a.idle_seconds, a.settle = [10], 3, 5.0, 1.0
        a.idle_only = None
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    a.py_spy = None
    if a.profile:
        try:
            a.py_spy = profiling.find_py_spy()
        except ValueError as e:
            p.error(str(e))
    return a


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    global _RUN_START
    args = parse_args(argv)
    if psutil is None:
        print("delivery benchmark: the leader's RSS and CPU cannot be measured without psutil "
              "(pip install psutil, or the project's dev extras)", file=sys.stderr)
        return 2
    _RUN_START = time.monotonic()
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    results: list[Result] = []
    status = 0
    plan = [(n, True) for n in args.idle_only] if args.idle_only else [(n, False) for n in args.workers]
    try:
        for n, idle_only in plan:
            bench = Bench(args, n, 0 if idle_only else args.rounds, idle_only)
            try:
                results.append(bench.run())
                if bench.result.problems:
                    status = max(status, 1)
            except MeasurementError as e:
                log(f"N={n}: stopped: {e}")
                bench.result.problems.append(f"stopped: {e}")
                results.append(bench.result)
                status = 2
                break
            except (RuntimeError, TimeoutError, AssertionError, grpc.RpcError, LocalError, OSError) as e:
                log(f"N={n}: failed: {e}")
                bench.result.problems.append(f"failed: {str(e).splitlines()[0] if str(e) else repr(e)}")
                if bench.cluster is not None:
                    with contextlib.suppress(Exception):
                        print(bench.cluster.logs()[-3000:], file=sys.stderr)
                results.append(bench.result)
                formed = not math.isnan(bench.result.join_s)  # certificates issued: the cluster was up
                status = max(status, 1 if formed else 2)
            except KeyboardInterrupt:
                bench.result.problems.append("interrupted (partial figures)")
                results.append(bench.result)
                raise
            finally:
                bench.close()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        status = 2
    finally:
        if in_main and old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if not results:
        return status
    text = render(results, args)
    doc = json_clean({"host": platform.node(), "cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items()},
                        "results": [vars(r) for r in results]})
    if args.json == "-":
        print(text, file=sys.stderr)
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
