"""The one Control servicer gRPC registers, routing each call to its kind's module.

``provide`` answers, per call, with the ready ``ControlAPI`` the caller may use, or raises the
typed error that says why there is none: on the unix socket, the node's running manager (or
"not in a swarm", "locked", "not a manager"); on the TLS port, the manager's own, once the peer's
certificate is a manager's of this swarm and, after a read barrier, the swarm holds it as a manager.

Writes also get the caller, as the transport identifies it (never from the request): their
request ids are bound to it (``binding``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc
from swarmsecrets.ca import certs
from swarmsecrets.ca.rotation import SwarmCA
from swarmsecrets.manager.collaborators import Proposer, RaftMembers, StoreReader
from swarmsecrets.manager.controlapi.cluster import ClusterAPI
from swarmsecrets.manager.controlapi.datakeys import DataKeyAPI
from swarmsecrets.manager.controlapi.logs import LogsAPI
from swarmsecrets.manager.controlapi.nodes import NodesAPI
from swarmsecrets.manager.controlapi.rootca import RootCAAPI
from swarmsecrets.manager.controlapi.secrets import SecretsAPI
from swarmsecrets.manager.controlapi.services import ServicesAPI
from swarmsecrets.manager.datakey import DataKey
from swarmsecrets.manager.dispatcher import HEARTBEAT_PERIOD
from swarmsecrets.rpcutil import peer_certificate, rpc


@dataclass(frozen=True)
class ControlAPI:
    secrets: SecretsAPI
    nodes: NodesAPI
    services: ServicesAPI
    cluster: ClusterAPI
    data_key: DataKeyAPI
    rootca: RootCAAPI
    logs: LogsAPI | None = None

    @classmethod
    def build(cls, *, store: StoreReader, proposer: Proposer, members: RaftMembers, sealer: DataKey,
              ca: SwarmCA, node_id: str, raft_addr: str,
              min_cert_expiry: float = certs.MIN_NODE_VALIDITY.total_seconds(),
              default_heartbeat: float = HEARTBEAT_PERIOD, logs: LogsAPI | None = None) -> ControlAPI:
        """``node_id`` and ``raft_addr`` are those of the manager that serves the API;
        ``default_heartbeat``: its dispatcher's period when the cluster stores none."""
        return cls(
            secrets=SecretsAPI(store, proposer, sealer),
            nodes=NodesAPI(store, proposer, members, sealer, node_id=node_id, raft_addr=raft_addr),
            services=ServicesAPI(store, proposer, sealer),
            cluster=ClusterAPI(store, proposer, sealer, ca, min_cert_expiry=min_cert_expiry,
                               default_heartbeat=default_heartbeat),
            data_key=DataKeyAPI(store, proposer, sealer),
            rootca=RootCAAPI(store, proposer, sealer, ca),
            logs=logs,
        )

    def caller(self, context: grpc.aio.ServicerContext) -> str:
        """Who makes a call ``provide`` admitted: on the TLS port, the manager its certificate names;
        on a unix socket (no certificate), the swarm's operator: only root may open the socket of
        any manager, and a client may retry a request on another manager's socket."""
        cert = peer_certificate(context)
        if cert is None:
            return "local"
        return f"manager:{certs.identity_from_pem(cert).node_id}"


# Async on the TLS port, where providing waits for a read barrier.
Provide = Callable[[grpc.aio.ServicerContext], ControlAPI | Awaitable[ControlAPI]]


class ControlServicer(control_pb2_grpc.ControlServicer):
    def __init__(self, provide: Provide) -> None:
        self.provide = provide

    async def _api(self, context: grpc.aio.ServicerContext) -> ControlAPI:
        api = self.provide(context)
        return await api if inspect.isawaitable(api) else api

    # --- secrets --------------------------------------------------------------------------

    @rpc
    async def CreateSecret(self, request: control_pb2.CreateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.CreateSecretResponse:
        api = await self._api(context)
        return await api.secrets.create_secret(request, api.caller(context))

    @rpc
    async def GetSecret(self, request: control_pb2.GetSecretRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.GetSecretResponse:
        return await (await self._api(context)).secrets.get_secret(request)

    @rpc
    async def ListSecrets(self, request: control_pb2.ListSecretsRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.ListSecretsResponse:
        return await (await self._api(context)).secrets.list_secrets(request)

    @rpc
    async def UpdateSecret(self, request: control_pb2.UpdateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.UpdateSecretResponse:
        api = await self._api(context)
        return await api.secrets.update_secret(request, api.caller(context))

    @rpc
    async def RemoveSecret(self, request: control_pb2.RemoveSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.RemoveSecretResponse:
        api = await self._api(context)
        return await api.secrets.remove_secret(request, api.caller(context))

    # --- nodes ----------------------------------------------------------------------------

    @rpc
    async def ListNodes(self, request: control_pb2.ListNodesRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListNodesResponse:
        return await (await self._api(context)).nodes.list_nodes(request)

    @rpc
    async def GetNode(self, request: control_pb2.GetNodeRequest,
                      context: grpc.aio.ServicerContext) -> control_pb2.GetNodeResponse:
        return await (await self._api(context)).nodes.get_node(request)

    @rpc
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.UpdateNodeResponse:
        api = await self._api(context)
        return await api.nodes.update_node(request, api.caller(context))

    @rpc
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.RemoveNodeResponse:
        api = await self._api(context)
        return await api.nodes.remove_node(request, api.caller(context))

    # --- services and tasks ------------------------------------------------------------------

    @rpc
    async def CreateService(self, request: control_pb2.CreateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.CreateServiceResponse:
        api = await self._api(context)
        return await api.services.create_service(request, api.caller(context))

    @rpc
    async def GetService(self, request: control_pb2.GetServiceRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetServiceResponse:
        return await (await self._api(context)).services.get_service(request)

    @rpc
    async def ListServices(self, request: control_pb2.ListServicesRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.ListServicesResponse:
        return await (await self._api(context)).services.list_services(request)

    @rpc
    async def UpdateService(self, request: control_pb2.UpdateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.UpdateServiceResponse:
        api = await self._api(context)
        return await api.services.update_service(request, api.caller(context))

    @rpc
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.RemoveServiceResponse:
        api = await self._api(context)
        return await api.services.remove_service(request, api.caller(context))

    @rpc
    async def ListTasks(self, request: control_pb2.ListTasksRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListTasksResponse:
        return await (await self._api(context)).services.list_tasks(request)

    # --- cluster ----------------------------------------------------------------------------

    @rpc
    async def GetCluster(self, request: control_pb2.GetClusterRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetClusterResponse:
        return await (await self._api(context)).cluster.get_cluster(request)

    @rpc
    async def RotateJoinToken(self, request: control_pb2.RotateJoinTokenRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.RotateJoinTokenResponse:
        api = await self._api(context)
        return await api.cluster.rotate_join_token(request, api.caller(context))

    @rpc
    async def GetUnlockKey(self, request: control_pb2.GetUnlockKeyRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        return await (await self._api(context)).cluster.get_unlock_key(request)

    @rpc
    async def RotateUnlockKey(self, request: control_pb2.RotateUnlockKeyRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        api = await self._api(context)
        return await api.cluster.rotate_unlock_key(request, api.caller(context))

    @rpc
    async def UpdateCluster(self, request: control_pb2.UpdateClusterRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.UpdateClusterResponse:
        api = await self._api(context)
        return await api.cluster.update_cluster(request, api.caller(context))

    # --- data key ----------------------------------------------------------------------------

    @rpc
    async def GetDataKey(self, request: control_pb2.GetDataKeyRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.DataKeyInfo:
        return await (await self._api(context)).data_key.get_data_key(request)

    @rpc
    async def RotateDataKey(self, request: control_pb2.RotateDataKeyRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.DataKeyInfo:
        api = await self._api(context)
        return await api.data_key.rotate_data_key(request, api.caller(context))

    @rpc
    async def SetDataKeyRotation(self, request: control_pb2.SetDataKeyRotationRequest,
                                 context: grpc.aio.ServicerContext) -> control_pb2.DataKeyInfo:
        api = await self._api(context)
        return await api.data_key.set_data_key_rotation(request, api.caller(context))

    # --- root CA ------------------------------------------------------------------------------

    @rpc
    async def RotateRootCA(self, request: control_pb2.RotateRootCARequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.RootCAProgress:
        api = await self._api(context)
        return await api.rootca.rotate(request, api.caller(context))

    @rpc
    async def GetRootCAProgress(self, request: control_pb2.GetRootCAProgressRequest,
                                context: grpc.aio.ServicerContext) -> control_pb2.RootCAProgress:
        return await (await self._api(context)).rootca.get_progress(request)

    # --- service logs ---------------------------------------------------------------------------

    @rpc
    async def ServiceLogs(self, request: control_pb2.ServiceLogsRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[control_pb2.ServiceLogsMessage]:
        api = await self._api(context)
        if api.logs is None:
            raise errors.Unavailable("this manager does not serve logs")
        # Headers at once: a followed stream may have nothing to send for a long time.
        await context.send_initial_metadata(())
        async for msg in api.logs.service_logs(request):
            yield msg
