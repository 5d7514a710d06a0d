"""A running manager: the raft node, the store, the cluster keys, the services and the TLS port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from swarmsecrets import errors, validation, wire
from swarmsecrets.api.v1 import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    raft_pb2,
    raft_pb2_grpc,
)
from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import MANAGERS, PeerAuthorizer, raft_peer_verifier
from swarmsecrets.ca.material import RaftContexts, Snapshot, TLSMaterial
from swarmsecrets.ca.rotation import SwarmCA
from swarmsecrets.fsutil import write_private
from swarmsecrets.manager.collaborators import StoreNodes, SystemClock
from swarmsecrets.manager.controlapi import ControlAPI, ControlServicer
from swarmsecrets.manager.datakey import DataKey
from swarmsecrets.manager.dekrotation import DataKeyRotator, KeyedStateMachine
from swarmsecrets.manager.dispatcher import Dispatcher
from swarmsecrets.manager.health import Health, MembersOnly
from swarmsecrets.manager.health import add_to_server as add_health
from swarmsecrets.manager.nodeca import NodeCAService
from swarmsecrets.manager.proposer import RaftProposer
from swarmsecrets.manager.raftedge import ManagerRaft
from swarmsecrets.manager.raftmembership import RaftMembershipService
from swarmsecrets.manager.rootrotation import RootRotationFollower, TrustedRoots
from swarmsecrets.audit import ControlAudit
from swarmsecrets.manager.controlapi.logs import LogsAPI
from swarmsecrets.manager.logbroker import LogBroker
from swarmsecrets.manager.watch import NodeEvents, RaftWatch, StatusFeed
from swarmsecrets.manager.scheduler import Scheduler
from swarmsecrets.manager.state import (
    STATE_VERSION,
    Applied,
    BeginDataKeyRotation,
    Command,
    FinishDataKeyRotation,
    Store,
    UpdateNode,
    supported_version,
)
from swarmsecrets.metrics import GrpcMetrics, Metrics
from swarmsecrets.node.nodedir import NodeDir, NodeState
from swarmsecrets.raft import RaftNode, RaftTiming
from swarmsecrets.rpcutil import MalformedRequests, peer_certificate

log = logging.getLogger(__name__)

# How often a manager retries recording its state version when it could not (no leader yet).
ADVERTISE_RETRY = 2.0
# The state version from which a manager's raft reads the read-index fields (raft/readindex.py).
READ_INDEX_SINCE = 6
# The services of the TLS port, by their full names (for health and reflection).
SERVICES = [m.DESCRIPTOR.services_by_name[name].full_name for m, name in (
    (control_pb2, "Control"), (ca_pb2, "NodeCA"), (raft_pb2, "RaftMembership"), (dispatcher_pb2, "Dispatcher"))]


class Manager:
    """The composition root of a manager: it builds the collaborators (store, proposer, data key,
    CA, peer authorizer, clock) and hands each service only those it uses."""

    def __init__(self, nodedir: NodeDir, state: NodeState, dek: bytes, ca_key_pem: bytes, material: TLSMaterial,
                 timing: RaftTiming, heartbeat_period: float, min_cert_expiry: float = 3600.0,
                 previous_deks: tuple[bytes, ...] = (),
                 on_new_ca_key: Callable[[bytes, int], None] = lambda key, index: None,
                 save_roots: Callable[[bytes], None] | None = None,
                 renew_now: Callable[[], None] = lambda: None, metrics: Metrics | None = None) -> None:
        """``material``: the node's identity, from memory (under autolock its key is on disk only
        sealed): the ports take it from there, never from a file, and follow its renewals.
        ``previous_deks``: the data keys of a rotation in progress (see ``dekrotation``).
        ``on_new_ca_key``, ``save_roots`` (default: write the CA file), ``renew_now``: the node's
        part in a root CA rotation (see ``rootrotation.RootRotationFollower``). ``metrics``: the
        daemon's, fed by raft, proposals, the dispatcher and every call on the TLS port."""
        self.dir = nodedir
        self.metrics = metrics or Metrics()
        self.material = material
        self.state = state
        self.clock = SystemClock()
        self.data_key = DataKey(dek, previous_deks)
        ca_pem = nodedir.read(nodedir.ca_path)
        self.store = Store()
        # The CA file holds the roots the node trusts, the current one first.
        self.ca = SwarmCA(certs.RootCA(ca_pem, ca_key_pem), lambda: self.store.cluster, self.data_key)
        self.authz = PeerAuthorizer(TrustedRoots(self.store, self.ca.current.cert), state.cluster_id,
                                    StoreNodes(self.store))
        self.tls = RaftContexts(material, raft_peer_verifier(state.cluster_id))
        # First subscriber: the ring follows a rotation before anyone else hears of the apply.
        self.store.subscribe(self._follow_data_key)
        self.raft = ManagerRaft(RaftNode(self_addr=state.raft_addr, members=state.members or [state.raft_addr],
                                         data_dir=nodedir.raft_dir, tls=self.tls,
                                         state_machine=KeyedStateMachine(self.store, self.data_key,
                                                                         self._data_key_missing),
                                         timing=timing, observer=self.metrics.raft_observer(),
                                         read_index_ready=self._managers_read_index),
                                node_id=state.node_id, on_proposal=self.metrics.observe_proposal)
        # Set by the node: fetch the ring from another manager (on the raft thread; see ``DataKey.missing``).
        self.on_missing_data_key: Callable[[], None] | None = None
        # About one election: how long a request waits for a leader before reporting none.
        self.proposer = RaftProposer(self.raft, self.store, self.clock, no_leader_grace=2 * timing.election_max)
        self.log_broker = LogBroker()
        self.control = ControlAPI.build(store=self.store, proposer=self.proposer, members=self.proposer,
                                        sealer=self.data_key, ca=self.ca, node_id=state.node_id,
                                        raft_addr=state.raft_addr, min_cert_expiry=min_cert_expiry,
                                        default_heartbeat=heartbeat_period,
                                        logs=LogsAPI(self.store, self.proposer, self.log_broker, self._manager_channel))
        self.rotator = DataKeyRotator(self.store, self.proposer, self.data_key, self.clock)
        self.server: grpc.aio.Server | None = None
        self.dispatcher: Dispatcher | None = None
        self.health: Health | None = None
        self.scheduler: Scheduler | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.heartbeat_period = heartbeat_period
        self.raft_watch = RaftWatch(lambda: self.raft.status(), grace=2 * timing.election_max,
                                    clock=self.clock.monotonic)
        self.rotation = RootRotationFollower(store=self.store, proposer=self.proposer, sealer=self.data_key,
                                             ca=self.ca, material=material, node_id=state.node_id,
                                             save_roots=save_roots or (lambda pem: write_private(nodedir.ca_path, pem)),
                                             on_new_ca_key=on_new_ca_key, renew_now=renew_now)
        self.store.subscribe(self.rotation.on_apply)

    def _managers_read_index(self) -> bool:
        """Whether every manager's raft reads read-index fields (on the raft thread)."""
        return supported_version(self.store.managers()) >= READ_INDEX_SINCE

    # --- lifecycle ----------------------------------------------------------------------

    def start_raft(self) -> None:
        self.raft.start()
        self.data_key.follow(self.store.cluster)
        if self.data_key.missing(self.store.cluster):
            self._data_key_missing()

    def _data_key_missing(self) -> None:
        log.warning("the swarm's data key changed while this manager was away: asking another manager for it")
        if self.on_missing_data_key is not None:
            self.on_missing_data_key()

    def _follow_data_key(self, event: Applied) -> None:
        """On the raft thread: a rotation's new key becomes current as it applies; once every
        record is under it, the previous key is forgotten (the key file keeps it until
        ``dekrotation.RetiredKeyScrub`` has compacted the journal past the rotation)."""
        if not event.ok:
            return
        if isinstance(event.command, BeginDataKeyRotation):
            self.data_key.follow(self.store.cluster)
            if self.data_key.missing(self.store.cluster):
                self._data_key_missing()
        elif isinstance(event.command, FinishDataKeyRotation):
            self.data_key.retire()

    async def control_for_manager(self, context: grpc.aio.ServicerContext) -> ControlAPI:
        """The Control API for a caller on the TLS port: managers of this swarm only, by their
        certificate first (no raft for anyone else), then by their record after a read barrier."""
        ident = self.authz.authenticate(peer_certificate(context), MANAGERS)
        await self.proposer.barrier()
        self.authz.authorize(ident, MANAGERS)
        return self.control

    async def start_server(self) -> None:
        """Serve the TLS port (Control for manager certs, NodeCA, RaftMembership, Dispatcher)
        and run the leader-only loops (scheduler, worker liveness)."""
        loop = asyncio.get_running_loop()
        self.dispatcher = Dispatcher(store=self.store, proposer=self.proposer, authz=self.authz,
                                     sealer=self.data_key, heartbeat_period=self.heartbeat_period, clock=self.clock,
                                     on_delivery=self.metrics.observe_delivery, logs=self.log_broker)
        scheduler = self.scheduler = Scheduler(self.store.view, self.proposer.leader_term, self._propose_decision,
                                               clock=self.clock.now_ns)
        applied = asyncio.Event()
        health = self.health = Health(self.raft.status, SERVICES)
        feed = StatusFeed(self.raft.status, [health.refresh, self.raft_watch.sample, self.dispatcher.follow])

        def poke(rotation: bool) -> None:
            scheduler.poke()
            feed.poke()
            applied.set()
            if rotation:
                self.rotator.poke()

        def on_apply(event: Applied) -> None:
            # Two hops: the pokes queue up behind the replies to the proposals this apply answers
            # (delivered in the same wake-up of the loop), so those requests are answered before
            # the tasks the pokes wake run.
            loop.call_soon_threadsafe(loop.call_soon, poke, isinstance(event.command, BeginDataKeyRotation))

        self.store.subscribe(self.dispatcher.on_apply)
        self.store.subscribe(on_apply)
        self.store.subscribe(NodeEvents(lambda: self.raft.status().is_leader, self.store).on_apply)
        advertise = advertise_state_version(self.store, self.state.node_id, self.proposer.propose, applied)
        self._loops = [asyncio.create_task(self.scheduler.run()), asyncio.create_task(self.dispatcher.monitor()),
                       asyncio.create_task(advertise), asyncio.create_task(self.rotation.run()),
                       asyncio.create_task(self.rotator.run()), asyncio.create_task(feed.run())]
        # Joiners present a bootstrap certificate (see certs.bootstrap_ca_cert) derived from their
        # token's digest, the digest of the root that signs now; RPCs authorize only certificates
        # of a trusted root.
        def bootstrap(m: Snapshot) -> bytes:
            return certs.bootstrap_ca_cert(certs.ca_digest(self.ca.signer().ca.cert_pem))

        creds = self.material.grpc_server_credentials(bootstrap)
        server = grpc.aio.server(options=wire.TLS_SERVER_OPTIONS, interceptors=[
            GrpcMetrics(self.metrics), MembersOnly(self.authz), MalformedRequests(), ControlAudit()])
        control_pb2_grpc.add_ControlServicer_to_server(ControlServicer(self.control_for_manager), server)
        ca_pb2_grpc.add_NodeCAServicer_to_server(NodeCAService(
            store=self.store, proposer=self.proposer, ca=self.ca, authz=self.authz, sealer=self.data_key,
            data_key=self.data_key, cluster_id=self.state.cluster_id), server)
        raft_pb2_grpc.add_RaftMembershipServicer_to_server(
            RaftMembershipService(self.store, self.proposer, self.proposer, self.authz), server)
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(self.dispatcher, server)
        add_health(server, health, SERVICES)
        server.add_secure_port(self.state.listen_addr or self.state.advertise_addr, creds)
        await server.start()
        self.server = server

    def _manager_channel(self, addr: str) -> grpc.aio.Channel:
        """To another manager's TLS port, as this manager."""
        target = validation.format_addr(*validation.validate_addr(addr, 0))
        return grpc.aio.secure_channel(target, self.material.grpc_channel_credentials(),
                                       options=wire.TLS_CHANNEL_OPTIONS)

    async def _propose_decision(self, cmd: Command, term: int) -> object:
        return await self.proposer.propose(cmd, leader_only=term)

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        self._loops = []
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        await asyncio.to_thread(self.raft.stop)
        self.tls.close()


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

