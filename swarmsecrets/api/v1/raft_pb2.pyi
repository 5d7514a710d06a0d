from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RaftJoinRequest(_message.Message):
    __slots__ = ("raft_addr",)
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    raft_addr: str
    def __init__(self, raft_addr: _Optional[str] = ...) -> None: ...

class RaftJoinResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[str]] = ...) -> None: ...

class RaftLeaveRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RaftLeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
