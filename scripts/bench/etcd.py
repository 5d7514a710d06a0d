"""A 3-member etcd on 127.0.0.1 and its clients: the yardstick the swarmsecrets figures are compared to.

etcd is never installed by the benchmarks (``apt-get install etcd-server etcd-client``); without it on
PATH the etcd side is skipped with a message. Its clients need no etcd package: the ``etcd3`` package
needs ``protobuf<4`` for its generated stubs, which cannot share a venv with this project's
``protobuf>=6``, so the two-field ``PutRequest`` is encoded by hand (``etcd_put_request``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from scripts.bench.common import free_port, spawn, tail, terminate, wait_for

RPC_TIMEOUT = 15.0  # per request, as the swarmsecrets clients of the write benchmark


ETCD_INSTALL_HINT = "apt-get install etcd-server etcd-client"


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None
    member_id: str = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class EtcdCluster:
    """Three etcd members on 127.0.0.1 with fresh data dirs and default timing (hb 100 / election 1000)."""

    def __init__(self, root: Path, binary: str = "etcd", heartbeat_ms: int = 100, election_ms: int = 1000) -> None:
        self.root = root
        self.binary = binary
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        used: set[int] = set()
        self.members: list[EtcdMember] = []
        for i in range(3):
            c = free_port(used)
            used.add(c)
            p = free_port(used)
            used.add(p)
            self.members.append(EtcdMember(f"e{i + 1}", c, p))

    @staticmethod
    def version(binary: str = "etcd") -> str:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"
        return out.splitlines()[0].split(":", 1)[-1].strip() if out else "?"

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        for m in self.members:
            curl = f"http://127.0.0.1:{m.client_port}"
            purl = f"http://127.0.0.1:{m.peer_port}"
            m.proc = spawn([self.binary, "--name", m.name, "--data-dir", str(self.root / f"{m.name}.etcd"),
                            "--listen-client-urls", curl, "--advertise-client-urls", curl,
                            "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                            "--initial-cluster", initial, "--initial-cluster-state", "new",
                            "--initial-cluster-token", f"bench-{os.getpid()}",
                            "--heartbeat-interval", str(self.heartbeat_ms),
                            "--election-timeout", str(self.election_ms),
                            "--logger", "zap", "--log-outputs", "stderr"],
                           self.root / f"{m.name}.log", env)
        wait_for(self._leader_id, timeout, 0.2, "an etcd leader")
        return self

    def _status(self, m: EtcdMember) -> dict[str, Any]:
        return etcd_call(m.client_port, "/v3/maintenance/status", {}, timeout=2.0)

    def _leader_id(self) -> str | None:
        ids = set()
        for m in self.members:
            st = self._status(m)
            m.member_id = str(st["header"]["member_id"])
            if not st.get("leader"):
                return None
            ids.add(str(st["leader"]))
        return ids.pop() if len(ids) == 1 else None

    def leader(self) -> EtcdMember:
        lid = wait_for(self._leader_id, 30, 0.2, "an etcd leader")
        return next(m for m in self.members if m.member_id == lid)

    def followers(self) -> list[EtcdMember]:
        lead = self.leader()
        return [m for m in self.members if m is not lead]

    def pids(self) -> list[int]:
        return [p for p in (m.pid for m in self.members) if p is not None]

    def stop(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                terminate(m.proc)
            m.proc = None

    def logs(self) -> str:
        return "\n".join(f"--- {m.name}\n{tail(self.root / f'{m.name}.log')}" for m in self.members)


def etcd_call(port: int, path: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


class EtcdWriter:
    """One benchmark client: a keep-alive HTTP/1.1 connection to the v3 JSON gateway, PUT /v3/kv/put."""

    HEADERS = {"Content-Type": "application/json"}

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self._value_cache: tuple[bytes, str] | None = None

    def put(self, name: str, data: bytes) -> None:
        if self._value_cache is None or self._value_cache[0] is not data:
            self._value_cache = (data, base64.b64encode(data).decode())
        body = ('{"key":"' + base64.b64encode(b"/bench/" + name.encode()).decode()
                + '","value":"' + self._value_cache[1] + '"}')
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=RPC_TIMEOUT)
        try:
            self.conn.request("POST", "/v3/kv/put", body, self.HEADERS)
            resp = self.conn.getresponse()
            out = resp.read()
        except Exception:
            self.close()
            raise
        if resp.status != 200 or b'"error"' in out[:64]:
            raise RuntimeError(f"HTTP {resp.status}: {out[:200]!r}")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def etcd_put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key=1, value=2} in protobuf wire format (both length-delimited fields)."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


class EtcdGrpcWriter:
    """One benchmark client: etcd's native gRPC KV.Put, with the same grpcio as the swarmsecrets client.

    The request is encoded by hand (two bytes fields) and the response is taken as raw bytes, so no
    etcd stubs (and no protobuf<4 pin) are needed."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.call = channel.unary_unary("/etcdserverpb.KV/Put")  # no (de)serializers: bytes in, bytes out

    def put(self, name: str, data: bytes) -> None:
        self.call(etcd_put_request(b"/bench/" + name.encode(), data), timeout=RPC_TIMEOUT)

    def close(self) -> None:
        pass
