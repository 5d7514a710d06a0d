"""A gRPC channel to a daemon's unix socket, with the options every local client wants."""

from __future__ import annotations

import os
from typing import Any

import grpc

from swarmsecrets.wire import LOCAL_MAX_MESSAGE


def local_channel(socket_path: str | os.PathLike[str], *, own_connection: bool = False) -> grpc.Channel:
    """An insecure channel on the unix socket (the socket's 0600 mode is the access control).

    It reconnects quickly (100 ms, at most 1 s apart) so that a write retried against a restarting
    daemon gets through as soon as the daemon is back. ``own_connection``: do not share the underlying
    connection with other channels to the same socket (benchmarks that want one connection per client).
    Opening a channel never fails: a missing daemon is a failed call.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.max_receive_message_length", LOCAL_MAX_MESSAGE),
    ]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.insecure_channel(f"unix:{os.fspath(socket_path)}", options=options)


def never_connected(e: grpc.RpcError) -> bool:
    """Whether a call failed because no connection to the daemon could be made, so the request
    certainly did not reach it (the daemon is down or the socket is stale). gRPC reports this only
    as UNAVAILABLE with "failed to connect" in its own message; this is the one place that reads it."""
    return e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (e.details() or "")
