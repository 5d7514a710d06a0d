"""What the manager's services are tested with: the real typed store, a proposer that applies
commands to it at once (through the same codec as a raft member), a clock the test moves, a
fake gRPC servicer context, and a swarm with real certificates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import grpc

from swarmsecrets import errors, wire
from swarmsecrets.ca import certs, tokens
from swarmsecrets.ca.authz import PeerAuthorizer
from swarmsecrets.ca.rotation import SwarmCA
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import StoreNodes
from swarmsecrets.manager.controlapi import ControlAPI, ControlServicer
from swarmsecrets.manager.datakey import DataKey

CLUSTER_ID = "c" * 25
SELF_ID = "m1"
SELF_RAFT = "127.0.0.1:4243"

T = TypeVar("T")


@dataclass
class Status:
    """A raft group's status as a test sets it (``collaborators.GroupStatus``)."""

    leader: str | None = SELF_RAFT
    is_leader: bool = True
    term: int = 3
    members: list[str] = field(default_factory=lambda: [SELF_RAFT])
    reachable: set[str] = field(default_factory=lambda: {SELF_RAFT})


@dataclass
class Clock:
    ns: int = 1_700_000_000 * 10**9
    mono: float = 1000.0

    def now_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.mono


class StoreProposer:
    """``collaborators.Proposer`` and ``RaftMembers`` over a real Store: a proposal is encoded,
    decoded and applied at the next index at once, as a raft member would apply it."""

    def __init__(self, store: state.Store, clock: Clock, status: Status | None = None) -> None:
        self.store = store
        self.machine = state.LogStateMachine(store)
        self.clock = clock
        self.group = status or Status()
        self.proposed: list[state.Command] = []
        self.barriers = 0
        self.fail_next: errors.SwarmError | None = None

    async def propose(self, cmd: state.Command, *, leader_only: int | None = None) -> Any:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        if leader_only is not None and (not self.group.is_leader or self.group.term != leader_only):
            raise errors.Unavailable("this manager no longer leads the swarm")
        state.require_supported(cmd, self.store.managers())
        self.store.check_request(cmd)
        cmd = cmd if cmd.ts else replace(cmd, ts=self.clock.now_ns())
        self.proposed.append(cmd)
        return state.unwrap(self.machine.apply(state.encode_command(cmd), self.store.applied_index + 1))

    def apply(self, cmd: state.Command) -> Any:
        """Set up state: apply a command as if another manager had proposed it."""
        cmd = cmd if cmd.ts else replace(cmd, ts=self.clock.now_ns())
        return state.unwrap(self.machine.apply(state.encode_command(cmd), self.store.applied_index + 1))

    async def barrier(self) -> None:
        self.barriers += 1

    stopped = False

    def leader_term(self) -> int | None:
        return self.group.term if self.group.is_leader else None

    def status(self) -> Status:
        return self.group

    async def add_member(self, raft_addr: str) -> None:
        self.group.members.append(raft_addr)
        self.group.reachable.add(raft_addr)

    async def remove_member(self, raft_addr: str) -> None:
        self.group.members.remove(raft_addr)
        self.group.reachable.discard(raft_addr)


class Aborted(Exception):
    """What a servicer's ``context.abort`` raised: the status a client would receive."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str], ...]) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.metadata = dict(metadata)

    @property
    def kind(self) -> str | None:
        return self.metadata.get(wire.ERROR_KIND_METADATA)


class Context:
    """The little of ``grpc.aio.ServicerContext`` the services use: the TLS peer's certificate,
    the peer address, and abort."""

    def __init__(self, cert_pem: bytes | None = None, peer: str = "ipv4:10.0.0.5:53012") -> None:
        self.cert_pem = cert_pem
        self._peer = peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert_pem]} if self.cert_pem else {}

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: tuple[tuple[str, str], ...] = ()) -> None:
        raise Aborted(code, details, trailing_metadata)


def ctx(cert_pem: bytes | None = None, peer: str = "ipv4:10.0.0.5:53012") -> Any:
    """A fake servicer context, typed loosely so it can be passed where gRPC's is expected."""
    return Context(cert_pem, peer)


async def aborted(call: Awaitable[Any]) -> Aborted:
    try:
        await call
    except Aborted as e:
        return e
    raise AssertionError("the call succeeded")


async def collect(stream: AsyncIterator[T], n: int) -> list[T]:
    out = []
    async for item in stream:
        out.append(item)
        if len(out) == n:
            break
    return out


class Swarm:
    """A swarm's state on one manager: a real store with the cluster and this manager's record,
    a real root CA and data key, and the fakes around them."""

    def __init__(self, *, autolock: bool = False) -> None:
        self.store = state.Store()
        self.clock = Clock()
        self.proposer = StoreProposer(self.store, self.clock)
        self.ca = certs.create_root_ca()
        self.sealer = DataKey(keys.new_key())
        self.worker_token = str(tokens.new_token(self.ca.cert_pem))
        self.manager_token = str(tokens.new_token(self.ca.cert_pem))
        self.unlock = keys.new_key() if autolock else None
        self.proposer.apply(state.InitCluster(
            cluster=state.Cluster(
                id=CLUSTER_ID, root_ca_cert=self.ca.cert_pem.decode(), autolock=autolock,
                join_tokens=state.JoinTokens(worker=self.sealer.current().seal(self.worker_token.encode()),
                                             manager=self.sealer.current().seal(self.manager_token.encode())),
                unlock_key=self.sealer.current().seal(self.unlock) if self.unlock else None,
                key_id=self.sealer.key_id),
            node=state.Node(id=SELF_ID, role="manager", hostname="m1", addr="127.0.0.1:4242",
                            raft_addr=SELF_RAFT, state_version=state.STATE_VERSION)))
        self.authz = PeerAuthorizer(self.ca.cert, CLUSTER_ID, StoreNodes(self.store))
        # The manager's CA as services take it (it signs with the new root during a rotation).
        self.swarm_ca = SwarmCA(self.ca, lambda: self.store.cluster, self.sealer)

    def add_node(self, node_id: str, role: str = "worker", *, status: str = "ready", hostname: str = "",
                 addr: str = "", raft_addr: str = "") -> state.Node:
        node: state.Node = self.proposer.apply(state.AddNode(rid=f"add-{node_id}", node=state.Node(
            id=node_id, role=role, hostname=hostname or node_id, addr=addr or "10.0.0.9", raft_addr=raft_addr,
            state_version=state.STATE_VERSION if role == "manager" else 0)))
        if status != "unknown":
            node = self.proposer.apply(state.UpdateNode(id=node_id, status=status))
        return node

    def cert(self, node_id: str, role: str, *, ca: certs.RootCA | None = None, cluster_id: str = CLUSTER_ID,
             raft_addr: str | None = None) -> bytes:
        """A real certificate for ``node_id`` as the swarm's CA (or another) issues it."""
        _, csr = certs.generate_key_and_csr()
        if role == "manager" and raft_addr is None:
            raft_addr = SELF_RAFT if node_id == SELF_ID else "127.0.0.1:5001"
        return certs.issue_node_cert(ca or self.ca, csr, node_id=node_id, role=role, cluster_id=cluster_id,
                                     raft_addr=raft_addr)

    def secret(self, name: str, data: bytes = b"value") -> state.Secret:
        created: state.Secret = self.proposer.apply(state.CreateSecret(
            rid=f"secret-{name}", id=f"{name}-id".ljust(25, "0"), name=name, data=self.sealer.current().seal(data),
            key_id=self.sealer.key_id))
        return created

    def service(self, name: str, secrets: tuple[state.SecretRef, ...] = (), replicas: int = 1) -> state.Service:
        created: state.Service = self.proposer.apply(state.CreateService(rid=f"service-{name}", service=state.Service(
            id=f"{name}-id".ljust(25, "0"), name=name, mode="replicated", replicas=replicas, command=("sleep", "9"),
            secrets=secrets)))
        return created

    def task(self, task_id: str, service: state.Service, node_id: str, slot: int = 1) -> None:
        self.proposer.apply(state.Schedule(create=(state.Task(
            id=task_id, service_id=service.id, service_name=service.name, slot=slot, node_id=node_id,
            spec_version=service.spec_version),)))


def control(swarm: Swarm) -> ControlServicer:
    """The Control servicer of the manager ``swarm`` runs on, as the local operator reaches it."""
    api = ControlAPI.build(store=swarm.store, proposer=swarm.proposer, members=swarm.proposer, sealer=swarm.sealer,
                           ca=swarm.swarm_ca, node_id=SELF_ID, raft_addr=SELF_RAFT)
    return ControlServicer(lambda context: api)


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), 30))
