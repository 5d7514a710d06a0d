from swarmsecrets.api.v1 import objects_pb2 as _objects_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSecretRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: _objects_pb2.SecretSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[_objects_pb2.SecretSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSecretResponse(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: _objects_pb2.Secret
    def __init__(self, secret: _Optional[_Union[_objects_pb2.Secret, _Mapping]] = ...) -> None: ...

class GetSecretRequest(_message.Message):
    __slots__ = ("secret_id",)
    SECRET_ID_FIELD_NUMBER: _ClassVar[int]
    secret_id: str
    def __init__(self, secret_id: _Optional[str] = ...) -> None: ...

class GetSecretResponse(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: _objects_pb2.Secret
    def __init__(self, secret: _Optional[_Union[_objects_pb2.Secret, _Mapping]] = ...) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ("filters",)
    class Filters(_message.Message):
        __slots__ = ("names", "name_prefixes", "id_prefixes", "labels")
        class LabelsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        NAMES_FIELD_NUMBER: _ClassVar[int]
        NAME_PREFIXES_FIELD_NUMBER: _ClassVar[int]
        ID_PREFIXES_FIELD_NUMBER: _ClassVar[int]
        LABELS_FIELD_NUMBER: _ClassVar[int]
        names: _containers.RepeatedScalarFieldContainer[str]
        name_prefixes: _containers.RepeatedScalarFieldContainer[str]
        id_prefixes: _containers.RepeatedScalarFieldContainer[str]
        labels: _containers.ScalarMap[str, str]
        def __init__(self, names: _Optional[_Iterable[str]] = ..., name_prefixes: _Optional[_Iterable[str]] = ..., id_prefixes: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: ListSecretsRequest.Filters
    def __init__(self, filters: _Optional[_Union[ListSecretsRequest.Filters, _Mapping]] = ...) -> None: ...

class ListSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Secret]
    def __init__(self, secrets: _Optional[_Iterable[_Union[_objects_pb2.Secret, _Mapping]]] = ...) -> None: ...

class UpdateSecretRequest(_message.Message):
    __slots__ = ("secret_id", "secret_version", "spec", "request_id")
    SECRET_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    secret_id: str
    secret_version: _objects_pb2.Version
    spec: _objects_pb2.SecretSpec
    request_id: str
    def __init__(self, secret_id: _Optional[str] = ..., secret_version: _Optional[_Union[_objects_pb2.Version, _Mapping]] = ..., spec: _Optional[_Union[_objects_pb2.SecretSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateSecretResponse(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: _objects_pb2.Secret
    def __init__(self, secret: _Optional[_Union[_objects_pb2.Secret, _Mapping]] = ...) -> None: ...

class RemoveSecretRequest(_message.Message):
    __slots__ = ("secret_id", "request_id")
    SECRET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    secret_id: str
    request_id: str
    def __init__(self, secret_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RemoveSecretResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_objects_pb2.Node, _Mapping]]] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class GetNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _objects_pb2.Node
    def __init__(self, node: _Optional[_Union[_objects_pb2.Node, _Mapping]] = ...) -> None: ...

class UpdateNodeRequest(_message.Message):
    __slots__ = ("node_id", "availability", "role", "request_id", "label_add", "label_rm")
    class LabelAddEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_ADD_FIELD_NUMBER: _ClassVar[int]
    LABEL_RM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    availability: str
    role: str
    request_id: str
    label_add: _containers.ScalarMap[str, str]
    label_rm: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., availability: _Optional[str] = ..., role: _Optional[str] = ..., request_id: _Optional[str] = ..., label_add: _Optional[_Mapping[str, str]] = ..., label_rm: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _objects_pb2.Node
    def __init__(self, node: _Optional[_Union[_objects_pb2.Node, _Mapping]] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("node_id", "force", "request_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    force: bool
    request_id: str
    def __init__(self, node_id: _Optional[str] = ..., force: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateServiceRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: _objects_pb2.ServiceSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[_objects_pb2.ServiceSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateServiceResponse(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: _objects_pb2.Service
    def __init__(self, service: _Optional[_Union[_objects_pb2.Service, _Mapping]] = ...) -> None: ...

class GetServiceRequest(_message.Message):
    __slots__ = ("service_id",)
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    def __init__(self, service_id: _Optional[str] = ...) -> None: ...

class GetServiceResponse(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: _objects_pb2.Service
    def __init__(self, service: _Optional[_Union[_objects_pb2.Service, _Mapping]] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Service]
    def __init__(self, services: _Optional[_Iterable[_Union[_objects_pb2.Service, _Mapping]]] = ...) -> None: ...

class UpdateServiceRequest(_message.Message):
    __slots__ = ("service_id", "service_version", "secret_rm", "secret_add", "set_replicas", "replicas", "request_id", "force", "constraint_add", "constraint_rm")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SECRET_RM_FIELD_NUMBER: _ClassVar[int]
    SECRET_ADD_FIELD_NUMBER: _ClassVar[int]
    SET_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_ADD_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_RM_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    service_version: _objects_pb2.Version
    secret_rm: _containers.RepeatedScalarFieldContainer[str]
    secret_add: _containers.RepeatedCompositeFieldContainer[_objects_pb2.SecretReference]
    set_replicas: bool
    replicas: int
    request_id: str
    force: bool
    constraint_add: _containers.RepeatedScalarFieldContainer[str]
    constraint_rm: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service_id: _Optional[str] = ..., service_version: _Optional[_Union[_objects_pb2.Version, _Mapping]] = ..., secret_rm: _Optional[_Iterable[str]] = ..., secret_add: _Optional[_Iterable[_Union[_objects_pb2.SecretReference, _Mapping]]] = ..., set_replicas: _Optional[bool] = ..., replicas: _Optional[int] = ..., request_id: _Optional[str] = ..., force: _Optional[bool] = ..., constraint_add: _Optional[_Iterable[str]] = ..., constraint_rm: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateServiceResponse(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: _objects_pb2.Service
    def __init__(self, service: _Optional[_Union[_objects_pb2.Service, _Mapping]] = ...) -> None: ...

class RemoveServiceRequest(_message.Message):
    __slots__ = ("service_id", "request_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    request_id: str
    def __init__(self, service_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RemoveServiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("service_id", "node_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    node_id: str
    def __init__(self, service_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_objects_pb2.Task, _Mapping]]] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterResponse(_message.Message):
    __slots__ = ("cluster",)
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    cluster: _objects_pb2.Cluster
    def __init__(self, cluster: _Optional[_Union[_objects_pb2.Cluster, _Mapping]] = ...) -> None: ...

class RotateJoinTokenRequest(_message.Message):
    __slots__ = ("role", "request_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    role: str
    request_id: str
    def __init__(self, role: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateJoinTokenResponse(_message.Message):
    __slots__ = ("join_tokens",)
    JOIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    join_tokens: _objects_pb2.JoinTokens
    def __init__(self, join_tokens: _Optional[_Union[_objects_pb2.JoinTokens, _Mapping]] = ...) -> None: ...

class GetUnlockKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateUnlockKeyRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetUnlockKeyResponse(_message.Message):
    __slots__ = ("unlock_key",)
    UNLOCK_KEY_FIELD_NUMBER: _ClassVar[int]
    unlock_key: str
    def __init__(self, unlock_key: _Optional[str] = ...) -> None: ...

class UpdateClusterRequest(_message.Message):
    __slots__ = ("autolock", "request_id", "node_cert_expiry_seconds", "task_history_retention_limit", "dispatcher_heartbeat_period_ms")
    AUTOLOCK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CERT_EXPIRY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TASK_HISTORY_RETENTION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHER_HEARTBEAT_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    autolock: bool
    request_id: str
    node_cert_expiry_seconds: int
    task_history_retention_limit: int
    dispatcher_heartbeat_period_ms: int
    def __init__(self, autolock: _Optional[bool] = ..., request_id: _Optional[str] = ..., node_cert_expiry_seconds: _Optional[int] = ..., task_history_retention_limit: _Optional[int] = ..., dispatcher_heartbeat_period_ms: _Optional[int] = ...) -> None: ...

class UpdateClusterResponse(_message.Message):
    __slots__ = ("cluster", "unlock_key")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_KEY_FIELD_NUMBER: _ClassVar[int]
    cluster: _objects_pb2.Cluster
    unlock_key: str
    def __init__(self, cluster: _Optional[_Union[_objects_pb2.Cluster, _Mapping]] = ..., unlock_key: _Optional[str] = ...) -> None: ...

class GetDataKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateDataKeyRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class SetDataKeyRotationRequest(_message.Message):
    __slots__ = ("interval_seconds", "request_id")
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: int
    request_id: str
    def __init__(self, interval_seconds: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DataKeyInfo(_message.Message):
    __slots__ = ("key_id", "rotating_from", "rotation_interval_seconds", "rotated_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROTATING_FROM_FIELD_NUMBER: _ClassVar[int]
    ROTATION_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROTATED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    rotating_from: str
    rotation_interval_seconds: int
    rotated_at: str
    def __init__(self, key_id: _Optional[str] = ..., rotating_from: _Optional[str] = ..., rotation_interval_seconds: _Optional[int] = ..., rotated_at: _Optional[str] = ...) -> None: ...

class RotateRootCARequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetRootCAProgressRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RootCAProgress(_message.Message):
    __slots__ = ("root_ca_cert", "desired_digest", "in_progress", "certs_rotated", "roots_rotated", "total")
    ROOT_CA_CERT_FIELD_NUMBER: _ClassVar[int]
    DESIRED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CERTS_ROTATED_FIELD_NUMBER: _ClassVar[int]
    ROOTS_ROTATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    root_ca_cert: str
    desired_digest: str
    in_progress: bool
    certs_rotated: int
    roots_rotated: int
    total: int
    def __init__(self, root_ca_cert: _Optional[str] = ..., desired_digest: _Optional[str] = ..., in_progress: _Optional[bool] = ..., certs_rotated: _Optional[int] = ..., roots_rotated: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ServiceLogsRequest(_message.Message):
    __slots__ = ("service_id", "follow", "tail")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    follow: bool
    tail: int
    def __init__(self, service_id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class ServiceLogsMessage(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_objects_pb2.LogMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[_objects_pb2.LogMessage, _Mapping]]] = ...) -> None: ...
