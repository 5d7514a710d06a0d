"""The node: what this machine is in the swarm, and every change of it.

It starts inactive (like dockerd) and, after ``swarm init`` or ``swarm join``, runs as a manager
(raft, control API, CA) or a worker (the agent). A manager runs the worker agent too while its
availability in the store is not ``drain``, so that tasks may be placed on it as on a worker.
It remembers its role in its data dir and resumes it on restart. Every change of role runs under
one lock, is checked by the role state machine (``roles.py``) and, should it fail part-way, goes
back through one rollback (``_undo``) to the role the node had.

The node's TLS identity is held in memory (``material``, a ``TLSMaterial`` that every port and channel
reads, so that a renewed certificate takes effect at once) and only ever written to the
data dir by ``_save_identity``: in clear for a worker or a manager without autolock, sealed under the
unlock key with the manager keys under autolock. A locked manager has no key in memory: it serves no
TLS port, dials no peer and runs no agent until ``swarm unlock``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import errno
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc

from swarmsecrets import __version__, errors, ids, validation, wire
from swarmsecrets.api.v1 import ca_pb2, ca_pb2_grpc, raft_pb2, raft_pb2_grpc
from swarmsecrets.ca import certs, tokens
from swarmsecrets.ca import rotation
from swarmsecrets.ca.material import TLSMaterial
from swarmsecrets.crypto import keys
from swarmsecrets.fsutil import write_private
from swarmsecrets.manager import dekrotation, state
from swarmsecrets.manager.controlapi import ControlAPI
from swarmsecrets.manager.datakey import unlock_key
from swarmsecrets.manager.manager import Manager
from swarmsecrets.manager.nodeca import certificate_record
from swarmsecrets.metrics import Figures, Metrics
from swarmsecrets.node.config import DaemonConfig
from swarmsecrets.node import recovery
from swarmsecrets.node.info import cluster_info, figures
from swarmsecrets.node.localapi import Backedup, InitOptions, Initialized, JoinOptions, Joined, NodeInfo
from swarmsecrets.node.nodedir import NodeDir, NodeState
from swarmsecrets.node.renewal import REJOIN, Renewer
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
# How long a stopping leader tries to hand leadership over before it stops anyway.
HAND_OVER_TIMEOUT = 5.0
# The default port of a manager's swarm address, as Docker's.
DEFAULT_SWARM_PORT = 2377
# A manager that missed a whole data-key rotation asks the others for the key this many times.
FETCH_ATTEMPTS = 30
# How long one manager has to answer a scheduled renewal before the next is asked.
RENEW_TIMEOUT = 5.0


def _grpc_target(addr: str) -> str:
    return validation.format_addr(*validation.validate_addr(addr, 0))


def check_listen(*addrs: str) -> None:
    """Refuse, with Docker's text, an address (HOST:PORT) this manager could not listen on now: a
    port another process holds (gRPC would share it silently: it sets SO_REUSEPORT), or an address
    that is not this host's. Bound and closed at once; a host name that does not resolve is left
    to the real listen."""
    for addr in addrs:
        host, port = validation.validate_addr(addr, 0)
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror:
            continue
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real listeners do
            try:
                probe.bind(sockaddr)
            except OSError as e:
                raise errors.listen_failed("tcp", addr, e) from None


class Node:
    """Implements ``localapi.NodeOperations``; the wiring (``main.py``) serves it."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.dir = NodeDir(config.data_dir)
        try:
            self.dir.ensure()
        except OSError as e:
            # A file where the directory should be is EEXIST to Python and ENOTDIR to Go (and dockerd).
            reason = errors.os_reason(OSError(errno.ENOTDIR, "") if isinstance(e, FileExistsError) else e)
            raise errors.FailedPrecondition(f"data dir {self.dir.root}: {reason}") from None
        self.state = self.dir.load()
        self.roles = RoleMachine(self.state.role)
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.lifecycle = asyncio.Lock()  # one role change at a time
        # Serializes writes of the key file: the raft thread's (unlock key, data key), a renewal's, a scrub's.
        self._key_file_lock = threading.Lock()
        self.loop = asyncio.get_running_loop()
        self._background: set[asyncio.Task[None]] = set()
        self._agent_refused = ""  # why this manager's agent could not start, once said
        # This node's certificate, TLS key and trusted roots: None while inactive or locked.
        self.material: TLSMaterial | None = None
        self.renewer: Renewer | None = None  # runs while a manager or an agent does
        self._renewal_refused = ""  # why the swarm no longer admits this node, once renewal found out
        self.metrics = Metrics(self.figures)  # this process's; served only with --metrics-addr

    @property
    def role(self) -> Role:
        return self.roles.role

    @property
    def node_cert(self) -> bytes | None:
        return self.material.current().cert_chain if self.material is not None else None

    @property
    def node_key(self) -> bytes | None:
        return self.material.current().key if self.material is not None else None

    def _hold_identity(self, cert: bytes, key: bytes, roots: bytes | None = None) -> None:
        """Make ``cert`` and ``key`` this node's identity in memory: every port and channel uses
        them from their next handshake on. ``roots``: what a node that held no identity yet
        trusts (default: its CA file)."""
        if self.material is None:
            self.material = TLSMaterial(cert, key, roots if roots is not None else self.dir.read(self.dir.ca_path))
        else:
            self.material.replace(cert_chain=cert, key=key)

    def _forget_identity(self) -> None:
        self.material = None
        self._renewal_refused = ""

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
            self._forget_identity()
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
                self._forget_identity()
            elif role is Role.LOCKED:
                self._forget_identity()
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
                self._spawn("root check", self._check_root_still_trusted())
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
                await self._start_manager(got.dek, got.ca_key, previous_deks=got.previous)
                await self._follow_availability()
                self._spawn("root check", self._check_root_still_trusted())

    def _load_clear_identity(self) -> None:
        key = self.dir.read_clear_key()
        if key is None:
            raise errors.FailedPrecondition(f"this node's key is missing: {self.dir.key_path}")
        self._hold_identity(self.dir.read(self.dir.cert_path), key)

    def _save_identity(self, manager_keys: tuple[bytes, bytes] | None = None, unlock: bytes | None = None,
                       as_of: int = 0, previous_deks: tuple[bytes, ...] = ()) -> None:
        """Write the identity held in memory (and a manager's ``(dek, ca_key)``) to the data dir.
        With an unlock key (autolock) the node's TLS key is sealed with the manager keys and its
        clear copy goes; otherwise the key stays in clear beside its certificate (a worker's, or a
        manager's whose KEK sits on the same disk anyway). ``as_of``: see ``WrappedKeys.as_of``;
        ``previous_deks``: the data keys a rotation in progress retires."""
        if self.material is None:
            raise errors.SwarmLocked()
        current = self.material.current()
        cert, key = current.cert_chain, current.key
        ca_pem = self.dir.read(self.dir.ca_path)
        wrapped = keys.WrappedKeys(self.dir.keys_dir)
        if manager_keys is not None and unlock is not None:
            wrapped.store(*manager_keys, unlock, key, as_of=as_of, previous=previous_deks)
            self.dir.write_identity(ca_pem, cert)
            self.dir.remove_clear_key()
            return
        self.dir.write_identity(ca_pem, cert, key)
        if manager_keys is not None:
            wrapped.store(*manager_keys, None, as_of=as_of, previous=previous_deks)

    async def _start_manager(self, dek: bytes, ca_key: bytes,
                             before_serving: Callable[[Manager], Awaitable[Any]] | None = None,
                             previous_deks: tuple[bytes, ...] = ()) -> Manager:
        """Raft first; then (joining the group, or creating the cluster) ``before_serving``; then the TLS port."""
        if self.material is None:
            raise errors.SwarmLocked()
        m = Manager(self.dir, self.state, dek, ca_key, self.material, self.config.timing(),
                    self.config.dispatcher_heartbeat, min_cert_expiry=self.config.min_cert_expiry,
                    previous_deks=previous_deks, on_new_ca_key=self._new_ca_key, save_roots=self._save_roots,
                    renew_now=self._renew_for_rotation, metrics=self.metrics)
        m.store.subscribe(self._on_apply)

        def fetch_data_keys() -> None:  # on the raft thread
            self.loop.call_soon_threadsafe(lambda: self._spawn("data key fetch", self._fetch_data_keys(m)))

        m.on_missing_data_key = fetch_data_keys
        listen = self.state.listen_addr or self.state.advertise_addr
        try:
            check_listen(self.state.raft_addr, listen)
            try:
                await asyncio.to_thread(m.start_raft)
            except OSError:
                check_listen(self.state.raft_addr)  # taken since the check: say so, not "internal error"
                raise
            self.manager = m
            if before_serving is not None:
                await before_serving(m)
            try:
                await m.start_server()
            except RuntimeError:  # gRPC's "Failed to bind"
                check_listen(listen)
                raise
        except BaseException:
            self.manager = None
            await m.stop()
            raise
        log.info("manager started node_id=%s listen=%s raft=%s", self.state.node_id,
                 self.state.listen_addr, self.state.raft_addr)
        cluster = m.store.cluster
        if previous_deks and cluster is not None and not cluster.rotation_from:
            # Stopped after a data-key rotation ended but before its key file lost the previous key.
            self._spawn("data key scrub", self._scrub_retired_key(m, cluster.version))
        self._start_renewal()
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
                          on_root_ca=self._swarm_roots, trust_roots=self._trust_roots_digest,
                          hide=[self.dir.root, self.config.socket_path], on_cert_expiry=self._cert_expiry_is,
                          log_root=os.path.join(self.dir.root, "tasklogs"))
        except (OSError, ValueError, NotTmpfsError) as e:  # e.g. a secrets root that is not tmpfs
            raise errors.FailedPrecondition(str(e)) from None
        agent.start()
        self.agent = agent
        self._start_renewal()
        log.info("worker agent started node_id=%s secrets_root=%s", self.state.node_id, self.config.secrets_root)

    async def _stop_components(self) -> None:
        if self.renewer is not None:
            renewer, self.renewer = self.renewer, None
            await renewer.stop()
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

    async def hand_over_leadership(self) -> None:
        """The process is stopping: a leader steps down and lets its most caught-up peer stand at once
        (raft's hand-over, as when its disk is full), so that writes go on without waiting out an
        election. It gives up after ``HAND_OVER_TIMEOUT`` and stops anyway."""
        m = self.manager
        if m is None:
            return
        status = m.proposer.status()
        if not status.is_leader or len(status.reachable) < 2:
            return
        try:
            await asyncio.to_thread(m.raft.hand_over, HAND_OVER_TIMEOUT)
        except errors.SwarmError as e:
            log.info("stopping without handing leadership over: %s", e)
            return
        leader = m.proposer.status().leader or ""
        log.info("handed leadership over to %s", m.store.control_addr_of(leader) or leader)

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
        rotates or autolock is turned on or off, or a data-key rotation begins (the file then holds
        both keys); erase the previous data key once a rotation has ended; step down to a worker
        when this manager is demoted; start or stop a manager's own agent when its availability (or role) changes."""
        cmd = event.command
        if not event.ok:
            return
        if ((isinstance(cmd, state.UpdateNode) and cmd.id == self.state.node_id
             and (cmd.availability is not None or cmd.role is not None))
                or (isinstance(cmd, state.AddNode) and cmd.node.id == self.state.node_id)):
            self.loop.call_soon_threadsafe(lambda: self._spawn("availability", self._availability_changed()))
        if isinstance(cmd, state.UpdateNode) and cmd.id == self.state.node_id and cmd.role == "worker":
            self.loop.call_soon_threadsafe(lambda: self._spawn("demotion", self._demoted()))
        if ((isinstance(cmd, state.UpdateCluster) and cmd.unlock_key is not None) or isinstance(cmd, state.SetAutolock)
                or isinstance(cmd, state.BeginDataKeyRotation)):
            self._rewrap(event.index)
        if isinstance(cmd, state.FinishDataKeyRotation) and self.manager is not None:
            m, index = self.manager, event.index
            self.loop.call_soon_threadsafe(lambda: self._spawn("data key scrub", self._scrub_retired_key(m, index)))
        if isinstance(cmd, state.SetCertExpiry):
            self.loop.call_soon_threadsafe(self._cert_expiry_is, cmd.seconds)

    def _rewrap(self, index: int) -> None:
        """On the raft thread, right after the apply at ``index`` changed the unlock key, turned
        autolock on or off or began a data-key rotation: wrap this manager's keys (the data key
        ring as it is now) as the cluster record now says."""
        m = self.manager
        cluster = m.store.cluster if m is not None else None
        if m is None or cluster is None:
            return
        with self._key_file_lock:
            if index <= keys.WrappedKeys(self.dir.keys_dir).as_of():
                return  # replayed after a restart: the keys are wrapped under a later unlock key already
            unlock = unlock_key(m.store, m.data_key) if cluster.autolock else None
            dek, *previous = m.data_key.ring
            self._save_identity((dek, m.ca.current.key_pem or b""), unlock, as_of=index, previous_deks=tuple(previous))
        autolock = unlock is not None
        if autolock != self.state.autolock:
            self.loop.call_soon_threadsafe(self._record_autolock, autolock)

    async def _scrub_retired_key(self, m: Manager, finished_at: int) -> None:
        """The last step of a data-key rotation on this manager (see ``dekrotation``): a snapshot,
        the journal compacted past the rotation, then the key file without the previous key."""

        def rewrite() -> None:
            cluster = m.store.cluster
            if self.manager is not m or cluster is None or cluster.rotation_from:
                return  # stopped, or another rotation began: its own end scrubs
            with self._key_file_lock:
                unlock = unlock_key(m.store, m.data_key) if cluster.autolock else None
                wrapped = keys.WrappedKeys(self.dir.keys_dir)
                self._save_identity((m.data_key.key, m.ca.current.key_pem or b""), unlock,
                                    as_of=max(wrapped.as_of(), finished_at))

        scrub = dekrotation.RetiredKeyScrub(compact=m.raft.node.compact, compacted_to=m.raft.node.compacted_to,
                                            applied_index=lambda: m.store.applied_index, rewrite=rewrite)
        await scrub.run(finished_at)

    async def _fetch_data_keys(self, m: Manager) -> None:
        """This manager missed a whole data-key rotation (its raft state came as a snapshot taken
        after it): ask the other managers, over mutual TLS as a manager, for the current ring, and
        keep it in the key file."""
        delay = 0.5
        for _ in range(FETCH_ATTEMPTS):
            if self.manager is not m:  # still starting (raft first), or stopped meanwhile
                await asyncio.sleep(delay)
                continue
            cluster = m.store.cluster
            if not m.data_key.missing(cluster):
                return
            for addr in m.store.manager_addrs():
                if addr == self.state.advertise_addr:
                    continue
                try:
                    async with self._mtls_channel(addr) as ch:
                        got: ca_pb2.GetManagerKeysResponse = await ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(
                            ca_pb2.GetManagerKeysRequest(), timeout=15)
                except grpc.aio.AioRpcError as e:
                    log.info("data key not fetched from %s: %s", addr, e.details())
                    continue
                m.data_key.adopt((got.data_key, *got.previous_data_keys))
                cluster = m.data_key.settle(lambda: m.store.cluster)  # noqa: B023 (called at once)
                if cluster is None or m.data_key.missing(cluster):
                    continue
                unlock = unlock_key(m.store, m.data_key) if cluster.autolock else None
                with self._key_file_lock:
                    dek, *previous = m.data_key.ring
                    self._save_identity((dek, m.ca.current.key_pem or b""), unlock,
                                        as_of=keys.WrappedKeys(self.dir.keys_dir).as_of(),
                                        previous_deks=tuple(previous))
                log.info("data key %s fetched from %s", m.data_key.key_id, addr)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        log.error("the swarm's current data key could not be fetched from another manager: this manager "
                  "cannot open secrets re-encrypted while it was away; restart it to try again")

    # --- root CA rotation ------------------------------------------------------------------------

    def _new_ca_key(self, key_pem: bytes, index: int) -> None:
        """On the raft thread: a finished root rotation made ``key_pem`` the CA key; wrap it on disk
        in place of the old one (the old root's key is gone from this manager)."""
        m = self.manager
        cluster = m.store.cluster if m is not None else None
        if m is None or cluster is None:
            return
        unlock = unlock_key(m.store, m.data_key) if cluster.autolock else None
        with self._key_file_lock:
            as_of = max(index, keys.WrappedKeys(self.dir.keys_dir).as_of())
            dek, *previous = m.data_key.ring
            self._save_identity((dek, key_pem), unlock, as_of=as_of, previous_deks=tuple(previous))

    def _save_roots(self, bundle: bytes) -> None:
        """Write the CA file (the roots this node trusts), never while the identity is being saved."""
        with self._key_file_lock:
            write_private(self.dir.ca_path, bundle)

    def _trust_roots_digest(self) -> str:
        return rotation.bundle_digest(self.material.current().roots) if self.material is not None else ""

    def _swarm_roots(self, bundle: bytes) -> None:
        """A worker's agent heard the roots the swarm trusts now: trust them (the CA file too), and
        renew the certificate when a root was added (a rotation started)."""
        if self.material is None or self.manager is not None or not bundle:
            return
        before = set(rotation.split_pems(self.material.current().roots))
        if set(rotation.split_pems(bundle)) == before:
            return
        self._save_roots(bundle)
        self.material.replace(roots=bundle)
        log.info("the swarm's root CA bundle changed: now trusting %d root(s)", len(rotation.split_pems(bundle)))
        if set(rotation.split_pems(bundle)) - before:
            self._renew_for_rotation()

    async def _check_root_still_trusted(self) -> None:
        """After a restart: if the managers refuse this node's certificate because the swarm's root
        CA was rotated while it was down, say so in one line (and in ``info``) with the way back."""
        material = self.material
        if material is None:
            return
        m = self.manager
        addrs = ([a for a in m.store.manager_addrs() if a != self.state.advertise_addr] if m is not None
                 else list(self.state.remote_managers))
        for addr in addrs:
            host, port = validation.validate_addr(addr, DEFAULT_SWARM_PORT)
            current = material.current()
            refused = await asyncio.to_thread(rotation.refused_for_old_root, host, port, current.cert_chain,
                                              current.key, current.roots)
            if refused:
                message = f"{rotation.STALE_ROOT}: {REJOIN}"
                log.error("%s", message)
                self._renewal_refused = message
            if refused is not None:
                return

    def _renew_for_rotation(self) -> None:
        """A root CA rotation started: a certificate from the new root, now (the renewer retries)."""
        if self.renewer is not None:
            log.info("root CA rotation: renewing this node's certificate from the new root")
            self.renewer.trigger()

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
        if self.material is None:
            raise errors.SwarmLocked()
        return grpc.aio.secure_channel(_grpc_target(target), self.material.grpc_channel_credentials(),
                                       options=wire.TLS_CHANNEL_OPTIONS)

    async def _request_renewal(self, managers: list[str], timeout: float = 15
                               ) -> tuple[bytes, ca_pb2.IssueNodeCertificateResponse]:
        """A new key, and a certificate for it with the role the swarm now has for this node, asked
        of each of ``managers`` in turn over the node's current identity. A swarm that no longer
        knows the node answers NodeRemoved at once."""
        key_pem, csr = certs.generate_key_and_csr()
        last: Exception | None = None
        for addr in managers:
            try:
                async with self._mtls_channel(addr) as ch:
                    resp: ca_pb2.IssueNodeCertificateResponse = await ca_pb2_grpc.NodeCAStub(ch).RenewNodeCertificate(
                        ca_pb2.RenewNodeCertificateRequest(csr=csr), timeout=timeout)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e)
                if isinstance(err, errors.NodeRemoved):
                    raise err from None
                last = e
                continue
            return key_pem, resp
        raise errors.Unavailable(f"could not renew this node's certificate: {last}")

    async def _renew_certificate(self, managers: list[str]) -> ca_pb2.IssueNodeCertificateResponse:
        """A new key and a certificate with the role the swarm now has for this node, held in memory:
        the caller saves them (``_save_identity``) where the node's new role keeps them."""
        key_pem, resp = await self._request_renewal(managers)
        self._hold_identity(resp.certificate, key_pem)
        return resp

    # --- scheduled and requested renewals ---------------------------------------------------------

    def _start_renewal(self) -> None:
        material = self.material
        if self.renewer is not None or material is None:
            return
        self.renewer = Renewer(certificate=lambda: material.current().certificate, renew=self._renew_own,
                               refused=self._set_renewal_refused)
        self.renewer.start()

    def _cert_expiry_is(self, seconds: int) -> None:
        """The swarm's certificate lifetime is ``seconds``: a certificate that outlives it (the
        lifetime was shortened) is renewed now."""
        material, renewer = self.material, self.renewer
        if material is None or renewer is None:
            return
        limit = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        if material.current().certificate.not_valid_after_utc > limit:
            renewer.trigger()

    def _set_renewal_refused(self, message: str) -> None:
        self._renewal_refused = message

    async def renew_now(self) -> None:
        """Renew this node's certificate now (retrying until it is done), e.g. onto a new root."""
        if self.renewer is None:
            raise errors.FailedPrecondition("this node runs no certificate renewal (inactive or locked)")
        await self.renewer.renew_now()

    def _renewal_managers(self) -> list[str]:
        """Whom a renewal asks: a manager itself first (it issues, recording through raft), then the
        other managers; a worker the managers its sessions learned of."""
        m = self.manager
        if m is not None:
            others = [a for a in m.store.manager_addrs() if a != self.state.advertise_addr]
            return [self.state.advertise_addr, *others]
        if self.agent is not None and self.agent.managers:
            return list(self.agent.managers)
        return list(self.state.remote_managers)

    async def _renew_own(self) -> None:
        """One scheduled renewal: ask without holding the lifecycle lock, then install and save
        the new identity under it, unless the node changed role (or identity) meanwhile: the
        role change takes its own certificate."""
        role, material = self.role, self.material
        if role not in (Role.MANAGER, Role.WORKER) or material is None:
            raise errors.FailedPrecondition("this node holds no certificate to renew")
        key_pem, resp = await self._request_renewal(self._renewal_managers(), timeout=RENEW_TIMEOUT)
        async with self.lifecycle:
            if self.role is not role or self.material is not material or resp.role != role.value:
                raise errors.Unavailable("this node's role changed while its certificate was renewed")
            self._hold_identity(resp.certificate, key_pem)
            self._save_renewed()

    def _save_renewed(self) -> None:
        """Save a renewed identity as the node keeps it: a manager under autolock seals its new key
        with the manager keys (under the unlock key the swarm has now), never in clear."""
        m = self.manager
        with self._key_file_lock:
            wrapped = keys.WrappedKeys(self.dir.keys_dir)
            if m is not None and wrapped.exists() and wrapped.autolocked():
                unlock = unlock_key(m.store, m.data_key)
                dek, *previous = m.data_key.ring
                self._save_identity((dek, m.ca.current.key_pem or b""), unlock, as_of=wrapped.as_of(),
                                    previous_deks=tuple(previous))
            else:
                self._save_identity()

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
        previous = tuple(got.previous_data_keys)
        self._save_identity((got.data_key, got.ca_key), unlock, previous_deks=previous)
        self.state.autolock = unlock is not None
        self.state.members = sorted(set(got.raft_members) | {self.state.raft_addr})
        m = await self._start_manager(got.data_key, got.ca_key, lambda m: self._join_raft(m, remote),
                                      previous_deks=previous)
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
                self._hold_identity(cert, key_pem)
                dek = keys.new_key()
                unlock = keys.new_key() if options.autolock else None
                assert ca.key_pem is not None
                self._save_identity((dek, ca.key_pem), unlock)
                self.state = NodeState(node_id=node_id, cluster_id=cluster_id,
                                       advertise_addr=advertise, listen_addr=listen, raft_addr=raft_addr,
                                       members=[raft_addr], autolock=options.autolock)
                worker_tok, manager_tok = tokens.new_token(ca.cert_pem), tokens.new_token(ca.cert_pem)
                record = certificate_record(node_id, cert, ca.cert)

                async def create_cluster(m: Manager) -> None:
                    sealing = m.data_key.current()
                    await self._propose_until_leader(m, state.InitCluster(
                        cluster=state.Cluster(
                            id=cluster_id, root_ca_cert=ca.cert_pem.decode(), autolock=bool(unlock),
                            join_tokens=state.JoinTokens(worker=sealing.seal(str(worker_tok).encode()),
                                                         manager=sealing.seal(str(manager_tok).encode())),
                            unlock_key=sealing.seal(unlock) if unlock else None,
                            key_id=sealing.key_id,
                            # The flag seeds the cluster's setting; `swarm update` changes it from then on.
                            dispatcher_heartbeat=int(self.config.dispatcher_heartbeat * 1e9),
                        ),
                        node=replace(self._self_node_record("manager"), availability=availability,
                                     cert_serial=record.serial, cert_not_after=record.not_after,
                                     cert_issued_at=record.issued_at,
                                     cert_issuer=record.issuer, cert_issuer_key=record.issuer_key),
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
                # Before the swarm records this node: were it to join as a manager, it must listen there.
                check_listen(listen, raft_addr)
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
                    self._hold_identity(issued.certificate, key_pem)
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
                self._hold_identity(self.dir.read(self.dir.cert_path), node_key)
                if got.node_key is None:
                    self._save_identity((got.dek, got.ca_key), key, previous_deks=got.previous)
                await self._start_manager(got.dek, got.ca_key, previous_deks=got.previous)
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
            local_node_state="locked" if role is Role.LOCKED else "error" if self._renewal_refused else "active",
            error=self._renewal_refused,
            node_id=self.state.node_id, cluster_id=self.state.cluster_id,
            control_available=role is Role.MANAGER,
            node_addr=self.state.advertise_addr.rsplit(":", 1)[0],
            remote_managers=remote_managers, nodes=nodes, managers=managers,
            cluster=cluster_info(self.manager) if self.manager is not None else None,
        )

    def figures(self) -> Figures:
        """What a metrics scrape reads (on the HTTP server's thread)."""
        material = self.material
        return figures(self.manager, material.current().certificate if material is not None else None)
