"""Where the manager meets the raft library: who may speak raft with us, and raft's errors
turned into swarmsecrets.errors (the raft library knows nothing of either)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import grpc

from swarmsecrets import errors
from swarmsecrets.ca import certs
from swarmsecrets.raft import (
    ApplyFailed,
    InvalidCommand,
    NoLeader,
    Peer,
    PeerRefused,
    PeerVerifier,
    RaftError,
    RaftNode,
    RaftStatus,
    Refused,
    Unavailable,
    UnknownOutcome,
)


def raft_peer_verifier(cluster_id: str) -> PeerVerifier:
    """Admit only managers of this cluster (OU swarm-manager, O == cluster id); a peer may claim
    only the raft addresses its certificate binds (its raft URI SANs)."""

    def verify(der: bytes) -> Peer:
        try:
            peer = certs.identity_from_der(der)
        except Exception as e:
            raise PeerRefused(f"unusable peer certificate: {e}") from None
        if peer.role != "manager":
            raise PeerRefused(f"certificate of a {peer.role or 'non-manager'} (OU is not swarm-manager)")
        if peer.cluster_id != cluster_id:
            raise PeerRefused(f"certificate of cluster {peer.cluster_id!r}")
        return Peer(name=peer.node_id, raft_addrs=frozenset(peer.raft_addrs))

    return verify


def swarm_error(e: RaftError) -> errors.SwarmError:
    """The swarmsecrets error a caller of the manager sees for a raft error."""
    if isinstance(e, NoLeader):
        return errors.Unavailable(errors.NO_LEADER)
    if isinstance(e, Unavailable):
        return errors.Unavailable(str(e))
    if isinstance(e, UnknownOutcome):
        return errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME)
    if isinstance(e, Refused):
        return errors.FailedPrecondition(str(e))
    if isinstance(e, InvalidCommand):
        return errors.InvalidArgument(f"invalid raft command: {e}")
    if isinstance(e, ApplyFailed):
        return errors.SwarmError(str(e), grpc.StatusCode.INTERNAL)
    return errors.SwarmError(f"raft: {e}", grpc.StatusCode.INTERNAL)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except RaftError as e:
        raise swarm_error(e) from e


def _map_result(out: Future[Any], inner: Future[Any]) -> None:
    exc = inner.exception()
    if exc is None:
        out.set_result(inner.result())
    else:
        out.set_exception(swarm_error(exc) if isinstance(exc, RaftError) else exc)


class ManagerRaft:
    """The manager's raft member: a RaftNode whose calls raise swarmsecrets.errors, as the rest
    of the manager expects."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def start(self) -> None:
        self.node.start()

    def stop(self) -> None:
        self.node.stop()

    def status(self) -> RaftStatus:
        return self.node.status()

    def wait_ready(self, timeout: float) -> bool:
        return self.node.wait_ready(timeout)

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        out: Future[Any] = Future()
        self.node.propose_async(command, timeout).add_done_callback(functools.partial(_map_result, out))
        return out

    def read_barrier(self, timeout: float) -> None:
        with _mapped():
            self.node.read_barrier(timeout)

    def add_member(self, addr: str, timeout: float) -> None:
        with _mapped():
            self.node.add_member(addr, timeout)

    def remove_member(self, addr: str, timeout: float) -> None:
        with _mapped():
            self.node.remove_member(addr, timeout)

    def transfer_leadership(self, timeout: float) -> None:
        with _mapped():
            self.node.transfer_leadership(timeout)
