"""Test support for the raft tests: a throwaway PKI, free ports, a dict state machine, and a
RaftNode in its own process driven over a loopback socket (ProcCluster is the parent's side).

Run as ``python -m tests.raft.raft_harness --addr ... --ctl PORT ...``; prints READY once both
the raft node and the control socket are up. Control requests are JSON lines:
``{"op": "put", "k", "v"}``, ``{"op": "dump"}``, ``{"op": "status"}``,
``{"op": "bench", "n", "size"}`` (sequential writes here, latency percentiles) and
``{"op": "bench_tput", "n", "size", "inflight"}`` (pipelined writes, ops/s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import raft_peer_verifier
from swarmsecrets.raft import RaftError, RaftNode, RaftTiming, RaftTLS, RaftTuning
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


class DictMachine:
    """A state machine over a dict: {'op': 'set', 'k', 'v'} -> index; {'op': 'boom'} raises."""

    def __init__(self, snapshot_delay: float = 0.0, restore_delay: float = 0.0) -> None:
        self.data: dict[str, Any] = {}
        self.applied: list[int] = []
        self.snapshot_delay = snapshot_delay
        self.restore_delay = restore_delay
        self.lock = threading.Lock()

    def apply(self, command: dict[str, Any], index: int) -> Any:
        with self.lock:
            self.applied.append(index)
            if command.get("op") == "boom":
                raise RuntimeError("boom")
            if command.get("op") == "set":
                self.data[command["k"]] = command["v"]
            return index

    def snapshot(self) -> Any:
        if self.snapshot_delay:
            time.sleep(self.snapshot_delay)
        return {"data": self.data}

    def restore(self, data: Any) -> None:
        if self.restore_delay:
            time.sleep(self.restore_delay)
        with self.lock:
            self.data = dict(data["data"])

    def copy(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.data)


class Ctl:
    """A JSON-lines connection to a harness process's control port."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rwb")

    def call(self, **req: Any) -> dict[str, Any]:
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise ConnectionError("harness went away")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        self.sock.close()


CLUSTER_ID = "raftcluster0000000000000a"


@dataclass
class Pki:
    root: Path
    ca: certs.RootCA = field(default_factory=certs.create_root_ca)
    cluster_id: str = CLUSTER_ID

    def issue(self, name: str, *, role: str = "manager", raft_addr: str | None = None,
              cluster_id: str | None = None, ca: certs.RootCA | None = None) -> tuple[str, str]:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        key, csr = certs.generate_key_and_csr()
        cert = certs.issue_node_cert(ca or self.ca, csr, node_id=name, role=role,
                                     cluster_id=cluster_id or self.cluster_id, raft_addr=raft_addr)
        (d / "swarm-node.crt").write_bytes(cert)
        (d / "swarm-node.key").write_bytes(key)
        return str(d / "swarm-node.crt"), str(d / "swarm-node.key")

    def tls(self, addr: str) -> RaftTLS:
        cert, key = self.issue(f"m-{addr.replace(':', '_')}", raft_addr=addr)
        return RaftTLS(server_ctx=certs.server_context(cert, key, self.ca.cert_pem),
                       client_ctx=certs.client_context(cert, key, self.ca.cert_pem),
                       verify_peer=raft_peer_verifier(self.cluster_id))


class ProcCluster:
    """Harness processes forming one raft group (the parent's side of this module)."""

    def __init__(self, root: Path, pki: Pki, n: int = 3, snapshot_entries: int = 10_000) -> None:
        self.root = root
        ports = free_ports(2 * n)  # one call: raft and control ports cannot collide
        self.addrs = [f"127.0.0.1:{p}" for p in ports[:n]]
        self.cluster_id = pki.cluster_id
        self.ctl = dict(zip(self.addrs, ports[n:], strict=True))
        self.snapshot_entries = snapshot_entries
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (root / "ca.pem").write_bytes(pki.ca.cert_pem)
        self.certs = {a: pki.issue(f"proc-{a.replace(':', '_')}", raft_addr=a) for a in self.addrs}

    def start(self) -> None:
        for a in self.addrs:
            cert, key = self.certs[a]
            log = open(self.root / f"{a.replace(':', '_')}.log", "ab")  # noqa: SIM115 - owned by the child
            self.procs[a] = subprocess.Popen(
                [sys.executable, "-m", "tests.raft.raft_harness", "--addr", a,
                 "--members", ",".join(self.addrs), "--data", str(self.root / a.replace(":", "_")),
                 "--cert", cert, "--key", key,
                 "--ca", str(self.root / "ca.pem"), "--cluster", self.cluster_id,
                 "--ctl", str(self.ctl[a]), "--snapshot-entries", str(self.snapshot_entries),
                 "--snapshot-interval", "1.0"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
            log.close()
        deadline = time.monotonic() + 20
        for a, p in self.procs.items():
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready and p.stdout.readline().strip() == b"READY", f"{a} did not start: {self.logs()}"

    def leader(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.addrs:
                try:
                    ctl = Ctl(self.ctl[a])
                    st = ctl.call(op="status")["ok"]
                    ctl.close()
                except OSError:
                    continue
                if st["is_leader"]:
                    return a
            time.sleep(0.1)
        raise AssertionError(f"no leader: {self.logs()}")

    def kill_all(self) -> None:
        for p in self.procs.values():
            os.kill(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            p.wait()

    def terminate(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.root.glob("*.log"))


def _percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_ms": s[len(s) // 2] * 1e3, "p99_ms": s[int(len(s) * 0.99)] * 1e3}


def _handle(node: RaftNode, machine: DictMachine, req: dict[str, Any]) -> Any:
    op = req["op"]
    if op == "put":
        return node.propose({"op": "set", "k": req["k"], "v": req["v"]}, req.get("timeout", 5.0))
    if op == "dump":
        node.read_barrier(5.0)
        return machine.copy()
    if op == "status":
        st = node.status()
        return {"leader": st.leader, "is_leader": st.is_leader, "term": st.term,
                "commit_index": st.commit_index, "last_applied": st.last_applied}
    value = os.urandom(req.get("size", 200))
    if op == "bench":
        lat = []
        for i in range(req["n"]):
            t = time.perf_counter()
            node.propose({"op": "set", "k": f"b{i}", "v": value}, 5.0)
            lat.append(time.perf_counter() - t)
        return _percentiles(lat)
    if op == "bench_tput":
        sem = threading.Semaphore(req.get("inflight", 64))
        done = threading.Event()
        left = [req["n"]]
        lock = threading.Lock()

        def finished(_: Any) -> None:
            sem.release()
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        t = time.perf_counter()
        for i in range(req["n"]):
            sem.acquire()
            node.propose_async({"op": "set", "k": f"t{i}", "v": value}, 10.0).add_done_callback(finished)
        done.wait(120)
        return {"ops_per_s": req["n"] / (time.perf_counter() - t)}
    raise ValueError(f"unknown op {op}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--members", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--ctl", type=int, required=True)
    ap.add_argument("--snapshot-entries", type=int, default=10_000)
    ap.add_argument("--snapshot-interval", type=float, default=600.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s {args.addr} %(name)s %(levelname)s %(message)s")
    ca_pem = open(args.ca, "rb").read()
    tls = RaftTLS(server_ctx=certs.server_context(args.cert, args.key, ca_pem),
                  client_ctx=certs.client_context(args.cert, args.key, ca_pem),
                  verify_peer=raft_peer_verifier(args.cluster))
    machine = DictMachine()
    node = RaftNode(self_addr=args.addr, members=args.members.split(","), data_dir=args.data, tls=tls,
                    state_machine=machine, timing=RaftTiming(),
                    tuning=RaftTuning(args.snapshot_entries, args.snapshot_interval))
    node.start()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    reply = {"ok": _handle(node, machine, json.loads(line))}
                except RaftError as e:
                    reply = {"err": type(e).__name__, "msg": str(e)}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", args.ctl), Handler) as server:
        print("READY", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
