"""A client of a daemon's local API (the wire format is swarmsecrets/localhttp.py): the protobuf services'
methods by their names, ``LocalClient(path).control.CreateSecret(request, timeout=5)``.

No gRPC and no http.client: a CLI command pays for the socket module and the messages it sends. A
client is safe to share between threads: each call takes an idle kept-alive connection or opens one.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import DecodeError, Message

from swarmsecrets import errors
from swarmsecrets.localhttp import (
    CONTENT_TYPE,
    FRAME,
    FRAME_ERROR,
    FRAME_MESSAGE,
    MAX_HEAD,
    PATH_PREFIX,
    Status,
    decode_error,
    typed_error,
)


class LocalError(Exception):
    """A call that failed: its status, the one-line message, and the daemon's error kind ("" when the
    transport failed the call: no daemon, a lost connection, a deadline). ``reached``: False when no
    connection could be made, so the daemon certainly never saw the request."""

    def __init__(self, code: Status, message: str, kind: str = "", reached: bool = True) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.kind = kind
        self.reached = reached

    def error(self) -> errors.SwarmError:
        """The typed error the daemon raised (or its status's base class)."""
        return typed_error(self.code, self.kind, self.message)


class _Connection:
    def __init__(self, path: str, timeout: float | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            reason = os.strerror(e.errno).lower() if e.errno else str(e)
            raise LocalError(Status.UNAVAILABLE, f"failed to connect to unix:{path}: {reason}",
                             reached=False) from None
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        """The response's status and headers (names lower-cased)."""
        line = self.file.readline(MAX_HEAD)
        if not line:
            raise ConnectionResetError("the daemon closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ConnectionResetError(f"not an HTTP response: {line[:80]!r}")
        headers: dict[bytes, bytes] = {}
        while (line := self.file.readline(MAX_HEAD)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def exactly(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise ConnectionResetError("the daemon closed the connection mid-answer")
        return data

    def chunks(self) -> Iterator[bytes]:
        """A chunked body's chunks, until the last (empty) one."""
        while True:
            size = int(self.file.readline(MAX_HEAD).split(b";", 1)[0], 16)
            if size == 0:
                self.file.readline(MAX_HEAD)
                return
            chunk = self.exactly(size)
            self.exactly(2)
            yield chunk


class LocalClient:
    """The daemon at ``socket_path``: ``.swarm`` and ``.control``, the Swarm and Control services."""

    def __init__(self, socket_path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(socket_path)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._services: dict[str, Service] = {}

    @property
    def swarm(self) -> Service:
        return self._service("Swarm")

    @property
    def control(self) -> Service:
        return self._service("Control")

    def _service(self, name: str) -> Service:
        service = self._services.get(name)
        if service is None:
            service = self._services[name] = Service(self, name)
        return service

    def close(self) -> None:
        """Close the idle connections (a call still under way keeps its own)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one call ------------------------------------------------------------------------------

    def _send(self, path: str, body: bytes, timeout: float | None) -> tuple[_Connection, int, dict[bytes, bytes]]:
        """Send the request and read the answer's head. A kept-alive connection the daemon has closed
        since (it restarted) fails before any answer: the request goes once more on a new one."""
        data = (f"POST {path} HTTP/1.1\r\nHost: swarmsecretsd\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = _Connection(self.path, timeout)
            try:
                conn.sock.settimeout(timeout)
                conn.sock.sendall(data)
                status, headers = conn.head()
                return conn, status, headers
            except TimeoutError:
                conn.close()
                raise LocalError(Status.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            except OSError as e:
                conn.close()
                if not reused:
                    raise LocalError(Status.UNAVAILABLE, f"connection to the daemon lost: {e}") from None

    def _release(self, conn: _Connection, headers: dict[bytes, bytes]) -> None:
        if headers.get(b"connection", b"").lower() == b"close":
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def unary(self, path: str, request: Message, response_type: type[Message], timeout: float | None) -> Any:
        conn, status, headers = self._send(path, request.SerializeToString(), timeout)
        try:
            body = conn.exactly(int(headers.get(b"content-length", b"0")))
        except TimeoutError:
            conn.close()
            raise LocalError(Status.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except (OSError, ValueError) as e:
            conn.close()
            raise LocalError(Status.UNAVAILABLE, f"connection to the daemon lost: {e}") from None
        self._release(conn, headers)
        if status != Status.OK.value:
            raise _error(status, body)
        try:
            return response_type.FromString(body)
        except DecodeError:
            raise LocalError(Status.INTERNAL, f"{path}: the daemon's answer does not parse") from None

    def stream(self, path: str, request: Message, response_type: type[Message],
               timeout: float | None) -> Iterator[Any]:
        conn, status, headers = self._send(path, request.SerializeToString(), timeout)
        done = False
        try:
            if status != Status.OK.value:
                body = conn.exactly(int(headers.get(b"content-length", b"0")))
                done = True
                raise _error(status, body)
            pending = b""
            for chunk in conn.chunks():
                pending += chunk
                while len(pending) >= FRAME.size:
                    flag, size = FRAME.unpack_from(pending)
                    if len(pending) < FRAME.size + size:
                        break
                    payload = pending[FRAME.size:FRAME.size + size]
                    pending = pending[FRAME.size + size:]
                    if flag == FRAME_ERROR:
                        raise _error(0, payload)
                    if flag == FRAME_MESSAGE:
                        yield response_type.FromString(payload)
            done = True
        except TimeoutError:
            raise LocalError(Status.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except (OSError, ValueError, DecodeError) as e:
            raise LocalError(Status.UNAVAILABLE, f"connection to the daemon lost: {e}") from None
        finally:
            if done:  # the answer was read to its end: the connection may serve another call
                self._release(conn, headers)
            else:  # left mid-stream (an error, or the caller stopped reading)
                conn.close()


def _error(status: int, body: bytes) -> LocalError:
    try:
        code, kind, message = decode_error(body)
    except ValueError:
        code = next((s for s in Status if s.value == status), Status.UNKNOWN)
        message = body.decode(errors="replace").strip() or code.name
        kind = ""
    return LocalError(code, message, kind)


class Method:
    """One method of a service: call it with the request (and ``timeout`` in seconds, None for none);
    a unary method returns its response, a streaming one an iterator of them."""

    def __init__(self, client: LocalClient, path: str, response_type: type[Message], streaming: bool) -> None:
        self._client = client
        self.path = path
        self.response_type = response_type
        self.streaming = streaming

    def __call__(self, request: Message, timeout: float | None = None) -> Any:
        if self.streaming:
            return self._client.stream(self.path, request, self.response_type, timeout)
        return self._client.unary(self.path, request, self.response_type, timeout)


class Service:
    """A protobuf service's methods as attributes, from its descriptor."""

    def __init__(self, client: LocalClient, name: str) -> None:
        self._client = client
        self._name = name
        self._methods: dict[str, Method] = {}

    def __getattr__(self, name: str) -> Method:
        methods = self.__dict__["_methods"]
        method = methods.get(name)
        if method is None:
            desc = _descriptor(self._name).methods_by_name.get(name)
            if desc is None:
                raise AttributeError(f"the {self._name} service has no method {name}")
            response_type = _message_class(self._name, desc.output_type.name)
            method = methods[name] = Method(self._client, f"{PATH_PREFIX}{self._name}/{name}", response_type,
                                            desc.server_streaming)
        return method


def _module(service: str) -> Any:
    # Imported on first use: a command pays only for the service it calls.
    if service == "Swarm":
        from swarmsecrets.api.v1 import swarm_pb2
        return swarm_pb2
    from swarmsecrets.api.v1 import control_pb2
    return control_pb2


def _descriptor(service: str) -> Any:
    return _module(service).DESCRIPTOR.services_by_name[service]


def _message_class(service: str, name: str) -> type[Message]:
    cls: type[Message] = getattr(_module(service), name)
    return cls
