"""The replicated state: typed objects, typed commands, the store with its pure apply, the events
its subscribers receive, and the versioned encoding for the raft log and snapshots.

Import from here: ``from swarmsecrets.manager import state`` then ``state.CreateSecret(...)``.
"""

from swarmsecrets.manager.state.codec import BATCH_SINCE, LogStateMachine, encode_batch, encode_command, plain_size
from swarmsecrets.manager.state.commands import (
    STATE_VERSION,
    AddNode,
    BeginDataKeyRotation,
    Command,
    CreateSecret,
    CreateService,
    FinishDataKeyRotation,
    InitCluster,
    RecordNodeCert,
    RemoveNode,
    RemoveSecret,
    RemoveService,
    Reencrypted,
    ReencryptSecrets,
    RequestDataKeyRotation,
    Schedule,
    SetAutolock,
    SetTrustRoots,
    StartRootRotation,
    FinishRootRotation,
    SetCertExpiry,
    SetClusterSettings,
    SetDataKeyRotation,
    StatusReport,
    TaskChange,
    TaskStatus,
    TaskStatusUpdate,
    UpdateCluster,
    UpdateNode,
    UpdateNodeLabels,
    UpdateSecret,
    UpdateService,
    bind_request_id,
    client_request_id,
    SealsClusterValues,
    require_supported,
    sealed_with,
    supported_version,
)
from swarmsecrets.manager.state.events import Applied, Err, Ok, Result, unwrap
from swarmsecrets.manager.state.objects import (
    TERMINAL_STATES,
    Cluster,
    JoinTokens,
    Node,
    RootRotation,
    Secret,
    SecretRef,
    Service,
    Task,
)
from swarmsecrets.manager.state.store import StateView, Store

__all__ = [
    "BATCH_SINCE", "STATE_VERSION", "TERMINAL_STATES",
    "AddNode", "Applied", "Cluster", "Command", "CreateSecret", "CreateService", "Err", "InitCluster",
    "JoinTokens", "LogStateMachine", "Node", "Ok", "RemoveNode", "RemoveSecret", "RemoveService", "Result",
    "Schedule", "Secret", "SecretRef", "Service", "SetAutolock", "StateView", "StatusReport", "Store", "Task",
    "TaskChange", "TaskStatus", "TaskStatusUpdate", "UpdateCluster", "UpdateNode", "UpdateSecret", "UpdateService",
    "BeginDataKeyRotation", "FinishDataKeyRotation", "Reencrypted", "ReencryptSecrets", "RequestDataKeyRotation",
    "SetDataKeyRotation",
    "FinishRootRotation", "RootRotation", "SetTrustRoots", "StartRootRotation",
    "RecordNodeCert", "SetCertExpiry",
    "SetClusterSettings", "UpdateNodeLabels",
    "SealsClusterValues", "bind_request_id", "client_request_id", "encode_batch", "encode_command", "require_supported",
    "plain_size", "sealed_with", "supported_version", "unwrap",
]
