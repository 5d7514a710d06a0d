"""Where the manager meets the raft library: raft's errors turned into swarmsecrets.errors (the
raft library knows nothing of them). Who may speak raft with us is decided in ``ca.authz``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from swarmsecrets import errors
from swarmsecrets.raft import (
    ApplyFailed,
    InvalidCommand,
    NoLeader,
    RaftError,
    RaftNode,
    RaftStatus,
    Refused,
    StorageFull,
    Unavailable,
    UnknownOutcome,
)


def swarm_error(e: RaftError, node_id: str = "") -> errors.SwarmError:
    """The swarmsecrets error a caller of the manager sees for a raft error (``node_id``: this
    manager's, named where the error is about this manager)."""
    if isinstance(e, NoLeader):
        return errors.NoLeader()
    if isinstance(e, StorageFull):
        return errors.storage_full(e.reason, node_id)
    if isinstance(e, Unavailable):
        return errors.Unavailable(str(e))
    if isinstance(e, UnknownOutcome):
        return errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME)
    if isinstance(e, Refused):
        return errors.FailedPrecondition(str(e))
    if isinstance(e, InvalidCommand):
        return errors.InvalidArgument(f"invalid raft command: {e}")
    if isinstance(e, ApplyFailed):
        return errors.Internal(str(e))
    return errors.Internal(f"raft: {e}")


@contextmanager
def _mapped(node_id: str) -> Iterator[None]:
    try:
        yield
    except RaftError as e:
        raise swarm_error(e, node_id) from e


def _map_result(node_id: str, out: Future[Any], inner: Future[Any]) -> None:
    if out.cancelled():  # its caller gave up (the client's deadline passed): nobody hears the result
        return
    exc = inner.exception()
    if exc is None:
        out.set_result(inner.result())
    else:
        out.set_exception(swarm_error(exc, node_id) if isinstance(exc, RaftError) else exc)


class ManagerRaft:
    """The manager's raft member: a RaftNode whose calls raise swarmsecrets.errors, as the rest
    of the manager expects."""

    def __init__(self, node: RaftNode, node_id: str = "",
                 on_proposal: Callable[[float, str | None], None] = lambda seconds, failure: None) -> None:
        """``on_proposal``: told of each proposal's outcome, with its duration in seconds and the
        kind of raft error that failed it (None when it succeeded), on the thread that resolved it."""
        self.node = node
        self.node_id = node_id
        self.on_proposal = on_proposal

    def start(self) -> None:
        self.node.start()

    def stop(self) -> None:
        self.node.stop()

    @property
    def stopped(self) -> bool:
        return self.node.stopped

    def status(self) -> RaftStatus:
        return self.node.status()

    def wait_ready(self, timeout: float) -> bool:
        return self.node.wait_ready(timeout)

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        out: Future[Any] = Future()
        started = time.monotonic()

        def done(inner: Future[Any]) -> None:
            exc = inner.exception()
            self.on_proposal(time.monotonic() - started, type(exc).__name__ if exc is not None else None)
            _map_result(self.node_id, out, inner)

        self.node.propose_async(command, timeout).add_done_callback(done)
        return out

    @property
    def removed(self) -> threading.Event:
        """Set once this member's removal from the group is committed and applied here."""
        return self.node.removed

    def read_barrier_async(self, timeout: float) -> Future[None]:
        out: Future[None] = Future()
        self.node.read_barrier_async(timeout).add_done_callback(
            lambda inner: _map_result(self.node_id, out, inner))
        return out

    def add_member(self, addr: str, timeout: float) -> None:
        with _mapped(self.node_id):
            self.node.add_member(addr, timeout)

    def remove_member(self, addr: str, timeout: float) -> None:
        with _mapped(self.node_id):
            self.node.remove_member(addr, timeout)

    def hand_over(self, timeout: float) -> None:
        with _mapped(self.node_id):
            self.node.hand_over(timeout)

    def transfer_leadership(self, timeout: float) -> None:
        with _mapped(self.node_id):
            self.node.transfer_leadership(timeout)
