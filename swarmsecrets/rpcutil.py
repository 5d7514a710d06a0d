"""The gRPC edge: typed errors to statuses and back, the peer's certificate.

A SwarmError leaves a service as a status code, its one-line message, and its kind in the
``wire.ERROR_KIND_METADATA`` trailing metadata; a client turns that back into the same
typed error with ``error_from_rpc``. Anything else a service raises is logged, not leaked; a
request that does not parse ends INVALID_ARGUMENT (``MalformedRequests``, on every server).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from swarmsecrets import errors, wire
from swarmsecrets.wire import format_ts as format_ts  # the control API's modules take it from here

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_STATUS: dict[errors.Code, grpc.StatusCode] = {
    errors.Code.UNKNOWN: grpc.StatusCode.UNKNOWN,
    errors.Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    errors.Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    errors.Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    errors.Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    errors.Code.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Code.INTERNAL: grpc.StatusCode.INTERNAL,
}
# A status without a kind (sent by an older peer, or by gRPC itself) becomes the base class of its code.
_BY_STATUS: dict[grpc.StatusCode, type[errors.SwarmError]] = {
    _STATUS[cls.code]: cls
    for cls in (errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
                errors.PermissionDenied, errors.Unavailable, errors.DeadlineExceeded, errors.Internal)
}


def status_code(err: errors.SwarmError) -> grpc.StatusCode:
    return _STATUS[err.code]


def trailing_metadata(err: errors.SwarmError) -> tuple[tuple[str, str], ...]:
    """What travels next to the status: the error's kind, and for a redirect the leader to try."""
    md = [(wire.ERROR_KIND_METADATA, err.kind)]
    if isinstance(err, errors.NotLeader):
        md.append((wire.LEADER_METADATA, err.leader))
    return tuple(md)


async def abort(context: grpc.aio.ServicerContext, err: errors.SwarmError) -> NoReturn:
    await context.abort(status_code(err), err.message, trailing_metadata=trailing_metadata(err))
    raise AssertionError("context.abort returned")  # it always raises


def _metadata(e: grpc.RpcError) -> dict[str, str]:
    get = getattr(e, "trailing_metadata", None)  # every call error has it; a bare RpcError has not
    return {str(k): str(v) for k, v in ((get() if get else None) or ())}


def error_kind(e: grpc.RpcError) -> str | None:
    """The kind of typed error the server sent, or None when gRPC itself failed the call
    (no connection, a client-side deadline, a message over the size cap)."""
    return _metadata(e).get(wire.ERROR_KIND_METADATA)


def error_from_rpc(e: grpc.RpcError) -> errors.SwarmError:
    """The typed error a remote service raised, rebuilt from its status; a status the server
    did not send as a typed error keeps its code's class."""
    code: grpc.StatusCode = e.code()
    message: str = e.details() or code.name
    md = _metadata(e)
    kind = md.get(wire.ERROR_KIND_METADATA)
    if kind is not None:
        err = errors.from_wire(kind, message)
    elif wire.LEADER_METADATA in md:  # a redirect from a manager that does not send kinds yet
        err = errors.NotLeader(message)
    else:
        err = _BY_STATUS.get(code, errors.SwarmError)(message)
    if isinstance(err, errors.NotLeader):
        err.leader = md.get(wire.LEADER_METADATA, "")
    return err


async def _fail(context: grpc.aio.ServicerContext, method: str, e: Exception) -> NoReturn:
    """End a call that raised: a typed error as its status; anything else logged here and
    reported as an internal error, without its text. An abort already under way goes on."""
    if isinstance(e, grpc.aio.AbortError):
        raise e
    if isinstance(e, errors.SwarmError):
        await abort(context, e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        # A key or node-state file found no room: the write replaced nothing (written beside, then
        # renamed); the caller retries once space is freed.
        reason = f"{os.strerror(e.errno).lower()} (writing {e.filename or 'a file'})"
        log.error("%s: cannot persist: %s", method, reason)
        await abort(context, errors.storage_full(reason, raft=False))
    log.exception("%s failed", method)
    await abort(context, errors.Internal(f"internal error in {method}; see the daemon log"))


def rpc(fn: F) -> F:
    """A servicer method (unary or streaming) whose SwarmErrors become statuses with their
    one-line message and kind; anything else is logged, not leaked."""

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                # aclosing: when the client goes away, the method's own clean-up runs now, not at GC.
                async with contextlib.aclosing(fn(self, request, context)) as items:
                    async for item in items:
                        yield item
            except Exception as e:
                await _fail(context, fn.__name__, e)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except Exception as e:
            await _fail(context, fn.__name__, e)

    return unary  # type: ignore[return-value]


class _Malformed:
    """Stands in for a request that did not parse; the method's handler answers it."""


_MALFORMED = _Malformed()


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that changes a method's handler: ``wrap`` runs once per method, and the
    handler it returns (the one given, to leave the method alone) serves every later call."""

    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                                details: grpc.HandlerCallDetails) -> Any:
        method: str = details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return None
            wrapped = self._handlers[method] = self.wrap(handler, method)
        return wrapped

    @abc.abstractmethod
    def wrap(self, handler: Any, method: str) -> Any:
        """The handler to serve ``method`` with from now on."""


class MalformedRequests(HandlerInterceptor):
    """A request whose bytes do not parse as its message (corrupt wire format, a string field that
    is not UTF-8) ends INVALID_ARGUMENT with one line, like any other bad input. Left to gRPC, it
    would end UNKNOWN with the decoder's text and a traceback in the daemon's log."""

    def wrap(self, handler: Any, method: str) -> Any:
        if handler.request_deserializer is None:
            return handler
        if handler.request_streaming:
            return _guarded_stream(handler, method)
        return _guarded(handler, method)


def _guarded_stream(handler: Any, method: str) -> Any:
    """A client stream's messages are parsed as the method reads them: a bad one raises the typed
    error there, and the method's error handling (``rpc``) answers it as any other bad input."""
    parse = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            raise errors.InvalidArgument(f"malformed request: not a valid message for {method}") from None

    return handler._replace(request_deserializer=deserialize)


def _guarded(handler: Any, method: str) -> Any:
    parse = handler.request_deserializer
    err = errors.InvalidArgument(f"malformed request: not a valid message for {method}")

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, or whatever else a parser raises on bytes it cannot read
            return _MALFORMED

    if handler.response_streaming:
        behavior = handler.unary_stream
        if not inspect.isasyncgenfunction(behavior):  # a stream written with context.write()
            async def writes(request: Any, context: grpc.aio.ServicerContext) -> None:
                if request is _MALFORMED:
                    await abort(context, err)
                await behavior(request, context)

            return handler._replace(request_deserializer=deserialize, unary_stream=writes)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request is _MALFORMED:
                await abort(context, err)
            async for item in behavior(request, context):
                yield item

        return handler._replace(request_deserializer=deserialize, unary_stream=stream)
    behavior = handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _MALFORMED:
            await abort(context, err)
        return await behavior(request, context)

    return handler._replace(request_deserializer=deserialize, unary_unary=unary)


def peer_certificate(context: grpc.aio.ServicerContext) -> bytes | None:
    """The PEM certificate the TLS client presented (None on the unix socket)."""
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    return pems[0] if pems else None


# Runs around each call of a wrapped handler; ``unary``: the call answers with one message.
Around = Callable[[grpc.aio.ServicerContext, bool], contextlib.AbstractAsyncContextManager[None]]


def wrap_handler(handler: Any, around: Around) -> Any:
    """``handler`` with each call run inside ``around(context, unary)``, whatever its kind (unary or
    streaming, a coroutine or an async generator)."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: _wrap(behavior, around, unary=not handler.response_streaming)})
    return handler


def _wrap(behavior: Callable[..., Any], around: Around, unary: bool) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context, unary):
                async with contextlib.aclosing(behavior(request, context)) as items:
                    async for item in items:
                        yield item
        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context, unary):
            return await behavior(request, context)
    return call
