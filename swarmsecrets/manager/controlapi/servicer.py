"""The one Control servicer gRPC registers, routing each call to its kind's module.

``provide`` answers, per call, with the ready ``ControlAPI`` the caller may use, or raises the
typed error that says why there is none: on the unix socket, the node's running manager (or
"not in a swarm", "locked", "not a manager"); on the TLS port, the manager's own, once the peer
is admitted as a manager of this swarm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc
from swarmsecrets.ca import certs
from swarmsecrets.manager.collaborators import Proposer, RaftMembers, Sealer, StoreReader
from swarmsecrets.manager.controlapi.cluster import ClusterAPI
from swarmsecrets.manager.controlapi.nodes import NodesAPI
from swarmsecrets.manager.controlapi.secrets import SecretsAPI
from swarmsecrets.manager.controlapi.services import ServicesAPI
from swarmsecrets.rpcutil import rpc


@dataclass(frozen=True)
class ControlAPI:
    secrets: SecretsAPI
    nodes: NodesAPI
    services: ServicesAPI
    cluster: ClusterAPI

    @classmethod
    def build(cls, *, store: StoreReader, proposer: Proposer, members: RaftMembers, sealer: Sealer,
              ca: certs.RootCA, node_id: str, raft_addr: str) -> ControlAPI:
        """``node_id`` and ``raft_addr`` are those of the manager that serves the API."""
        return cls(
            secrets=SecretsAPI(store, proposer, sealer),
            nodes=NodesAPI(store, proposer, members, node_id=node_id, raft_addr=raft_addr),
            services=ServicesAPI(store, proposer),
            cluster=ClusterAPI(store, proposer, sealer, ca),
        )


Provide = Callable[[grpc.aio.ServicerContext], ControlAPI]


class ControlServicer(control_pb2_grpc.ControlServicer):
    def __init__(self, provide: Provide) -> None:
        self.provide = provide

    # --- secrets --------------------------------------------------------------------------

    @rpc
    async def CreateSecret(self, request: control_pb2.CreateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.CreateSecretResponse:
        return await self.provide(context).secrets.create_secret(request)

    @rpc
    async def GetSecret(self, request: control_pb2.GetSecretRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.GetSecretResponse:
        return await self.provide(context).secrets.get_secret(request)

    @rpc
    async def ListSecrets(self, request: control_pb2.ListSecretsRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.ListSecretsResponse:
        return await self.provide(context).secrets.list_secrets(request)

    @rpc
    async def UpdateSecret(self, request: control_pb2.UpdateSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.UpdateSecretResponse:
        return await self.provide(context).secrets.update_secret(request)

    @rpc
    async def RemoveSecret(self, request: control_pb2.RemoveSecretRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.RemoveSecretResponse:
        return await self.provide(context).secrets.remove_secret(request)

    # --- nodes ----------------------------------------------------------------------------

    @rpc
    async def ListNodes(self, request: control_pb2.ListNodesRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListNodesResponse:
        return await self.provide(context).nodes.list_nodes(request)

    @rpc
    async def GetNode(self, request: control_pb2.GetNodeRequest,
                      context: grpc.aio.ServicerContext) -> control_pb2.GetNodeResponse:
        return await self.provide(context).nodes.get_node(request)

    @rpc
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.UpdateNodeResponse:
        return await self.provide(context).nodes.update_node(request)

    @rpc
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.RemoveNodeResponse:
        return await self.provide(context).nodes.remove_node(request)

    # --- services and tasks ------------------------------------------------------------------

    @rpc
    async def CreateService(self, request: control_pb2.CreateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.CreateServiceResponse:
        return await self.provide(context).services.create_service(request)

    @rpc
    async def GetService(self, request: control_pb2.GetServiceRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetServiceResponse:
        return await self.provide(context).services.get_service(request)

    @rpc
    async def ListServices(self, request: control_pb2.ListServicesRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.ListServicesResponse:
        return await self.provide(context).services.list_services(request)

    @rpc
    async def UpdateService(self, request: control_pb2.UpdateServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.UpdateServiceResponse:
        return await self.provide(context).services.update_service(request)

    @rpc
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.RemoveServiceResponse:
        return await self.provide(context).services.remove_service(request)

    @rpc
    async def ListTasks(self, request: control_pb2.ListTasksRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListTasksResponse:
        return await self.provide(context).services.list_tasks(request)

    # --- cluster ----------------------------------------------------------------------------

    @rpc
    async def GetCluster(self, request: control_pb2.GetClusterRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.GetClusterResponse:
        return await self.provide(context).cluster.get_cluster(request)

    @rpc
    async def RotateJoinToken(self, request: control_pb2.RotateJoinTokenRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.RotateJoinTokenResponse:
        return await self.provide(context).cluster.rotate_join_token(request)

    @rpc
    async def GetUnlockKey(self, request: control_pb2.GetUnlockKeyRequest,
                           context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        return await self.provide(context).cluster.get_unlock_key(request)

    @rpc
    async def RotateUnlockKey(self, request: control_pb2.RotateUnlockKeyRequest,
                              context: grpc.aio.ServicerContext) -> control_pb2.GetUnlockKeyResponse:
        return await self.provide(context).cluster.rotate_unlock_key(request)

    @rpc
    async def UpdateCluster(self, request: control_pb2.UpdateClusterRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.UpdateClusterResponse:
        return await self.provide(context).cluster.update_cluster(request)
