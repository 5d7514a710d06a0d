"""Typed errors: one kind per condition, plain data on the raft log, and the same type again after
a real gRPC round trip (status, message, kind in trailing metadata)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from swarmsecrets import errors, rpcutil, wire

ALL_KINDS = sorted(errors.KINDS)


def test_errors_and_wire_import_no_transport() -> None:
    code = ("import sys, swarmsecrets.errors, swarmsecrets.wire; "
            "sys.exit(1 if any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_survives_the_raft_log(kind: str) -> None:
    err = errors.KINDS[kind]("some text")
    back = errors.from_wire(*errors.to_wire(err))
    assert type(back) is type(err) and back.message == "some text" and back.code is err.code


def test_raft_log_wire_form_is_the_class_name() -> None:
    # Members of different versions read each other's results: the form is (class name, message).
    assert errors.to_wire(errors.NotFound("secret x not found")) == ("NotFound", "secret x not found")
    assert errors.to_wire(errors.node_removed("n1")) == ("NodeRemoved",
                                                         "Permission denied: node n1 was removed from swarm")


def test_unknown_kind_becomes_a_plain_swarm_error() -> None:
    err = errors.from_wire("SomethingNewer", "text")
    assert type(err) is errors.SwarmError and err.message == "text" and err.code is errors.Code.UNKNOWN


def test_conditions_keep_docker_texts_and_their_family() -> None:
    assert isinstance(errors.NoLeader(), errors.Unavailable) and errors.NoLeader().message == errors.NO_LEADER
    assert isinstance(errors.SwarmLocked(), errors.FailedPrecondition) and str(errors.SwarmLocked()) == errors.LOCKED
    assert errors.NotInSwarm().message == errors.NOT_IN_SWARM
    assert errors.NotAManager().message == errors.NOT_A_MANAGER
    assert errors.UpdateOutOfSequence().message == errors.UPDATE_OUT_OF_SEQUENCE
    assert isinstance(errors.node_removed("n"), errors.PermissionDenied)


def test_every_kind_has_its_own_status() -> None:
    for kind in errors.KINDS.values():
        assert rpcutil.status_code(kind("x")).name == kind.code.name


# --- a real gRPC server and client ------------------------------------------------------------------

class _Service:
    def __init__(self, fail: Callable[[], BaseException]) -> None:
        self.fail = fail

    @rpcutil.rpc
    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise self.fail()

    @rpcutil.rpc
    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        raise self.fail()


async def _call(fail: Callable[[], BaseException], streaming: bool) -> grpc.aio.AioRpcError:
    svc = _Service(fail)
    handler = grpc.method_handlers_generic_handler("test.T", {
        "Unary": grpc.unary_unary_rpc_method_handler(svc.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(svc.stream),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                if streaming:
                    call = ch.unary_stream("/test.T/Stream")(b"", timeout=10)
                    assert await call.read() == b"first"
                    await call.read()
                else:
                    await ch.unary_unary("/test.T/Unary")(b"", timeout=10)
            except grpc.aio.AioRpcError as e:
                return e
            raise AssertionError("the call succeeded")
    finally:
        await server.stop(None)


def _roundtrip(fail: Callable[[], BaseException], streaming: bool = False) -> grpc.aio.AioRpcError:
    return asyncio.run(_call(fail, streaming))


@pytest.mark.parametrize("streaming", [False, True])
def test_node_removed_crosses_grpc_as_its_type_with_docker_text(streaming: bool) -> None:
    e = _roundtrip(lambda: errors.node_removed("abc"), streaming)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.details() == "Permission denied: node abc was removed from swarm"
    assert rpcutil.error_kind(e) == "NodeRemoved"
    err = rpcutil.error_from_rpc(e)
    assert isinstance(err, errors.NodeRemoved) and err.message == e.details()


def test_not_leader_names_the_leader() -> None:
    e = _roundtrip(lambda: errors.NotLeader(leader="10.0.0.1:2377"))
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(e.trailing_metadata() or ())[wire.LEADER_METADATA] == "10.0.0.1:2377"
    err = rpcutil.error_from_rpc(e)
    assert isinstance(err, errors.NotLeader) and err.leader == "10.0.0.1:2377"


@pytest.mark.parametrize("kind", ["InvalidArgument", "NoLeader", "SwarmLocked", "UpdateOutOfSequence",
                                  "DeadlineExceeded"])
def test_typed_errors_round_trip(kind: str) -> None:
    e = _roundtrip(lambda: errors.KINDS[kind]("msg"))
    assert e.code().name == errors.KINDS[kind].code.name
    err = rpcutil.error_from_rpc(e)
    assert type(err) is errors.KINDS[kind] and err.message == "msg"


@pytest.mark.parametrize("streaming", [False, True])
def test_an_unexpected_exception_is_internal_and_not_leaked(streaming: bool) -> None:
    e = _roundtrip(lambda: RuntimeError("secret internals"), streaming)
    assert e.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (e.details() or "")
    assert isinstance(rpcutil.error_from_rpc(e), errors.Internal)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_file_that_finds_no_room_is_one_clear_line(streaming: bool) -> None:
    """A key or node-state write on a full disk: UNAVAILABLE and what to do, not an internal error;
    the probe beside it (another OSError) stays internal."""
    e = _roundtrip(lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/keys/keys.json"), streaming)
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert e.details() == ("cannot persist: no space left on device (writing /data/keys/keys.json) on this node: "
                           "free space on its data disk, then retry")
    assert isinstance(rpcutil.error_from_rpc(e), errors.StorageFull)
    other = _roundtrip(lambda: OSError(errno.EIO, os.strerror(errno.EIO), "/data/keys/keys.json"), streaming)
    assert other.code() == grpc.StatusCode.INTERNAL


def test_a_transport_failure_has_no_kind() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def dial_nothing() -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                await ch.unary_unary("/test.T/Unary")(b"", timeout=5)
            except grpc.aio.AioRpcError as e:
                return e
        raise AssertionError("the call succeeded")

    e = asyncio.run(dial_nothing())
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert rpcutil.error_kind(e) is None
    assert type(rpcutil.error_from_rpc(e)) is errors.Unavailable


def test_untyped_status_keeps_its_code_class() -> None:
    class Bare(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.NOT_FOUND

        def details(self) -> str:
            return "gone"

        def trailing_metadata(self) -> Any:
            return ()

    err = rpcutil.error_from_rpc(Bare())
    assert type(err) is errors.NotFound and err.message == "gone"
