"""What the CLI tests' fake daemons share: the real local API server, every request recorded, scripted
faults, Docker-style times."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from swarmsecrets import errors, rpcutil
from swarmsecrets.api.v1 import control_pb2_grpc, swarm_pb2_grpc
from swarmsecrets.node.localapi import LocalAPI


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}123Z"


@dataclass
class Recorder:
    requests: list[tuple[str, Any]] = field(default_factory=list)
    # method name -> answers, one per call, before behaving normally: a typed error as a manager
    # sends it, or a bare (status, message) as gRPC itself or an older daemon would
    faults: dict[str, list[tuple[grpc.StatusCode, str] | errors.SwarmError]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, name: str) -> list[Any]:
        return [r for n, r in self.requests if n == name]

    def handle(self, name: str, request: Any, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        """Record a copy of the request, answer a scripted fault if one is queued, else run ``fn``."""
        with self.lock:
            copy = type(request)()
            copy.CopyFrom(request)
            self.requests.append((name, copy))
            queue = self.faults.get(name)
            fault = queue.pop(0) if queue else None
        try:
            if isinstance(fault, errors.SwarmError):
                raise fault
            if fault:
                context.abort(*fault)
            return fn()
        except errors.SwarmError as e:
            context.set_trailing_metadata(rpcutil.trailing_metadata(e))
            context.abort(rpcutil.status_code(e), e.message)


@contextlib.contextmanager
def serving(path: str, swarm: swarm_pb2_grpc.SwarmServicer | None = None,
            control: control_pb2_grpc.ControlServicer | None = None) -> Iterator[None]:
    """The daemon's local API server on ``path``, in a thread and event loop of its own, serving the
    given (fake, synchronous) servicers."""
    loop = asyncio.new_event_loop()
    api = LocalAPI(path, swarm or swarm_pb2_grpc.SwarmServicer(), control or control_pb2_grpc.ControlServicer())
    loop.run_until_complete(api.start())
    thread = threading.Thread(target=loop.run_forever, name="fake daemon", daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(grace=0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
