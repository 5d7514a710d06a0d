"""``service logs``: the leader gathers the output from the nodes (``logbroker``); another manager
relays the leader's stream, over its own manager certificate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc
from swarmsecrets.manager.collaborators import Proposer, StoreReader
from swarmsecrets.manager.logbroker import LogBroker
from swarmsecrets.rpcutil import error_from_rpc

ChannelFactory = Callable[[str], grpc.aio.Channel]


class LogsAPI:
    def __init__(self, store: StoreReader, proposer: Proposer, broker: LogBroker, channel: ChannelFactory) -> None:
        """``channel``: a channel to another manager's TLS port (the leader's control address)."""
        self.store = store
        self.proposer = proposer
        self.broker = broker
        self.channel = channel

    async def service_logs(self, request: control_pb2.ServiceLogsRequest) -> AsyncIterator[
            control_pb2.ServiceLogsMessage]:
        await self.proposer.barrier()
        svc = self.store.resolve_service(request.service_id)
        status = self.proposer.status()
        if not status.is_leader:
            leader = self.store.control_addr_of(status.leader) if status.leader else ""
            if not leader:
                raise errors.NoLeader()
            async for msg in self._relay(leader, control_pb2.ServiceLogsRequest(
                    service_id=svc.id, follow=request.follow, tail=request.tail)):
                yield msg
            return
        nodes = {t.node_id for t in self.store.tasks(service_id=svc.id) if t.node_id}
        sub = self.broker.subscribe(svc.id, request.follow, request.tail, nodes)
        try:
            while (batch := await sub.queue.get()) is not None:
                yield control_pb2.ServiceLogsMessage(messages=batch)
        finally:
            self.broker.close(sub)

    async def _relay(self, leader: str, request: control_pb2.ServiceLogsRequest) -> AsyncIterator[
            control_pb2.ServiceLogsMessage]:
        async with self.channel(leader) as ch:
            try:
                async for msg in control_pb2_grpc.ControlStub(ch).ServiceLogs(request):
                    yield msg
            except grpc.aio.AioRpcError as e:
                raise error_from_rpc(e) from None
