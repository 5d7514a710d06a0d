"""What the manager's services are handed instead of the whole manager.

Each service (the Control API, the dispatcher, the node CA, raft membership) takes only the
collaborators below that it uses, plus plain values (cluster id, node id, heartbeat period),
the root CA (``ca.certs.RootCA``) and the peer authorizer (``ca.authz.PeerAuthorizer``).
``manager.Manager`` builds the real ones and the services from them; unit tests hand in a real
``state.Store`` with small fakes of the rest.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from swarmsecrets.crypto.keys import SealingKey
from swarmsecrets.manager import state


class StoreReader(Protocol):
    """The reads of ``state.Store`` that services use. Writes go through a ``Proposer``."""

    @property
    def cluster(self) -> state.Cluster | None: ...

    def secrets(self) -> list[state.Secret]: ...

    def secret(self, secret_id: str) -> state.Secret | None: ...

    def nodes(self) -> list[state.Node]: ...

    def managers(self) -> list[state.Node]: ...

    def manager_addrs(self) -> list[str]: ...

    def control_addr_of(self, raft_addr: str) -> str: ...

    def node(self, node_id: str) -> state.Node | None: ...

    def is_removed_node(self, node_id: str) -> bool: ...

    def services(self) -> list[state.Service]: ...

    def service(self, service_id: str) -> state.Service | None: ...

    def tasks(self, service_id: str | None = None, node_id: str | None = None) -> list[state.Task]: ...

    def has_request(self, rid: str) -> bool: ...

    def check_request(self, cmd: state.Command) -> None: ...

    def resolve_secret(self, ref: str) -> state.Secret: ...

    def resolve_node(self, ref: str) -> state.Node: ...

    def resolve_service(self, ref: str) -> state.Service: ...


class GroupStatus(Protocol):
    """The raft group as this manager sees it now."""

    @property
    def leader(self) -> str | None:
        """The leader's raft address, None while there is none."""
        ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def term(self) -> int: ...

    @property
    def members(self) -> list[str]:
        """Raft addresses of the group's members."""
        ...

    @property
    def reachable(self) -> set[str]:
        """Members this manager's raft links reach now."""
        ...


class Proposer(Protocol):
    """The way into the replicated state: writes through the raft log, linearizable reads."""

    async def propose(self, cmd: state.Command, *, leader_only: int | None = None) -> Any:
        """Replicate ``cmd`` and return its result, or raise its typed error. With
        ``leader_only=TERM``: only while this manager leads in TERM, never retried elsewhere
        (for the leader's own decisions)."""
        ...

    async def barrier(self) -> None:
        """Return once the local store reflects every write acknowledged before the call."""
        ...

    def leader_term(self) -> int | None:
        """The current term if this manager leads, else None."""
        ...

    def status(self) -> GroupStatus: ...

    @property
    def stopped(self) -> bool:
        """Whether this manager stopped (a restart, a role change): the store no longer changes."""
        ...


class RaftMembers(Protocol):
    """Changes of the raft group's membership (one at a time, through the leader)."""

    async def add_member(self, raft_addr: str) -> None: ...

    async def remove_member(self, raft_addr: str) -> None: ...


class Sealer(Protocol):
    """The swarm's data key: what the state keeps sealed (secret values, join tokens, the
    unlock key) is sealed and opened only through it."""

    def current(self) -> SealingKey:
        """The current key: a request seals everything under the one it took, and records its id."""
        ...

    def unseal(self, ciphertext: bytes) -> bytes: ...

    def digest(self, data: bytes) -> bytes:
        """A keyed digest (32 bytes): it says nothing of ``data`` to whoever lacks the key."""
        ...


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time (timestamps that go into commands)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timeouts, liveness)."""
        ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()



class StoreNodes:
    """The store as the peer check (``ca.authz.NodeReader``) reads it: a node's current role, and
    whether it was removed."""

    def __init__(self, store: StoreReader) -> None:
        self.store = store

    def node_role(self, node_id: str) -> str | None:
        node = self.store.node(node_id)
        return node.role if node is not None else None

    def is_removed_node(self, node_id: str) -> bool:
        return self.store.is_removed_node(node_id)
