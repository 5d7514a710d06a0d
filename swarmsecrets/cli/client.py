"""The CLI's connection to the local daemon: the local API client on the unix socket, errors as one line.

Writes follow the shared retry policy (swarmsecrets/client/retry.py: same request_id on retry, only
transient failures retried, within a budget); this module turns what is left into the CLI's messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

import click

from swarmsecrets import errors
from swarmsecrets.client import DEFAULT_RETRY, LocalClient, LocalError, RetryPolicy, Status
from swarmsecrets.client.local import Service
from swarmsecrets.validation import escape_nonprintable

DEFAULT_HOST = "unix:///run/swarmsecretsd/swarmsecretsd.sock"  # the daemon's default --host
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
    """The daemon's Swarm and Control services; the socket is checked on first use."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._local: LocalClient | None = None

    def _connect(self) -> LocalClient:
        if self._local is None:
            path = socket_path(self.host)
            if not os.path.exists(path):
                raise ConnectError(self.host)
            if not os.access(path, os.R_OK | os.W_OK):  # e.g. not in the daemon's --group: Docker's words
                raise CLIError(f"permission denied while trying to connect to the swarmsecrets daemon socket "
                               f"at {self.host}: connect: permission denied")
            self._local = LocalClient(path)
        return self._local

    @property
    def swarm(self) -> Service:
        return self._connect().swarm

    @property
    def control(self) -> Service:
        return self._connect().control

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None

    def _error(self, e: LocalError) -> CLIError:
        if not e.reached:
            return ConnectError(self.host)
        return DaemonError(e.message or e.code.name)

    def stream(self, method: Any, request: Any, timeout: float | None = CALL_TIMEOUT) -> Iterator[Any]:
        """The messages of a streaming read; errors become CLIError."""
        try:
            yield from method(request, timeout=timeout)
        except LocalError as e:
            raise self._error(e) from None

    def call(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """One attempt of a read (or a Swarm-service call); errors become CLIError."""
        try:
            return method(request, timeout=timeout)
        except LocalError as e:
            raise self._error(e) from None

    def write(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """A Control write under the retry policy (new request_id, same id on every retry).

        DEADLINE_EXCEEDED means the write may or may not have happened: say so instead of guessing.
        """
        try:
            return RETRY.write(method, request, timeout)
        except LocalError as e:
            if e.code is Status.DEADLINE_EXCEEDED:
                raise CLIError(errors.UNKNOWN_OUTCOME) from None
            raise self._error(e) from None
