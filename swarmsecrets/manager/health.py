"""The standard gRPC health service and server reflection on a manager's TLS port.

A manager is SERVING while it knows a leader, reaches a majority of the group and keeps up with
the log: it has applied everything it knew committed ``KEEP_UP`` seconds ago (under writes the
commit index always moves a moment before the apply, so "everything committed now" would flap at
every entry). A read through it then returns current data. It is NOT_SERVING otherwise (no leader,
cut off from a majority, or catching up after a restart, until it reaches what was committed when
it started to look).

Who may call them: any node of this swarm, manager or worker, by its certificate and its record in
the store (the port's other services check the same way). A joiner's bootstrap certificate, a
removed node or a certificate of another swarm is refused: the services tell nothing secret, but
they describe the manager and its API, and that is for the swarm's own nodes (and their operators,
who hold a node's certificate).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from swarmsecrets import errors
from swarmsecrets.ca.authz import MEMBERS, PeerAuthorizer
from swarmsecrets.raft import RaftStatus
from swarmsecrets.rpcutil import HandlerInterceptor, abort, peer_certificate, wrap_handler

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


KEEP_UP = 0.5


def serving(st: RaftStatus, applied_at_least: int | None = None) -> bool:
    """Whether a manager in raft status ``st`` serves current data: it knows a leader, reaches a
    majority and has applied ``applied_at_least`` (by default, everything it knows committed)."""
    target = st.commit_index if applied_at_least is None else applied_at_least
    return st.leader is not None and st.has_quorum and st.last_applied >= target


class CommitMarks:
    """The commit index as it was ``KEEP_UP`` seconds ago, from the statuses seen since (the first
    one seen until then): what a manager that keeps up has applied by now."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque()

    def target(self, st: RaftStatus) -> int:
        now = self._clock()
        self._marks.append((now, st.commit_index))
        # Keep the newest mark that is old enough, and the younger ones.
        while len(self._marks) > 1 and self._marks[1][0] <= now - KEEP_UP:
            self._marks.popleft()
        return self._marks[0][1]


class Health:
    """The health service of one manager's server; ``services``: the names reported besides ""."""

    def __init__(self, status: Callable[[], RaftStatus], services: list[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._status = status
        self._names = ["", *services]
        self._last: int | None = None
        self._marks = CommitMarks()

    async def refresh(self, st: RaftStatus | None = None) -> None:
        """Follow the raft status ``st`` (read here if not given; ``watch.StatusFeed`` gives it)."""
        st = st if st is not None else self._status()
        now = SERVING if serving(st, self._marks.target(st)) else NOT_SERVING
        if now != self._last:
            if self._last is not None:
                log.info("health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(now))
            self._last = now
            for name in self._names:
                await self.servicer.set(name, now)


class MembersOnly(HandlerInterceptor):
    """Health and reflection calls from nodes of this swarm only (see the module docstring)."""

    def __init__(self, authz: PeerAuthorizer) -> None:
        super().__init__()
        self.authz = authz

    def wrap(self, handler: Any, method: str) -> Any:
        return wrap_handler(handler, self._admit) if method.startswith(_PREFIXES) else handler

    @contextlib.asynccontextmanager
    async def _admit(self, context: grpc.aio.ServicerContext, unary: bool) -> AsyncIterator[None]:
        try:
            self.authz.admit(peer_certificate(context), MEMBERS)
        except errors.SwarmError as e:
            await abort(context, e)
        yield


def add_to_server(server: grpc.aio.Server, health: Health, service_names: list[str]) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection([*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME], server)
