"""Audit lines: every write through the Control API, every secret delivered to a node.

They go to the ``swarmsecrets.audit`` logger (operators can route it apart) as events:

    event=control_write caller=uid:0 method=CreateSecret object=db_pass id=… result=OK request_id=…
    event=secret_delivered node=… tasks=… secret=… version=…

Who the caller is comes from the transport, never from the request: the certificate's CN (the node id)
on the TLS port, the peer's uid (SO_PEERCRED) on the unix socket. A payload never appears:
only names, ids and versions are read from a request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from swarmsecrets.ca import certs
from swarmsecrets.logfmt import event
from swarmsecrets.rpcutil import HandlerInterceptor, peer_certificate

log = logging.getLogger("swarmsecrets.audit")

CONTROL_PREFIX = "/swarmsecrets.v1.Control/"
# Control methods that only read (every other one writes).
_READS = ("Get", "List", "ServiceLogs")

# Request fields that name the object a write is about, in order of preference.
_OBJECT_FIELDS = ("secret_id", "service_id", "node_id", "role")

def is_write(method: str) -> bool:
    """``method`` is a full gRPC path; True for Control methods that change something."""
    if not method.startswith(CONTROL_PREFIX):
        return False
    return not method[len(CONTROL_PREFIX):].startswith(_READS)


def caller_of(context: grpc.aio.ServicerContext) -> str:
    """Who calls on the TLS port: the node its certificate names."""
    cert = peer_certificate(context)
    return f"cn:{certs.identity_from_pem(cert).node_id}" if cert is not None else "unknown"


def object_of(request: Message) -> str:
    """The name or id the request addresses ("cluster" for the swarm-wide settings)."""
    names, has_spec = _object_fields(request.DESCRIPTOR)
    for name in names:
        value = getattr(request, name)
        if value:
            return str(value)
    if has_spec and request.HasField("spec"):  # type: ignore[arg-type]
        return str(request.spec.name)  # type: ignore[attr-defined]
    return "cluster"


@functools.cache
def _object_fields(descriptor: Descriptor) -> tuple[tuple[str, ...], bool]:
    """Which of ``_OBJECT_FIELDS`` a message type has, and whether it has a spec (looked up once
    per type: every write is audited)."""
    return tuple(n for n in _OBJECT_FIELDS if n in descriptor.fields_by_name), "spec" in descriptor.fields_by_name


def _created_id(response: Any) -> str:
    for name in ("secret", "service"):
        if isinstance(response, Message) and name in response.DESCRIPTOR.fields_by_name \
                and response.HasField(name):
            return str(getattr(response, name).id)
    return ""


class ControlAudit(HandlerInterceptor):
    """One audit line per Control write on the TLS port, whatever its outcome (the local API's server
    calls ``control_write`` itself, with the peer's uid)."""

    def wrap(self, handler: Any, method: str) -> Any:
        if not is_write(method) or handler.unary_unary is None:
            return handler
        return handler._replace(unary_unary=self._audited(handler.unary_unary, method[len(CONTROL_PREFIX):]))

    def _audited(self, behavior: Any, method: str) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            response = None
            try:
                response = await behavior(request, context)
                return response
            finally:
                code = context.code()
                if response is not None and code is None:
                    result = "OK"
                else:
                    result = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                control_write(caller_of(context), method, request, result, _created_id(response))

        return unary


def control_write(caller: str, method: str, request: Any, result: str, new_id: str) -> None:
    """The audit line of one Control write: ``method`` is its short name, ``result`` its status name."""
    if not log.isEnabledFor(logging.INFO):
        return
    is_message = isinstance(request, Message)
    obj = object_of(request) if is_message else ""
    rid = str(getattr(request, "request_id", "")) if is_message else ""
    fields: dict[str, object] = {"caller": caller, "method": method, "object": obj}
    if new_id:
        fields["id"] = new_id
    fields.update(result=result, request_id=rid or "-")
    event(log, logging.INFO, "control_write", f"{method} {obj or '-'} by {caller}: {result}", **fields)


def secret_delivered(node_id: str, tasks: Iterable[str], secret_id: str, version: int) -> None:
    """A secret's plaintext left for ``node_id`` (in an assignment), for the tasks named."""
    names = sorted(tasks)
    event(log, logging.INFO, "secret_delivered", f"secret {secret_id} (version {version}) sent to node {node_id}",
          node=node_id, tasks=names, secret=secret_id, version=version)
