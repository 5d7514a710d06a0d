"""The swarm itself: inspect, rotate a join token, show and rotate the unlock key, turn autolock on or
off, set the lifetime of node certificates, the task history limit and the dispatcher heartbeat."""

from __future__ import annotations


from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.ca import certs, tokens
from swarmsecrets.ca.rotation import SwarmCA
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id
from swarmsecrets.manager.datakey import join_tokens, unlock_key
from swarmsecrets.manager.dispatcher import HEARTBEAT_PERIOD
from swarmsecrets.rpcutil import format_ts


class ClusterAPI:
    """``ca`` is the swarm's CA: a new join token carries the digest of the root that signs now. ``min_cert_expiry``
    (seconds): the shortest node certificate lifetime accepted (Docker's hour, lower in tests)."""

    def __init__(self, store: StoreReader, proposer: Proposer, sealer: Sealer, ca: SwarmCA, *,
                 min_cert_expiry: float = certs.MIN_NODE_VALIDITY.total_seconds(),
                 default_heartbeat: float = HEARTBEAT_PERIOD) -> None:
        self.min_cert_expiry = min_cert_expiry
        self.default_heartbeat = default_heartbeat  # what the dispatcher uses when the cluster stores none
        self.store = store
        self.proposer = proposer
        self.sealer = sealer
        self.ca = ca

    def _cluster_to_proto(self) -> objects_pb2.Cluster:
        c = self.store.cluster
        if c is None:
            raise errors.Unavailable("the cluster state is not available yet")
        jt = join_tokens(self.store, self.sealer)
        return objects_pb2.Cluster(
            id=c.id, version=objects_pb2.Version(index=c.version),
            created_at=format_ts(c.created_at), updated_at=format_ts(c.updated_at),
            join_tokens=objects_pb2.JoinTokens(worker=jt["worker"], manager=jt["manager"]),
            autolock=c.autolock, root_ca_cert=c.root_ca_cert,
            node_cert_expiry_seconds=int(certs.node_validity(c.node_cert_expiry).total_seconds()),
            task_history_retention_limit=c.task_history_limit,
            dispatcher_heartbeat_period_ms=(c.dispatcher_heartbeat // 10**6 if c.dispatcher_heartbeat
                                            else int(self.default_heartbeat * 1000)),
        )

    async def get_cluster(self, request: control_pb2.GetClusterRequest) -> control_pb2.GetClusterResponse:
        await self.proposer.barrier()
        return control_pb2.GetClusterResponse(cluster=self._cluster_to_proto())

    async def rotate_join_token(self, request: control_pb2.RotateJoinTokenRequest,
                                caller: str) -> control_pb2.RotateJoinTokenResponse:
        if request.role not in ("worker", "manager"):
            raise errors.InvalidArgument(f"unknown role {request.role}")
        await self.proposer.barrier()
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        # Both tokens sealed now under one key (the other one may be under a key a rotation retires).
        key = self.sealer.current()
        key_id = state.sealed_with(key.key_id, self.store.managers())
        fresh = str(tokens.new_token(self.ca.signer().ca.cert_pem))
        plain = {**join_tokens(self.store, self.sealer), request.role: fresh}
        sealed = state.JoinTokens(worker=key.seal(plain["worker"].encode()),
                                  manager=key.seal(plain["manager"].encode()))
        rid = request_id(self.sealer, state.UpdateCluster, caller, request)
        await self.proposer.propose(state.UpdateCluster(rid=rid, join_tokens=sealed, sealed_with=key_id))
        jt = join_tokens(self.store, self.sealer)
        return control_pb2.RotateJoinTokenResponse(
            join_tokens=objects_pb2.JoinTokens(worker=jt["worker"], manager=jt["manager"]))

    async def get_unlock_key(self, request: control_pb2.GetUnlockKeyRequest) -> control_pb2.GetUnlockKeyResponse:
        await self.proposer.barrier()
        key = unlock_key(self.store, self.sealer)
        if key is None:
            raise errors.FailedPrecondition("no unlock key is set")
        return control_pb2.GetUnlockKeyResponse(unlock_key=keys.format_unlock_key(key))

    async def rotate_unlock_key(self, request: control_pb2.RotateUnlockKeyRequest,
                                caller: str) -> control_pb2.GetUnlockKeyResponse:
        await self.proposer.barrier()
        cluster = self.store.cluster
        if cluster is None or not cluster.autolock:
            raise errors.FailedPrecondition("cannot rotate because autolock is not turned on")
        new = keys.new_key()
        rid = request_id(self.sealer, state.UpdateCluster, caller, request)
        sealing = self.sealer.current()
        cmd = state.UpdateCluster(rid=rid, unlock_key=sealing.seal(new),
                                  sealed_with=state.sealed_with(sealing.key_id, self.store.managers()))
        updated: state.Cluster = await self.proposer.propose(cmd)
        assert updated.unlock_key is not None
        # The key this request installed (its first outcome, on a retry), not whatever is current by now.
        key = self.sealer.unseal(updated.unlock_key)
        # Whoever held the old unlock key and a manager's disk could open the data key: it rotates
        # too, begun by the leader as soon as no root CA rotation runs (see dekrotation.due).
        # A request id of its own: the client's is bound to the unlock key's change, and the
        # request is idempotent anyway.
        await self.proposer.propose(state.RequestDataKeyRotation())
        return control_pb2.GetUnlockKeyResponse(unlock_key=keys.format_unlock_key(key))

    async def update_cluster(self, request: control_pb2.UpdateClusterRequest,
                             caller: str) -> control_pb2.UpdateClusterResponse:
        """Autolock on or off. Every manager re-wraps its keys (its TLS key among them) as it applies
        the change: under the new unlock key, or back under a key file of its own. A certificate
        lifetime (``node_cert_expiry_seconds``, 0: unchanged) applies to certificates issued from
        then on: each node takes it at its next renewal. The task history limit and the dispatcher
        heartbeat (unset or 0: unchanged) apply at once: the scheduler's next pass, each agent's
        next heartbeat."""
        expiry = request.node_cert_expiry_seconds
        if expiry and expiry < self.min_cert_expiry:
            minimum = validation.format_duration(self.min_cert_expiry)
            raise errors.InvalidArgument(f"minimum certificate expiry time is: {minimum}")
        if expiry > validation.MAX_CERT_EXPIRY:
            maximum = validation.format_duration(validation.MAX_CERT_EXPIRY)
            raise errors.InvalidArgument(f"maximum certificate expiry time is: {maximum}")
        if request.dispatcher_heartbeat_period_ms > validation.MAX_DISPATCHER_HEARTBEAT * 1000:
            maximum = validation.format_duration(validation.MAX_DISPATCHER_HEARTBEAT)
            raise errors.InvalidArgument(f"maximum dispatcher heartbeat period is: {maximum}")
        await self.proposer.barrier()
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        history = (request.task_history_retention_limit if request.HasField("task_history_retention_limit")
                   else None)
        heartbeat = request.dispatcher_heartbeat_period_ms * 10**6 or None
        if (history is not None and history != cluster.task_history_limit) or (
                heartbeat is not None and heartbeat != cluster.dispatcher_heartbeat):
            # Idempotent like the lifetime below: a retry finds the settings made.
            await self.proposer.propose(state.SetClusterSettings(task_history_limit=history,
                                                                 dispatcher_heartbeat=heartbeat))
        if expiry and expiry != cluster.node_cert_expiry:
            # The client's request id is bound to the autolock change below; this one is
            # idempotent (a retry finds the lifetime set and proposes nothing).
            await self.proposer.propose(state.SetCertExpiry(seconds=expiry))
        if request.autolock != cluster.autolock:
            sealing = self.sealer.current()
            key_id = state.sealed_with(sealing.key_id, self.store.managers()) if request.autolock else ""
            sealed = sealing.seal(keys.new_key()) if request.autolock else None
            rid = request_id(self.sealer, state.SetAutolock, caller, request)
            await self.proposer.propose(state.SetAutolock(rid=rid, autolock=request.autolock, unlock_key=sealed,
                                                          sealed_with=key_id))
        key = unlock_key(self.store, self.sealer)
        return control_pb2.UpdateClusterResponse(cluster=self._cluster_to_proto(),
                                                 unlock_key=keys.format_unlock_key(key) if key else "")
