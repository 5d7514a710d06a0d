"""The local API: the CLI and its own daemon, over a unix socket only root (and ``--group``) may open.

Two halves. ``NodeOperations`` is what the node offers (init, join, leave, unlock, info), in plain
typed values that know nothing of the transport; the daemon implements it. ``LocalAPI`` carries
it: HTTP/1.1 with protobuf bodies on the unix socket (the wire format is swarmsecrets/localhttp.py),
serving the Swarm service and the Control service the wiring hands in, so the CLI's
secret/service/node commands reach the local manager. A different transport replaces ``LocalAPI``
alone; neither the node nor the CLI commands change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import Message

from swarmsecrets import audit, errors, wire
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, swarm_pb2, swarm_pb2_grpc
from swarmsecrets.localhttp import (
    CONTENT_TYPE,
    ERROR_CONTENT_TYPE,
    FRAME,
    FRAME_ERROR,
    FRAME_MESSAGE,
    MAX_HEAD,
    MAX_REQUEST,
    PATH_PREFIX,
    REASONS,
    Status,
    encode_error,
)
from swarmsecrets.metrics import Metrics
from swarmsecrets.node.config import socket_group_id
from swarmsecrets.rpcutil import rpc
from swarmsecrets.validation import escape_nonprintable

log = logging.getLogger(__name__)

# --- the interface ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitOptions:
    advertise_addr: str
    listen_addr: str = ""  # "" means the advertised address
    raft_addr: str = ""    # "" means the advertised host on the next port
    autolock: bool = False
    availability: str = ""  # active | pause | drain; "" means active
    force_new_cluster: bool = False
    restore_path: str = ""  # a backup file to start the swarm from, and the key that opens it
    restore_key: str = ""


@dataclass(frozen=True)
class Initialized:
    node_id: str
    worker_join_command: str
    unlock_key: str = ""  # only with autolock


@dataclass(frozen=True)
class JoinOptions:
    remote_addr: str
    join_token: str
    advertise_addr: str = ""
    listen_addr: str = ""
    raft_addr: str = ""
    availability: str = ""  # active | pause | drain; "" means active


@dataclass(frozen=True)
class Joined:
    node_id: str
    role: str


@dataclass(frozen=True)
class Backedup:
    path: str
    applied_index: int
    backup_key: str  # "" when the swarm's unlock key opens the file
    secrets: int
    nodes: int


@dataclass(frozen=True)
class RaftMemberInfo:
    node_id: str
    raft_addr: str
    addr: str
    leader: bool
    reachable: bool


@dataclass(frozen=True)
class ClusterInfo:
    """A manager's view of the cluster's settings and of raft (durations in seconds)."""

    task_history_limit: int
    snapshot_interval: int
    keep_old_snapshots: int
    raft_heartbeat: float
    raft_election_min: float
    raft_election_max: float
    dispatcher_heartbeat: float
    cert_expiry: int
    autolock: bool
    root_rotation_in_progress: bool
    raft_term: int
    raft_leader: str  # node ID; "" when none is known
    commit_index: int
    applied_index: int
    snapshot_index: int
    raft_members: tuple[RaftMemberInfo, ...]


@dataclass(frozen=True)
class NodeInfo:
    local_node_state: str  # "inactive" | "active" | "locked", as Docker's LocalNodeState
    node_id: str = ""
    cluster_id: str = ""
    control_available: bool = False
    node_addr: str = ""
    remote_managers: tuple[str, ...] = ()
    nodes: int = 0
    managers: int = 0
    error: str = ""  # with local_node_state "error": why, and what to do
    cluster: ClusterInfo | None = None  # managers only


class NodeOperations(Protocol):
    """What the CLI may ask of its node. Errors are ``errors.SwarmError`` with the user's message."""

    async def init(self, options: InitOptions) -> Initialized: ...

    async def join(self, options: JoinOptions) -> Joined: ...

    async def leave(self, force: bool) -> None: ...

    async def unlock(self, unlock_key: str) -> None: ...

    async def backup(self, path: str) -> Backedup: ...

    def info(self) -> NodeInfo: ...


# --- the services: messages in, node operations, messages out ------------------------------------------

class SwarmService(swarm_pb2_grpc.SwarmServicer):
    """The Swarm service: messages in, node operations, messages out."""

    def __init__(self, node: NodeOperations) -> None:
        self.node = node

    @rpc
    async def Init(self, request: swarm_pb2.InitRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.InitResponse:
        done = await self.node.init(InitOptions(advertise_addr=request.advertise_addr, listen_addr=request.listen_addr,
                                                raft_addr=request.raft_addr, autolock=request.autolock,
                                                availability=request.availability,
                                                force_new_cluster=request.force_new_cluster,
                                                restore_path=request.restore_path,
                                                restore_key=request.restore_key))
        return swarm_pb2.InitResponse(node_id=done.node_id, worker_join_command=done.worker_join_command,
                                      unlock_key=done.unlock_key)

    @rpc
    async def Join(self, request: swarm_pb2.JoinRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.JoinResponse:
        done = await self.node.join(JoinOptions(
            remote_addr=request.remote_addr, join_token=request.join_token, advertise_addr=request.advertise_addr,
            listen_addr=request.listen_addr, raft_addr=request.raft_addr, availability=request.availability))
        return swarm_pb2.JoinResponse(node_id=done.node_id, role=done.role)

    @rpc
    async def Leave(self, request: swarm_pb2.LeaveRequest,
                    context: grpc.aio.ServicerContext) -> swarm_pb2.LeaveResponse:
        await self.node.leave(request.force)
        return swarm_pb2.LeaveResponse()

    @rpc
    async def Unlock(self, request: swarm_pb2.UnlockRequest,
                     context: grpc.aio.ServicerContext) -> swarm_pb2.UnlockResponse:
        await self.node.unlock(request.unlock_key)
        return swarm_pb2.UnlockResponse()

    @rpc
    async def Backup(self, request: swarm_pb2.BackupRequest,
                     context: grpc.aio.ServicerContext) -> swarm_pb2.BackupResponse:
        done = await self.node.backup(request.path)
        return swarm_pb2.BackupResponse(path=done.path, applied_index=done.applied_index, backup_key=done.backup_key,
                                        secrets=done.secrets, nodes=done.nodes)

    @rpc
    async def Info(self, request: swarm_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.InfoResponse:
        i = self.node.info()
        resp = swarm_pb2.InfoResponse(
            local_node_state=i.local_node_state, node_id=i.node_id, cluster_id=i.cluster_id,
            control_available=i.control_available, node_addr=i.node_addr, remote_managers=list(i.remote_managers),
            nodes=i.nodes, managers=i.managers, error=i.error)
        c = i.cluster
        if c is not None:
            fields = {k: v for k, v in vars(c).items() if k != "raft_members"}
            resp.MergeFrom(swarm_pb2.InfoResponse(**fields, raft_members=[
                swarm_pb2.RaftMember(node_id=m.node_id, raft_addr=m.raft_addr, addr=m.addr, leader=m.leader,
                                     reachable=m.reachable) for m in c.raft_members]))
        return resp


# --- the transport: HTTP/1.1 on a unix socket ------------------------------------------------------------

_UCRED = struct.Struct("3i")  # pid, uid, gid: what SO_PEERCRED gives for the connecting process


class _Aborted(grpc.aio.AbortError):  # type: ignore[misc]
    """A call ended with a status (raised by ``_Call.abort``, as gRPC's own abort raises)."""

    def __init__(self, status: Status, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class _Call:
    """What a servicer method sees of a call on the unix socket: the few ``ServicerContext`` methods
    the servicers use. There is no certificate here; the peer is the uid the kernel gave."""

    def __init__(self, uid: int, start_stream: Callable[[], None] | None = None) -> None:
        self.uid = uid
        self._start_stream = start_stream
        self._code: grpc.StatusCode | None = None
        self._trailing: dict[str, str] = {}

    def peer(self) -> str:
        return f"uid:{self.uid}"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def send_initial_metadata(self, metadata: Any) -> None:
        """A stream's answer starts now (a followed stream may have nothing to send for a while)."""
        if self._start_stream is not None:
            self._start_stream()

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailing.update(metadata)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        """Raises at once, so that both ``await context.abort(...)`` (an async servicer) and a plain
        call (a synchronous one) end the call here."""
        self._code = code
        kind = {**self._trailing, **dict(trailing_metadata or ())}.get(wire.ERROR_KIND_METADATA, "")
        raise _Aborted(Status.__members__.get(code.name, Status.UNKNOWN), kind, details)


@dataclass(frozen=True)
class _Method:
    full_name: str  # "/swarmsecrets.v1.Control/CreateSecret": the method as metrics and logs name it
    name: str
    request_type: type[Message]
    streaming: bool
    behavior: Callable[[Any, Any], Any]  # the servicer's bound method: async (the daemon's) or not (tests' fakes)
    writes: bool  # a Control write: audited


def _methods(module: Any, service_name: str, servicer: Any) -> dict[str, _Method]:
    service = module.DESCRIPTOR.services_by_name[service_name]
    table = {}
    for m in service.methods:
        full = f"/{service.full_name}/{m.name}"
        table[f"{PATH_PREFIX}{service_name}/{m.name}"] = _Method(
            full, m.name, getattr(module, m.input_type.name), m.server_streaming, getattr(servicer, m.name),
            audit.is_write(full))
    return table


class _BadRequest(Exception):
    """A request this server cannot read: answered with one line, then the connection closes."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _parse_head(head: bytes) -> tuple[str, int, bool]:
    """(path, body length, keep the connection) of a request head; _BadRequest when it is not one
    this server serves."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest(Status.INVALID_ARGUMENT, "malformed request: not an HTTP/1.1 request line")
    if parts[0] != b"POST":
        raise _BadRequest(Status.UNIMPLEMENTED, f"method {_shown(parts[0])} is not served: "
                                                f"POST {PATH_PREFIX}<Service>/<Method>")
    length: int | None = None
    keep = parts[2] == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _BadRequest(Status.INVALID_ARGUMENT, "malformed request: a header line without a colon")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit() or length is not None:
                raise _BadRequest(Status.INVALID_ARGUMENT, "malformed request: bad Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            raise _BadRequest(Status.INVALID_ARGUMENT, "malformed request: the body must have a Content-Length")
        elif name == b"connection":
            keep = value.lower() != b"close"
    if length is None:
        raise _BadRequest(Status.INVALID_ARGUMENT, "malformed request: no Content-Length")
    if length > MAX_REQUEST:
        raise _BadRequest(Status.RESOURCE_EXHAUSTED,
                          f"request of {length} bytes is larger than the limit of {MAX_REQUEST} bytes")
    return parts[1].decode("latin-1"), length, keep


def _shown(raw: bytes) -> str:
    """Bytes of a request, quoted in an answer: printable and short."""
    return escape_nonprintable(raw[:80].decode("utf-8", "replace"))


def _answer(status: Status, content_type: str, body: bytes, close: bool = False) -> bytes:
    closing = "Connection: close\r\n" if close else ""
    return (f"HTTP/1.1 {status.value} {REASONS[status.value]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{closing}\r\n").encode() + body


def _error_answer(status: Status, kind: str, message: str, close: bool = False) -> bytes:
    return _answer(status, ERROR_CONTENT_TYPE, encode_error(status, kind, message), close)


_STREAM_HEAD = (f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
_STREAM_END = b"0\r\n\r\n"


def _frame(flag: int, payload: bytes) -> bytes:
    size = FRAME.size + len(payload)
    return b"%x\r\n" % size + FRAME.pack(flag, len(payload)) + payload + b"\r\n"


def _created_id(response: Any) -> str:
    for name in ("secret", "service"):
        if name in response.DESCRIPTOR.fields_by_name and response.HasField(name):
            return str(getattr(response, name).id)
    return ""


class _Connection:
    """One client connection: requests one after another, each answered before the next is read."""

    def __init__(self, api: LocalAPI, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.api, self.reader, self.writer = api, reader, writer
        sock: socket.socket = writer.get_extra_info("socket")
        _, self.uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        self.busy = False

    async def serve(self) -> None:
        try:
            while not self.api.stopping:
                try:
                    head = await self.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                except asyncio.LimitOverrunError:
                    raise _BadRequest(Status.INVALID_ARGUMENT,
                                      f"malformed request: a request head over {MAX_HEAD} bytes") from None
                self.busy = True
                path, length, keep = _parse_head(head)
                body = await self.reader.readexactly(length)
                if not await self.answer(path, body) or not keep:
                    return
                self.busy = False
        except _BadRequest as e:
            self.writer.write(_error_answer(e.status, "", e.message, close=True))
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.debug("local API connection ended: %s", e)
        finally:
            with contextlib.suppress(ConnectionError):
                if not self.writer.is_closing():
                    await self.writer.drain()
            self.writer.close()

    async def answer(self, path: str, body: bytes) -> bool:
        """Serve one request; False when the connection is to close after it."""
        method = self.api.methods.get(path)
        if method is None:
            self.writer.write(_error_answer(Status.UNIMPLEMENTED, "", f"unknown method {_shown(path.encode())}"))
            return True
        try:
            request = method.request_type.FromString(body)
        except Exception:  # DecodeError, or whatever else the parser raises on bytes it cannot read
            message = f"malformed request: not a valid message for {method.full_name}"
            self.writer.write(_error_answer(Status.INVALID_ARGUMENT, errors.InvalidArgument.__name__, message))
            return True
        if method.streaming:
            return await self._stream(method, request)
        await self._unary(method, request)
        return True

    async def _unary(self, method: _Method, request: Message) -> None:
        started = time.monotonic()
        response: Message | None = None
        result = "CANCELLED"  # unless the call ends: the daemon stopping cuts it short
        try:
            answered = method.behavior(request, _Call(self.uid))
            response = await answered if inspect.isawaitable(answered) else answered
            assert response is not None
            result = "OK"
            self.writer.write(_answer(Status.OK, CONTENT_TYPE, response.SerializeToString()))
        except _Aborted as e:
            result = e.status.name
            self.writer.write(_error_answer(e.status, e.kind, e.message))
        except Exception:  # a servicer method that lets something through: logged here, one line there
            log.exception("%s failed", method.full_name)
            result = Status.INTERNAL.name
            message = f"internal error in {method.name}; see the daemon log"
            self.writer.write(_error_answer(Status.INTERNAL, "", message))
        finally:
            self.api.record(method, result, time.monotonic() - started)
            if method.writes:
                audit.control_write(f"uid:{self.uid}", method.name, request, result,
                                    _created_id(response) if response is not None else "")
        if self.writer.transport.get_write_buffer_size() > 1 << 20:
            await self.writer.drain()

    async def _stream(self, method: _Method, request: Message) -> bool:
        """Serve a stream until it ends or the client goes away (it sends nothing while it reads one, so
        any byte or the end of its side means it left)."""
        pump = asyncio.ensure_future(self._pump(method, request))
        gone = asyncio.ensure_future(self.reader.read(1))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
        if pump.cancelled() or pump.exception() is not None:
            if not pump.cancelled() and not isinstance(pump.exception(), ConnectionError):
                log.error("%s: stream failed", method.full_name, exc_info=pump.exception())
            self.api.record(method, "CANCELLED", None)
            return False
        self.api.record(method, pump.result(), None)
        return True

    async def _pump(self, method: _Method, request: Message) -> str:
        started = False

        def start() -> None:
            nonlocal started
            if not started:
                started = True
                self.writer.write(_STREAM_HEAD)

        call = _Call(self.uid, start)
        try:
            async with contextlib.aclosing(method.behavior(request, call)) as messages:
                async for message in messages:
                    start()
                    self.writer.write(_frame(FRAME_MESSAGE, message.SerializeToString()))
                    await self.writer.drain()
        except _Aborted as e:
            failed = e
        except ConnectionError:  # the client left: nothing to answer
            raise
        except Exception:  # a servicer method that lets something through: logged here, one line there
            log.exception("%s failed", method.full_name)
            failed = _Aborted(Status.INTERNAL, "", f"internal error in {method.name}; see the daemon log")
        else:
            start()
            self.writer.write(_STREAM_END)
            return "OK"
        if started:
            self.writer.write(_frame(FRAME_ERROR, encode_error(failed.status, failed.kind, failed.message))
                              + _STREAM_END)
        else:
            self.writer.write(_error_answer(failed.status, failed.kind, failed.message))
        return failed.status.name


class LocalAPI:
    """Serves the Swarm service (``SwarmService`` of the node) and the local control service on
    ``socket_path``, a socket born 0600; with ``group`` (dockerd's ``-G``) it is then handed to that
    group, 0660."""

    def __init__(self, socket_path: str, swarm: swarm_pb2_grpc.SwarmServicer,
                 control: control_pb2_grpc.ControlServicer, metrics: Metrics | None = None, group: str = "") -> None:
        """``metrics``: where calls are counted and timed; ``group``: the group whose members may use the
        socket besides root."""
        self.path = socket_path
        self.group = group
        self.metrics = metrics
        self.methods = {**_methods(swarm_pb2, "Swarm", swarm), **_methods(control_pb2, "Control", control)}
        self.stopping = False
        # The metric series by method (and code): a series' child is looked up once, not per call.
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}

    def record(self, method: _Method, result: str, seconds: float | None) -> None:
        """Count a finished call (the series the TLS port's calls use, by full method name); time a unary one."""
        if self.metrics is None:
            return
        counted = self._counted.get((method.full_name, result))
        if counted is None:
            counted = self._counted[method.full_name, result] = self.metrics.grpc_calls.labels(method.full_name, result)
        counted.inc()
        if seconds is not None:
            timed = self._timed.get(method.full_name)
            if timed is None:
                timed = self._timed[method.full_name] = self.metrics.grpc_seconds.labels(method.full_name)
            timed.observe(seconds)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = conn
        try:
            await conn.serve()
        except asyncio.CancelledError:
            pass  # stop() ended the connection; the task ends quietly (asyncio logs a cancelled one)
        finally:
            del self._connections[task]

    async def start(self) -> None:
        """Listen on the socket; ``errors.ListenFailed`` (Go's text, as dockerd's) when another daemon
        serves it, or something that is not a socket is in its place."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:  # a file where the directory should be
            raise errors.listen_failed("unix", self.path, OSError(errno.ENOTDIR, "")) from None
        except OSError as e:
            raise errors.listen_failed("unix", self.path, e) from None
        if _served(self.path):
            raise errors.listen_failed("unix", self.path, OSError(errno.EADDRINUSE, ""))
        try:
            if os.path.exists(self.path):  # a stale socket of an earlier run
                os.unlink(self.path)
        except OSError as e:
            raise errors.listen_failed("unix", self.path, e) from None
        old_umask = os.umask(0o177)  # born 0600: only root's CLI may connect
        try:
            self._server = await asyncio.start_unix_server(self._accepted, self.path, limit=MAX_HEAD)
        except OSError as e:
            raise errors.listen_failed("unix", self.path, e) from None
        finally:
            os.umask(old_umask)
        if self.group:
            os.chown(self.path, -1, socket_group_id(self.group))
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting; calls under way get ``grace`` seconds to finish, then their connections close
        (a client retries a write cut short, with its request id)."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._connections)
        busy = [task for task, conn in self._connections.items() if conn.busy]
        for task, conn in self._connections.items():
            if not conn.busy:
                task.cancel()
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if os.path.exists(self.path):
            os.unlink(self.path)


def _served(path: str) -> bool:
    """Whether ``path`` is a socket some process accepts on, or anything else that is not a socket:
    neither may be replaced. A socket nobody serves is a stale one."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return True
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)  # a listener with a full backlog keeps a connect waiting: it is served all the same
        try:
            s.connect(path)
        except TimeoutError:
            return True
        except OSError:
            return False
    return True

