"""What every kind of the Control API shares: request ids and the idempotent removal."""

from __future__ import annotations

from collections.abc import Callable

from swarmsecrets import errors, ids, validation
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import StoreReader


def request_id(given: str) -> str:
    """The client's request id (a retry of the same request carries the same one), else a fresh one."""
    if given:
        validation.validate_request_id(given)
    return given or ids.new_request_id()


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
