"""The node: what this machine is in the swarm, and every change of it.

It starts inactive (like dockerd) and, after ``swarm init`` or ``swarm join``, runs as a manager
(raft, control API, CA) or a worker (the agent). A manager runs the worker agent too while its
availability in the store is not ``drain``, so that tasks may be placed on it as on a worker.
It remembers its role in its data dir and resumes it on restart. Every change of role runs under
one lock, is checked by the role state machine (``roles.py``) and, should it fail part-way, goes
back through one rollback (``_undo``) to the role the node had.

The node's TLS identity is held in memory (``node_cert``, ``node_key``) and only ever written to the
data dir by ``_save_identity``: in clear for a worker or a manager without autolock, sealed under the
unlock key with the manager keys under autolock. A locked manager has no key in memory: it serves no
TLS port, dials no peer and runs no agent until ``swarm unlock``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc

from swarmsecrets import __version__, errors, ids, validation, wire
from swarmsecrets.api.v1 import ca_pb2, ca_pb2_grpc, raft_pb2, raft_pb2_grpc
from swarmsecrets.ca import certs, tokens
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.controlapi import ControlAPI
from swarmsecrets.manager.datakey import unlock_key
from swarmsecrets.manager.manager import Manager
from swarmsecrets.node.config import DaemonConfig
from swarmsecrets.node import recovery
from swarmsecrets.node.localapi import Backedup, InitOptions, Initialized, JoinOptions, Joined, NodeInfo
from swarmsecrets.node.nodedir import NodeDir, NodeState
from swarmsecrets.node.roles import Change, Role, RoleMachine
from swarmsecrets.rpcutil import error_from_rpc
from swarmsecrets.worker.agent import Agent
from swarmsecrets.worker.secretsfs import NotTmpfsError

log = logging.getLogger("swarmsecretsd")

# How long init/join wait for the raft group to elect or admit this node.
FORMATION_TIMEOUT = 20.0
# How long a demoted manager waits for the others to commit its removal from raft (the manager
# that demoted it removes it right after, within its membership-change timeout) before it stops
# anyway; it then hands leadership over itself if it still has it.
DEMOTION_TIMEOUT = 30.0
# The default port of a manager's swarm address, as Docker's.
DEFAULT_SWARM_PORT = 2377


def _grpc_target(addr: str) -> str:
    return validation.format_addr(*validation.validate_addr(addr, 0))


class Node:
    """Implements ``localapi.NodeOperations``; the wiring (``main.py``) serves it."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.dir = NodeDir(config.data_dir)
        self.dir.ensure()
        self.state = self.dir.load()
        self.roles = RoleMachine(self.state.role)
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.lifecycle = asyncio.Lock()  # one role change at a time
        self.loop = asyncio.get_running_loop()
        self._background: set[asyncio.Task[None]] = set()
        self._agent_refused = ""  # why this manager's agent could not start, once said
        # This node's certificate and TLS key: None while inactive or locked.
        self.node_cert: bytes | None = None
        self.node_key: bytes | None = None

    @property
    def role(self) -> Role:
        return self.roles.role

    # --- who may use the control API -------------------------------------------------------------

    def serving_manager(self) -> Manager:
        """The running manager, or the error that says why there is none. A manager that is
        still being started (init, join, promotion, unlock) already answers its peers."""
        if self.manager is not None:
            return self.manager
        role = self.role
        if role in (Role.INACTIVE, Role.LEAVING):
            raise errors.NotInSwarm()
        if role is Role.LOCKED:
            raise errors.SwarmLocked()
        if role is not Role.MANAGER:
            raise errors.NotAManager()
        raise errors.Unavailable("the manager is starting")

    def local_control(self, context: grpc.aio.ServicerContext) -> ControlAPI:
        """The Control API for the local operator (the unix socket): the running manager's."""
        return self.serving_manager().control

    # --- role changes: the one place they happen -------------------------------------------------

    def _become(self, change: Change) -> None:
        """Record a completed change: the state machine first (it refuses what is not allowed),
        then the data dir (an inactive node forgets the swarm; others save their new role)."""
        role = self.roles.apply(change)
        if role is Role.INACTIVE:
            self.dir.wipe()
            self.state = NodeState()
            self.node_cert = self.node_key = None
        elif role in (Role.MANAGER, Role.WORKER):
            self.state.role = role
            self.dir.save(self.state)
        # LOCKED and LEAVING change nothing on disk: a locked node is a manager there, and a
        # leaving one is wiped when it has left.

    @asynccontextmanager
    async def _undo(self) -> AsyncIterator[None]:
        """The one rollback for init, join, promotion and unlock: on any failure, stop what was
        started and put the node back as it was (an inactive node forgets the attempt, a worker
        drops the manager keys and raft data and runs its agent again with the identity it now
        holds, a locked manager stays locked and forgets its key), then re-raise."""
        before = copy.deepcopy(self.state)
        role = self.role
        try:
            yield
        except BaseException:
            await self._stop_components()
            if role is Role.INACTIVE:
                self.dir.wipe()
                self.state = NodeState()
                self.node_cert = self.node_key = None
            elif role is Role.LOCKED:
                self.node_cert = self.node_key = None
            elif role is Role.WORKER:
                self._save_identity()
                self.dir.forget_manager_material()
                self.state = before
                self.dir.save(before)
                try:
                    self._start_agent()
                except errors.SwarmError as e:
                    log.error("could not restart the worker agent: %s", e)
            raise

    def _spawn(self, what: str, work: Coroutine[Any, Any, None]) -> None:
        """Run a role change the swarm asked for (promotion, demotion, removal) in the background."""
        task = self.loop.create_task(work, name=what)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %s", task.get_name(), task.exception())

    # --- start and stop the components -----------------------------------------------------------

    async def resume(self) -> None:
        """After a restart: run the role the data dir records (a manager with autolock stays locked,
        holding no key)."""
        async with self.lifecycle:
            if self.role is Role.WORKER:
                self._load_clear_identity()
                self._start_agent()
            elif self.role is Role.MANAGER:
                wrapped = keys.WrappedKeys(self.dir.keys_dir)
                if wrapped.autolocked():
                    if wrapped.holds_node_key():
                        self.dir.remove_clear_key()  # a copy a crash left while the key was being wrapped
                    self._become(Change.LOCK)
                    log.info("swarm is locked: waiting for 'swarmsecrets swarm unlock'")
                    return
                got = wrapped.load()
                self._load_clear_identity()
                await self._start_manager(got.dek, got.ca_key)
                await self._follow_availability()

    def _load_clear_identity(self) -> None:
        key = self.dir.read_clear_key()
        if key is None:
            raise errors.FailedPrecondition(f"this node's key is missing: {self.dir.key_path}")
        self.node_cert, self.node_key = self.dir.read(self.dir.cert_path), key

    def _save_identity(self, manager_keys: tuple[bytes, bytes] | None = None, unlock: bytes | None = None,
                       as_of: int = 0) -> None:
        """Write the identity held in memory (and a manager's ``(dek, ca_key)``) to the data dir.
        With an unlock key (autolock) the node's TLS key is sealed with the manager keys and its
        clear copy goes; otherwise the key stays in clear beside its certificate (a worker's, or a
        manager's whose KEK sits on the same disk anyway). ``as_of``: see ``WrappedKeys.as_of``."""
        cert, key = self.node_cert, self.node_key
        if cert is None or key is None:
            raise errors.SwarmLocked()
        ca_pem = self.dir.read(self.dir.ca_path)
        wrapped = keys.WrappedKeys(self.dir.keys_dir)
        if manager_keys is not None and unlock is not None:
            wrapped.store(*manager_keys, unlock, key, as_of=as_of)
            self.dir.write_identity(ca_pem, cert)
            self.dir.remove_clear_key()
            return
        self.dir.write_identity(ca_pem, cert, key)
        if manager_keys is not None:
            wrapped.store(*manager_keys, None, as_of=as_of)

    async def _start_manager(self, dek: bytes, ca_key: bytes,
                             before_serving: Callable[[Manager], Awaitable[Any]] | None = None) -> Manager:
        """Raft first; then (joining the group, or creating the cluster) ``before_serving``; then the TLS port."""
        if self.node_cert is None or self.node_key is None:
            raise errors.SwarmLocked()
        m = Manager(self.dir, self.state, dek, ca_key, self.node_cert, self.node_key, self.config.timing(),
                    self.config.dispatcher_heartbeat)
        m.store.subscribe(self._on_apply)
        try:
            await asyncio.to_thread(m.start_raft)
            self.manager = m
            if before_serving is not None:
                await before_serving(m)
            await m.start_server()
        except BaseException:
            self.manager = None
            await m.stop()
            raise
        log.info("manager started node_id=%s listen=%s raft=%s", self.state.node_id,
                 self.state.listen_addr, self.state.raft_addr)
        return m

    def _start_agent(self) -> None:
        """Start the worker agent: a worker's, or a manager's own (it first asks itself, and follows
        its dispatcher to the leader)."""
        agent: Agent | None = None

        def save_managers(addrs: list[str]) -> None:
            self.state.remote_managers = addrs
            self.dir.save(self.state)

        async def removed() -> None:  # the agent has stopped and wiped its secrets already
            self._spawn("removal", self._removed(agent))

        try:
            agent = Agent(secrets_root=self.config.secrets_root, allow_non_tmpfs=self.config.dev_allow_non_tmpfs,
                          managers=self.state.remote_managers or [self.state.advertise_addr],
                          channel=self._mtls_channel,
                          on_removed=removed, on_managers=save_managers,
                          on_promoted=lambda: self._spawn("promotion", self._promoted()),
                          hide=[self.dir.root, self.config.socket_path])
        except (OSError, ValueError, NotTmpfsError) as e:  # e.g. a secrets root that is not tmpfs
            raise errors.FailedPrecondition(str(e)) from None
        agent.start()
        self.agent = agent
        log.info("worker agent started node_id=%s secrets_root=%s", self.state.node_id, self.config.secrets_root)

    async def _stop_components(self) -> None:
        await self._stop_agent()
        if self.manager is not None:
            m, self.manager = self.manager, None
            await m.stop()

    async def _stop_agent(self) -> None:
        """Stop the agent, its tasks, and wipe its secrets; a manager records that it runs none."""
        if self.agent is not None:
            agent, self.agent = self.agent, None
            await agent.stop(wipe=True)
        if self.role is Role.MANAGER and self.roles.runs_agent:
            self.roles.apply(Change.STOP_AGENT)

    async def _follow_availability(self) -> None:
        """Under the lifecycle lock: make a serving manager run its worker agent while its record in
        the store lets tasks be placed on it (availability active or pause), and stop it (wiping
        its secrets) once the node is drained. A secrets root that cannot hold secrets (not tmpfs,
        without the dev flag) leaves the manager without an agent: it then never becomes Ready for
        tasks, and says so once."""
        m = self.manager
        if self.role is not Role.MANAGER or m is None:
            return
        record = m.store.node(self.state.node_id)
        may_take_tasks = record is not None and record.role == "manager" and record.availability != "drain"
        if may_take_tasks and not self.roles.runs_agent:
            try:
                self._start_agent()
            except errors.SwarmError as e:
                if self._agent_refused != e.message:
                    log.error("this manager runs no tasks: its worker agent cannot start: %s", e.message)
                self._agent_refused = e.message
                return
            self._agent_refused = ""
            self.roles.apply(Change.START_AGENT)
        elif not may_take_tasks and self.roles.runs_agent:
            await self._stop_agent()
            log.info("worker agent stopped: this manager may not take tasks (drained or demoted)")

    async def _availability_changed(self) -> None:
        async with self.lifecycle:
            await self._follow_availability()

    async def shutdown(self) -> None:
        """The process is stopping: role changes in flight end (rolled back), then the components."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        async with self.lifecycle:
            await self._stop_components()

    # --- what the swarm tells this node ----------------------------------------------------------

    def _on_apply(self, event: state.Applied) -> None:
        """Runs on the raft thread: re-wrap this node's keys (its TLS key too) when the unlock key
        rotates or autolock is turned on or off; step down to a worker when this manager is demoted;
        start or stop a manager's own agent when its availability (or role) changes."""
        cmd = event.command
        if not event.ok:
            return
        if ((isinstance(cmd, state.UpdateNode) and cmd.id == self.state.node_id
             and (cmd.availability is not None or cmd.role is not None))
                or (isinstance(cmd, state.AddNode) and cmd.node.id == self.state.node_id)):
            self.loop.call_soon_threadsafe(lambda: self._spawn("availability", self._availability_changed()))
        if isinstance(cmd, state.UpdateNode) and cmd.id == self.state.node_id and cmd.role == "worker":
            self.loop.call_soon_threadsafe(lambda: self._spawn("demotion", self._demoted()))
        if (isinstance(cmd, state.UpdateCluster) and cmd.unlock_key is not None) or isinstance(cmd, state.SetAutolock):
            self._rewrap(event.index)

    def _rewrap(self, index: int) -> None:
        """On the raft thread, right after the apply at ``index`` changed the unlock key or turned
        autolock on or off: wrap this manager's keys as the cluster record now says."""
        m = self.manager
        cluster = m.store.cluster if m is not None else None
        if m is None or cluster is None:
            return
        if index <= keys.WrappedKeys(self.dir.keys_dir).as_of():
            return  # replayed after a restart: the keys are wrapped under a later unlock key already
        unlock = unlock_key(m.store, m.data_key) if cluster.autolock else None
        self._save_identity((m.data_key.key, m.ca.key_pem or b""), unlock, as_of=index)
        autolock = unlock is not None
        if autolock != self.state.autolock:
            self.loop.call_soon_threadsafe(self._record_autolock, autolock)

    def _record_autolock(self, autolock: bool) -> None:
        self.state.autolock = autolock
        if self.role is Role.MANAGER:
            self.dir.save(self.state)

    async def _promoted(self) -> None:
        """The swarm made this worker a manager: new certificate, keys, raft membership. A failure
        leaves a worker; the agent's next session hears of the promotion again and retries."""
        async with self.lifecycle:
            if self.role is not Role.WORKER:
                return
            managers = list(self.state.remote_managers)
            try:
                async with self._undo():
                    await self._stop_components()
                    resp = await self._renew_certificate(managers)  # in memory until _join_as_manager
                    if not self.state.advertise_addr:
                        raise errors.FailedPrecondition("this node joined without --advertise-addr")
                    # The swarm bound this node's raft address into its new certificate.
                    self.state.raft_addr = certs.identity_from_pem(resp.certificate).raft_addrs[0]
                    self.state.listen_addr = self.state.listen_addr or self.state.advertise_addr
                    await self._join_as_manager(managers[0])
                    self._become(Change.PROMOTE)
            except Exception as e:  # an unexpected one gets its traceback in the log
                log.error("promotion failed; staying a worker: %s", e, exc_info=not isinstance(e, errors.SwarmError))
                return
            log.info("promoted to manager raft=%s", self.state.raft_addr)
            await self._follow_availability()

    async def _demoted(self) -> None:
        """The swarm made this manager a worker: wait until the others have taken it out of raft,
        stop the manager, take a worker certificate, run the agent."""
        async with self.lifecycle:
            m = self.manager
            if self.role is not Role.MANAGER or m is None:
                return
            record = m.store.node(self.state.node_id)
            if record is None or record.role != "worker":
                # An earlier demotion, replayed while this node caught up with the log after a later
                # promotion: the swarm's current word is that it is a manager.
                log.info("ignoring a demotion that a later promotion superseded")
                return
            managers = [a for a in m.store.manager_addrs() if a != self.state.advertise_addr]
            if not await self._removed_from_raft(m):
                log.warning("demoted, but the swarm did not take this node out of raft in %gs; stopping anyway",
                            DEMOTION_TIMEOUT)
                if m.proposer.status().is_leader:
                    try:
                        await asyncio.to_thread(m.raft.transfer_leadership, FORMATION_TIMEOUT)
                    except errors.SwarmError as e:
                        log.warning("could not hand leadership over: %s", e)
            await self._stop_components()
            # Its manager certificate now admits it to nothing but this renewal: keep trying a while.
            deadline = self.loop.time() + DEMOTION_TIMEOUT
            while True:
                try:
                    await self._renew_certificate(managers)
                    break
                except errors.SwarmError as e:
                    if self.loop.time() > deadline:
                        log.error("demoted, but %s", e)
                        break
                await asyncio.sleep(0.5)
            self._save_identity()  # a worker's key is kept in clear, before the wrapped copy goes
            self.dir.forget_manager_material()
            self.state.members = []
            self.state.raft_addr = ""
            self.state.remote_managers = managers
            self._become(Change.DEMOTE)
            self._start_agent()
            log.info("demoted to worker")

    async def _removed_from_raft(self, m: Manager) -> bool:
        """Whether the others committed this member's removal, and this node applied it, in time.
        A leader is never removed (it hands leadership over first), so this also means that
        leadership has moved away."""
        return await asyncio.to_thread(m.raft.removed.wait, DEMOTION_TIMEOUT)

    async def _removed(self, agent: Agent | None) -> None:
        """The managers removed this worker: forget the swarm (its agent already wiped the secrets)."""
        async with self.lifecycle:
            if agent is None or agent is not self.agent or self.role is not Role.WORKER:
                return  # the node left, or became something else, before this ran
            self.agent = None
            self._become(Change.REMOVED)
            log.info("removed from the swarm")

    # --- outgoing calls to managers --------------------------------------------------------------

    def _mtls_channel(self, target: str) -> grpc.aio.Channel:
        if self.node_cert is None or self.node_key is None:
            raise errors.SwarmLocked()
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.dir.read(self.dir.ca_path),
            private_key=self.node_key,
            certificate_chain=self.node_cert,
        )
        return grpc.aio.secure_channel(_grpc_target(target), creds, options=wire.TLS_CHANNEL_OPTIONS)

    async def _renew_certificate(self, managers: list[str]) -> ca_pb2.IssueNodeCertificateResponse:
        """A new key and a certificate with the role the swarm now has for this node, held in memory:
        the caller saves them (``_save_identity``) where the node's new role keeps them."""
        key_pem, csr = certs.generate_key_and_csr()
        last: Exception | None = None
        for addr in managers:
            try:
                async with self._mtls_channel(addr) as ch:
                    resp: ca_pb2.IssueNodeCertificateResponse = await ca_pb2_grpc.NodeCAStub(ch).RenewNodeCertificate(
                        ca_pb2.RenewNodeCertificateRequest(csr=csr), timeout=15)
            except grpc.aio.AioRpcError as e:
                last = e
                continue
            self.node_cert, self.node_key = resp.certificate, key_pem
            return resp
        raise errors.Unavailable(f"could not renew this node's certificate: {last}")

    def _self_node_record(self, role: str) -> state.Node:
        manager = role == "manager"
        return state.Node(id=self.state.node_id, role=role, hostname=socket.gethostname(),
                          addr=self.state.advertise_addr, engine_version=__version__, arch=os.uname().machine,
                          raft_addr=self.state.raft_addr if manager else "",
                          state_version=state.STATE_VERSION if manager else 0)

    async def _join_as_manager(self, remote: str) -> None:
        async with self._mtls_channel(remote) as ch:
            got: ca_pb2.GetManagerKeysResponse = await ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(
                ca_pb2.GetManagerKeysRequest(), timeout=30)
        unlock = keys.parse_unlock_key(got.unlock_key) if got.unlock_key else None
        self._save_identity((got.data_key, got.ca_key), unlock)
        self.state.autolock = unlock is not None
        self.state.members = sorted(set(got.raft_members) | {self.state.raft_addr})
        m = await self._start_manager(got.data_key, got.ca_key, lambda m: self._join_raft(m, remote))
        await m.proposer.propose(state.UpdateNode.describing(self._self_node_record("manager")))

    async def _join_raft(self, m: Manager, remote: str) -> None:
        deadline = self.loop.time() + FORMATION_TIMEOUT
        async with self._mtls_channel(remote) as ch:
            stub = raft_pb2_grpc.RaftMembershipStub(ch)
            while True:
                try:
                    resp: raft_pb2.RaftJoinResponse = await stub.Join(
                        raft_pb2.RaftJoinRequest(raft_addr=self.state.raft_addr), timeout=FORMATION_TIMEOUT)
                    break
                except grpc.aio.AioRpcError as e:
                    retry = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    if not retry or self.loop.time() > deadline:
                        raise error_from_rpc(e) from None
                    await asyncio.sleep(0.2)
        self.state.members = list(resp.members)
        if not await asyncio.to_thread(m.raft.wait_ready, FORMATION_TIMEOUT):
            raise errors.Unavailable("this node joined the raft group but did not catch up in time")

    async def _propose_until_leader(self, m: Manager, cmd: state.Command) -> Any:
        deadline = self.loop.time() + FORMATION_TIMEOUT
        while True:
            try:
                return await m.proposer.propose(cmd)
            except errors.Unavailable:
                if self.loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _leave_raft(self, force: bool) -> None:
        """Ask another manager to take this one out of raft (handing leadership over first)."""
        m = self.manager
        if m is None:
            return
        status = m.proposer.status()
        others = [a for a in status.members if a != self.state.raft_addr]
        if not others:
            if not force:
                raise errors.FailedPrecondition(errors.LAST_MANAGER_LEAVE)
            return
        reachable_after = len([a for a in others if a in status.reachable])
        if reachable_after <= len(others) / 2 and not force:
            raise errors.FailedPrecondition(errors.LEAVE_QUORUM)
        if status.is_leader:
            await asyncio.to_thread(m.raft.transfer_leadership, 5.0)
        peers = [n.addr for n in m.store.managers() if n.id != self.state.node_id and n.addr]
        last_error: grpc.aio.AioRpcError | None = None
        for addr in peers:
            try:
                async with self._mtls_channel(addr) as ch:
                    await raft_pb2_grpc.RaftMembershipStub(ch).Leave(
                        raft_pb2.RaftLeaveRequest(node_id=self.state.node_id), timeout=20)
                return
            except grpc.aio.AioRpcError as e:
                last_error = e
        if not force:
            detail = last_error.details() if last_error is not None else "no manager"
            raise errors.Unavailable(f"could not leave the raft group: {detail}")

    # --- the node operations the local API serves ------------------------------------------------

    async def init(self, options: InitOptions) -> Initialized:
        async with self.lifecycle:
            if options.restore_path:
                return await recovery.restore(self, options)
            if options.force_new_cluster and self.role is not Role.INACTIVE:
                return await recovery.force_new_cluster(self, options)
            if self.role is not Role.INACTIVE:
                raise errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
            if not options.advertise_addr:
                raise errors.InvalidArgument("--advertise-addr is required (HOST:PORT of this node's swarm port)")
            advertise = validation.format_addr(*validation.validate_addr(options.advertise_addr, 0))
            listen = options.listen_addr or advertise
            validation.validate_addr(listen, 0)
            raft_addr = validation.raft_addr_for(advertise, options.raft_addr)
            availability = validation.parse_join_availability(options.availability)
            async with self._undo():
                self.dir.wipe()
                self.dir.ensure()
                cluster_id, node_id = ids.new_id(), ids.new_id()
                ca = certs.create_root_ca()
                key_pem, csr = certs.generate_key_and_csr()
                cert = certs.issue_node_cert(ca, csr, node_id=node_id, role="manager", cluster_id=cluster_id,
                                             raft_addr=raft_addr)
                self.dir.write_identity(ca.cert_pem, cert)
                self.node_cert, self.node_key = cert, key_pem
                dek = keys.new_key()
                unlock = keys.new_key() if options.autolock else None
                assert ca.key_pem is not None
                self._save_identity((dek, ca.key_pem), unlock)
                self.state = NodeState(node_id=node_id, cluster_id=cluster_id,
                                       advertise_addr=advertise, listen_addr=listen, raft_addr=raft_addr,
                                       members=[raft_addr], autolock=options.autolock)
                worker_tok, manager_tok = tokens.new_token(ca.cert_pem), tokens.new_token(ca.cert_pem)

                async def create_cluster(m: Manager) -> None:
                    await self._propose_until_leader(m, state.InitCluster(
                        cluster=state.Cluster(
                            id=cluster_id, root_ca_cert=ca.cert_pem.decode(), autolock=bool(unlock),
                            join_tokens=state.JoinTokens(worker=m.data_key.seal(str(worker_tok).encode()),
                                                         manager=m.data_key.seal(str(manager_tok).encode())),
                            unlock_key=m.data_key.seal(unlock) if unlock else None,
                            key_id=m.data_key.key_id,
                        ),
                        node=replace(self._self_node_record("manager"), availability=availability),
                    ))

                await self._start_manager(dek, ca.key_pem, create_cluster)
                self._become(Change.INIT)
            await self._follow_availability()
            log.info("swarm initialized cluster_id=%s node_id=%s", cluster_id, node_id)
            return Initialized(
                node_id=node_id,
                worker_join_command=f"swarmsecrets swarm join --token {worker_tok} {advertise}",
                unlock_key=keys.format_unlock_key(unlock) if unlock else "",
            )

    async def join(self, options: JoinOptions) -> Joined:
        async with self.lifecycle:
            if self.role is not Role.INACTIVE:
                raise errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
            token = tokens.parse_token(options.join_token)
            availability = validation.parse_join_availability(options.availability)
            rhost, rport = validation.validate_addr(options.remote_addr, DEFAULT_SWARM_PORT)
            remote = validation.format_addr(rhost, rport)
            try:
                root_pem = await asyncio.to_thread(certs.fetch_unverified_root, rhost, rport, token.ca_digest)
            except (OSError, ValueError) as e:
                raise errors.Unavailable(f"could not reach the manager at {remote}: {e}") from None
            if certs.ca_digest(root_pem) != token.ca_digest:
                raise errors.InvalidArgument(f"remote CA does not match fingerprint. Expected: {token.ca_digest}")
            advertise = listen = raft_addr = ""
            if options.advertise_addr:
                advertise = validation.format_addr(*validation.validate_addr(options.advertise_addr, 0))
                listen = options.listen_addr or advertise
                raft_addr = validation.raft_addr_for(advertise, options.raft_addr)
            async with self._undo():
                self.dir.wipe()
                self.dir.ensure()
                key_pem, csr = certs.generate_key_and_csr()
                boot_key, boot_cert = certs.bootstrap_client_cert(token.ca_digest)
                creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=boot_key,
                                                     certificate_chain=boot_cert)
                try:
                    channel = grpc.aio.secure_channel(_grpc_target(remote), creds, options=wire.TLS_CHANNEL_OPTIONS)
                    async with channel as ch:
                        issued: ca_pb2.IssueNodeCertificateResponse = await ca_pb2_grpc.NodeCAStub(
                            ch).IssueNodeCertificate(ca_pb2.IssueNodeCertificateRequest(
                                csr=csr, token=str(token), advertise_addr=advertise, raft_addr=raft_addr,
                                hostname=socket.gethostname(), request_id=ids.new_request_id(),
                                availability=availability), timeout=30)
                    if issued.role == "manager" and not advertise:
                        raise errors.InvalidArgument("--advertise-addr is required to join as a manager")
                    self.dir.write_identity(root_pem, issued.certificate)
                    self.node_cert, self.node_key = issued.certificate, key_pem
                    self.state = NodeState(node_id=issued.node_id, cluster_id=issued.cluster_id,
                                           advertise_addr=advertise, listen_addr=listen, raft_addr=raft_addr,
                                           remote_managers=[remote])
                    if issued.role == "manager":
                        await self._join_as_manager(remote)
                        self._become(Change.JOIN_AS_MANAGER)
                    else:
                        self._save_identity()
                        self._start_agent()
                        self._become(Change.JOIN_AS_WORKER)
                except grpc.aio.AioRpcError as e:
                    raise error_from_rpc(e) from None
            await self._follow_availability()
            log.info("joined swarm role=%s node_id=%s", issued.role, issued.node_id)
            return Joined(node_id=issued.node_id, role=issued.role)

    async def leave(self, force: bool) -> None:
        async with self.lifecycle:
            if self.role is Role.INACTIVE:
                raise errors.NotInSwarm()
            if self.role is Role.LOCKED and not force:
                raise errors.FailedPrecondition(
                    "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.")
            if self.role is Role.MANAGER:
                await self._leave_raft(force)
            self._become(Change.LEAVE)
            try:
                await self._stop_components()
            finally:
                self._become(Change.LEFT)
            log.info("left the swarm")

    async def unlock(self, unlock_key: str) -> None:
        async with self.lifecycle:
            if self.role is Role.INACTIVE:
                raise errors.NotInSwarm()
            if self.role is not Role.LOCKED:
                raise errors.FailedPrecondition(errors.NOT_LOCKED)
            key = keys.parse_unlock_key(unlock_key)
            got = keys.WrappedKeys(self.dir.keys_dir).load(key)
            # The key is opened in memory only; a key file written before the node key was wrapped
            # still holds it in clear: wrap it now.
            node_key = got.node_key or self.dir.read_clear_key()
            if node_key is None:
                raise errors.FailedPrecondition(f"this node's key is missing: {self.dir.key_path}")
            async with self._undo():
                self.node_cert, self.node_key = self.dir.read(self.dir.cert_path), node_key
                if got.node_key is None:
                    self._save_identity((got.dek, got.ca_key), key)
                await self._start_manager(got.dek, got.ca_key)
                self._become(Change.UNLOCK)
            await self._follow_availability()

    async def backup(self, path: str) -> Backedup:
        async with self.lifecycle:
            return await recovery.take_backup(self, path)

    def info(self) -> NodeInfo:
        role = self.role
        if role is Role.INACTIVE:
            return NodeInfo(local_node_state="inactive")
        remote_managers = tuple(self.state.remote_managers)
        nodes = managers = 0
        if self.manager is not None:
            records = self.manager.store.nodes()
            nodes = len(records)
            manager_addrs = [n.addr for n in records if n.role == "manager"]
            managers, remote_managers = len(manager_addrs), tuple(manager_addrs)
        return NodeInfo(
            local_node_state="locked" if role is Role.LOCKED else "active",
            node_id=self.state.node_id, cluster_id=self.state.cluster_id,
            control_available=role is Role.MANAGER,
            node_addr=self.state.advertise_addr.rsplit(":", 1)[0],
            remote_managers=remote_managers, nodes=nodes, managers=managers,
        )
