"""Server-side gRPC plumbing shared by every service: error mapping and peer identity."""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from swarmsecrets import errors
from cryptography import x509

from swarmsecrets.ca.certs import NodeIdentity, verified_identity

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def rpc(fn: F) -> F:
    """Turn SwarmError into a status with its one-line message; anything else is logged, not leaked."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except errors.SwarmError as e:
            await context.abort(e.code, e.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {fn.__name__}; see the daemon log")

    return wrapper  # type: ignore[return-value]


def peer_identity(context: grpc.aio.ServicerContext, root: x509.Certificate) -> NodeIdentity | None:
    """The identity in the client's certificate if the root CA issued it, else None
    (unix socket, or a joiner's bootstrap certificate)."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    return verified_identity(pems[0], root)


def format_ts(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Docker shows timestamps."""
    secs, frac = divmod(int(ns), 10**9)
    base = datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"
