"""The local API: the CLI and its own daemon, over a unix socket only root (and ``--group``) may open.

Two halves. ``NodeOperations`` is what the node offers (init, join, leave, unlock, info), in plain
typed values that know nothing of the transport; the daemon implements it. ``LocalAPI`` carries
it: today gRPC on the unix socket (the Swarm service, plus the Control service the wiring hands
in, so the CLI's secret/service/node commands reach the local manager). A different transport
replaces ``LocalAPI`` alone; neither the node nor the CLI commands change.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from swarmsecrets.api.v1 import control_pb2_grpc, swarm_pb2, swarm_pb2_grpc
from swarmsecrets import errors, wire
from swarmsecrets.audit import ControlAudit
from swarmsecrets.node.config import socket_group_id
from swarmsecrets.node.peercred import PeerCredRelay
from swarmsecrets.rpcutil import MalformedRequests, rpc

log = logging.getLogger(__name__)

# --- the interface ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitOptions:
    advertise_addr: str
    listen_addr: str = ""  # "" means the advertised address
    raft_addr: str = ""    # "" means the advertised host on the next port
    autolock: bool = False
    availability: str = ""  # active | pause | drain; "" means active
    force_new_cluster: bool = False
    restore_path: str = ""  # a backup file to start the swarm from, and the key that opens it
    restore_key: str = ""


@dataclass(frozen=True)
class Initialized:
    node_id: str
    worker_join_command: str
    unlock_key: str = ""  # only with autolock


@dataclass(frozen=True)
class JoinOptions:
    remote_addr: str
    join_token: str
    advertise_addr: str = ""
    listen_addr: str = ""
    raft_addr: str = ""
    availability: str = ""  # active | pause | drain; "" means active


@dataclass(frozen=True)
class Joined:
    node_id: str
    role: str


@dataclass(frozen=True)
class Backedup:
    path: str
    applied_index: int
    backup_key: str  # "" when the swarm's unlock key opens the file
    secrets: int
    nodes: int


@dataclass(frozen=True)
class RaftMemberInfo:
    node_id: str
    raft_addr: str
    addr: str
    leader: bool
    reachable: bool


@dataclass(frozen=True)
class ClusterInfo:
    """A manager's view of the cluster's settings and of raft (durations in seconds)."""

    task_history_limit: int
    snapshot_interval: int
    keep_old_snapshots: int
    raft_heartbeat: float
    raft_election_min: float
    raft_election_max: float
    dispatcher_heartbeat: float
    cert_expiry: int
    autolock: bool
    root_rotation_in_progress: bool
    raft_term: int
    raft_leader: str  # node ID; "" when none is known
    commit_index: int
    applied_index: int
    snapshot_index: int
    raft_members: tuple[RaftMemberInfo, ...]


@dataclass(frozen=True)
class NodeInfo:
    local_node_state: str  # "inactive" | "active" | "locked", as Docker's LocalNodeState
    node_id: str = ""
    cluster_id: str = ""
    control_available: bool = False
    node_addr: str = ""
    remote_managers: tuple[str, ...] = ()
    nodes: int = 0
    managers: int = 0
    error: str = ""  # with local_node_state "error": why, and what to do
    cluster: ClusterInfo | None = None  # managers only


class NodeOperations(Protocol):
    """What the CLI may ask of its node. Errors are ``errors.SwarmError`` with the user's message."""

    async def init(self, options: InitOptions) -> Initialized: ...

    async def join(self, options: JoinOptions) -> Joined: ...

    async def leave(self, force: bool) -> None: ...

    async def unlock(self, unlock_key: str) -> None: ...

    async def backup(self, path: str) -> Backedup: ...

    def info(self) -> NodeInfo: ...


# --- the transport: gRPC on a unix socket --------------------------------------------------------------

class SwarmService(swarm_pb2_grpc.SwarmServicer):
    """The Swarm service: messages in, node operations, messages out."""

    def __init__(self, node: NodeOperations) -> None:
        self.node = node

    @rpc
    async def Init(self, request: swarm_pb2.InitRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.InitResponse:
        done = await self.node.init(InitOptions(advertise_addr=request.advertise_addr, listen_addr=request.listen_addr,
                                                raft_addr=request.raft_addr, autolock=request.autolock,
                                                availability=request.availability,
                                                force_new_cluster=request.force_new_cluster,
                                                restore_path=request.restore_path,
                                                restore_key=request.restore_key))
        return swarm_pb2.InitResponse(node_id=done.node_id, worker_join_command=done.worker_join_command,
                                      unlock_key=done.unlock_key)

    @rpc
    async def Join(self, request: swarm_pb2.JoinRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.JoinResponse:
        done = await self.node.join(JoinOptions(
            remote_addr=request.remote_addr, join_token=request.join_token, advertise_addr=request.advertise_addr,
            listen_addr=request.listen_addr, raft_addr=request.raft_addr, availability=request.availability))
        return swarm_pb2.JoinResponse(node_id=done.node_id, role=done.role)

    @rpc
    async def Leave(self, request: swarm_pb2.LeaveRequest,
                    context: grpc.aio.ServicerContext) -> swarm_pb2.LeaveResponse:
        await self.node.leave(request.force)
        return swarm_pb2.LeaveResponse()

    @rpc
    async def Unlock(self, request: swarm_pb2.UnlockRequest,
                     context: grpc.aio.ServicerContext) -> swarm_pb2.UnlockResponse:
        await self.node.unlock(request.unlock_key)
        return swarm_pb2.UnlockResponse()

    @rpc
    async def Backup(self, request: swarm_pb2.BackupRequest,
                     context: grpc.aio.ServicerContext) -> swarm_pb2.BackupResponse:
        done = await self.node.backup(request.path)
        return swarm_pb2.BackupResponse(path=done.path, applied_index=done.applied_index, backup_key=done.backup_key,
                                        secrets=done.secrets, nodes=done.nodes)

    @rpc
    async def Info(self, request: swarm_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.InfoResponse:
        i = self.node.info()
        resp = swarm_pb2.InfoResponse(
            local_node_state=i.local_node_state, node_id=i.node_id, cluster_id=i.cluster_id,
            control_available=i.control_available, node_addr=i.node_addr, remote_managers=list(i.remote_managers),
            nodes=i.nodes, managers=i.managers, error=i.error)
        c = i.cluster
        if c is not None:
            fields = {k: v for k, v in vars(c).items() if k != "raft_members"}
            resp.MergeFrom(swarm_pb2.InfoResponse(**fields, raft_members=[
                swarm_pb2.RaftMember(node_id=m.node_id, raft_addr=m.raft_addr, addr=m.addr, leader=m.leader,
                                     reachable=m.reachable) for m in c.raft_members]))
        return resp


def _served(path: str) -> bool:
    """Whether ``path`` is a socket some process accepts on, or anything else that is not a socket:
    neither may be replaced. A socket nobody serves is a stale one."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return True
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)  # a listener with a full backlog keeps a connect waiting: it is served all the same
        try:
            s.connect(path)
        except TimeoutError:
            return True
        except OSError:
            return False
    return True


class LocalAPI:
    """Serves the node and the local control service on ``socket_path``, a socket born 0600; with
    ``group`` (dockerd's ``-G``) it is then handed to that group, 0660."""

    def __init__(self, socket_path: str, node: NodeOperations, control: control_pb2_grpc.ControlServicer,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = (), group: str = "") -> None:
        """``interceptors``: run before the others (e.g. the daemon's gRPC metrics); ``group``: the
        group whose members may use the socket besides root."""
        self.path = socket_path
        self.group = group
        # The daemon accepts CLI connections itself to learn each peer's uid for the audit lines.
        self._relay = PeerCredRelay(socket_path)
        self._server = grpc.aio.server(options=wire.LOCAL_SERVER_OPTIONS,
                                       interceptors=[*interceptors, MalformedRequests(),
                                                     ControlAudit(self._relay.uid_of)])
        swarm_pb2_grpc.add_SwarmServicer_to_server(SwarmService(node), self._server)
        control_pb2_grpc.add_ControlServicer_to_server(control, self._server)

    async def start(self) -> None:
        """Listen on the socket; ``errors.ListenFailed`` (Go's text, as dockerd's) when another daemon
        serves it, or something that is not a socket is in its place."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:  # a file where the directory should be
            raise errors.listen_failed("unix", self.path, OSError(errno.ENOTDIR, "")) from None
        except OSError as e:
            raise errors.listen_failed("unix", self.path, e) from None
        if _served(self.path):
            raise errors.listen_failed("unix", self.path, OSError(errno.EADDRINUSE, ""))
        try:
            if os.path.exists(self.path):  # a stale socket of an earlier run
                os.unlink(self.path)
        except OSError as e:
            raise errors.listen_failed("unix", self.path, e) from None
        old_umask = os.umask(0o177)  # born 0600: only root's CLI may connect
        try:
            self._server.add_insecure_port("unix:" + self._relay.prepare())
            await self._server.start()
            await self._relay.start()
        finally:
            os.umask(old_umask)
        if self.group:
            os.chown(self.path, -1, socket_group_id(self.group))
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def stop(self, grace: float = 1.0) -> None:
        await self._relay.stop()
        await self._server.stop(grace)
        if os.path.exists(self.path):
            os.unlink(self.path)
