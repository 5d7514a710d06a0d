"""The swarm's data key: show it (by its public id), rotate it, rotate it on a schedule."""

from __future__ import annotations

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.manager import dekrotation, state
from swarmsecrets.manager.collaborators import Proposer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id
from swarmsecrets.manager.datakey import DataKey
from swarmsecrets.rpcutil import format_ts

NS = 10**9
# Longest schedule accepted (about ten years, in seconds): beyond it a typo more likely than a plan.
MAX_INTERVAL = 10 * 366 * 24 * 3600


class DataKeyAPI:
    def __init__(self, store: StoreReader, proposer: Proposer, data_key: DataKey) -> None:
        self.store = store
        self.proposer = proposer
        self.data_key = data_key

    def _info(self) -> control_pb2.DataKeyInfo:
        cluster = self.store.cluster
        if cluster is None:
            raise errors.Unavailable("the cluster state is not available yet")
        return control_pb2.DataKeyInfo(
            key_id=cluster.key_id, rotating_from=cluster.rotation_from,
            rotation_interval_seconds=cluster.key_rotation_interval // NS,
            rotated_at=format_ts(cluster.key_rotated_at) if cluster.key_rotated_at else "")

    async def get_data_key(self, request: control_pb2.GetDataKeyRequest) -> control_pb2.DataKeyInfo:
        await self.proposer.barrier()
        return self._info()

    async def rotate_data_key(self, request: control_pb2.RotateDataKeyRequest, caller: str) -> control_pb2.DataKeyInfo:
        rid = request_id(self.data_key, state.BeginDataKeyRotation, caller, request)
        key_id = await dekrotation.begin(self.store, self.proposer, self.data_key, rid)
        await dekrotation.wait_finished(self.store, self.proposer, key_id)
        return self._info()

    async def set_data_key_rotation(self, request: control_pb2.SetDataKeyRotationRequest,
                                    caller: str) -> control_pb2.DataKeyInfo:
        if not 0 <= request.interval_seconds <= MAX_INTERVAL:
            raise errors.InvalidArgument(
                f"invalid data key rotation interval: must be between 0 and {MAX_INTERVAL} seconds")
        rid = request_id(self.data_key, state.SetDataKeyRotation, caller, request)
        await self.proposer.propose(state.SetDataKeyRotation(rid=rid, interval=request.interval_seconds * NS))
        return self._info()
