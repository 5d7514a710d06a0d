from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InitRequest(_message.Message):
    __slots__ = ("advertise_addr", "listen_addr", "raft_addr", "autolock", "force_new_cluster", "availability", "restore_path", "restore_key")
    ADVERTISE_ADDR_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDR_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    AUTOLOCK_FIELD_NUMBER: _ClassVar[int]
    FORCE_NEW_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    RESTORE_PATH_FIELD_NUMBER: _ClassVar[int]
    RESTORE_KEY_FIELD_NUMBER: _ClassVar[int]
    advertise_addr: str
    listen_addr: str
    raft_addr: str
    autolock: bool
    force_new_cluster: bool
    availability: str
    restore_path: str
    restore_key: str
    def __init__(self, advertise_addr: _Optional[str] = ..., listen_addr: _Optional[str] = ..., raft_addr: _Optional[str] = ..., autolock: _Optional[bool] = ..., force_new_cluster: _Optional[bool] = ..., availability: _Optional[str] = ..., restore_path: _Optional[str] = ..., restore_key: _Optional[str] = ...) -> None: ...

class InitResponse(_message.Message):
    __slots__ = ("node_id", "worker_join_command", "unlock_key")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_JOIN_COMMAND_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_KEY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    worker_join_command: str
    unlock_key: str
    def __init__(self, node_id: _Optional[str] = ..., worker_join_command: _Optional[str] = ..., unlock_key: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("remote_addr", "join_token", "advertise_addr", "listen_addr", "raft_addr", "availability")
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_ADDR_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDR_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    remote_addr: str
    join_token: str
    advertise_addr: str
    listen_addr: str
    raft_addr: str
    availability: str
    def __init__(self, remote_addr: _Optional[str] = ..., join_token: _Optional[str] = ..., advertise_addr: _Optional[str] = ..., listen_addr: _Optional[str] = ..., raft_addr: _Optional[str] = ..., availability: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("node_id", "role")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: _Optional[bool] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnlockRequest(_message.Message):
    __slots__ = ("unlock_key",)
    UNLOCK_KEY_FIELD_NUMBER: _ClassVar[int]
    unlock_key: str
    def __init__(self, unlock_key: _Optional[str] = ...) -> None: ...

class UnlockResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("node_id", "local_node_state", "control_available", "node_addr", "cluster_id", "remote_managers", "nodes", "managers", "error", "task_history_limit", "snapshot_interval", "keep_old_snapshots", "raft_heartbeat", "raft_election_min", "raft_election_max", "dispatcher_heartbeat", "cert_expiry", "autolock", "root_rotation_in_progress", "raft_term", "raft_leader", "commit_index", "applied_index", "snapshot_index", "raft_members")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_NODE_STATE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_MANAGERS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MANAGERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASK_HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    KEEP_OLD_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    RAFT_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RAFT_ELECTION_MIN_FIELD_NUMBER: _ClassVar[int]
    RAFT_ELECTION_MAX_FIELD_NUMBER: _ClassVar[int]
    DISPATCHER_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    AUTOLOCK_FIELD_NUMBER: _ClassVar[int]
    ROOT_ROTATION_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    RAFT_LEADER_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    RAFT_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    local_node_state: str
    control_available: bool
    node_addr: str
    cluster_id: str
    remote_managers: _containers.RepeatedScalarFieldContainer[str]
    nodes: int
    managers: int
    error: str
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
    raft_leader: str
    commit_index: int
    applied_index: int
    snapshot_index: int
    raft_members: _containers.RepeatedCompositeFieldContainer[RaftMember]
    def __init__(self, node_id: _Optional[str] = ..., local_node_state: _Optional[str] = ..., control_available: _Optional[bool] = ..., node_addr: _Optional[str] = ..., cluster_id: _Optional[str] = ..., remote_managers: _Optional[_Iterable[str]] = ..., nodes: _Optional[int] = ..., managers: _Optional[int] = ..., error: _Optional[str] = ..., task_history_limit: _Optional[int] = ..., snapshot_interval: _Optional[int] = ..., keep_old_snapshots: _Optional[int] = ..., raft_heartbeat: _Optional[float] = ..., raft_election_min: _Optional[float] = ..., raft_election_max: _Optional[float] = ..., dispatcher_heartbeat: _Optional[float] = ..., cert_expiry: _Optional[int] = ..., autolock: _Optional[bool] = ..., root_rotation_in_progress: _Optional[bool] = ..., raft_term: _Optional[int] = ..., raft_leader: _Optional[str] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., snapshot_index: _Optional[int] = ..., raft_members: _Optional[_Iterable[_Union[RaftMember, _Mapping]]] = ...) -> None: ...

class RaftMember(_message.Message):
    __slots__ = ("node_id", "raft_addr", "addr", "leader", "reachable")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    raft_addr: str
    addr: str
    leader: bool
    reachable: bool
    def __init__(self, node_id: _Optional[str] = ..., raft_addr: _Optional[str] = ..., addr: _Optional[str] = ..., leader: _Optional[bool] = ..., reachable: _Optional[bool] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("path", "applied_index", "backup_key", "secrets", "nodes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    BACKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    path: str
    applied_index: int
    backup_key: str
    secrets: int
    nodes: int
    def __init__(self, path: _Optional[str] = ..., applied_index: _Optional[int] = ..., backup_key: _Optional[str] = ..., secrets: _Optional[int] = ..., nodes: _Optional[int] = ...) -> None: ...
