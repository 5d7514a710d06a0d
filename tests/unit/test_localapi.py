"""The local API: CLI requests on the unix socket reach the node operations as plain values, and
the node's answers and errors come back as the CLI expects them. The real server on a real socket,
the real client (in a thread: it blocks); the node behind it is a small recorder implementing
NodeOperations."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pytest

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2, swarm_pb2
from swarmsecrets.client import LocalClient, LocalError, Status
from swarmsecrets.rpcutil import rpc
from swarmsecrets.node.localapi import (
    InitOptions,
    Initialized,
    JoinOptions,
    Joined,
    LocalAPI,
    NodeInfo,
    NodeOperations,
    SwarmService,
)


class RecordingNode:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse: Exception | None = None  # raised by the next calls

    def _record(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.refuse is not None:
            raise self.refuse

    async def init(self, options: InitOptions) -> Initialized:
        self._record("init", options)
        return Initialized(node_id="n1", worker_join_command="swarmsecrets swarm join --token T 10.0.0.1:2377",
                           unlock_key="SWMKEY-1-abc")

    async def join(self, options: JoinOptions) -> Joined:
        self._record("join", options)
        return Joined(node_id="n2", role="worker")

    async def leave(self, force: bool) -> None:
        self._record("leave", force)

    async def unlock(self, unlock_key: str) -> None:
        self._record("unlock", unlock_key)

    def info(self) -> NodeInfo:
        self._record("info", None)
        return NodeInfo(local_node_state="active", node_id="n1", cluster_id="c1", control_available=True,
                        node_addr="10.0.0.1", remote_managers=("10.0.0.1:2377", "10.0.0.2:2377"), nodes=3, managers=2)


async def _operations(tmp_path: Path) -> None:
    """Every operation once, a refusal, and a node bug."""
    node = RecordingNode()
    path = tmp_path / "run" / "swarmsecrets.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as stale:  # a socket a crashed run left, served by nobody, is replaced
        stale.bind(str(path))
    served: NodeOperations = node  # the recorder implements the interface (mypy checks it)
    api = LocalAPI(str(path), SwarmService(served), control_pb2_grpc.ControlServicer())
    await api.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
        stub = LocalClient(path).swarm

        async def call(method: Any, request: Any) -> Any:
            return await asyncio.to_thread(method, request, 10)

        r = await call(stub.Init, swarm_pb2.InitRequest(advertise_addr="10.0.0.1:2377", raft_addr="10.0.0.1:7000",
                                                        autolock=True, availability="drain"))
        assert (r.node_id, r.worker_join_command, r.unlock_key) == (
            "n1", "swarmsecrets swarm join --token T 10.0.0.1:2377", "SWMKEY-1-abc")
        j = await call(stub.Join, swarm_pb2.JoinRequest(remote_addr="10.0.0.1", join_token="SWMTKN-1-x",
                                                        advertise_addr="10.0.0.3:2377", listen_addr="0.0.0.0:2377",
                                                        availability="pause"))
        assert (j.node_id, j.role) == ("n2", "worker")
        await call(stub.Leave, swarm_pb2.LeaveRequest(force=True))
        await call(stub.Unlock, swarm_pb2.UnlockRequest(unlock_key="SWMKEY-1-abc"))
        i = await call(stub.Info, swarm_pb2.InfoRequest())
        assert (i.local_node_state, i.node_id, i.cluster_id, i.control_available, i.node_addr,
                list(i.remote_managers), i.nodes, i.managers) == (
            "active", "n1", "c1", True, "10.0.0.1", ["10.0.0.1:2377", "10.0.0.2:2377"], 3, 2)
        assert node.calls == [
            ("init", InitOptions(advertise_addr="10.0.0.1:2377", raft_addr="10.0.0.1:7000", autolock=True,
                                 availability="drain")),
            ("join", JoinOptions(remote_addr="10.0.0.1", join_token="SWMTKN-1-x", advertise_addr="10.0.0.3:2377",
                                 listen_addr="0.0.0.0:2377", availability="pause")),
            ("leave", True), ("unlock", "SWMKEY-1-abc"), ("info", None)]

        node.refuse = errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
        with pytest.raises(LocalError) as e:
            await call(stub.Init, swarm_pb2.InitRequest(advertise_addr="10.0.0.1:2377"))
        assert (e.value.code, e.value.message) == (Status.FAILED_PRECONDITION, errors.ALREADY_IN_SWARM)
        assert type(e.value.error()) is errors.FailedPrecondition

        node.refuse = RuntimeError("a bug in the node")  # the CLI gets one line, never a traceback
        with pytest.raises(LocalError) as e:
            await call(stub.Leave, swarm_pb2.LeaveRequest())
        assert e.value.code is Status.INTERNAL and "see the daemon log" in e.value.message
    finally:
        await api.stop(grace=0)
    assert not path.exists()


def test_requests_reach_the_node_and_answers_come_back(tmp_path: Path) -> None:
    asyncio.run(_operations(tmp_path))


async def _malformed(tmp_path: Path) -> None:
    node = RecordingNode()
    path = tmp_path / "swarmsecrets.sock"
    api = LocalAPI(str(path), SwarmService(node), control_pb2_grpc.ControlServicer())
    await api.start()
    try:
        def exchange(raw: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(path))
                s.sendall(raw)
                return b"".join(iter(lambda: s.recv(65536), b""))

        def post(path_: str, body: bytes) -> bytes:
            return (f"POST {path_} HTTP/1.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    ).encode() + body

        # Bytes, not a message: a field header whose length runs past the end; a string that is not UTF-8.
        for method, raw in (("Swarm/Info", b"\n\x80\x80\x80\x80\x08x"), ("Swarm/Unlock", b"\n\x02\xff\xfe")):
            answer = await asyncio.to_thread(exchange, post(f"/v1/{method}", raw))
            assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(
                b'{"code": "INVALID_ARGUMENT", "kind": "InvalidArgument", "message": "malformed request: '
                b'not a valid message for /swarmsecrets.v1.' + method.encode() + b'"}'), answer
        # What is not a request of this API: one line, nothing else happens.
        for raw, status in ((b"GET / HTTP/1.1\r\n\r\n", b"501"), (b"POST /v1/Swarm/Info HTTP/1.1\r\n\r\n", b"400"),
                            (b"\x16\x03\x01\x02\x00\x01\r\n\r\n", b"400"), (b"POST /v1/Nope/X HTTP/1.1\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n", b"501"),
                            (b"POST /v1/Swarm/Info HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
                            (b"POST /v1/Swarm/Info HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
                            (b"POST /v1/Swarm/Info HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"400")):
            answer = await asyncio.to_thread(exchange, raw)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + status + b" "), answer
            assert b"\n" not in body and json.loads(body)["message"], answer
        assert node.calls == []  # nothing reached the node
        info = await asyncio.to_thread(LocalClient(path).swarm.Info, swarm_pb2.InfoRequest(), 10)
        assert info.node_id == "n1"
    finally:
        await api.stop(grace=0)


def test_a_request_that_does_not_parse_is_invalid_argument(tmp_path: Path) -> None:
    asyncio.run(_malformed(tmp_path))


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "swarmsecrets.sock"
    path.write_text("not ours")

    async def start() -> None:
        await LocalAPI(str(path), SwarmService(RecordingNode()), control_pb2_grpc.ControlServicer()).start()

    with pytest.raises(errors.ListenFailed, match=f"^listen unix {path}: bind: address already in use$"):
        asyncio.run(start())
    assert path.read_text() == "not ours"


class StreamingControl(control_pb2_grpc.ControlServicer):
    """ServiceLogs: two lines, then (``fail``) a typed error, or (``follow``) nothing more until the
    client leaves; ``closed`` is set when the stream's clean-up has run."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    @rpc
    async def ServiceLogs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            await context.send_initial_metadata(())
            for line in (b"one", b"two"):
                yield control_pb2.ServiceLogsMessage(messages=[objects_pb2.LogMessage(data=line)])
            if request.follow:
                await asyncio.Event().wait()
            raise errors.NotFound(f"service {request.service_id} not found")
        finally:
            self.closed.set()


async def _streams(tmp_path: Path) -> None:
    control = StreamingControl()
    path = tmp_path / "swarmsecrets.sock"
    api = LocalAPI(str(path), SwarmService(RecordingNode()), control)
    await api.start()
    client = LocalClient(path)
    try:
        def read_until_error() -> tuple[list[bytes], LocalError]:
            got = []
            try:
                for msg in client.control.ServiceLogs(control_pb2.ServiceLogsRequest(service_id="web"), timeout=10):
                    got.append(msg.messages[0].data)
            except LocalError as e:
                return got, e
            raise AssertionError("the stream ended without its error")

        got, err = await asyncio.to_thread(read_until_error)
        assert (got, err.code, err.message, type(err.error())) == (
            [b"one", b"two"], Status.NOT_FOUND, "service web not found", errors.NotFound)

        def read_one_and_leave() -> bytes:
            messages = client.control.ServiceLogs(control_pb2.ServiceLogsRequest(service_id="web", follow=True))
            first: bytes = next(messages).messages[0].data
            messages.close()  # as `service logs -f` interrupted: the connection closes
            return first

        control.closed.clear()
        assert await asyncio.to_thread(read_one_and_leave) == b"one"
        await asyncio.wait_for(control.closed.wait(), 10)  # the daemon's side of the stream ended too
        info = await asyncio.to_thread(client.swarm.Info, swarm_pb2.InfoRequest(), 10)  # the client goes on
        assert info.node_id == "n1"
    finally:
        client.close()
        await api.stop(grace=0)


def test_a_stream_brings_its_messages_then_its_error_and_ends_when_the_client_leaves(tmp_path: Path) -> None:
    asyncio.run(_streams(tmp_path))
