"""The local API's wire format, which the daemon (node/localapi.py) and its clients (client/local.py) share.

HTTP/1.1 on the daemon's unix socket, as dockerd's CLI talks to dockerd, with protobuf bodies, so that
a client needs nothing but the socket module and the generated messages (no gRPC: importing it alone
costs a CLI command more than everything else it does)::

    POST /v1/<Service>/<Method> HTTP/1.1        Service: Swarm or Control (the protobuf services)
    Content-Type: application/x-protobuf
    Content-Length: <n>                          the request message; the body is never chunked

    200, Content-Length       a unary method's response message
    200, chunked              a streaming method's frames: a flag byte (FRAME_MESSAGE or FRAME_ERROR),
                              a 4-byte big-endian length, that many bytes: a message, or an error
                              (below) that ends the stream
    4xx/5xx, JSON             an error: {"code": "NOT_FOUND", "kind": "NotFound", "message": "..."}

``code`` is a ``Status`` name (gRPC's status names: a client's retry rules read the same either way),
``kind`` the ``errors.SwarmError`` class the daemon raised ("" when the transport itself refused the
request), ``message`` the one line the CLI shows. Connections are kept alive; one request at a time.
Plain data and stdlib only, so that any module may import it.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Final

from swarmsecrets import errors

CONTENT_TYPE: Final = "application/x-protobuf"
ERROR_CONTENT_TYPE: Final = "application/json"
PATH_PREFIX: Final = "/v1/"
SERVICES: Final = ("Swarm", "Control")

FRAME = struct.Struct(">BI")  # flag, length
FRAME_MESSAGE: Final = 0
FRAME_ERROR: Final = 1

# Requests are small (the largest is a secret of 500 KiB); answers may be large (`secret ls` of 100,000
# secrets is about 12 MB) and are not capped. A request head (line and headers) fits in MAX_HEAD.
MAX_REQUEST: Final = 4 * 1024 * 1024
MAX_HEAD: Final = 16 * 1024


class Status(enum.Enum):
    """A call's outcome: gRPC's status names and meanings; the value is the HTTP status that carries it."""

    OK = 200
    CANCELLED = 499
    UNKNOWN = 520
    INVALID_ARGUMENT = 400
    DEADLINE_EXCEEDED = 504
    NOT_FOUND = 404
    ALREADY_EXISTS = 409
    PERMISSION_DENIED = 403
    RESOURCE_EXHAUSTED = 413
    FAILED_PRECONDITION = 412
    UNIMPLEMENTED = 501
    INTERNAL = 500
    UNAVAILABLE = 503


REASONS: Final = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                  412: "Precondition Failed", 413: "Content Too Large", 499: "Client Closed Request",
                  500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
                  504: "Gateway Timeout", 520: "Unknown Error"}

# A status without a kind (the transport's own refusals) becomes the base class of its code.
_BY_STATUS: dict[Status, type[errors.SwarmError]] = {
    Status.INVALID_ARGUMENT: errors.InvalidArgument, Status.NOT_FOUND: errors.NotFound,
    Status.ALREADY_EXISTS: errors.AlreadyExists, Status.FAILED_PRECONDITION: errors.FailedPrecondition,
    Status.PERMISSION_DENIED: errors.PermissionDenied, Status.UNAVAILABLE: errors.Unavailable,
    Status.DEADLINE_EXCEEDED: errors.DeadlineExceeded, Status.INTERNAL: errors.Internal,
}


def encode_error(status: Status, kind: str, message: str) -> bytes:
    return json.dumps({"code": status.name, "kind": kind, "message": message}).encode()


def decode_error(body: bytes) -> tuple[Status, str, str]:
    """(status, kind, message) of an error body; ValueError when it is not one."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not an error object")
    code = doc.get("code")
    if not isinstance(code, str) or code not in Status.__members__:
        raise ValueError(f"unknown status {code!r}")
    return Status[code], str(doc.get("kind") or ""), str(doc.get("message") or "")


def typed_error(status: Status, kind: str, message: str) -> errors.SwarmError:
    """The typed error the daemon raised (its kind), or its status's base class."""
    if kind:
        return errors.from_wire(kind, message)
    return _BY_STATUS.get(status, errors.SwarmError)(message)
