"""What every kind of the Control API shares: request ids bound to their caller and content, and
the idempotent removal."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.binding import control_request_id
from swarmsecrets.manager.collaborators import Sealer, StoreReader


def request_id(sealer: Sealer, kind: type[state.Command], caller: str, request: Message) -> str:
    """The client's request id (a retry of the same request carries the same one; a fresh one if
    it gave none), bound to the command kind, the caller and the request's content."""
    return control_request_id(sealer, kind, caller, request)


def resolve_for_removal(store: StoreReader, resolve: Callable[[str], state.Secret | state.Service], ref: str,
                        rid: str) -> str:
    """The object's id; for a retry of a removal that already happened, the reference itself, so
    the proposal (same request id) answers with the first outcome instead of a false not-found."""
    try:
        return resolve(ref).id
    except errors.NotFound:
        if not store.has_request(rid):
            raise
        return ref
