"""Every user-facing error of the manager, with Docker's wording where Docker has one.

One place for the texts: the state machine, the control API and the daemon raise
these; the gRPC layer turns them into a status code plus the message; the CLI
prints the message as ``Error response from daemon: <message>``.
"""

from __future__ import annotations

import grpc


class SwarmError(Exception):
    """An error with a gRPC status code and a one-line message for the user."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SwarmError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SwarmError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SwarmError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SwarmError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(SwarmError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(SwarmError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SwarmError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


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


def secret_not_found(ref: str) -> NotFound:
    return NotFound(f"secret {ref} not found")


def secret_ambiguous(ref: str, n: int) -> InvalidArgument:
    return InvalidArgument(f"secret {ref} is ambiguous ({n} matches found)")


def secret_exists(name: str) -> AlreadyExists:
    return AlreadyExists(f"secret {name} already exists")


def node_not_found(ref: str) -> NotFound:
    return NotFound(f"node {ref} not found")


def node_ambiguous(ref: str, n: int) -> InvalidArgument:
    return InvalidArgument(f"node {ref} is ambiguous ({n} matches found)")


def secret_in_use(name: str, services: list[str]) -> InvalidArgument:
    noun = "service" if len(services) == 1 else "services"
    return InvalidArgument(f"secret '{name}' is in use by the following {noun}: {', '.join(services)}")


# Typed errors that cross the raft log as plain data: (kind, message).
_KINDS: dict[str, type[SwarmError]] = {
    cls.__name__: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, PermissionDenied,
                Unavailable, DeadlineExceeded, SwarmError)
}


def to_wire(err: SwarmError) -> tuple[str, str]:
    return (type(err).__name__, err.message)


def from_wire(kind: str, message: str) -> SwarmError:
    return _KINDS.get(kind, SwarmError)(message)
