"""The swarm's root CA: start a rotation (``swarm ca --rotate``) and follow its progress."""

from __future__ import annotations

import hashlib

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.ca import rotation, tokens
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id
from swarmsecrets.manager.rootrotation import cluster_progress


class RootCAAPI:
    def __init__(self, store: StoreReader, proposer: Proposer, sealer: Sealer, ca: rotation.SwarmCA) -> None:
        self.store = store
        self.proposer = proposer
        self.sealer = sealer
        self.ca = ca

    def _progress(self) -> control_pb2.RootCAProgress:
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        p = cluster_progress(cluster, self.store.nodes())
        root = cluster.desired_root()
        return control_pb2.RootCAProgress(
            root_ca_cert=root, desired_digest="sha256:" + hashlib.sha256(root.encode()).hexdigest(),
            in_progress=p.in_progress, certs_rotated=p.certs_rotated, roots_rotated=p.roots_rotated, total=p.total)

    async def get_progress(self, request: control_pb2.GetRootCAProgressRequest) -> control_pb2.RootCAProgress:
        await self.proposer.barrier()
        return self._progress()

    async def rotate(self, request: control_pb2.RotateRootCARequest, caller: str) -> control_pb2.RootCAProgress:
        """A new root and its cross-signed intermediate (signed here with the current root's key);
        the new key enters the log sealed with the data key; both join tokens change."""
        await self.proposer.barrier()
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        rid = request_id(self.sealer, state.StartRootRotation, caller, request)
        if cluster.root_rotation is not None and not self.store.has_request(rid):
            raise errors.FailedPrecondition("a root CA rotation is already in progress")
        current = self.ca.current
        if current.cert_pem.decode() != cluster.root_ca_cert:
            raise errors.Unavailable("this manager has not caught up with the swarm's root CA yet")
        new = rotation.create_rotation_root()
        assert new.key_pem is not None
        key = self.sealer.current()
        key_id = state.sealed_with(key.key_id, self.store.managers())
        cmd = state.StartRootRotation(
            rid=rid, from_root=cluster.root_ca_cert, sealed_with=key_id,
            rotation=state.RootRotation(ca_cert=new.cert_pem.decode(), ca_key=key.seal(new.key_pem),
                                        cross_signed=rotation.cross_sign(current, new.cert_pem).decode()),
            join_tokens=state.JoinTokens(worker=key.seal(str(tokens.new_token(new.cert_pem)).encode()),
                                         manager=key.seal(str(tokens.new_token(new.cert_pem)).encode())))
        state.require_supported(cmd, self.store.managers())
        await self.proposer.propose(cmd)
        return self._progress()
