"""A running manager: the raft node, the store, the cluster keys and the TLS port."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc

from swarmsecrets import errors, wire
from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import PeerAuthorizer, raft_peer_verifier
from swarmsecrets.crypto import keys
from swarmsecrets.api.v1 import dispatcher_pb2_grpc
from swarmsecrets.manager.state import (
    STATE_VERSION,
    Applied,
    Command,
    LogStateMachine,
    Store,
    UpdateNode,
    encode_command,
    require_supported,
    unwrap,
)
from swarmsecrets.manager.dispatcher import Dispatcher
from swarmsecrets.manager.raftedge import ManagerRaft
from swarmsecrets.manager.scheduler import Scheduler
from swarmsecrets.node.nodedir import NodeDir, NodeState
from swarmsecrets.raft import RaftNode, RaftStatus, RaftTiming, RaftTLS

log = logging.getLogger(__name__)

# How long a control request may wait for raft before it reports an unknown outcome.
PROPOSE_TIMEOUT = 5.0
BARRIER_TIMEOUT = 5.0
# How often a manager retries recording its state version when it could not (no leader yet).
ADVERTISE_RETRY = 2.0


def now_ns() -> int:
    return time.time_ns()


class _StoreNodes:
    """The store as the peer check reads it: a node's current role, and whether it was removed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def node_role(self, node_id: str) -> str | None:
        node = self.store.node(node_id)
        return node.role if node is not None else None

    def is_removed_node(self, node_id: str) -> bool:
        return self.store.is_removed_node(node_id)


class Manager:
    def __init__(self, nodedir: NodeDir, state: NodeState, dek: bytes, ca_key_pem: bytes,
                 timing: RaftTiming, heartbeat_period: float) -> None:
        self.dir = nodedir
        self.state = state
        self.dek = dek
        self.key_id = keys.key_id(dek)
        ca_pem = nodedir.read(nodedir.ca_path)
        self.ca = certs.RootCA(ca_pem, ca_key_pem)
        self.store = Store()
        self.authz = PeerAuthorizer(self.ca.cert, state.cluster_id, _StoreNodes(self.store))
        self.tls = RaftTLS(
            server_ctx=certs.server_context(nodedir.cert_path, nodedir.key_path, ca_pem),
            client_ctx=certs.client_context(nodedir.cert_path, nodedir.key_path, ca_pem),
            verify_peer=raft_peer_verifier(state.cluster_id),
        )
        self.raft = ManagerRaft(RaftNode(self_addr=state.raft_addr, members=state.members or [state.raft_addr],
                                         data_dir=nodedir.raft_dir, tls=self.tls,
                                         state_machine=LogStateMachine(self.store), timing=timing))
        self.server: grpc.aio.Server | None = None
        self.dispatcher: Dispatcher | None = None
        self.scheduler: Scheduler | None = None
        self._loops: list[asyncio.Task[None]] = []
        # About one election: how long a request waits for a leader before reporting none.
        self.no_leader_grace = 2 * timing.election_max
        self.heartbeat_period = heartbeat_period

    # --- lifecycle ----------------------------------------------------------------------

    def start_raft(self) -> None:
        self.raft.start()

    async def start_server(self, register: Callable[[grpc.aio.Server], None]) -> None:
        """Serve the TLS port (Control for manager certs, NodeCA, RaftMembership, Dispatcher)
        and run the leader-only loops (scheduler, worker liveness)."""
        loop = asyncio.get_running_loop()
        self.dispatcher = Dispatcher(self, self.heartbeat_period)
        scheduler = self.scheduler = Scheduler(self.store.view, self.leader_term, self._propose_decision)
        applied = asyncio.Event()

        def on_apply(event: Applied) -> None:
            loop.call_soon_threadsafe(scheduler.poke)
            loop.call_soon_threadsafe(applied.set)

        self.store.subscribe(self.dispatcher.on_apply)
        self.store.subscribe(on_apply)
        advertise = advertise_state_version(self.store, self.state.node_id, self.propose, applied)
        self._loops = [asyncio.create_task(self.scheduler.run()), asyncio.create_task(self.dispatcher.monitor()),
                       asyncio.create_task(advertise)]
        creds = grpc.ssl_server_credentials(
            [(self.dir.read(self.dir.key_path), self.dir.read(self.dir.cert_path) + self.ca.cert_pem)],
            # Joiners present a bootstrap certificate (see certs.bootstrap_ca_cert); RPCs
            # authorize only certificates the root CA issued.
            root_certificates=self.ca.cert_pem + certs.bootstrap_ca_cert(certs.ca_digest(self.ca.cert_pem)),
            require_client_auth=True,
        )
        server = grpc.aio.server(options=wire.TLS_SERVER_OPTIONS)
        register(server)
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(self.dispatcher, server)
        server.add_secure_port(self.state.listen_addr or self.state.advertise_addr, creds)
        await server.start()
        self.server = server

    async def _propose_decision(self, cmd: Command, term: int) -> Any:
        return await self.propose(cmd, leader_only=term)

    def poke_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.poke()

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        self._loops = []
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        await asyncio.to_thread(self.raft.stop)

    # --- raft ---------------------------------------------------------------------------

    async def propose(self, cmd: Command, timeout: float = PROPOSE_TIMEOUT,
                      leader_only: int | None = None) -> Any:
        """Replicate a command and return its result (or raise its typed error).

        A command kind that some manager of the swarm could not apply (it runs an older release)
        is refused here, before it reaches the log.

        Through a failover it retries the same command (same request id, so the state
        machine applies it at most once): after no leader for about one election it
        reports none; after ``timeout`` with the outcome unknown it says so.

        ``leader_only=TERM`` is for the leader's own decisions (scheduling, node liveness,
        worker reports it received): made from this leader's view in that term, they must
        not outlive it. They go in only while this node still leads in TERM, are never
        forwarded to another leader, and are not retried.
        """
        require_supported(cmd, self.store.managers())
        entry = encode_command(cmd if cmd.ts else replace(cmd, ts=now_ns()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if leader_only is not None:
            return unwrap(await self._propose_as_leader(entry, timeout, leader_only))
        result = await self._ride_out_failover(
            lambda: asyncio.wrap_future(self.raft.propose_async(entry, max(0.1, deadline - loop.time()))),
            deadline)
        return unwrap(result)

    async def _propose_as_leader(self, entry: dict[str, Any], timeout: float, term: int) -> Any:
        st = self.raft.status()
        if not st.is_leader or st.term != term:
            raise errors.Unavailable("this manager no longer leads the swarm")
        return await asyncio.wrap_future(self.raft.propose_async(entry, timeout))

    def leader_term(self) -> int | None:
        """The current term if this manager leads, else None."""
        st = self.raft.status()
        return st.term if st.is_leader else None

    async def barrier(self) -> None:
        """Linearizable reads: local state reflects every write acknowledged before this call."""
        deadline = asyncio.get_running_loop().time() + BARRIER_TIMEOUT
        await self._ride_out_failover(lambda: asyncio.to_thread(self.raft.read_barrier, BARRIER_TIMEOUT), deadline)

    async def _ride_out_failover(self, attempt: Callable[[], Awaitable[Any]], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        no_leader_until = loop.time() + self.no_leader_grace
        while True:
            try:
                self._require_quorum()
                return await attempt()
            except errors.Unavailable:
                if loop.time() >= min(no_leader_until, deadline):
                    raise
            except errors.DeadlineExceeded:
                if loop.time() >= deadline:
                    raise
                no_leader_until = loop.time() + self.no_leader_grace
            await asyncio.sleep(0.05)

    def _require_quorum(self) -> None:
        """Refuse before sending when this manager cannot reach a majority (its links to the
        others are down): the request then certainly did not happen, and says so at once."""
        st = self.raft.status()
        if len(st.reachable) * 2 <= len(st.members):
            raise errors.NoLeader()

    def raft_status(self) -> RaftStatus:
        return self.raft.status()

    def control_addr_of(self, raft_addr: str) -> str:
        """The advertised control address of the manager at this raft address ("" if unknown)."""
        return next((n.addr for n in self.store.nodes() if n.raft_addr == raft_addr), "")

    def manager_addrs(self) -> list[str]:
        return sorted(n.addr for n in self.store.managers() if n.addr)

    # --- keys -----------------------------------------------------------------------------

    def seal(self, plaintext: bytes) -> bytes:
        return keys.seal(self.dek, plaintext)

    def unseal(self, ciphertext: bytes) -> bytes:
        return keys.open_sealed(self.dek, ciphertext)

    def join_tokens(self) -> dict[str, str]:
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        sealed = cluster.join_tokens
        return {"worker": self.unseal(sealed.worker).decode(), "manager": self.unseal(sealed.manager).decode()}

    def unlock_key(self) -> bytes | None:
        cluster = self.store.cluster
        sealed = cluster.unlock_key if cluster else None
        return self.unseal(sealed) if sealed else None


async def advertise_state_version(store: Store, node_id: str, propose: Callable[[Command], Awaitable[object]],
                                  applied: asyncio.Event, retry: float = ADVERTISE_RETRY) -> None:
    """Record in this manager's Node the state version it can apply (a manager that was just
    upgraded says so): a command kind is proposed only once every manager supports it. Waits for
    the record to exist (``applied`` is set after each apply) and retries while there is no leader."""
    while True:
        applied.clear()
        node = store.node(node_id)
        if node is not None and node.role == "manager":
            if node.state_version == STATE_VERSION:
                return
            try:
                await propose(UpdateNode(id=node.id, state_version=STATE_VERSION))
                continue
            except errors.SwarmError as e:
                log.info("state version not advertised yet: %s", e)
        try:
            await asyncio.wait_for(applied.wait(), retry)
        except TimeoutError:
            pass

