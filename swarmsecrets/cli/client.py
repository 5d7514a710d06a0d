"""The CLI's connection to the local daemon: one gRPC channel on the unix socket, errors as one line.

Writes follow the shared retry policy (swarmsecrets/client/retry.py: same request_id on retry, only
transient failures retried, within a budget); this module turns what is left into the CLI's messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

import click
import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2_grpc, swarm_pb2_grpc
from swarmsecrets.client import DEFAULT_RETRY, RetryPolicy, local_channel, never_connected
from swarmsecrets.validation import escape_nonprintable

DEFAULT_HOST = "unix:///run/swarmsecrets/swarmsecrets.sock"
# Per attempt. Joining waits for certificates and the raft log, so the Swarm service gets longer.
CALL_TIMEOUT = 30.0
SWARM_TIMEOUT = 120.0
# How writes are retried; a module attribute so that a test can shorten the budget.
RETRY: RetryPolicy = DEFAULT_RETRY


class CLIError(click.ClickException):
    """A one-line message for stderr, exit status 1. Docker prints client-side errors without a prefix."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True)


class DaemonError(CLIError):
    """The daemon refused a request: ``Error response from daemon: <details>``."""

    def __init__(self, details: str) -> None:
        super().__init__(f"Error response from daemon: {escape_nonprintable(details)}")


class ConnectError(CLIError):
    def __init__(self, host: str) -> None:
        super().__init__(f"Cannot connect to the swarmsecrets daemon at {host}. Is the daemon running?")


def socket_path(host: str) -> str:
    if not host.startswith("unix://") or len(host) == len("unix://"):
        raise CLIError(f"unsupported host '{host}': expected unix:///path/to/socket")
    return host[len("unix://"):]


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
            self._channel = local_channel(path)
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
        if never_connected(e):
            return ConnectError(self.host)
        return DaemonError(e.details() or e.code().name)

    def stream(self, method: Any, request: Any, timeout: float | None = CALL_TIMEOUT) -> Iterator[Any]:
        """The messages of a streaming read; errors become CLIError."""
        try:
            yield from method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def call(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """One attempt of a read (or a Swarm-service call); errors become CLIError."""
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def write(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """A Control write under the retry policy (new request_id, same id on every retry).

        DEADLINE_EXCEEDED means the write may or may not have happened: say so instead of guessing.
        """
        try:
            return RETRY.write(method, request, timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CLIError(errors.UNKNOWN_OUTCOME) from None
            raise self._error(e) from None
