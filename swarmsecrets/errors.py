"""Every user-facing error of the swarm, with Docker's wording where Docker has one.

One place for the kinds and the texts. The state machine, the control API and the
daemon raise these; the gRPC edge (``swarmsecrets.rpcutil``) turns them into a
status, the message, and the error's kind in trailing metadata, and turns a
received status back into the same typed error; the CLI prints the message as
``Error response from daemon: <message>``.

Callers decide by type (``except errors.NodeRemoved``), never by message text: the
text is for people and may change, the kind is the contract. No transport is
imported here, so the raft log, the CLI and the daemon can all share these types.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar


class Code(enum.Enum):
    """What kind of failure: the caller's fault, a missing or clashing object, a state that
    forbids it, or the swarm not able to answer now. The edge maps each to a transport status."""

    UNKNOWN = "unknown"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    PERMISSION_DENIED = "permission_denied"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


# Every error class by its kind (the class name): how a kind read off the raft log or a
# status's metadata becomes the typed error again. Filled in as the classes are defined.
_KINDS: dict[str, type[SwarmError]] = {}


class SwarmError(Exception):
    """An error with a code and a one-line message for the user."""

    code: ClassVar[Code] = Code.UNKNOWN

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.__name__] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def kind(self) -> str:
        """The stable name of this error's type, as it crosses the raft log and the wire."""
        return type(self).__name__


_KINDS[SwarmError.__name__] = SwarmError


class InvalidArgument(SwarmError):
    code = Code.INVALID_ARGUMENT


class NotFound(SwarmError):
    code = Code.NOT_FOUND


class AlreadyExists(SwarmError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(SwarmError):
    code = Code.FAILED_PRECONDITION


class PermissionDenied(SwarmError):
    code = Code.PERMISSION_DENIED


class Unavailable(SwarmError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(SwarmError):
    code = Code.DEADLINE_EXCEEDED


class Internal(SwarmError):
    """A bug or a broken invariant on the daemon's side; the details are in its log."""

    code = Code.INTERNAL


# --- texts (Docker / SwarmKit verbatim where they exist) -----------------------

NO_LEADER = (
    "The swarm does not have a leader. It's possible that too few managers are online. "
    "Make sure more than half of the managers are online."
)
NOT_A_MANAGER = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
    "Please run this command on a manager node or promote the current node to a manager."
)
NOT_IN_SWARM = "This node is not part of a swarm"
ALREADY_IN_SWARM = (
    "This node is already part of a swarm. Use \"swarmsecrets swarm leave\" to leave this swarm "
    "and join another one."
)
LOCKED = (
    "Swarm is encrypted and needs to be unlocked before it can be used. "
    "Please use \"swarmsecrets swarm unlock\" to unlock it."
)
NOT_LOCKED = "swarm is not locked"
INVALID_UNLOCK_KEY = "swarm could not be unlocked: invalid key provided"
INVALID_JOIN_TOKEN = "A valid join token is necessary to join this cluster"
UNKNOWN_OUTCOME = (
    "the request timed out after it was sent to the swarm: it may or may not have happened; "
    "retrying the same command is safe"
)
SECRET_NAME_INVALID = (
    "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character "
    "must be [a-zA-Z0-9]"
)
SECRET_SIZE_INVALID = "secret data must be larger than 0 and less than 512000 bytes"
ONLY_LABELS = "only updates to Labels are allowed"
UPDATE_OUT_OF_SEQUENCE = "update out of sequence"
LAST_MANAGER_LEAVE = (
    "You are attempting to leave the swarm on a node that is participating as a manager. "
    "Removing the last manager erases all current state of the swarm. "
    "Use `--force` to ignore this message."
)
LEAVE_QUORUM = (
    "You are attempting to leave the swarm on a node that is participating as a manager. "
    "Removing this node leaves too few managers to keep a quorum. "
    "Use `--force` to ignore this message."
)


# --- conditions a caller acts on: each its own type, so nobody matches the text -----------

class NoLeader(Unavailable):
    """No manager leads: waiting a moment will not help; more managers must come online."""

    def __init__(self, message: str = NO_LEADER) -> None:
        super().__init__(message)


class NotLeader(Unavailable):
    """This manager does not lead; ``leader`` is the control address of the one that does, if known."""

    def __init__(self, message: str = "this manager is not the leader", leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class SwarmLocked(FailedPrecondition):
    def __init__(self, message: str = LOCKED) -> None:
        super().__init__(message)


class NotInSwarm(FailedPrecondition):
    def __init__(self, message: str = NOT_IN_SWARM) -> None:
        super().__init__(message)


class NotAManager(FailedPrecondition):
    def __init__(self, message: str = NOT_A_MANAGER) -> None:
        super().__init__(message)


class StorageFull(Unavailable):
    """A manager's data disk is full: it refuses writes (the other managers still take them),
    keeps serving reads, and takes writes again by itself once space is freed."""


def storage_full(reason: str, node_id: str = "", *, raft: bool = True) -> StorageFull:
    """``reason``: what failed, e.g. "no space left on device (writing PATH)"; ``raft``: the raft
    log (writes resume by themselves), else a file of the node's own (the caller retries)."""
    if raft:
        return StorageFull(f"raft: cannot persist: {reason} on manager {node_id or '(this one)'}: free "
                           f"space on its data disk (writes resume by themselves) or send writes to "
                           f"another manager")
    return StorageFull(f"cannot persist: {reason} on this node: free space on its data disk, then retry")


class UpdateOutOfSequence(SwarmError):
    """The update named a version the object no longer has: someone changed it first. Docker's
    code for it is Unknown, and so is ours."""

    def __init__(self, message: str = UPDATE_OUT_OF_SEQUENCE) -> None:
        super().__init__(message)


class NodeRemoved(PermissionDenied):
    """The caller's node was removed from the swarm: its certificate no longer admits it anywhere,
    and a worker that hears this wipes its secrets and forgets the swarm."""


def node_removed(node_id: str) -> NodeRemoved:
    return NodeRemoved(f"Permission denied: node {node_id} was removed from swarm")


class ListenFailed(FailedPrecondition):
    """This node cannot listen where it was told to: the port or socket is taken by another
    process, or the address is not one of this host's."""


def os_reason(e: OSError) -> str:
    """An OSError's reason as Go words it, and so Docker: "address already in use"."""
    text = os.strerror(e.errno) if e.errno else str(e)
    return text[:1].lower() + text[1:]


def listen_failed(network: str, addr: str, e: OSError) -> ListenFailed:
    """Go's text for a failed listen, as ``docker swarm init`` prints it:
    ``listen tcp 127.0.0.1:2377: bind: address already in use``."""
    return ListenFailed(f"listen {network} {addr}: bind: {os_reason(e)}")


def secret_not_found(ref: str) -> NotFound:
    return NotFound(f"secret {ref} not found")


def secret_ambiguous(ref: str, n: int) -> InvalidArgument:
    return InvalidArgument(f"secret {ref} is ambiguous ({n} matches found)")


def secret_exists(name: str) -> AlreadyExists:
    return AlreadyExists(f"secret {name} already exists")


def service_exists(name: str) -> AlreadyExists:
    """SwarmKit's text: its store's "name conflicts with an existing object", which older clients
    match on, then the service's name."""
    return AlreadyExists(f"name conflicts with an existing object: service {name} already exists")


def node_not_found(ref: str) -> NotFound:
    return NotFound(f"node {ref} not found")


def node_ambiguous(ref: str, n: int) -> InvalidArgument:
    return InvalidArgument(f"node {ref} is ambiguous ({n} matches found)")


def secret_in_use(name: str, services: list[str]) -> InvalidArgument:
    noun = "service" if len(services) == 1 else "services"
    return InvalidArgument(f"secret '{name}' is in use by the following {noun}: {', '.join(services)}")


# --- errors as plain data: (kind, message) --------------------------------------------------
# The raft log carries a command's failure this way, so every member raises the same type.

# Every kind this version knows, read-only.
KINDS: Mapping[str, type[SwarmError]] = MappingProxyType(_KINDS)


def to_wire(err: SwarmError) -> tuple[str, str]:
    return (err.kind, err.message)


def from_wire(kind: str, message: str) -> SwarmError:
    """The typed error of this kind; a kind this version does not know stays a plain SwarmError."""
    return _KINDS.get(kind, SwarmError)(message)
