from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Version(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class SecretSpec(_message.Message):
    __slots__ = ("name", "labels", "data")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("id", "version", "created_at", "updated_at", "spec")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    created_at: str
    updated_at: str
    spec: SecretSpec
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., spec: _Optional[_Union[SecretSpec, _Mapping]] = ...) -> None: ...

class NodeSpec(_message.Message):
    __slots__ = ("role", "availability", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    role: str
    availability: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, role: _Optional[str] = ..., availability: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NodeDescription(_message.Message):
    __slots__ = ("hostname", "platform_os", "platform_arch", "engine_version")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_OS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ARCH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    platform_os: str
    platform_arch: str
    engine_version: str
    def __init__(self, hostname: _Optional[str] = ..., platform_os: _Optional[str] = ..., platform_arch: _Optional[str] = ..., engine_version: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("state", "message", "addr")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    state: str
    message: str
    addr: str
    def __init__(self, state: _Optional[str] = ..., message: _Optional[str] = ..., addr: _Optional[str] = ...) -> None: ...

class ManagerStatus(_message.Message):
    __slots__ = ("leader", "reachability", "addr", "raft_addr")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REACHABILITY_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    leader: bool
    reachability: str
    addr: str
    raft_addr: str
    def __init__(self, leader: _Optional[bool] = ..., reachability: _Optional[str] = ..., addr: _Optional[str] = ..., raft_addr: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "version", "created_at", "updated_at", "spec", "description", "status", "manager_status", "cert_serial", "tls_info")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MANAGER_STATUS_FIELD_NUMBER: _ClassVar[int]
    CERT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    TLS_INFO_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    created_at: str
    updated_at: str
    spec: NodeSpec
    description: NodeDescription
    status: NodeStatus
    manager_status: ManagerStatus
    cert_serial: str
    tls_info: NodeTLSInfo
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., spec: _Optional[_Union[NodeSpec, _Mapping]] = ..., description: _Optional[_Union[NodeDescription, _Mapping]] = ..., status: _Optional[_Union[NodeStatus, _Mapping]] = ..., manager_status: _Optional[_Union[ManagerStatus, _Mapping]] = ..., cert_serial: _Optional[str] = ..., tls_info: _Optional[_Union[NodeTLSInfo, _Mapping]] = ...) -> None: ...

class NodeTLSInfo(_message.Message):
    __slots__ = ("trust_root", "cert_issuer_subject", "cert_issuer_public_key", "cert_not_after")
    TRUST_ROOT_FIELD_NUMBER: _ClassVar[int]
    CERT_ISSUER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CERT_ISSUER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    trust_root: str
    cert_issuer_subject: str
    cert_issuer_public_key: str
    cert_not_after: str
    def __init__(self, trust_root: _Optional[str] = ..., cert_issuer_subject: _Optional[str] = ..., cert_issuer_public_key: _Optional[str] = ..., cert_not_after: _Optional[str] = ...) -> None: ...

class JoinTokens(_message.Message):
    __slots__ = ("worker", "manager")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    MANAGER_FIELD_NUMBER: _ClassVar[int]
    worker: str
    manager: str
    def __init__(self, worker: _Optional[str] = ..., manager: _Optional[str] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("id", "version", "created_at", "updated_at", "join_tokens", "autolock", "root_ca_cert", "node_cert_expiry_seconds", "task_history_retention_limit", "dispatcher_heartbeat_period_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUTOLOCK_FIELD_NUMBER: _ClassVar[int]
    ROOT_CA_CERT_FIELD_NUMBER: _ClassVar[int]
    NODE_CERT_EXPIRY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TASK_HISTORY_RETENTION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHER_HEARTBEAT_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    created_at: str
    updated_at: str
    join_tokens: JoinTokens
    autolock: bool
    root_ca_cert: str
    node_cert_expiry_seconds: int
    task_history_retention_limit: int
    dispatcher_heartbeat_period_ms: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., join_tokens: _Optional[_Union[JoinTokens, _Mapping]] = ..., autolock: _Optional[bool] = ..., root_ca_cert: _Optional[str] = ..., node_cert_expiry_seconds: _Optional[int] = ..., task_history_retention_limit: _Optional[int] = ..., dispatcher_heartbeat_period_ms: _Optional[int] = ...) -> None: ...

class FileTarget(_message.Message):
    __slots__ = ("name", "uid", "gid", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    uid: str
    gid: str
    mode: int
    def __init__(self, name: _Optional[str] = ..., uid: _Optional[str] = ..., gid: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class SecretReference(_message.Message):
    __slots__ = ("secret_id", "secret_name", "file")
    SECRET_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    secret_id: str
    secret_name: str
    file: FileTarget
    def __init__(self, secret_id: _Optional[str] = ..., secret_name: _Optional[str] = ..., file: _Optional[_Union[FileTarget, _Mapping]] = ...) -> None: ...

class ServiceSpec(_message.Message):
    __slots__ = ("name", "labels", "mode", "replicas", "command", "env", "user", "secrets", "update_action", "constraints")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    mode: str
    replicas: int
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    user: str
    secrets: _containers.RepeatedCompositeFieldContainer[SecretReference]
    update_action: str
    constraints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., mode: _Optional[str] = ..., replicas: _Optional[int] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., user: _Optional[str] = ..., secrets: _Optional[_Iterable[_Union[SecretReference, _Mapping]]] = ..., update_action: _Optional[str] = ..., constraints: _Optional[_Iterable[str]] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("id", "version", "created_at", "updated_at", "spec", "spec_version", "running_tasks", "desired_tasks")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_TASKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    created_at: str
    updated_at: str
    spec: ServiceSpec
    spec_version: int
    running_tasks: int
    desired_tasks: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., spec: _Optional[_Union[ServiceSpec, _Mapping]] = ..., spec_version: _Optional[int] = ..., running_tasks: _Optional[int] = ..., desired_tasks: _Optional[int] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("state", "message", "err", "timestamp", "exit_code")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    state: str
    message: str
    err: str
    timestamp: str
    exit_code: int
    def __init__(self, state: _Optional[str] = ..., message: _Optional[str] = ..., err: _Optional[str] = ..., timestamp: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "version", "created_at", "updated_at", "service_id", "service_name", "slot", "node_id", "desired_state", "status", "spec_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    created_at: str
    updated_at: str
    service_id: str
    service_name: str
    slot: int
    node_id: str
    desired_state: str
    status: TaskStatus
    spec_version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., service_id: _Optional[str] = ..., service_name: _Optional[str] = ..., slot: _Optional[int] = ..., node_id: _Optional[str] = ..., desired_state: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, _Mapping]] = ..., spec_version: _Optional[int] = ...) -> None: ...

class LogMessage(_message.Message):
    __slots__ = ("task_id", "service_id", "node_id", "ts_ns", "data")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    service_id: str
    node_id: str
    ts_ns: int
    data: bytes
    def __init__(self, task_id: _Optional[str] = ..., service_id: _Optional[str] = ..., node_id: _Optional[str] = ..., ts_ns: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
