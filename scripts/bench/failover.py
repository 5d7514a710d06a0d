#!/usr/bin/env python3
"""Failover benchmark: kill -9 the leader of 3 managers under a steady write load, N rounds.

Per round it measures, from the kill:

* **write unavailability**: until the first acknowledged write *started after the kill* completes
  (etcd's own failover measurements use the same definition);
* **leader known**: until a survivor reports itself leader.

Then the killed member is restarted and the cluster is allowed to become healthy again (every
member answers, a write through the restarted member succeeds) before the next round; for
swarmsecrets the time from the restart to that is reported too (**rejoin**).

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

Target (not a test): write-unavailability p99 under 1 s and below etcd's. Exit status 0 unless the
benchmark itself failed (a MISS is not a failure).

    python -m scripts.bench.failover            # 20 rounds each
    python -m scripts.bench.failover --quick    # 3 rounds each
    python -m scripts.bench.failover --quick --flood
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
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

from scripts.bench.common import percentile, spawn, table, terminate_all
from scripts.bench.etcd import EtcdCluster, EtcdGrpcWriter, EtcdMember, etcd_call, etcd_put_request
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalClient, LocalError
from swarmsecrets.raft import RaftTiming
from tests.framework import DEFAULT_TIMINGS, Cluster, Node, wait_until
from tests.security.attack import FLOOD_SOURCE, RaftFlood

TARGET_P99 = 1.0
VALUE = os.urandom(200)


@dataclass
class Round:
    unavailable: float | None
    leader_known: float | None
    failed_writes: int
    note: str = ""
    rejoin: float | None = None  # from the restart until a write through the restarted member succeeds


@dataclass
class Result:
    system: str
    rounds: list[Round] = field(default_factory=list)
    error: str = ""


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
    note = "" if warm_ok else "no write succeeded before the kill"
    return Round(unavailable, known_at, load.failures_after(t_kill), note)


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
              log: Callable[[str], None], flood: bool = False) -> Result:
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

            rnd = measure_round(leader.kill, [swarm_writer(n.sock, rpc_timeout) for n in survivors], known,
                                clients, warm=1.0, limit=30.0)
            res.rounds.append(rnd)
            log(f"  {res.system} round {r + 1:2d}/{rounds}: killed {leader.name}: "
                f"writes back {fmt(rnd.unavailable)} s, leader known {fmt(rnd.leader_known)} s, "
                f"{rnd.failed_writes} failed writes {rnd.note}")
            leader.start()
            started = time.monotonic()
            swarm_healthy(c, probe, rpc_timeout)
            rnd.rejoin = time.monotonic() - started
            log(f"  {res.system} round {r + 1:2d}/{rounds}: {leader.name} rejoined "
                f"{fmt(rnd.rejoin)} s after its restart")
        if attack is not None:
            log(f"  flood from {FLOOD_SOURCE}: {attack.opened} connections opened, "
                f"{attack.closed_by_target} closed by the managers")
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
        log(f"  {res.system}: ERROR {res.error}\n{c.logs()[-3000:]}")
    finally:
        if attack is not None:
            attack.stop()
        probe.close()
        c.stop()
    return res


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
             log: Callable[[str], None]) -> Result:
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
                m.proc.send_signal(signal.SIGKILL)
                m.proc.wait(timeout=20)

            rnd = measure_round(kill, [etcd_writer(m.client_port, rpc_timeout) for m in survivors],
                                known, clients, warm=1.0, limit=30.0)
            res.rounds.append(rnd)
            log(f"  etcd         round {r + 1:2d}/{rounds}: killed {leader.name}: "
                f"writes back {fmt(rnd.unavailable)} s, leader known {fmt(rnd.leader_known)} s, "
                f"{rnd.failed_writes} failed writes {rnd.note}")
            etcd_restart(ec, leader)
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
        log(f"  etcd: ERROR {res.error}\n{ec.logs()[-3000:]}")
    finally:
        ec.stop()
    return res


# --------------------------------------------------------------------------------------------
# report


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def stats(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    v = sorted(x for x in values if x is not None)
    if not v:
        return None, None, None
    return percentile(v, 50), percentile(v, 99), v[-1]


def report(results: list[Result], timings: str, rounds: int, clients: int, rpc_timeout: float) -> str:
    out = [f"\nfailover: kill -9 of the leader, 3 managers, {clients} writer threads on the survivors, "
           f"RPC timeout {rpc_timeout} s, {rounds} rounds",
           f"swarmsecrets raft timings: {timings}"]
    etcd = next((r for r in results if r.system == "etcd"), None)
    if etcd is not None:
        out.append("etcd timings: heartbeat 100 ms, election 1000 ms (defaults)")
    # per round
    headers = ["round"]
    for r in results:
        headers += [f"{r.system} writes s", f"{r.system} leader s"]
    rows = []
    for i in range(max(len(r.rounds) for r in results) if results else 0):
        row = [str(i + 1)]
        for r in results:
            rd = r.rounds[i] if i < len(r.rounds) else None
            row += [fmt(rd.unavailable if rd else None), fmt(rd.leader_known if rd else None)]
        rows.append(row)
    out.append("")
    out.append(table(headers, rows, set(range(len(headers)))))
    # summary
    srows = []
    summary: dict[str, tuple[float | None, ...]] = {}
    for r in results:
        w = stats([x.unavailable for x in r.rounds])
        lk = stats([x.leader_known for x in r.rounds])
        missing = sum(1 for x in r.rounds if x.unavailable is None)
        rj = stats([x.rejoin for x in r.rounds])
        summary[r.system] = w
        srows.append([r.system, str(len(r.rounds)), *map(fmt, w), *map(fmt, lk), *map(fmt, rj[:2]), str(missing)])
    out.append("")
    out.append(table(["system", "rounds", "writes p50", "writes p99", "writes max",
                      "leader p50", "leader p99", "leader max", "rejoin p50", "rejoin p99", "no write"],
                     srows, set(range(1, 11))))
    sw = summary.get("swarmsecrets", (None, None, None))
    verdicts = []
    fl = summary.get("swarmsecrets+flood")
    if fl is not None:
        verdicts.append(f"under the flood: write-unavailability p50 {fmt(fl[0])} s, p99 {fmt(fl[1])} s "
                        f"(without: p50 {fmt(sw[0])} s, p99 {fmt(sw[1])} s)")
    if sw[1] is not None:
        verdicts.append(f"swarmsecrets write-unavailability p99 {fmt(sw[1])} s < {TARGET_P99} s: "
                        f"{'PASS' if sw[1] < TARGET_P99 else 'MISS'}")
    else:
        verdicts.append("swarmsecrets: no measurement: MISS")
    if etcd is not None:
        ed = summary.get("etcd", (None, None, None))
        if None not in (ed[0], ed[1], sw[0], sw[1]):
            assert ed[0] is not None and ed[1] is not None and sw[0] is not None and sw[1] is not None
            verdicts.append(f"ratio swarmsecrets/etcd: p50 {sw[0] / ed[0]:.2f}x, p99 {sw[1] / ed[1]:.2f}x; "
                            f"p99 below etcd's ({fmt(ed[1])} s): {'PASS' if sw[1] < ed[1] else 'MISS'}")
    else:
        verdicts.append("etcd not installed: no comparison (apt-get install etcd-server)")
    for r in results:
        if r.error:
            verdicts.append(f"{r.system}: ERROR {r.error}")
    out.append("")
    out += verdicts
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--clients", type=int, default=4, help="writer threads (spread over the survivors)")
    ap.add_argument("--rpc-timeout", type=float, default=0.25)
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--flood", action="store_true",
                    help="also run the swarmsecrets rounds under a flood of unauthenticated raft connections")
    ap.add_argument("--raft-flags", default="", help="daemon raft flags (default: none, i.e. the defaults)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    flags = args.raft_flags.split()
    d = RaftTiming()
    timings = (f"daemon defaults: heartbeat {d.heartbeat * 1e3:.0f} ms, election {d.election_min * 1e3:.0f}-"
               f"{d.election_max * 1e3:.0f} ms, leader fallback {d.leader_fallback * 1e3:.0f} ms, pre-vote on"
               if not flags else "flags " + " ".join(flags))
    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    results: list[Result] = []

    def log(s: str) -> None:
        print(s, flush=True)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        log(f"swarmsecrets: {rounds} rounds ({timings}); data in {root}")
        results.append(run_swarm(root, rounds, args.clients, args.rpc_timeout, flags, log))
        if args.flood:
            log(f"swarmsecrets under a flood from {FLOOD_SOURCE}: {rounds} rounds")
            results.append(run_swarm(root, rounds, args.clients, args.rpc_timeout, flags, log, flood=True))
        binary = shutil.which("etcd")
        if binary and not args.no_etcd:
            log(f"etcd {EtcdCluster.version(binary)}: {rounds} rounds")
            results.append(run_etcd(root, binary, rounds, args.clients, args.rpc_timeout, log))
        print(report(results, timings, rounds, args.clients, args.rpc_timeout), flush=True)
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
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
