"""The standard gRPC health service and server reflection on a manager's TLS port.

A manager is SERVING while it knows a leader, reaches a majority of the group and has applied
everything it knows committed: a read through it then returns current data. It is NOT_SERVING
otherwise (no leader, cut off from a majority, or catching up after a restart).

Who may call them: any node of this swarm, manager or worker, by its certificate and its record in
the store (the port's other services check the same way). A joiner's bootstrap certificate, a
removed node or a certificate of another swarm is refused: the services tell nothing secret, but
they describe the manager and its API, and that is for the swarm's own nodes (and their operators,
who hold a node's certificate).
"""

from __future__ import annotations

import contextlib
import logging
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


def serving(st: RaftStatus) -> bool:
    """Whether a manager in raft status ``st`` serves current data."""
    return st.leader is not None and st.has_quorum and st.last_applied >= st.commit_index


class Health:
    """The health service of one manager's server; ``services``: the names reported besides ""."""

    def __init__(self, status: Callable[[], RaftStatus], services: list[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._status = status
        self._names = ["", *services]
        self._last: int | None = None

    async def refresh(self, st: RaftStatus | None = None) -> None:
        """Follow the raft status ``st`` (read here if not given; ``watch.StatusFeed`` gives it)."""
        now = SERVING if serving(st if st is not None else self._status()) else NOT_SERVING
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
