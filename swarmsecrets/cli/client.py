"""The CLI's connection to the local daemon: one gRPC channel on the unix socket, errors as one line.

Writes carry a fresh request_id and are retried on UNAVAILABLE (daemon restarting, manager still
starting) with the same id, so the manager applies them at most once and a retried create reports
the first outcome instead of a false "already exists". States that waiting cannot fix (a lost quorum,
a locked or inactive node) are reported at once; the daemon has already waited out an ordinary
election before it says there is no leader.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import IO, Any

import click
import grpc

from swarmsecrets import errors, wire
from swarmsecrets.api.v1 import control_pb2_grpc, swarm_pb2_grpc

DEFAULT_HOST = "unix:///run/swarmsecrets/swarmsecrets.sock"
# Per attempt. Joining waits for certificates and the raft log, so the Swarm service gets longer.
CALL_TIMEOUT = 30.0
SWARM_TIMEOUT = 120.0
# How long writes keep retrying UNAVAILABLE: about one daemon restart or leader election.
RETRY_BUDGET = 10.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 1.0
_NOT_TRANSIENT = frozenset({errors.NO_LEADER, errors.LOCKED, errors.NOT_IN_SWARM, errors.NOT_A_MANAGER})


class CLIError(click.ClickException):
    """A one-line message for stderr, exit status 1. Docker prints client-side errors without a prefix."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True)


class DaemonError(CLIError):
    """The daemon refused a request: ``Error response from daemon: <details>``."""

    def __init__(self, details: str) -> None:
        super().__init__(f"Error response from daemon: {details}")


class ConnectError(CLIError):
    def __init__(self, host: str) -> None:
        super().__init__(f"Cannot connect to the swarmsecrets daemon at {host}. Is the daemon running?")


def socket_path(host: str) -> str:
    if not host.startswith("unix://") or len(host) == len("unix://"):
        raise CLIError(f"unsupported host '{host}': expected unix:///path/to/socket")
    return host[len("unix://"):]


def _is_connect_failure(e: grpc.RpcError) -> bool:
    """UNAVAILABLE raised by the channel itself (no daemon), as opposed to one the daemon sent."""
    return e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (e.details() or "")


class Client:
    """Stubs for the daemon's Swarm and Control services; the socket is checked and opened on first use."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._channel: grpc.Channel | None = None
        self._swarm: swarm_pb2_grpc.SwarmStub | None = None
        self._control: control_pb2_grpc.ControlStub | None = None

    def _connect(self) -> grpc.Channel:
        if self._channel is None:
            path = socket_path(self.host)
            if not os.path.exists(path):
                raise ConnectError(self.host)
            self._channel = grpc.insecure_channel(
                f"unix:{path}",
                # Reconnect quickly while a write is being retried against a restarting daemon.
                options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000),
                         ("grpc.max_receive_message_length", wire.LOCAL_MAX_MESSAGE)],
            )
        return self._channel

    @property
    def swarm(self) -> swarm_pb2_grpc.SwarmStub:
        if self._swarm is None:
            self._swarm = swarm_pb2_grpc.SwarmStub(self._connect())
        return self._swarm

    @property
    def control(self) -> control_pb2_grpc.ControlStub:
        if self._control is None:
            self._control = control_pb2_grpc.ControlStub(self._connect())
        return self._control

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _error(self, e: grpc.RpcError) -> CLIError:
        if _is_connect_failure(e):
            return ConnectError(self.host)
        return DaemonError(e.details() or e.code().name)

    def call(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """One attempt of a read (or a Swarm-service call); errors become CLIError."""
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def write(self, method: Any, request: Any) -> Any:
        """A Control write: new request_id, retried on UNAVAILABLE with the same id for RETRY_BUDGET s.

        DEADLINE_EXCEEDED means the write may or may not have happened: say so instead of guessing.
        """
        request.request_id = uuid.uuid4().hex
        deadline = time.monotonic() + RETRY_BUDGET
        delay = _BACKOFF_FIRST
        while True:
            try:
                return method(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CLIError(errors.UNKNOWN_OUTCOME) from None
                transient = code == grpc.StatusCode.UNAVAILABLE and e.details() not in _NOT_TRANSIENT
                if not transient or time.monotonic() + delay > deadline:
                    raise self._error(e) from None
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
