"""A RaftNode with a dict state machine in its own process, driven over a loopback socket.

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
import socketserver
import sys
import threading
import time
from typing import Any

from swarmsecrets import errors
from swarmsecrets.ca import certs
from swarmsecrets.manager.raft import RaftNode, RaftTiming, RaftTLS, RaftTuning


class DictMachine:
    """A state machine over a dict: {'op': 'set', 'k', 'v'} -> index; {'op': 'boom'} raises."""

    def __init__(self, snapshot_delay: float = 0.0) -> None:
        self.data: dict[str, Any] = {}
        self.applied: list[int] = []
        self.snapshot_delay = snapshot_delay
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
        with self.lock:
            self.data = dict(data["data"])

    def copy(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.data)


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
                  client_ctx=certs.client_context(args.cert, args.key, ca_pem), cluster_id=args.cluster)
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
                except errors.SwarmError as e:
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
