"""swarmsecretsd: process wiring — config, the unix socket, the TLS port, signals, roles.

The daemon starts inactive (like dockerd), serves the CLI on a unix socket, and
after ``swarm init``/``swarm join`` runs as a manager (raft + control API + CA)
or a worker. It remembers its role in its data dir and resumes it on restart.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from swarmsecrets import __version__, errors, ids, validation
from swarmsecrets.api.v1 import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2_grpc,
    raft_pb2,
    raft_pb2_grpc,
    swarm_pb2,
    swarm_pb2_grpc,
)
from swarmsecrets.ca import certs, tokens
from swarmsecrets.crypto import keys
from swarmsecrets.logfmt import setup_logging
from swarmsecrets.manager.controlapi import ControlService
from swarmsecrets.manager.dispatcher import HEARTBEAT_PERIOD
from swarmsecrets.manager.manager import Manager
from swarmsecrets.manager.nodeca import NodeCAService, RaftMembershipService, require_manager_peer
from swarmsecrets.raft import RaftTiming
from swarmsecrets.nodestate import NodeDir, NodeState
from swarmsecrets.rpcutil import rpc
from swarmsecrets.worker.agent import Agent
from swarmsecrets.worker.secretsfs import NotTmpfsError

log = logging.getLogger("swarmsecretsd")

DEFAULT_HOST = "unix:///run/swarmsecrets/swarmsecrets.sock"
DEFAULT_DATA_DIR = "/var/lib/swarmsecrets"
DEFAULT_SECRETS_ROOT = "/run/swarmsecrets"
# How long init/join wait for the raft group to elect or admit this node.
FORMATION_TIMEOUT = 20.0


@dataclass
class Config:
    data_dir: str = DEFAULT_DATA_DIR
    host: str = DEFAULT_HOST
    log_level: str = "info"
    secrets_root: str = DEFAULT_SECRETS_ROOT
    dev_allow_non_tmpfs: bool = False
    # Seconds between worker heartbeats when this manager leads (Swarm's --dispatcher-heartbeat).
    dispatcher_heartbeat: float = HEARTBEAT_PERIOD
    raft: dict[str, float] = field(default_factory=dict)

    def timing(self) -> RaftTiming:
        return RaftTiming(**self.raft) if self.raft else RaftTiming()


def raft_addr_for(advertise_addr: str, explicit: str) -> str:
    """The raft address rule: --raft-addr if given, else the advertised host with port + 1."""
    if explicit:
        host, port = validation.validate_addr(explicit, 0)
        return f"{host}:{port}"
    host, port = validation.validate_addr(advertise_addr, 0)
    return f"{host}:{port + 1}"


def _grpc_target(addr: str) -> str:
    host, port = validation.validate_addr(addr, 0)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.dir = NodeDir(config.data_dir)
        self.dir.ensure()
        self.state = self.dir.load()
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.locked = False
        self.lifecycle = asyncio.Lock()  # one init/join/leave/unlock/role change at a time
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()

    # --- who may use the control API -------------------------------------------------

    def _running_manager(self) -> Manager:
        if self.state.role == "inactive":
            raise errors.FailedPrecondition(errors.NOT_IN_SWARM)
        if self.state.role != "manager":
            raise errors.FailedPrecondition(errors.NOT_A_MANAGER)
        if self.locked:
            raise errors.FailedPrecondition(errors.LOCKED)
        if self.manager is None:
            raise errors.Unavailable("the manager is starting")
        return self.manager

    def local_manager(self, context: grpc.aio.ServicerContext) -> Manager:
        return self._running_manager()

    def remote_manager(self, context: grpc.aio.ServicerContext) -> Manager:
        m = self._running_manager()
        require_manager_peer(m, context)
        return m

    # --- lifecycle ----------------------------------------------------------------------

    async def resume(self) -> None:
        if self.state.role == "worker":
            self._start_agent()
            return
        if self.state.role != "manager":
            return
        wrapped = keys.WrappedKeys(self.dir.keys_dir)
        if wrapped.autolocked():
            self.locked = True
            log.info("swarm is locked: waiting for 'swarmsecrets swarm unlock'")
            return
        dek, ca_key = wrapped.load()
        await self._start_manager(dek, ca_key)

    async def _start_manager(self, dek: bytes, ca_key: bytes,
                             before_serving: Callable[[Manager], Awaitable[Any]] | None = None) -> Manager:
        """Raft first; then (joining the group, or creating the cluster) ``before_serving``; then the TLS port."""
        m = Manager(self.dir, self.state, dek, ca_key, self.config.timing(), self.config.dispatcher_heartbeat)
        m.store.add_listener(self._on_apply)
        await asyncio.to_thread(m.start_raft)
        self.manager = m
        if before_serving is not None:
            await before_serving(m)
        await m.start_server(self._register_tls_services)
        log.info("manager started node_id=%s listen=%s raft=%s", self.state.node_id,
                 self.state.listen_addr, self.state.raft_addr)
        return m

    def _register_tls_services(self, server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlServicer_to_server(ControlService(self.remote_manager), server)
        ca_pb2_grpc.add_NodeCAServicer_to_server(NodeCAService(self._running_manager), server)
        raft_pb2_grpc.add_RaftMembershipServicer_to_server(RaftMembershipService(self._running_manager), server)

    def _on_apply(self, command: dict[str, Any], result: dict[str, Any]) -> None:
        """Runs on the raft thread: re-wrap this node's keys when the unlock key rotates; step down
        to a worker when this manager is demoted."""
        node = command.get("node") or {}
        if (command.get("op") == "update_node" and node.get("id") == self.state.node_id
                and node.get("role") == "worker" and "ok" in result):
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._demoted()))
        changes = command.get("changes") or {}
        if command.get("op") == "update_cluster" and "unlock_key" in changes and "ok" in result:
            m = self.manager
            if m is None:
                return
            new_key = m.unseal(changes["unlock_key"])
            keys.WrappedKeys(self.dir.keys_dir).store(m.dek, m.ca.key_pem or b"", new_key)

    def _start_agent(self) -> None:
        def save_managers(addrs: list[str]) -> None:
            self.state.remote_managers = addrs
            self.dir.save(self.state)

        try:
            self.agent = Agent(secrets_root=self.config.secrets_root,
                               allow_non_tmpfs=self.config.dev_allow_non_tmpfs,
                               managers=self.state.remote_managers, channel=self._mtls_channel,
                               on_removed=self._removed, on_managers=save_managers,
                               on_promoted=lambda: self.loop.create_task(self._promoted()))
        except (OSError, ValueError, NotTmpfsError) as e:  # e.g. a secrets root that is not tmpfs
            raise errors.FailedPrecondition(str(e)) from None
        self.agent.start()
        log.info("worker agent started node_id=%s secrets_root=%s", self.state.node_id, self.config.secrets_root)

    async def _renew_certificate(self, managers: list[str]) -> ca_pb2.IssueNodeCertificateResponse:
        """A new key and a certificate with the role the swarm now has for this node."""
        key_pem, csr = certs.generate_key_and_csr()
        last: Exception | None = None
        for addr in managers:
            try:
                async with self._mtls_channel(addr) as ch:
                    resp = await ca_pb2_grpc.NodeCAStub(ch).RenewNodeCertificate(
                        ca_pb2.RenewNodeCertificateRequest(csr=csr), timeout=15)
            except grpc.aio.AioRpcError as e:
                last = e
                continue
            self.dir.write_identity(self.dir.read(self.dir.ca_path), resp.certificate, key_pem)
            return resp
        raise errors.Unavailable(f"could not renew this node's certificate: {last}")

    async def _promoted(self) -> None:
        """The swarm made this worker a manager: new certificate, keys, raft membership."""
        async with self.lifecycle:
            if self.state.role != "worker":
                return
            managers = list(self.state.remote_managers)
            if self.agent is not None:
                await self.agent.stop(wipe=True)
                self.agent = None
            try:
                resp = await self._renew_certificate(managers)
                raft_addr = certs.identity_from_pem(resp.certificate).raft_addrs[0]
                host, port = validation.validate_addr(raft_addr, 0)
                self.state.role = "manager"
                self.state.raft_addr = raft_addr
                self.state.advertise_addr = self.state.advertise_addr or validation.format_addr(host, port - 1)
                self.state.listen_addr = self.state.listen_addr or self.state.advertise_addr
                await self._join_as_manager(managers[0])
                self.dir.save(self.state)
                log.info("promoted to manager raft=%s", raft_addr)
            except Exception:
                log.exception("promotion failed; staying a worker")
                await self.stop()
                self.state.role = "worker"
                self._start_agent()

    async def _demoted(self) -> None:
        """The swarm made this manager a worker: leave raft, worker certificate, run the agent."""
        async with self.lifecycle:
            m = self.manager
            if self.state.role != "manager" or m is None:
                return
            managers = [a for a in m.manager_addrs() if a != self.state.advertise_addr]
            # Let leadership move and the removal commit through the others before we go quiet.
            deadline = self.loop.time() + 15
            while m.raft_status().is_leader and self.loop.time() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2 * self.config.timing().election_max)
            await self.stop()
            try:
                await self._renew_certificate(managers)
            except errors.SwarmError as e:
                log.error("demoted, but %s", e)
            for d in (self.dir.keys_dir, self.dir.raft_dir):
                shutil.rmtree(d, ignore_errors=True)
            self.state.role = "worker"
            self.state.members = []
            self.state.remote_managers = managers
            self.dir.save(self.state)
            self._start_agent()
            log.info("demoted to worker")

    async def _removed(self) -> None:
        """The managers removed this node: forget the swarm (the agent already wiped its secrets)."""
        self.agent = None
        self.dir.wipe()
        self.state = NodeState()

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop(wipe=True)
            self.agent = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None

    # --- swarm init / join / leave / unlock -------------------------------------------------

    async def init(self, req: swarm_pb2.InitRequest) -> swarm_pb2.InitResponse:
        if self.state.role != "inactive":
            raise errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
        if not req.advertise_addr:
            raise errors.InvalidArgument("--advertise-addr is required (HOST:PORT of this node's swarm port)")
        host, port = validation.validate_addr(req.advertise_addr, 0)
        advertise = f"{host}:{port}"
        listen = req.listen_addr or advertise
        validation.validate_addr(listen, 0)
        raft_addr = raft_addr_for(advertise, req.raft_addr)
        self.dir.wipe()
        self.dir.ensure()
        cluster_id, node_id = ids.new_id(), ids.new_id()
        ca = certs.create_root_ca()
        key_pem, csr = certs.generate_key_and_csr()
        cert = certs.issue_node_cert(ca, csr, node_id=node_id, role="manager", cluster_id=cluster_id,
                                     addrs=[advertise], raft_addr=raft_addr)
        self.dir.write_identity(ca.cert_pem, cert, key_pem)
        dek = keys.new_key()
        unlock = keys.new_key() if req.autolock else None
        assert ca.key_pem is not None
        keys.WrappedKeys(self.dir.keys_dir).store(dek, ca.key_pem, unlock)
        self.state = NodeState(role="manager", node_id=node_id, cluster_id=cluster_id,
                               advertise_addr=advertise, listen_addr=listen, raft_addr=raft_addr,
                               members=[raft_addr], autolock=bool(req.autolock))
        try:
            worker_tok, manager_tok = tokens.new_token(ca.cert_pem), tokens.new_token(ca.cert_pem)

            async def create_cluster(m: Manager) -> None:
                await self._propose_until_leader(m, {
                    "op": "init_cluster", "rid": ids.new_request_id(),
                    "cluster": {
                        "id": cluster_id, "root_ca_cert": ca.cert_pem.decode(), "autolock": bool(unlock),
                        "join_tokens": {"worker": m.seal(str(worker_tok).encode()),
                                        "manager": m.seal(str(manager_tok).encode())},
                        "unlock_key": m.seal(unlock) if unlock else None,
                        "key_id": m.key_id,
                    },
                    "node": self._self_node_record("manager"),
                })

            await self._start_manager(dek, ca.key_pem, create_cluster)
        except BaseException:
            await self.stop()
            self.state = NodeState()
            self.dir.wipe()
            raise
        self.dir.save(self.state)
        log.info("swarm initialized cluster_id=%s node_id=%s", cluster_id, node_id)
        return swarm_pb2.InitResponse(
            node_id=node_id,
            worker_join_command=f"swarmsecrets swarm join --token {worker_tok} {advertise}",
            unlock_key=keys.format_unlock_key(unlock) if unlock else "",
        )

    def _self_node_record(self, role: str) -> dict[str, Any]:
        rec = {"id": self.state.node_id, "role": role, "hostname": socket.gethostname(),
               "addr": self.state.advertise_addr, "engine_version": __version__, "arch": os.uname().machine}
        if role == "manager":
            rec["raft_addr"] = self.state.raft_addr
        return rec

    async def _propose_until_leader(self, m: Manager, cmd: dict[str, Any]) -> Any:
        deadline = asyncio.get_running_loop().time() + FORMATION_TIMEOUT
        while True:
            try:
                return await m.propose(cmd)
            except errors.Unavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def join(self, req: swarm_pb2.JoinRequest) -> swarm_pb2.JoinResponse:
        if self.state.role != "inactive":
            raise errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
        token = tokens.parse_token(req.join_token)
        rhost, rport = validation.validate_addr(req.remote_addr, 2377)
        remote = f"{rhost}:{rport}"
        try:
            root_pem = await asyncio.to_thread(certs.fetch_unverified_root, rhost, rport, token.ca_digest)
        except (OSError, ValueError) as e:
            raise errors.Unavailable(f"could not reach the manager at {remote}: {e}") from None
        if certs.ca_digest(root_pem) != token.ca_digest:
            raise errors.InvalidArgument(
                f"remote CA does not match fingerprint. Expected: {token.ca_digest}")
        advertise = listen = raft_addr = ""
        if req.advertise_addr:
            host, port = validation.validate_addr(req.advertise_addr, 0)
            advertise = f"{host}:{port}"
            listen = req.listen_addr or advertise
            raft_addr = raft_addr_for(advertise, req.raft_addr)
        self.dir.wipe()
        self.dir.ensure()
        key_pem, csr = certs.generate_key_and_csr()
        boot_key, boot_cert = certs.bootstrap_client_cert(token.ca_digest)
        creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=boot_key,
                                             certificate_chain=boot_cert)
        async with grpc.aio.secure_channel(_grpc_target(remote), creds, options=_channel_options()) as ch:
            issued = await ca_pb2_grpc.NodeCAStub(ch).IssueNodeCertificate(ca_pb2.IssueNodeCertificateRequest(
                csr=csr, token=str(token), advertise_addr=advertise, raft_addr=raft_addr,
                hostname=socket.gethostname(), request_id=ids.new_request_id()), timeout=30)
        if issued.role == "manager" and not advertise:
            raise errors.InvalidArgument("--advertise-addr is required to join as a manager")
        self.dir.write_identity(root_pem, issued.certificate, key_pem)
        self.state = NodeState(role=issued.role, node_id=issued.node_id, cluster_id=issued.cluster_id,
                               advertise_addr=advertise, listen_addr=listen, raft_addr=raft_addr,
                               remote_managers=[remote])
        try:
            if issued.role == "manager":
                await self._join_as_manager(remote)
            else:
                self._start_agent()
        except BaseException:
            await self.stop()
            self.state = NodeState()
            self.dir.wipe()
            raise
        self.dir.save(self.state)
        log.info("joined swarm role=%s node_id=%s", issued.role, issued.node_id)
        return swarm_pb2.JoinResponse(node_id=issued.node_id, role=issued.role)

    def _mtls_channel(self, target: str) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.dir.read(self.dir.ca_path),
            private_key=self.dir.read(self.dir.key_path),
            certificate_chain=self.dir.read(self.dir.cert_path),
        )
        return grpc.aio.secure_channel(_grpc_target(target), creds, options=_channel_options())

    async def _join_as_manager(self, remote: str) -> None:
        async with self._mtls_channel(remote) as ch:
            got = await ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(ca_pb2.GetManagerKeysRequest(), timeout=30)
        unlock = keys.parse_unlock_key(got.unlock_key) if got.unlock_key else None
        keys.WrappedKeys(self.dir.keys_dir).store(got.data_key, got.ca_key, unlock)
        self.state.autolock = unlock is not None
        self.state.members = sorted(set(got.raft_members) | {self.state.raft_addr})
        m = await self._start_manager(got.data_key, got.ca_key, lambda m: self._join_raft(m, remote))
        await m.propose({"op": "update_node", "rid": ids.new_request_id(), "node": self._self_node_record("manager")})

    async def _join_raft(self, m: Manager, remote: str) -> None:
        deadline = asyncio.get_running_loop().time() + FORMATION_TIMEOUT
        async with self._mtls_channel(remote) as ch:
            stub = raft_pb2_grpc.RaftMembershipStub(ch)
            while True:
                try:
                    resp = await stub.Join(raft_pb2.RaftJoinRequest(raft_addr=self.state.raft_addr),
                                           timeout=FORMATION_TIMEOUT)
                    break
                except grpc.aio.AioRpcError as e:
                    retry = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    if not retry or asyncio.get_running_loop().time() > deadline:
                        raise errors.SwarmError(e.details() or str(e.code()), e.code()) from None
                    await asyncio.sleep(0.2)
        self.state.members = list(resp.members)
        if not await asyncio.to_thread(m.raft.wait_ready, FORMATION_TIMEOUT):
            raise errors.Unavailable("this node joined the raft group but did not catch up in time")

    async def leave(self, req: swarm_pb2.LeaveRequest) -> None:
        if self.state.role == "inactive":
            raise errors.FailedPrecondition(errors.NOT_IN_SWARM)
        if self.state.role == "manager":
            if self.locked and not req.force:
                raise errors.FailedPrecondition(
                    "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.")
            await self._leave_raft(req.force)
        await self.stop()
        self.dir.wipe()
        self.state = NodeState()
        self.locked = False
        log.info("left the swarm")

    async def _leave_raft(self, force: bool) -> None:
        m = self.manager
        if m is None:
            return
        status = m.raft_status()
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
        peers = [n["addr"] for n in m.store.nodes()
                 if n["role"] == "manager" and n["id"] != self.state.node_id and n.get("addr")]
        last_error: Exception | None = None
        for addr in peers:
            try:
                async with self._mtls_channel(addr) as ch:
                    await raft_pb2_grpc.RaftMembershipStub(ch).Leave(
                        raft_pb2.RaftLeaveRequest(node_id=self.state.node_id), timeout=20)
                return
            except grpc.aio.AioRpcError as e:
                last_error = e
        if not force:
            detail = last_error.details() if isinstance(last_error, grpc.aio.AioRpcError) else "no manager"
            raise errors.Unavailable(f"could not leave the raft group: {detail}")

    async def unlock(self, req: swarm_pb2.UnlockRequest) -> None:
        if self.state.role == "inactive":
            raise errors.FailedPrecondition(errors.NOT_IN_SWARM)
        if not self.locked:
            raise errors.FailedPrecondition(errors.NOT_LOCKED)
        key = keys.parse_unlock_key(req.unlock_key)
        dek, ca_key = keys.WrappedKeys(self.dir.keys_dir).load(key)
        self.locked = False
        try:
            await self._start_manager(dek, ca_key)
        except BaseException:
            self.locked = True
            raise

    def info(self) -> swarm_pb2.InfoResponse:
        if self.state.role == "inactive":
            return swarm_pb2.InfoResponse(local_node_state="inactive")
        resp = swarm_pb2.InfoResponse(
            node_id=self.state.node_id, cluster_id=self.state.cluster_id,
            local_node_state="locked" if self.locked else "active",
            control_available=self.state.role == "manager" and not self.locked,
            node_addr=self.state.advertise_addr.rsplit(":", 1)[0],
            remote_managers=self.state.remote_managers,
        )
        if self.manager is not None:
            nodes = self.manager.store.nodes()
            resp.nodes = len(nodes)
            resp.managers = len([n for n in nodes if n["role"] == "manager"])
            resp.remote_managers[:] = [n["addr"] for n in nodes if n["role"] == "manager"]
        return resp


class SwarmService(swarm_pb2_grpc.SwarmServicer):
    """The local-only API that changes what this node is."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    @rpc
    async def Init(self, request: swarm_pb2.InitRequest, context: grpc.aio.ServicerContext) -> Any:
        async with self.d.lifecycle:
            return await self.d.init(request)

    @rpc
    async def Join(self, request: swarm_pb2.JoinRequest, context: grpc.aio.ServicerContext) -> Any:
        async with self.d.lifecycle:
            try:
                return await self.d.join(request)
            except grpc.aio.AioRpcError as e:
                raise errors.SwarmError(e.details() or str(e.code()), e.code()) from None

    @rpc
    async def Leave(self, request: swarm_pb2.LeaveRequest, context: grpc.aio.ServicerContext) -> Any:
        async with self.d.lifecycle:
            await self.d.leave(request)
            return swarm_pb2.LeaveResponse()

    @rpc
    async def Unlock(self, request: swarm_pb2.UnlockRequest, context: grpc.aio.ServicerContext) -> Any:
        async with self.d.lifecycle:
            await self.d.unlock(request)
            return swarm_pb2.UnlockResponse()

    @rpc
    async def Info(self, request: swarm_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> Any:
        return self.d.info()


def _channel_options() -> list[tuple[str, Any]]:
    return [("grpc.ssl_target_name_override", certs.MANAGER_SERVER_NAME),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024)]


def _socket_path(host: str) -> str:
    if not host.startswith("unix://"):
        raise SystemExit(f"swarmsecretsd: --host must be unix:///path/to.sock, got {host!r}")
    return host[len("unix://"):]


async def serve(config: Config) -> None:
    daemon = Daemon(config)
    path = _socket_path(config.host)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 * 1024 * 1024),
                                      ("grpc.max_send_message_length", -1)])
    swarm_pb2_grpc.add_SwarmServicer_to_server(SwarmService(daemon), server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(daemon.local_manager), server)
    old_umask = os.umask(0o177)  # the socket is born 0600: root's CLI only
    try:
        server.add_insecure_port("unix:" + path)
        await server.start()
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    log.info("listening on %s (version %s, data dir %s)", config.host, __version__, daemon.dir.root)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    try:
        await daemon.resume()
    except Exception as e:
        log.error("could not resume the %s role: %s", daemon.state.role, e)
    await daemon.stopping.wait()
    log.info("shutting down")
    await server.stop(grace=1.0)
    await daemon.stop()
    if os.path.exists(path):
        os.unlink(path)
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="swarmsecretsd", description="The swarmsecrets daemon.")
    p.add_argument("--config", help="TOML file with the same keys as the flags (data_dir, host, log_level, [raft])")
    p.add_argument("--data-dir", help=f"state directory (default {DEFAULT_DATA_DIR})")
    p.add_argument("-H", "--host", help=f"unix socket for the CLI (default {DEFAULT_HOST})")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--secrets-root", help=f"workers: where task secrets go, on tmpfs (default {DEFAULT_SECRETS_ROOT})")
    p.add_argument("--dev-allow-non-tmpfs", action="store_true", default=None,
                   help="development only: allow a secrets root that is not tmpfs (secrets may reach disk)")
    p.add_argument("--dispatcher-heartbeat", type=float,
                   help=f"seconds between worker heartbeats; down after 3 missed (default {HEARTBEAT_PERIOD:g})")
    p.add_argument("--raft-heartbeat", type=float, help="seconds between leader heartbeats")
    p.add_argument("--raft-election-min", type=float, help="minimum election timeout, seconds")
    p.add_argument("--raft-election-max", type=float, help="maximum election timeout, seconds")
    p.add_argument("--version", action="version", version=f"swarmsecretsd {__version__}")
    a = p.parse_args(argv)
    cfg = Config()
    if a.config:
        try:
            with open(a.config, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            p.error(f"cannot read config {a.config}: {e}")
        unknown = set(doc) - {"data_dir", "host", "log_level", "secrets_root", "dev_allow_non_tmpfs",
                              "dispatcher_heartbeat", "raft"}
        if unknown:
            p.error(f"unknown keys in {a.config}: {', '.join(sorted(unknown))}")
        cfg.data_dir = doc.get("data_dir", cfg.data_dir)
        cfg.host = doc.get("host", cfg.host)
        cfg.log_level = doc.get("log_level", cfg.log_level)
        cfg.secrets_root = doc.get("secrets_root", cfg.secrets_root)
        cfg.dispatcher_heartbeat = float(doc.get("dispatcher_heartbeat", cfg.dispatcher_heartbeat))
        cfg.dev_allow_non_tmpfs = bool(doc.get("dev_allow_non_tmpfs", cfg.dev_allow_non_tmpfs))
        cfg.raft = dict(doc.get("raft", {}))
    cfg.data_dir = a.data_dir or cfg.data_dir
    cfg.host = a.host or cfg.host
    cfg.log_level = a.log_level or cfg.log_level
    cfg.secrets_root = a.secrets_root or cfg.secrets_root
    cfg.dispatcher_heartbeat = a.dispatcher_heartbeat or cfg.dispatcher_heartbeat
    if cfg.dispatcher_heartbeat <= 0:
        p.error("--dispatcher-heartbeat must be positive")
    cfg.dev_allow_non_tmpfs = a.dev_allow_non_tmpfs or cfg.dev_allow_non_tmpfs
    for flag, key in (("raft_heartbeat", "heartbeat"), ("raft_election_min", "election_min"),
                      ("raft_election_max", "election_max")):
        if getattr(a, flag) is not None:
            cfg.raft[key] = getattr(a, flag)
    try:
        cfg.timing()
    except (TypeError, ValueError) as e:
        p.error(f"invalid raft settings: {e}")
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    setup_logging(cfg.log_level)
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        pass
    except SystemExit:
        raise
    except Exception as e:  # never a traceback for a start-up problem; the log has details
        log.exception("fatal: %s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
