"""A running manager: the raft node, the store, the cluster keys and the TLS port."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from swarmsecrets import errors
from swarmsecrets.ca import certs
from swarmsecrets.crypto import keys
from swarmsecrets.manager import store as store_mod
from swarmsecrets.manager.raft import RaftNode, RaftStatus, RaftTiming, RaftTLS
from swarmsecrets.nodestate import NodeDir, NodeState

log = logging.getLogger(__name__)

# How long a control request may wait for raft before it reports an unknown outcome.
PROPOSE_TIMEOUT = 5.0
BARRIER_TIMEOUT = 5.0


def now_ns() -> int:
    return time.time_ns()


class Manager:
    def __init__(self, nodedir: NodeDir, state: NodeState, dek: bytes, ca_key_pem: bytes,
                 timing: RaftTiming) -> None:
        self.dir = nodedir
        self.state = state
        self.dek = dek
        self.key_id = keys.key_id(dek)
        ca_pem = nodedir.read(nodedir.ca_path)
        self.ca = certs.RootCA(ca_pem, ca_key_pem)
        self.store = store_mod.Store()
        self.tls = RaftTLS(
            server_ctx=certs.server_context(nodedir.cert_path, nodedir.key_path, ca_pem),
            client_ctx=certs.client_context(nodedir.cert_path, nodedir.key_path, ca_pem),
            cluster_id=state.cluster_id,
        )
        self.raft = RaftNode(self_addr=state.raft_addr, members=state.members or [state.raft_addr],
                             data_dir=nodedir.raft_dir, tls=self.tls, state_machine=self.store,
                             timing=timing)
        self.server: grpc.aio.Server | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start_raft(self) -> None:
        self.raft.start()

    async def start_server(self, register: Callable[[grpc.aio.Server], None]) -> None:
        """Serve the TLS port: Control (manager certs), NodeCA, RaftMembership."""
        creds = grpc.ssl_server_credentials(
            [(self.dir.read(self.dir.key_path), self.dir.read(self.dir.cert_path) + self.ca.cert_pem)],
            # Joiners present a bootstrap certificate (see certs.bootstrap_ca_cert); RPCs
            # authorize only certificates the root CA issued.
            root_certificates=self.ca.cert_pem + certs.bootstrap_ca_cert(certs.ca_digest(self.ca.cert_pem)),
            require_client_auth=True,
        )
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        register(server)
        server.add_secure_port(self.state.listen_addr or self.state.advertise_addr, creds)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        await asyncio.to_thread(self.raft.stop)

    # --- raft ---------------------------------------------------------------------------

    async def propose(self, cmd: dict[str, Any], timeout: float = PROPOSE_TIMEOUT) -> Any:
        cmd.setdefault("ts", now_ns())
        result = await asyncio.wrap_future(self.raft.propose_async(cmd, timeout))
        return store_mod.unwrap(result)

    async def barrier(self) -> None:
        """Linearizable reads: local state reflects every write acknowledged before this call."""
        await asyncio.to_thread(self.raft.read_barrier, BARRIER_TIMEOUT)

    def raft_status(self) -> RaftStatus:
        return self.raft.status()

    # --- keys -----------------------------------------------------------------------------

    def seal(self, plaintext: bytes) -> bytes:
        return keys.seal(self.dek, plaintext)

    def unseal(self, ciphertext: bytes) -> bytes:
        return keys.open_sealed(self.dek, ciphertext)

    def join_tokens(self) -> dict[str, str]:
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        return {role: self.unseal(sealed).decode() for role, sealed in cluster["join_tokens"].items()}

    def unlock_key(self) -> bytes | None:
        cluster = self.store.cluster
        sealed = cluster.get("unlock_key") if cluster else None
        return self.unseal(sealed) if sealed else None


_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]
