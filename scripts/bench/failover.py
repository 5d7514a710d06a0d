#!/usr/bin/env python3
"""Failover benchmark: kill -9 (or pause) the leader of 3 managers under a steady write load, N rounds.

Per round it measures, from the kill:

* **write unavailability**: until the first acknowledged write *started after the kill* completes
  (etcd's own failover measurements use the same definition);
* **leader known**: until a survivor reports itself leader.

and, for swarmsecrets, **where the time went**: from the survivors' logs, when the first of them
noticed the loss (its connection to the leader closed), asked for pre-votes, won them, was elected,
and committed its first entry (the new leader's no-op); the client's first acknowledgement ends it.

Then the killed member is restarted and the cluster is allowed to become healthy again (every
member answers, a write through the restarted member succeeds) before the next round; for
swarmsecrets the time from the restart to that is reported too (**rejoin**).

``--fault pause`` stops the leader with SIGSTOP instead (a hung or swapped-out process: its
connections stay open, so only the election timers find it) and resumes it (SIGCONT) after the
round, in place of the restart; the figures are the same, from the stop.

swarmsecrets: real ``swarmsecretsd`` daemons started by tests/framework, with the daemon's DEFAULT
raft timings (not the framework's fast test timings; ``--raft-flags`` passes others). Writes are
``CreateSecret`` (unique name, a request_id) over the gRPC Control API on the surviving managers' unix
sockets, from ``--clients`` threads spread over them.

etcd (when ``etcd`` is on PATH): the same rounds against 3 members with default settings
(hb 100 ms / election 1000 ms, fresh data dirs, 127.0.0.1 ports), writes via gRPC ``KV.Put``
encoded by hand (``EtcdCluster`` and ``EtcdGrpcWriter`` of scripts/bench/etcd.py).

Every client request has a ``--rpc-timeout`` deadline (0.25 s by default: finer than any election); a failed
writer pauses 10 ms and retries on the next survivor. Resolution is therefore about the RPC timeout.

``--flood`` adds the same swarmsecrets rounds on a fresh cluster while an unauthenticated attacker at
another source address (127.0.0.9) floods every raft port with idle TCP connections, garbage, stalled
TLS handshakes and handshakes without a certificate (``RaftFlood`` of tests/security/attack.py); its
figures are reported beside the ones without a flood.

Targets (not a test): every round under 1 s, p50 under 0.4 s, below etcd's. A figure that cannot
be measured (no write came back within the round's limit, etcd not installed) stops the benchmark
with the reason and exit status 1; a MISS of a target is not a failure.

    python -m scripts.bench.failover                      # 20 rounds each
    python -m scripts.bench.failover --json out.json      # also every round and its breakdown
    python -m scripts.bench.failover --quick --flood      # 3 rounds each, and under a flood
    python -m scripts.bench.failover --quick --loaded 60  # and elections on a loaded, idle cluster
    python -m scripts.bench.failover --fault pause        # SIGSTOP the leader instead of kill -9
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from scripts.bench.common import json_clean, machine_info, percentile, spawn, table, terminate, terminate_all
from scripts.bench.etcd import EtcdCluster, EtcdGrpcWriter, EtcdMember, etcd_call, etcd_put_request
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalClient, LocalError
from swarmsecrets.raft import RaftTiming
from tests.framework import DEFAULT_TIMINGS, Cluster, Node, wait_until
from tests.security.attack import FLOOD_SOURCE, RaftFlood

TARGET_MAX = 1.0
TARGET_P50 = 0.4
VALUE = os.urandom(200)


class Unmeasurable(Exception):
    """A figure the benchmark cannot measure: it stops with this reason."""


@dataclass
class Round:
    unavailable: float
    leader_known: float
    failed_writes: int
    kill_wall: float  # time.time() of the kill signal, to place the daemons' log lines
    reaped: float  # from the signal until the killed process was reaped (the figures above start there)
    note: str = ""
    rejoin: float | None = None  # from the restart until a write through the restarted member succeeds
    # swarmsecrets: seconds from the kill to each event of BREAKDOWN seen in the survivors' logs
    breakdown: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    system: str
    rounds: list[Round] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the measurement, common to both systems


class Load:
    """Client threads writing in a loop; each write records (start, end, ok)."""

    def __init__(self, writers: list[Callable[[], Callable[[str], None]]], pause: float = 0.01) -> None:
        self.makers = writers
        self.pause = pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: list[tuple[float, float, bool]] = []
        self.threads: list[threading.Thread] = []

    def _run(self, idx: int) -> None:
        puts = [m() for m in self.makers]
        turn = idx % len(puts)
        seq = itertools.count()
        while not self.stop.is_set():
            name = f"fo{uuid.uuid4().hex[:10]}t{idx}n{next(seq)}"
            t0 = time.monotonic()
            try:
                puts[turn](name)
                ok = True
            except Exception:
                ok = False
            t1 = time.monotonic()
            with self.lock:
                self.done.append((t0, t1, ok))
            if not ok:
                turn = (turn + 1) % len(puts)  # what a multi-endpoint client does
                self.stop.wait(self.pause)

    def start(self, clients: int) -> None:
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def first_ok_after(self, t_kill: float) -> float | None:
        with self.lock:
            ends = [t1 for t0, t1, ok in self.done if ok and t0 >= t_kill]
        return min(ends) - t_kill if ends else None

    def failures_after(self, t_kill: float) -> int:
        with self.lock:
            return sum(1 for t0, _, ok in self.done if not ok and t0 >= t_kill - 1.0)


def measure_round(kill: Callable[[], None], writers: list[Callable[[], Callable[[str], None]]],
                  leader_known: Callable[[], bool], clients: int, warm: float, limit: float) -> Round:
    load = Load(writers)
    load.start(clients)
    try:
        time.sleep(warm)
        with load.lock:
            warm_ok = sum(1 for *_, ok in load.done if ok)
        signalled, kill_wall = time.monotonic(), time.time()
        kill()  # returns once the process is reaped: no write started after this reached it
        t_kill = time.monotonic()
        known_at: float | None = None
        deadline = t_kill + limit
        while time.monotonic() < deadline:
            if known_at is None:
                with contextlib.suppress(Exception):
                    if leader_known():
                        known_at = time.monotonic() - t_kill
            if known_at is not None and load.first_ok_after(t_kill) is not None:
                break
            time.sleep(0.005)
        time.sleep(0.3)  # let a few more writes complete (steady state after failover)
    finally:
        load.finish()
    unavailable = load.first_ok_after(t_kill)
    if unavailable is None:
        raise Unmeasurable(f"no write started after the kill was acknowledged within {limit:g} s")
    if known_at is None:
        raise Unmeasurable(f"no survivor reported itself leader within {limit:g} s")
    note = "" if warm_ok else "no write succeeded before the kill"
    return Round(unavailable, known_at, load.failures_after(t_kill), kill_wall, t_kill - signalled, note)


# Events of a swarmsecrets failover, in order, as the survivors log them (the first survivor to
# log each counts). "noticed" is absent when no connection closed (the election timer found it).
BREAKDOWN = {
    "noticed": re.compile(r"connection to the leader \S+ closed"),
    "pre_vote": re.compile(r"raft: pre-vote for term \d+\b(?! won)"),
    "pre_vote_won": re.compile(r"raft: pre-vote for term \d+ won"),
    "elected": re.compile(r"raft: elected leader in term"),
    "first_commit": re.compile(r"raft: leading in term \d+: its first entry is committed"),
}
REQUIRED_EVENTS = ("pre_vote", "pre_vote_won", "elected", "first_commit")
_LOG_TIME = re.compile(r"^time=(\S+Z) ")


def log_events(paths: list[Path], since: float) -> dict[str, float]:
    """Seconds from ``since`` (a time.time()) to the first line of each BREAKDOWN event logged
    at or after it in any of ``paths`` (log timestamps have millisecond resolution)."""
    found: dict[str, float] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            m = _LOG_TIME.match(line)
            if m is None:
                continue
            when = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            if when < since - 0.001:
                continue
            for name, pattern in BREAKDOWN.items():
                if pattern.search(line) and (name not in found or when - since < found[name]):
                    found[name] = max(0.0, when - since)
    missing = [name for name in REQUIRED_EVENTS if name not in found]
    if missing:
        raise Unmeasurable(f"the survivors' logs (level debug) show no {', '.join(missing)} after the kill")
    return found


# --------------------------------------------------------------------------------------------
# swarmsecrets


def swarm_writer(sock: Path, timeout: float) -> Callable[[], Callable[[str], None]]:
    def make() -> Callable[[str], None]:
        stub = LocalClient(sock).control

        def put(name: str) -> None:
            stub.CreateSecret(control_pb2.CreateSecretRequest(
                spec=objects_pb2.SecretSpec(name=name, data=VALUE), request_id=str(uuid.uuid4())),
                timeout=timeout)
        return put
    return make


class SwarmProbe:
    """Cached local API clients for GetNode(self) on each manager."""

    def __init__(self) -> None:
        self.channels: dict[Path, LocalClient] = {}

    def is_leader(self, node: Node, timeout: float = 0.2) -> bool:
        client = self.channels.get(node.sock)
        if client is None:
            client = self.channels[node.sock] = LocalClient(node.sock)
        resp = client.control.GetNode(control_pb2.GetNodeRequest(node_id="self"), timeout=timeout)
        return bool(resp.node.manager_status.leader)

    def drop(self, node: Node) -> None:
        ch = self.channels.pop(node.sock, None)
        if ch is not None:
            ch.close()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()


def swarm_leader(c: Cluster, probe: SwarmProbe, timeout: float = 30.0) -> Node:
    def find() -> Node | None:
        for n in c.running():
            with contextlib.suppress(LocalError):
                if probe.is_leader(n, 1.0):
                    return n
        return None
    return wait_until(find, timeout, 0.05, "a swarmsecrets leader")


def swarm_healthy(c: Cluster, probe: SwarmProbe, rpc_timeout: float, timeout: float = 60.0) -> None:
    swarm_leader(c, probe, timeout)
    for n in c.managers:  # a write through every member (the restarted one included) succeeds
        put = swarm_writer(n.sock, 5.0)()

        def ok(put: Callable[[str], None] = put) -> bool:
            try:
                put(f"fh{uuid.uuid4().hex[:16]}")
                return True
            except LocalError:
                return False
        wait_until(ok, timeout, 0.1, f"a write through {n.name}")


def run_swarm(root: Path, rounds: int, clients: int, rpc_timeout: float, raft_flags: list[str],
              log: Callable[[str], None], flood: bool = False, pause: bool = False) -> Result:
    res = Result("swarmsecrets+flood" if flood else "swarmsecrets")
    c = Cluster(root / res.system, 3, timings=DEFAULT_TIMINGS, log_level="debug", extra_args=tuple(raft_flags))
    probe = SwarmProbe()
    attack: RaftFlood | None = None
    try:
        c.start()
        if flood:
            targets = [(host, int(port)) for host, port in (n.raft_addr.rsplit(":", 1) for n in c.managers)]
            attack = flooding = RaftFlood(targets, FLOOD_SOURCE).start()
            wait_until(lambda: flooding.closed_by_target >= 100, 30, 0.05, "the flood to reach the managers")
        for r in range(rounds):
            swarm_healthy(c, probe, rpc_timeout)
            leader = swarm_leader(c, probe)
            survivors = [n for n in c.managers if n is not leader]
            probe.drop(leader)

            def known(s: list[Node] = survivors) -> bool:
                return any(probe.is_leader(n) for n in s)

            rnd = measure_round(leader.pause if pause else leader.kill,
                                [swarm_writer(n.sock, rpc_timeout) for n in survivors], known,
                                clients, warm=1.0, limit=30.0)
            rnd.breakdown = log_events([n.log_path for n in survivors], rnd.kill_wall)
            res.rounds.append(rnd)
            steps = ", ".join(f"{k} {v:.3f}" for k, v in sorted(rnd.breakdown.items(), key=lambda kv: kv[1]))
            log(f"  {res.system} round {r + 1:2d}/{rounds}: {'paused' if pause else 'killed'} {leader.name}: "
                f"writes back {fmt(rnd.unavailable)} s, leader known {fmt(rnd.leader_known)} s, "
                f"{rnd.failed_writes} failed writes {rnd.note}; from the fault: {steps}")
            if pause:
                leader.resume()
            else:
                leader.start()
            started = time.monotonic()
            swarm_healthy(c, probe, rpc_timeout)
            rnd.rejoin = time.monotonic() - started
            log(f"  {res.system} round {r + 1:2d}/{rounds}: {leader.name} rejoined "
                f"{fmt(rnd.rejoin)} s after its {'resumption' if pause else 'restart'}")
        if attack is not None:
            log(f"  flood from {FLOOD_SOURCE}: {attack.opened} connections opened, "
                f"{attack.closed_by_target} closed by the managers")
    except Exception as e:
        log(f"  {res.system}: stopped\n{c.logs()[-3000:]}")
        raise e if isinstance(e, Unmeasurable) else Unmeasurable(f"{res.system}: {type(e).__name__}: {e}") from e
    finally:
        if attack is not None:
            attack.stop()
        probe.close()
        c.stop()
    return res


def run_loaded_idle(root: Path, seconds: float, burners: int, log: Callable[[str], None]) -> dict[str, Any]:
    """No spurious elections on a loaded box: ``burners`` processes spin on the CPUs while a healthy
    3-manager cluster (daemon default timings) takes a write every 0.1 s for ``seconds``. Counts
    what the managers log meanwhile: elections and won pre-votes (every term change starts with
    one; both must be 0), and, for information, pre-vote rounds (a refused one changes nothing)
    and closed connections to the leader."""
    c = Cluster(root / "loaded", 3, timings=DEFAULT_TIMINGS, log_level="debug")
    probe = SwarmProbe()
    procs = []
    try:
        c.start()
        swarm_healthy(c, probe, 5.0)
        since = time.time()
        procs = [spawn([sys.executable, "-c", "while True: pass"], root / f"burner{i}.log") for i in range(burners)]
        put = swarm_writer(swarm_leader(c, probe).sock, 5.0)()
        writes = failed = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                put(f"ld{uuid.uuid4().hex[:16]}")
                writes += 1
            except grpc.RpcError:
                failed += 1
            time.sleep(0.1)
        counts = {"elections": 0, "pre_votes_won": 0, "pre_vote_rounds": 0, "leader_connections_closed": 0}
        for n in c.managers:
            for line in n.log_path.read_text(errors="replace").splitlines():
                m = _LOG_TIME.match(line)
                if m is None or datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() < since:
                    continue
                counts["elections"] += bool(BREAKDOWN["elected"].search(line))
                counts["pre_vote_rounds"] += bool(BREAKDOWN["pre_vote"].search(line))
                counts["pre_votes_won"] += bool(BREAKDOWN["pre_vote_won"].search(line))
                counts["leader_connections_closed"] += bool(BREAKDOWN["noticed"].search(line))
        result = {"seconds": seconds, "burners": burners, "writes": writes, "failed_writes": failed,
                  "load_avg_1m": os.getloadavg()[0], **counts}
        log(f"  loaded idle: {seconds:g} s with {burners} CPU burners: {writes} writes ({failed} failed), "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
        return result
    except Exception as e:
        log(f"  loaded idle: stopped\n{c.logs()[-3000:]}")
        raise e if isinstance(e, Unmeasurable) else Unmeasurable(f"loaded idle: {type(e).__name__}: {e}") from e
    finally:
        for p in procs:
            terminate(p, signal.SIGKILL)
        probe.close()
        c.stop()


# --------------------------------------------------------------------------------------------
# etcd


def etcd_writer(port: int, timeout: float) -> Callable[[], Callable[[str], None]]:
    def make() -> Callable[[str], None]:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        w = EtcdGrpcWriter(ch)
        call = w.call

        def put(name: str) -> None:
            call(etcd_put_request(b"/failover/" + name.encode(), VALUE), timeout=timeout)
        return put
    return make


def etcd_restart(ec: EtcdCluster, m: EtcdMember) -> None:
    """Start a member again on its existing data dir (the same flags as EtcdCluster.start)."""
    initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in ec.members)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    curl, purl = f"http://127.0.0.1:{m.client_port}", f"http://127.0.0.1:{m.peer_port}"
    m.proc = spawn([ec.binary, "--name", m.name, "--data-dir", str(ec.root / f"{m.name}.etcd"),
                    "--listen-client-urls", curl, "--advertise-client-urls", curl,
                    "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                    "--initial-cluster", initial, "--initial-cluster-state", "existing",
                    "--heartbeat-interval", str(ec.heartbeat_ms), "--election-timeout", str(ec.election_ms),
                    "--logger", "zap", "--log-outputs", "stderr"],
                   ec.root / f"{m.name}.log", env)


def etcd_healthy(ec: EtcdCluster, timeout: float = 60.0) -> None:
    def ok() -> bool:
        with contextlib.suppress(Exception):
            sts = [etcd_call(m.client_port, "/v3/maintenance/status", {}, timeout=1.0) for m in ec.members]
            leaders = {str(s.get("leader")) for s in sts}
            idx = [int(s.get("raftIndex", 0)) for s in sts]
            if len(leaders) == 1 and "0" not in leaders and max(idx) - min(idx) < 50:
                for m in ec.members:
                    etcd_writer(m.client_port, 2.0)()(f"fh{uuid.uuid4().hex[:16]}")
                return True
        return False
    wait_until(ok, timeout, 0.1, "a healthy etcd cluster")


def run_etcd(root: Path, binary: str, rounds: int, clients: int, rpc_timeout: float,
             log: Callable[[str], None], pause: bool = False) -> Result:
    res = Result("etcd")
    (root / "etcd").mkdir()
    ec = EtcdCluster(root / "etcd", binary)
    try:
        ec.start()
        for r in range(rounds):
            etcd_healthy(ec)
            leader = ec.leader()
            survivors = [m for m in ec.members if m is not leader]

            def known(survivors: Sequence[EtcdMember] = survivors, old: str = leader.member_id) -> bool:
                for m in survivors:
                    with contextlib.suppress(Exception):
                        st = etcd_call(m.client_port, "/v3/maintenance/status", {}, timeout=0.2)
                        if str(st.get("leader", "0")) not in ("0", old):
                            return True
                return False

            def kill(m: EtcdMember = leader) -> None:
                assert m.proc is not None
                if pause:
                    m.proc.send_signal(signal.SIGSTOP)
                    return
                m.proc.send_signal(signal.SIGKILL)
                m.proc.wait(timeout=20)

            rnd = measure_round(kill, [etcd_writer(m.client_port, rpc_timeout) for m in survivors],
                                known, clients, warm=1.0, limit=30.0)
            res.rounds.append(rnd)
            log(f"  etcd         round {r + 1:2d}/{rounds}: {'paused' if pause else 'killed'} {leader.name}: "
                f"writes back {fmt(rnd.unavailable)} s, leader known {fmt(rnd.leader_known)} s, "
                f"{rnd.failed_writes} failed writes {rnd.note}")
            if pause:
                assert leader.proc is not None
                leader.proc.send_signal(signal.SIGCONT)
            else:
                etcd_restart(ec, leader)
    except Exception as e:
        log(f"  etcd: stopped\n{ec.logs()[-3000:]}")
        raise e if isinstance(e, Unmeasurable) else Unmeasurable(f"etcd: {type(e).__name__}: {e}") from e
    finally:
        ec.stop()
    return res


# --------------------------------------------------------------------------------------------
# report


def fmt(x: float | None) -> str:
    if x is None:
        raise Unmeasurable("a figure is missing")  # callers format only what was measured
    return f"{x:.3f}"


def stats(values: list[float]) -> tuple[float, float, float]:
    v = sorted(values)
    return percentile(v, 50), percentile(v, 99), v[-1]


# The breakdown's steps: (label, from event, to event), from the kill signal ("kill") to the client's
# first acknowledgement ("ack"). A round without a closed connection counts its wait up to the pre-vote as noticing.
STEPS = [("notice", "kill", "pre_vote"), ("pre-vote", "pre_vote", "pre_vote_won"),
         ("vote", "pre_vote_won", "elected"), ("no-op", "elected", "first_commit"),
         ("to ack", "first_commit", "ack")]


def steps(rnd: Round) -> list[float]:
    at = {"kill": 0.0, "ack": rnd.reaped + rnd.unavailable, **rnd.breakdown}
    return [at[b] - at[a] for _, a, b in STEPS]


def named(figures: tuple[float, float, float]) -> dict[str, float]:
    return {"p50": figures[0], "p99": figures[1], "max": figures[2]}


def report(results: list[Result], timings: str, rounds: int, clients: int,
           rpc_timeout: float, fault: str) -> tuple[str, dict[str, Any]]:
    what = "SIGSTOP" if fault == "pause" else "kill -9"
    out = [f"\nfailover: {what} of the leader, 3 managers, {clients} writer threads on the survivors, "
           f"RPC timeout {rpc_timeout} s, {rounds} rounds",
           f"swarmsecrets raft timings: {timings}",
           "etcd timings: heartbeat 100 ms, election 1000 ms (defaults)"]
    etcd = next(r for r in results if r.system == "etcd")
    swarms = [r for r in results if r.system != "etcd"]
    headers = ["round"]
    for r in swarms:
        headers += [f"{r.system} s", "etcd s", "ratio", "leader s", "closed?"]
    headers += [f"{label} s" for label, _, _ in STEPS]
    rows = []
    for i in range(rounds):
        e = etcd.rounds[i]
        row = [str(i + 1)]
        for r in swarms:
            rd = r.rounds[i]
            row += [fmt(rd.unavailable), fmt(e.unavailable), f"{rd.unavailable / e.unavailable:.2f}",
                    fmt(rd.leader_known), "yes" if "noticed" in rd.breakdown else "no"]
        row += [fmt(x) for x in steps(swarms[0].rounds[i])]
        rows.append(row)
    out += ["", f"per round (steps of {swarms[0].system}: notice = kill to the first pre-vote; "
            f"'closed?' = a survivor saw its connection to the leader close)",
            table(headers, rows, set(range(len(headers))))]
    summary: dict[str, Any] = {}
    srows = []
    ew, el = stats([x.unavailable for x in etcd.rounds]), stats([x.leader_known for x in etcd.rounds])
    for r in swarms:
        w, lk = stats([x.unavailable for x in r.rounds]), stats([x.leader_known for x in r.rounds])
        rj = stats([x.rejoin for x in r.rounds if x.rejoin is not None])
        summary[r.system] = {"writes": named(w),
                             "leader": named(lk),
                             "rejoin": named(rj),
                             "steps_p50": {label: percentile(sorted(steps(x)[k] for x in r.rounds), 50)
                                           for k, (label, _, _) in enumerate(STEPS)},
                             "rounds_over_target": sum(1 for x in r.rounds if x.unavailable >= TARGET_MAX)}
        for what, mine, theirs in (("writes", w, ew), ("leader", lk, el)):
            srows.append([r.system, what, *(f"{a:.3f} / {b:.3f} / {a / b:.2f}x"
                                            for a, b in zip(mine, theirs, strict=True))])
    summary["etcd"] = {"writes": named(ew), "leader": named(el)}
    out += ["", table(["system", "figure", "p50 s (etcd, ratio)", "p99 s (etcd, ratio)", "max s (etcd, ratio)"],
                      srows, {2, 3, 4})]
    for r in swarms:
        rj = summary[r.system]["rejoin"]
        out.append(f"{r.system}: rejoin of the restarted member p50 {rj['p50']:.3f} s, max {rj['max']:.3f} s; "
                   "step p50s: " + ", ".join(f"{k} {v:.3f}" for k, v in summary[r.system]["steps_p50"].items()))
    out.append("")
    for r in swarms:
        w = summary[r.system]["writes"]
        over = summary[r.system]["rounds_over_target"]
        out.append(f"{r.system}: every round < {TARGET_MAX} s: {'PASS' if over == 0 else f'MISS ({over} over)'}; "
                   f"p50 {w['p50']:.3f} s < {TARGET_P50} s: {'PASS' if w['p50'] < TARGET_P50 else 'MISS'}; "
                   f"p99 below etcd's ({ew[1]:.3f} s): {'PASS' if w['p99'] < ew[1] else 'MISS'}")
    record = {"fault": fault, "clients": clients, "rpc_timeout": rpc_timeout, "rounds": rounds,
              "swarm_timings": timings,
              "summary": summary,
              "per_round": {r.system: [{"writes": x.unavailable, "leader": x.leader_known,
                                        "failed_writes": x.failed_writes, "rejoin": x.rejoin,
                                        "reaped": x.reaped,
                                        "events_from_kill": x.breakdown,
                                        "steps": dict(zip([label for label, _, _ in STEPS], steps(x), strict=True))
                                        if r.system != "etcd" else None}
                                       for x in r.rounds] for r in results}}
    return "\n".join(out), record


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--clients", type=int, default=4, help="writer threads (spread over the survivors)")
    ap.add_argument("--rpc-timeout", type=float, default=0.25)
    ap.add_argument("--flood", action="store_true",
                    help="also run the swarmsecrets rounds under a flood of unauthenticated raft connections")
    ap.add_argument("--loaded", type=float, default=0.0, metavar="SECONDS",
                    help="also count elections while a cluster takes writes for SECONDS next to CPU burners")
    ap.add_argument("--burners", type=int, default=2, help="CPU burners for --loaded")
    ap.add_argument("--raft-flags", default="", help="daemon raft flags (default: none, i.e. the defaults)")
    ap.add_argument("--fault", choices=("kill", "pause"), default="kill",
                    help="kill -9 the leader (default), or stop it with SIGSTOP and resume it after the round")
    ap.add_argument("--json", metavar="PATH", help="also write every round, its breakdown and the summary to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    if rounds < 1 or args.clients < 1 or args.rpc_timeout <= 0 or args.loaded < 0 or args.burners < 0:
        print("failover: --rounds and --clients must be at least 1, --rpc-timeout positive, --loaded and "
              "--burners not negative", file=sys.stderr)
        return 2
    binary = shutil.which("etcd")
    if binary is None:
        print("failover: cannot compare: etcd is not on PATH (apt-get install etcd-server)", file=sys.stderr)
        return 1
    flags = args.raft_flags.split()
    d = RaftTiming()
    timings = (f"daemon defaults: heartbeat {d.heartbeat * 1e3:.0f} ms, election {d.election_min * 1e3:.0f}-"
               f"{d.election_max * 1e3:.0f} ms, leader fallback {d.leader_fallback * 1e3:.0f} ms, pre-vote on"
               if not flags else "flags " + " ".join(flags))
    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    results: list[Result] = []
    machine = machine_info(root)

    def log(s: str) -> None:
        print(s, flush=True)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        log(f"swarmsecrets: {rounds} rounds ({timings}); data in {root}")
        pause = args.fault == "pause"
        results.append(run_swarm(root, rounds, args.clients, args.rpc_timeout, flags, log, pause=pause))
        if args.flood:
            log(f"swarmsecrets under a flood from {FLOOD_SOURCE}: {rounds} rounds")
            results.append(run_swarm(root, rounds, args.clients, args.rpc_timeout, flags, log, flood=True,
                                     pause=pause))
        log(f"etcd {EtcdCluster.version(binary)}: {rounds} rounds")
        results.append(run_etcd(root, binary, rounds, args.clients, args.rpc_timeout, log, pause=pause))
        text, record = report(results, timings, rounds, args.clients, args.rpc_timeout, args.fault)
        if args.loaded > 0:
            log(f"loaded idle check: {args.loaded:g} s, {args.burners} CPU burners")
            loaded = run_loaded_idle(root, args.loaded, args.burners, log)
            record["loaded_idle"] = loaded
            text += (f"\nloaded idle ({loaded['seconds']:g} s, {loaded['burners']} CPU burners, load average "
                     f"{loaded['load_avg_1m']:.1f}): {loaded['elections']} elections, {loaded['pre_votes_won']} "
                     f"won pre-votes (no term change: "
                     f"{'PASS' if loaded['elections'] == loaded['pre_votes_won'] == 0 else 'MISS'}); "
                     f"{loaded['pre_vote_rounds']} pre-vote rounds in all, {loaded['leader_connections_closed']} "
                     f"closed connections to the leader, {loaded['writes']} writes ({loaded['failed_writes']} failed)")
        print(text, flush=True)
        if args.json:
            record["machine"] = machine
            with open(args.json, "w") as f:
                json.dump(json_clean(record), f, indent=2)
            log(f"wrote {args.json}")
    except Unmeasurable as e:
        print(f"failover: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            terminate_all()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
