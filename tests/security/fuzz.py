"""A seeded fuzzer for every service a node serves (gRPC on the TLS port, the local API's HTTP on the
unix socket): hostile messages and raw garbage, sent with a chosen identity, each call judged for a
clear status within a deadline.

The generator walks each request's protobuf descriptor and fills fields with values at the edges
(huge strings within the message cap, control characters, invalid UTF-8 spliced into string fields,
negative and huge integers, unknown enum-ish words, path traversal, long lists), or starts from a
plausible request (real ids, valid names) and breaks one or two fields so that calls get past the
first check. A share of the calls sends random bytes as the serialized request; on the unix socket a
share also garbles the HTTP request around it (its head, its framing, its length). Everything derives
from one seed: a failure prints it, and ``--seed`` replays the run.

Outside CI, for counts larger than the tests use:

    python -m tests.security.fuzz --count 20000          # per service and identity
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory

from swarmsecrets import wire
from swarmsecrets.api.v1 import (
    ca_pb2,
    control_pb2,
    dispatcher_pb2,
    raft_pb2,
    swarm_pb2,
)
from swarmsecrets.ca import certs
from swarmsecrets.client import LocalError
from swarmsecrets.localhttp import CONTENT_TYPE, FRAME, FRAME_ERROR, PATH_PREFIX, decode_error
from tests.framework import Cluster, Node, wait_until

# --- what is fuzzed ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    service: str  # the short service name, e.g. "Control"
    name: str
    path: str  # "/swarmsecrets.v1.Control/CreateSecret"
    request: pbd.Descriptor
    streaming: bool


def methods(module: Any, service: str) -> list[Method]:
    sd = module.DESCRIPTOR.services_by_name[service]
    return [Method(service, m.name, f"/{sd.full_name}/{m.name}", m.input_type, m.server_streaming)
            for m in sd.methods]


# The TLS port's services and the local socket's (Swarm, and Control again, as root on the node).
TLS_SERVICES: dict[str, list[Method]] = {
    "Control": methods(control_pb2, "Control"),
    "NodeCA": methods(ca_pb2, "NodeCA"),
    "Dispatcher": methods(dispatcher_pb2, "Dispatcher"),
    "RaftMembership": methods(raft_pb2, "RaftMembership"),
}
LOCAL_METHODS: list[Method] = methods(swarm_pb2, "Swarm") + methods(control_pb2, "Control")
SERVICES = (*TLS_SERVICES, "LocalAPI")

# Calls a caller is entitled to make that would take the fuzzed cluster apart (a manager leaving raft,
# a node leaving the swarm): never sent with the identity that may make them. Everything else is.
DESTRUCTIVE: dict[str, frozenset[str]] = {
    "manager": frozenset({"/swarmsecrets.v1.RaftMembership/Leave", "/swarmsecrets.v1.Swarm/Leave"}),
    "worker": frozenset({"/swarmsecrets.v1.Swarm/Leave"}),
}
# A manager may remove and demote nodes: its requests for these never name a real node (not even by
# prefix), and are never raw bytes that could happen to.
NODE_WRITES = frozenset({"/swarmsecrets.v1.Control/UpdateNode", "/swarmsecrets.v1.Control/RemoveNode"})

# --- values ------------------------------------------------------------------------------------------

ENUMISH = ["manager", "worker", "MANAGER", "Manager", "admin", "root", "leader", "active", "pause", "drain",
           "Drain", "global", "replicated", "restart", "none", "signal:KILL", "signal:HUP", "signal:99999",
           "signal:", "signal:-9", "running", "shutdown", "complete", "failed", "ready", "down", "self",
           "bootstrap", "swarm-manager", "swarm-worker", "swarm-bootstrap", "null", "undefined", "true", "*"]
TRAVERSAL = ["../../etc/passwd", "/etc/shadow", "..", ".", "./", "a/../../b", "a//b", "/", "~root/.ssh/id_rsa",
             "..\\..\\windows", "%2e%2e%2f%2e%2e%2fetc", "a/./b", "a/b/../../../c", "\u2025/\u2025/x", "foo/"]
INJECTION = ["{{.ID}}", "{{printf \"%s\" .}}", "%s%s%n", "${HOME}", "`id`", "$(id)", "'; DROP TABLE x; --",
             "\x1b[2J\x1b[31mred", "<script>", "a\nb", "a\rb", "\t", "\x00", "a\x00b", "\x7f", "\u202egnp.exe",
             "\ufeff", "\U0001f600" * 40, "名前", "\u0000" * 8, "a=b", "=", "a,b=c", "source=x,target=../y"]
NUMERIC = ["-1", "0", "1", "00", "0777", "0o777", "4294967295", "4294967296", "18446744073709551616",
           "99999999999999999999999", "1e9", "NaN", " 1", "1 ", "+1", "0x10", "1:2:3", ":", "1:", ":1"]
ADDRS = ["127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1", "[::1]:1", "[::1", "::1:80", "host:", ":1",
         "a" * 300 + ":1", "1.2.3.4", "256.256.256.256:1", "localhost:2377", "0.0.0.0:1", "[fe80::1%eth0]:1",
         "unix:///tmp/x", "http://127.0.0.1:1/", "127.0.0.1:1 ", " 127.0.0.1:1"]
TOKENS = ["SWMTKN-1-", "SWMTKN-1-x-y", "SWMTKN-2-" + "a" * 50 + "-" + "b" * 25, "SWMTKN-1-" + "0" * 64 + "-" + "0" * 25,
          "SWMTKN-1-" + "z" * 5000]
INTS = {
    pbd.FieldDescriptor.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31), 0o777, 1000],
    pbd.FieldDescriptor.TYPE_INT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    pbd.FieldDescriptor.TYPE_UINT32: [0, 1, 2**32 - 1, 2**31, 0o777, 0o1000, 0o7777, 65534],
    pbd.FieldDescriptor.TYPE_UINT64: [0, 1, 2, 2**64 - 1, 2**63, 2**32, 10**6],
}
NAME_CHARS = string.ascii_letters + string.digits + "_-."
# How often a value is huge: outside CI; the tests send mostly small messages to fit their budget.
BIG = 0.02


class Gen:
    """Hostile and plausible values from one ``random.Random``; ``pool`` holds real ids and names of
    the fuzzed cluster (by kind: node, secret, service, task, session) that plausible requests use."""

    def __init__(self, rng: random.Random, pool: dict[str, list[str]], *, big: float = BIG) -> None:
        self.r = rng
        self.pool = pool
        self.big = big  # how often a value is huge (a string of up to 1 MiB, a list of thousands)

    # --- scalars -------------------------------------------------------------------------------

    def name(self) -> str:
        return "fz" + "".join(self.r.choice(NAME_CHARS) for _ in range(self.r.randint(1, 20)))

    def hostile_string(self) -> str:
        r = self.r.random()
        if r < self.big:
            return self.r.choice("Aé\x00/") * self.r.choice([4096, 65536, 1 << 20])
        if r < 0.1:
            return ""
        if r < 0.25:
            return "".join(chr(self.r.randint(0, 0x1F)) for _ in range(self.r.randint(1, 12)))
        if r < 0.35:
            return "".join(chr(self.r.choice([self.r.randint(0x20, 0x7E), self.r.randint(0xA0, 0xD7FF),
                                              self.r.randint(0xE000, 0x10FFFF)])) for _ in range(self.r.randint(1, 30)))
        lists = [ENUMISH, TRAVERSAL, INJECTION, NUMERIC, ADDRS, TOKENS]
        value = self.r.choice(self.r.choice(lists))
        if self.r.random() < 0.2:  # a real id or name, or its prefix
            real = self.real()
            if real:
                value = real[: self.r.randint(1, len(real))]
        return value

    def real(self) -> str | None:
        kinds = [k for k, v in self.pool.items() if v]
        if not kinds:
            return None
        return self.r.choice(self.pool[self.r.choice(kinds)])

    def hostile_bytes(self) -> bytes:
        r = self.r.random()
        if r < self.big:
            return self.r.randbytes(self.r.choice([65536, 512000, 512001, 1 << 20]))
        if r < 0.2:
            return b""
        if r < 0.4:
            return b"".join((b"-----BEGIN CERTIFICATE REQUEST-----\n", self.r.randbytes(64),
                             b"\n-----END CERTIFICATE REQUEST-----\n"))
        return self.r.randbytes(self.r.randint(1, 200))

    def plausible_string(self, fd: pbd.FieldDescriptor, parent: str) -> str:
        n = fd.name
        if n in ("role",):
            return self.r.choice(["manager", "worker", ""])
        if n == "availability":
            return self.r.choice(["active", "pause", "drain", ""])
        if n == "mode":
            return self.r.choice(["replicated", "global", ""])
        if n == "update_action":
            return self.r.choice(["restart", "none", "signal:HUP", ""])
        if n in ("uid", "gid"):
            return str(self.r.choice([0, 1000, 65534]))
        if n == "user":
            return self.r.choice(["", "0", "1000:1000"])
        if n in ("name", "secret_name") and parent == "FileTarget":
            return self.r.choice(["a", "dir/file", "x.txt"])
        if n.endswith("addr"):
            return self.r.choice(ADDRS[:4] + ["127.0.0.1:1"])
        if n == "session_id":
            return self.r.choice(self.pool.get("session") or [""])
        if n == "node_id":
            return self.r.choice(self.pool.get("node") or ["self"])
        if n == "task_id":
            return self.r.choice(self.pool.get("task") or [""])
        if n in ("secret_id", "secret_name"):
            return self.r.choice((self.pool.get("secret") or []) + [self.name()])
        if n == "service_id":
            return self.r.choice((self.pool.get("service") or []) + [self.name()])
        if n in ("request_id",):
            return "".join(self.r.choice(string.hexdigits) for _ in range(32))
        if n in ("name", "hostname", "engine_version"):
            return self.name()
        if n == "token" or n == "join_token":
            return self.r.choice(TOKENS)
        return self.name()

    def scalar(self, fd: pbd.FieldDescriptor, parent: str, plausible: bool) -> Any:
        t = fd.type
        if t == pbd.FieldDescriptor.TYPE_STRING:
            return self.plausible_string(fd, parent) if plausible else self.hostile_string()
        if t == pbd.FieldDescriptor.TYPE_BYTES:
            if plausible and fd.name == "data":
                return self.r.randbytes(self.r.randint(1, 64))
            return self.hostile_bytes()
        if t == pbd.FieldDescriptor.TYPE_BOOL:
            return self.r.random() < 0.5
        if t == pbd.FieldDescriptor.TYPE_ENUM:
            return self.r.choice([v.number for v in fd.enum_type.values])
        if t in INTS:
            if fd.name == "replicas":
                # Small only: a huge count stalls the leader's scheduler (test_fuzz has its own test for
                # that), which would leave the rest of a run to a swarm that no longer schedules.
                return self.r.choice([0, 1, 2])
            if plausible:
                if fd.name == "mode":
                    return self.r.choice([0o444, 0o400, 0o600])
                return self.r.choice(INTS[t][:3]) if t not in (pbd.FieldDescriptor.TYPE_UINT32,
                                                                  pbd.FieldDescriptor.TYPE_UINT64) else 1
            return self.r.choice(INTS[t])
        return None

    # --- messages ------------------------------------------------------------------------------

    def count(self) -> int:
        r = self.r.random()
        if r < self.big / 2:
            return self.r.choice([1000, 5000])
        return self.r.choice([0, 0, 1, 1, 2, 3, 8])

    def fill(self, msg: Any, plausible: bool, depth: int = 0) -> None:
        desc = msg.DESCRIPTOR
        for fd in desc.fields:
            if not plausible and self.r.random() < 0.3:
                continue  # leave unset
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                kf, vf = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                m = getattr(msg, fd.name)
                for _ in range(self.count() if not plausible else self.r.randint(0, 2)):
                    k = self.scalar(kf, desc.name, plausible)
                    if vf.message_type is None:
                        m[k] = self.scalar(vf, desc.name, plausible)
                continue
            if fd.is_repeated:
                n = self.count() if not plausible else self.r.randint(0, 2)
                target = getattr(msg, fd.name)
                if fd.name == "command" and desc.name == "ServiceSpec":
                    # A manager's services run on the worker: the fuzzed arguments go to a shell that ignores them.
                    target.extend(["/bin/sh", "-c", "sleep 3600"])
                for _ in range(n):
                    if fd.message_type is not None:
                        if depth < 3:
                            self.fill(target.add(), plausible, depth + 1)
                    else:
                        target.append(self.scalar(fd, desc.name, plausible))
                continue
            if fd.message_type is not None:
                if depth < 3 and (plausible or self.r.random() < 0.7):
                    self.fill(getattr(msg, fd.name), plausible, depth + 1)
                    getattr(msg, fd.name).SetInParent()
                continue
            setattr(msg, fd.name, self.scalar(fd, desc.name, plausible))

    def request(self, m: Method, *, mangle_names: bool) -> bytes:
        """One hostile request for ``m``, serialized (or garbage)."""
        r = self.r.random()
        if r < 0.2 and not mangle_names:
            return self.garbage()
        cls = message_factory.GetMessageClass(m.request)
        msg = cls()
        plausible = r < 0.6
        self.fill(msg, plausible)
        if plausible:  # break one or two fields of a plausible request
            fields = [fd for fd in m.request.fields]
            for fd in self.r.sample(fields, min(len(fields), self.r.randint(1, 2))) if fields else []:
                if not fd.is_repeated and fd.message_type is None:
                    setattr(msg, fd.name, self.scalar(fd, m.request.name, False))
        if mangle_names:  # never a real node, nor a prefix of one
            for f in ("node_id",):
                if f in m.request.fields_by_name:
                    setattr(msg, f, "fuzz-" + self.name())
        data = msg.SerializeToString()
        if self.r.random() < 0.1:
            data += self.bad_utf8_field(m.request)
        return data

    def bad_utf8_field(self, desc: pbd.Descriptor) -> bytes:
        """A record that sets a string field (or an unknown field) to bytes that are not UTF-8."""
        strings = [fd.number for fd in desc.fields if fd.type == pbd.FieldDescriptor.TYPE_STRING]
        number = self.r.choice(strings) if strings else self.r.randint(50, 1000)
        value = self.r.choice([b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"a\x80b", b"\xf8\x88\x80\x80\x80"])
        return _varint(number << 3 | 2) + _varint(len(value)) + value

    def garbage(self) -> bytes:
        r = self.r.random()
        if r < 0.3:
            return self.r.randbytes(self.r.randint(1, 16))
        if r < 0.5:  # a field header with a length that runs past the end
            return bytes([0x0A]) + _varint(self.r.choice([5, 2**31, 2**35])) + b"x"
        if r < 0.6:  # a deep nesting of length-delimited records
            inner = b""
            for _ in range(self.r.choice([50, 200, 1000])):
                inner = b"\x0a" + _varint(len(inner)) + inner
            return inner
        if r < 0.7:  # every wire type on a random field number, including the deprecated groups
            return b"".join(_varint(self.r.randint(1, 2**29 - 1) << 3 | self.r.randint(0, 7)) + self.r.randbytes(3)
                            for _ in range(self.r.randint(1, 10)))
        return self.r.randbytes(self.r.randint(1, 2048))


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


# --- judging a call ----------------------------------------------------------------------------------

# Statuses a hostile call may end with. INTERNAL means an unexpected exception in the daemon (rpcutil
# maps those to INTERNAL and logs a traceback); UNKNOWN is clear only as a typed error the daemon meant
# (Docker's code for "update out of sequence"), with its kind; DEADLINE_EXCEEDED means the call hung.
# CANCELLED is what gRPC answers calls in flight when a server stops, and the fuzzed calls themselves
# restart managers (swarm init --force-new-cluster, leave, demote): clients retry it, as UNAVAILABLE.
CLEAR = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ABORTED,
})
LEAKS = ("Traceback", "Exception calling application", "Exception deserializing", "Exception iterating")


@dataclass
class Finding:
    method: str
    code: str
    details: str
    request: bytes

    def __str__(self) -> str:
        shown = self.request[:120]
        more = f"... ({len(self.request)} bytes)" if len(self.request) > 120 else ""
        return f"{self.method}: {self.code} {self.details[:200]!r} for request {shown!r}{more}"


@dataclass
class Tally:
    """What the calls of one service and identity ended with."""

    sent: int = 0
    started: float = field(default_factory=time.monotonic)
    codes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.codes.update(other.codes)
        self.findings += other.findings

    def summary(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in self.codes.most_common())
        return f"{self.sent} sent: {codes}" + (f"; {len(self.findings)} FINDINGS" if self.findings else "")


def judge(tally: Tally, m: Method, req: bytes, code: grpc.StatusCode, details: str, typed: bool) -> None:
    tally.sent += 1
    tally.codes[code.name] += 1
    clear = code in CLEAR or (code == grpc.StatusCode.UNKNOWN and typed)
    if not clear or any(s in (details or "") for s in LEAKS):
        tally.findings.append(Finding(m.path, code.name, details or "", req))


# --- sending -----------------------------------------------------------------------------------------

DEADLINE = 20.0  # a call that has not ended by then hangs


# A stream whose headers came but that says nothing for this long is open and quiet, as a followed
# ``service logs -f`` of a service with nothing new to print is: it answered.
QUIET = 3.0


Call = Callable[[Method, bytes, Tally], Awaitable[None]]


async def call_one(channel: grpc.aio.Channel, m: Method, req: bytes, tally: Tally) -> None:
    """Send ``req`` (serialized) to ``m``; a stream is read to its first message (or until it has
    been quiet for ``QUIET`` after its headers), then dropped."""
    try:
        if m.streaming:
            stream = channel.unary_stream(m.path)(req, timeout=DEADLINE)
            try:
                await stream.initial_metadata()
                quiet = False
                try:
                    await asyncio.wait_for(stream.read(), QUIET)
                except TimeoutError:
                    quiet = True  # the timeout cancelled the call: its status says nothing of the daemon
                code, details, typed = grpc.StatusCode.OK, "", False
                if stream.done() and not quiet:
                    code, details = await stream.code(), await stream.details()
                    typed = _typed(await stream.trailing_metadata())
            finally:
                stream.cancel()
        else:
            call = channel.unary_unary(m.path)(req, timeout=DEADLINE)
            await call
            code, details, typed = grpc.StatusCode.OK, "", False
    except grpc.aio.AioRpcError as e:
        code, details, typed = e.code(), e.details() or "", _typed(e.trailing_metadata())
    judge(tally, m, req, code, details, typed)


# --- the local API: HTTP/1.1 on the unix socket ---------------------------------------------------------

# A garbled request: what may come back (a refusal of the HTTP request itself, or of the method it names).
GARBLED_CLEAR = CLEAR | {grpc.StatusCode.UNIMPLEMENTED}
GARBLE = 0.1  # the share of local calls whose HTTP request is garbled


def local_request(m: Method, req: bytes, garble: random.Random) -> tuple[bytes, bool]:
    """The HTTP request for ``m`` (the local API's wire format, swarmsecrets/localhttp.py), garbled for a
    share of the calls; True when it was."""
    head = [f"POST {PATH_PREFIX}{m.service}/{m.name} HTTP/1.1", "Host: fuzz", f"Content-Type: {CONTENT_TYPE}",
            f"Content-Length: {len(req)}"]
    if garble.random() >= GARBLE:
        return ("\r\n".join(head) + "\r\n\r\n").encode() + req, False
    kind = garble.randrange(9)
    if kind == 0:
        head[0] = garble.choice(["GET", "PUT", "DELETE", "PRI", "post", ""]) + head[0][4:]
    elif kind == 1:
        head[0] = f"POST {garble.choice(TRAVERSAL + INJECTION)} HTTP/1.1"
    elif kind == 2:
        head[3] = f"Content-Length: {garble.choice(NUMERIC)}"
    elif kind == 3:
        head[3] = f"Content-Length: {max(0, len(req) - garble.randrange(1, 64))}"  # the rest reads as a request
    elif kind == 4:
        head[3] = "Transfer-Encoding: chunked"
    elif kind == 5:
        head.append("X-Padding: " + "a" * garble.choice([100, 20_000, 70_000]))
    elif kind == 6:
        head.insert(1, garble.choice(["no colon", ": empty name", "Content-Length: 0", "Connection: close"]))
    elif kind == 7:
        head[0] = head[0].replace(" HTTP/1.1", garble.choice(["", " HTTP/2.0", " HTTP/1.0", " HTTP/1.1 x"]))
    raw = bytearray(("\r\n".join(head) + "\r\n\r\n").encode() + req)
    if kind == 8:  # bytes flipped anywhere in the head
        for _ in range(garble.randrange(1, 8)):
            raw[garble.randrange(min(len(raw), 200))] = garble.randrange(256)
    return bytes(raw), True


async def call_local(path: Path, garble: random.Random, m: Method, req: bytes, tally: Tally) -> None:
    """Send ``req`` to ``m`` on the unix socket in an HTTP request of its own connection (garbled now and
    then), then close our side: a request that says it is longer than it is meets the end of the stream,
    not a wait. A stream is read to its first frame (or until it has been quiet for ``QUIET``)."""
    raw, garbled = local_request(m, req, garble)
    code, details, typed = grpc.StatusCode.OK, "", False
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**31)
        try:
            writer.write(raw)
            await writer.drain()
            if garbled:
                writer.write_eof()
            status, kind, details = await asyncio.wait_for(_local_answer(reader, m.streaming), DEADLINE)
            code, typed = grpc.StatusCode[status], bool(kind)
        finally:
            writer.close()
    except TimeoutError:
        code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "no answer within the deadline"
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        # The connection ended without an answer: a daemon that restarts (fuzzed calls restart managers)
        # or one that refused a request it could not read to its end.
        code, details = grpc.StatusCode.UNAVAILABLE, f"connection closed: {e!r}"
    except (ValueError, KeyError) as e:  # an answer that is not the API's: a finding
        code, details = grpc.StatusCode.UNKNOWN, f"not an answer of the local API: {e!r}"
    tally.sent += 1
    tally.codes[code.name] += 1
    clear = code in (GARBLED_CLEAR if garbled else CLEAR) or (code == grpc.StatusCode.UNKNOWN and typed)
    if not clear or any(s in (details or "") for s in LEAKS):
        tally.findings.append(Finding(m.path + (" (garbled HTTP)" if garbled else ""), code.name, details or "", raw))


async def _local_answer(reader: asyncio.StreamReader, streaming: bool) -> tuple[str, str, str]:
    """(status name, error kind, message) of one answer; an error body must be the API's one-line JSON."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if status == 200 and headers.get("transfer-encoding") == "chunked":
        try:
            line = await asyncio.wait_for(reader.readline(), QUIET)
        except TimeoutError:
            return "OK", "", ""  # open and quiet: it answered
        if not line:  # the stream ended as the client left (it sent more, or closed its side)
            raise ConnectionResetError("closed mid-stream")
        size = int(line.split(b";")[0], 16)
        frame = await reader.readexactly(size) if size else b""
        if frame[:1] == bytes([FRAME_ERROR]):
            code, kind, message = decode_error(frame[FRAME.size:])
            return code.name, kind, message
        return "OK", "", ""
    body = await reader.readexactly(int(headers["content-length"]))
    if status == 200:
        return "OK", "", ""
    if b"\n" in body:
        raise ValueError(f"an error of more than one line: {body[:200]!r}")
    code, kind, message = decode_error(body)
    return code.name, kind, message


def _typed(md: Any) -> bool:
    """Whether the status came with the kind of a typed error (see rpcutil)."""
    return any(k == wire.ERROR_KIND_METADATA for k, _ in (md or ()))


async def fuzz_methods(call: Call, ms: list[Method], gen: Gen, count: int, *,
                       skip: frozenset[str] = frozenset(), mangle: frozenset[str] = frozenset(),
                       concurrency: int = 48) -> Tally:
    """``count`` calls spread evenly over ``ms`` (less ``skip``), ``concurrency`` at a time."""
    targets = [m for m in ms if m.path not in skip]
    tally = Tally()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        m = targets[i % len(targets)]
        req = gen.request(m, mangle_names=m.path in mangle)
        async with sem:
            await call(m, req, tally)

    # Generate lazily, in slices, so that a large count does not hold every request at once.
    for start in range(0, count, 1000):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 1000))))
    return tally


# --- identities --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A TLS client identity: PEMs of (key, certificate), or None for a client without one."""

    name: str
    key: bytes | None
    cert: bytes | None


def tls_channel(addr: str, root_pem: bytes, ident: Identity) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=ident.key,
                                         certificate_chain=ident.cert)
    return grpc.aio.secure_channel(addr, creds, options=list(wire.TLS_CHANNEL_OPTIONS))


def node_identity(name: str, node: Node) -> Identity:
    d = node.data_dir / "certificates"
    return Identity(name, (d / "swarm-node.key").read_bytes(), (d / "swarm-node.crt").read_bytes())


def bootstrap_identity(root_pem: bytes) -> Identity:
    key, cert = certs.bootstrap_client_cert(certs.ca_digest(root_pem))
    return Identity("bootstrap", key, cert)


def root_pem_of(node: Node) -> bytes:
    return (node.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()


# --- the cluster's health and state --------------------------------------------------------------------


class Logs:
    """Where each daemon's log stood when fuzzing began; ``tracebacks`` reads only what came after."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.start = {n.name: (n.log_path, n.log_path.stat().st_size if n.log_path.exists() else 0)
                      for n in nodes}

    def tracebacks(self) -> list[str]:
        """Each log record since ``start`` that holds a traceback (a record is one line), as 'node: line'."""
        found = []
        for name, (path, offset) in self.start.items():
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            found += [f"{name}: {line[:3000]}" for line in text.splitlines() if "Traceback" in line]
        return found


def snapshot(node: Node, exclude_node: str = "") -> dict[str, Any]:
    """What the swarm holds, through ``node``'s socket: every field a caller could have written.
    Liveness (status, heartbeats) moves on its own and is left out; so is what ``exclude_node``
    may write about itself (its description, via its session)."""
    c = node.control()
    secrets = sorted((s.id, s.spec.name, tuple(sorted(s.spec.labels.items())), s.version.index)
                     for s in c.ListSecrets(control_pb2.ListSecretsRequest(), timeout=30).secrets)
    services = sorted((s.id, s.spec.SerializeToString(deterministic=True), s.spec_version, s.version.index)
                      for s in c.ListServices(control_pb2.ListServicesRequest(), timeout=30).services)
    nodes = sorted((n.id, n.spec.role, n.spec.availability, tuple(sorted(n.spec.labels.items())),
                    n.manager_status.raft_addr, n.cert_serial,
                    "" if n.id == exclude_node else n.description.SerializeToString(deterministic=True))
                   for n in c.ListNodes(control_pb2.ListNodesRequest(), timeout=30).nodes)
    tasks = sorted((t.id, t.service_id, t.node_id, t.slot, t.desired_state, t.spec_version)
                   for t in c.ListTasks(control_pb2.ListTasksRequest(), timeout=30).tasks)
    cl = c.GetCluster(control_pb2.GetClusterRequest(), timeout=30).cluster
    return {"secrets": secrets, "services": services, "nodes": nodes, "tasks": tasks,
            "cluster": (cl.id, cl.join_tokens.worker, cl.join_tokens.manager, cl.autolock, cl.version.index)}


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per kind: (what went, what came)."""
    out = {}
    for k in before:
        b, a = before[k], after[k]
        if k == "cluster":
            b, a = [b], [a]
        gone = [x for x in b if x not in a]
        came = [x for x in a if x not in b]
        if gone or came:
            out[k] = (gone, came)
    return out


def pool_of(node: Node) -> dict[str, list[str]]:
    """Real ids and names of the swarm, for plausible requests."""
    c = node.control()
    secrets = c.ListSecrets(control_pb2.ListSecretsRequest(), timeout=30).secrets
    services = c.ListServices(control_pb2.ListServicesRequest(), timeout=30).services
    nodes = c.ListNodes(control_pb2.ListNodesRequest(), timeout=30).nodes
    tasks = c.ListTasks(control_pb2.ListTasksRequest(), timeout=30).tasks
    return {"secret": [s.id for s in secrets] + [s.spec.name for s in secrets],
            "service": [s.id for s in services] + [s.spec.name for s in services],
            "node": [n.id for n in nodes] + [n.description.hostname for n in nodes],
            "task": [t.id for t in tasks]}


def alive(nodes: Iterable[Node]) -> list[str]:
    """The names of daemons that died or stopped answering on their socket."""
    dead = []
    for n in nodes:
        try:
            if not n.running:
                raise RuntimeError("exited")
            n.swarm().Info(swarm_pb2.InfoRequest(), timeout=20)
        except (RuntimeError, LocalError):
            dead.append(n.name)
    return dead


# --- a run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One identity against one service: its tally, and what the checks after it found."""

    service: str
    identity: str
    tally: Tally
    problems: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)  # log records, since the run before
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.seconds = time.monotonic() - self.tally.started

    def line(self) -> str:
        return f"{self.service:15} {self.identity:10} {self.seconds:5.1f} s  {self.tally.summary()}"


async def _session_ids(channel: grpc.aio.Channel) -> tuple[list[str], list[grpc.aio.UnaryStreamCall]]:
    """Open a session with the channel's identity (if it may): its id makes plausible dispatcher calls."""
    call = channel.unary_stream("/swarmsecrets.v1.Dispatcher/Session",
                                response_deserializer=dispatcher_pb2.SessionMessage.FromString)(
        dispatcher_pb2.SessionRequest(hostname="fuzz").SerializeToString(), timeout=DEADLINE)
    try:
        async for msg in call:
            return [msg.session_id], [call]
    except grpc.aio.AioRpcError:
        pass
    return [], []


async def fuzz_tls(addr: str, root_pem: bytes, ident: Identity, service: str, count: int, seed: int,
                   pool: dict[str, list[str]], big: float = BIG) -> Tally:
    gen = Gen(random.Random(f"{seed}/{service}/{ident.name}"), dict(pool), big=big)
    async with tls_channel(addr, root_pem, ident) as channel:
        held: list[grpc.aio.UnaryStreamCall] = []
        if service == "Dispatcher":
            gen.pool["session"], held = await _session_ids(channel)
        try:
            return await fuzz_methods(functools.partial(call_one, channel), TLS_SERVICES[service], gen, count,
                                      skip=DESTRUCTIVE.get(ident.name, frozenset()),
                                      mangle=NODE_WRITES if ident.name == "manager" else frozenset())
        finally:
            for c in held:
                c.cancel()


async def fuzz_local(node: Node, identity: str, count: int, seed: int, pool: dict[str, list[str]],
                     big: float = BIG) -> Tally:
    """Root on ``node`` (a manager's or a worker's daemon) through its unix socket."""
    gen = Gen(random.Random(f"{seed}/LocalAPI/{identity}"), dict(pool), big=big)
    garble = random.Random(f"{seed}/LocalAPI/{identity}/http")
    return await fuzz_methods(functools.partial(call_local, node.sock, garble), LOCAL_METHODS, gen, count,
                              skip=DESTRUCTIVE.get(identity, frozenset()),
                              mangle=NODE_WRITES if identity == "manager" else frozenset())


async def no_cert(addr: str, root_pem: bytes, service: str, count: int) -> Tally:
    """A TLS client without a certificate: the handshake fails, so every call ends UNAVAILABLE."""
    tally = Tally()
    async with tls_channel(addr, root_pem, Identity("none", None, None)) as channel:
        ms = TLS_SERVICES[service]
        for i in range(count):
            m = ms[i % len(ms)]
            await call_one(channel, m, b"", tally)
    return tally


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def raw_h2_garbage(addr: str, ident: Identity, count: int, seed: int) -> Tally:
    """Past TLS with ``ident``, bytes that are not HTTP/2 (or a preface, then frames of garbage, or a
    HEADERS frame that opens a stream followed by garbage on it): the daemon must close the connection
    within the deadline. Counted as "closed" or "hung"."""
    rng = random.Random(f"{seed}/h2/{ident.name}")
    host, port = addr.rsplit(":", 1)
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        assert ident.key is not None and ident.cert is not None
        Path(tmp, "k").write_bytes(ident.key)
        Path(tmp, "c").write_bytes(ident.cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(str(Path(tmp, "c")), str(Path(tmp, "k")))
        ctx.set_alpn_protocols(["h2"])
        for i in range(count):
            junk = rng.randbytes(rng.randint(1, 512))
            # A frame header: 24-bit length, type, flags, 31-bit stream id; HEADERS (1) with END_HEADERS.
            frame = len(junk).to_bytes(3, "big") + bytes([rng.randint(0, 12), rng.randint(0, 255)]) + \
                rng.randint(0, 2**31 - 1).to_bytes(4, "big")
            opened = (12).to_bytes(3, "big") + b"\x01\x04" + (1).to_bytes(4, "big") + rng.randbytes(12)
            settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
            data = [junk, H2_PREFACE + frame + junk, H2_PREFACE + settings + opened + junk][i % 3]
            code = "closed"
            try:
                with socket.create_connection((host, int(port)), timeout=DEADLINE) as raw, \
                        ctx.wrap_socket(raw) as tls:
                    tls.sendall(data)
                    while tls.recv(65536):  # whatever it answers (a GOAWAY), until it closes
                        pass
            except TimeoutError:
                code = "hung"
            except (ssl.SSLError, OSError):
                pass  # a reset is a close too
            tally.sent += 1
            tally.codes[code] += 1
            if code != "closed":
                tally.findings.append(Finding("raw HTTP/2", code, "", data))
    return tally


def non_root_local(node: Node, count: int) -> Tally:
    """A process that is not root connecting to the node's 0600 socket: refused by the kernel before
    the daemon reads a byte. It reaches the socket through a descriptor of its directory, so the directories above
    (a test's private tmp) do not refuse it first: the socket's own mode is what is tested."""
    tally = Tally()
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n print('refused')\nelse:\n print('connected')\n")
    fd = os.open(node.sock.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        for _ in range(count):
            p = subprocess.run([python, "-c", code, f"/proc/self/fd/{fd}/{node.sock.name}"], user=65534,
                               group=65534, extra_groups=[], pass_fds=[fd], capture_output=True, text=True,
                               timeout=30)
            tally.sent += 1
            tally.codes[p.stdout.strip() or "error"] += 1
            if p.stdout.strip() != "refused":
                tally.findings.append(Finding("unix socket", p.stdout.strip(), p.stderr, b""))
    finally:
        os.close(fd)
    return tally


# --- outside CI --------------------------------------------------------------------------------------


def prepare(cluster: Cluster) -> tuple[Node, Node, dict[str, list[str]]]:
    """A secret and a service whose task runs on the worker: the real objects plausible requests
    name. Returns (leader, worker, pool)."""
    leader = cluster.leader()
    worker = cluster.workers[0]
    leader.ok("secret", "create", "fuzz_target", "-", input="s3cret")
    leader.ok("service", "create", "--name", "fuzzsvc", "--secret", "fuzz_target", "--", "sleep", "3600")
    # The swarm's own bookkeeping settles first (each node's record learns its certificate), so that
    # the state compared around a run changes only by what the run did.
    wait_until(lambda: all(n.cert_serial for n in leader.control().ListNodes(
        control_pb2.ListNodesRequest(), timeout=30).nodes), 60, 0.1, "every node's certificate recorded")
    return leader, worker, pool_of(leader)


def run_all(cluster: Cluster, count: int, seed: int, *, big: float = BIG,
            report: Callable[[str], None] = print) -> list[Run]:
    """Every service with every identity, ``count`` calls each. An identity's services are fuzzed at
    once, each on its own manager where it can be (the dispatcher serves on the leader only), so that
    the daemons share the work; then the checks: alive, no traceback, and for the callers that may not
    write, the state as it was. The manager, whose writes are allowed, comes last."""
    leader, worker, pool = prepare(cluster)
    root_pem = root_pem_of(leader)
    others = [m for m in cluster.managers if m is not leader]
    serve = {"Control": others[0], "NodeCA": others[-1], "Dispatcher": leader, "RaftMembership": leader}
    idents = [bootstrap_identity(root_pem), node_identity("worker", worker), node_identity("manager", others[0])]
    everyone = cluster.members
    logs = Logs(everyone)
    runs: list[Run] = []

    def check(batch: list[Run], before: dict[str, Any] | None, exclude: str = "") -> None:
        nonlocal logs
        problems = []
        dead = alive(everyone)
        if dead:
            problems.append(f"daemons down or not answering: {dead}")
        if before is not None:
            changed = diff(before, snapshot(leader, exclude))
            if changed:
                problems.append(f"state changed: {changed}")
        tracebacks = logs.tracebacks()
        logs = Logs(everyone)  # report each traceback once
        for run in batch:
            names = {m.name for m in (LOCAL_METHODS if run.service == "LocalAPI"
                                      else TLS_SERVICES.get(run.service, []))}
            mine = [t for t in tracebacks if any(f"/{n}]" in t or f'msg="{n} failed"' in t for n in names)]
            run.tracebacks = mine or tracebacks if len(batch) == 1 else mine
            run.problems += problems
            runs.append(run)
            report(run.line() + "".join(f"\n    {p}" for p in run.problems)
                   + "".join(f"\n    log: {t[:160]} ... {t[-400:]}" for t in run.tracebacks[:3])
                   + "".join(f"\n    finding: {f}" for f in run.tally.findings[:5]))
        stray = [t for t in tracebacks if not any(t in r.tracebacks for r in batch)]
        if stray:  # a traceback no service of the batch names: every run of the batch owns it
            for run in batch:
                run.tracebacks += stray

    async def batch(ident: Identity, local: tuple[Node, str] | None) -> list[Run]:
        services = list(TLS_SERVICES)
        jobs = [fuzz_tls(serve[s].addr, root_pem, ident, s, count, seed, pool, big) for s in services]
        if local is not None:
            services.append("LocalAPI")
            jobs.append(fuzz_local(local[0], local[1], count, seed, pool, big))
        tallies = await asyncio.gather(*jobs)
        return [Run(s, ident.name, t) for s, t in zip(services, tallies, strict=True)]

    nocert = []
    for service in TLS_SERVICES:
        tally = asyncio.run(no_cert(serve[service].addr, root_pem, service, max(4, count // 100)))
        run = Run(service, "no-cert", tally)
        if set(tally.codes) != {"UNAVAILABLE"}:
            run.problems.append(f"a client without a certificate got past TLS: {tally.codes}")
        tally.findings = []  # UNAVAILABLE is the refusal expected here
        nocert.append(run)
    check(nocert, None)
    # Garbage below gRPC, on connections past TLS: the joiner's and the worker's.
    check([Run("HTTP/2", i.name, raw_h2_garbage(leader.addr, i, max(6, count // 50), seed)) for i in idents[:2]], None)
    check([Run("LocalAPI", "non-root", non_root_local(leader, max(2, count // 500)))], None)
    # The callers that may not write: the joiner, then the worker (its certificate, and root on its node).
    before = snapshot(leader)
    check(asyncio.run(batch(idents[0], None)), before)
    before = snapshot(leader, worker.node_id)
    check(asyncio.run(batch(idents[1], (worker, "worker"))), before, worker.node_id)
    # A manager (its certificate, and root on the leader) may write: ``still_works`` checks the swarm after.
    check(asyncio.run(batch(idents[2], (leader, "manager"))), None)
    return runs


def still_works(cluster: Cluster) -> list[str]:
    """After the manager's fuzzing (its writes are allowed): the listings answer and a write succeeds."""
    problems = []
    leader = cluster.leader()
    for args in (("node", "ls"), ("secret", "ls"), ("service", "ls")):
        p = leader.cli(*args)
        if p.returncode != 0 or "Traceback" in p.stderr:
            problems.append(f"`{' '.join(args)}` failed: {p.stderr.strip()[:500]}")
    p = leader.cli("secret", "create", "after_fuzz", "-", input="x")
    if p.returncode != 0:
        problems.append(f"`secret create` after fuzzing failed: {p.stderr.strip()[:500]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.security.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="calls per service and identity")
    ap.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs) afterwards")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed}, {args.count} calls per service and identity", flush=True)
    root = Path(tempfile.mkdtemp(prefix="swarmsecrets-fuzz-"))
    cluster = Cluster(root, managers=3, workers=1)
    t0 = time.monotonic()
    try:
        cluster.start()
        runs = run_all(cluster, args.count, seed, report=lambda s: print(s, flush=True))
        after = still_works(cluster)
    finally:
        cluster.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    total = sum(r.tally.sent for r in runs)
    print(f"{total} calls in {time.monotonic() - t0:.0f} s; seed {seed}")
    bad = [r for r in runs if r.problems or r.tally.findings or r.tracebacks]
    for p in after:
        print("after:", p)
    if bad or after:
        print(f"FAILED: {len(bad)} service/identity runs with findings (seed {seed})")
        return 1
    print("no crash, no hang, no unclear status, no unauthorized write, no traceback")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
