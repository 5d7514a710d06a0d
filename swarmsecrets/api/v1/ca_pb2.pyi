from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetRootCACertificateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRootCACertificateResponse(_message.Message):
    __slots__ = ("certificate",)
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    def __init__(self, certificate: _Optional[bytes] = ...) -> None: ...

class IssueNodeCertificateRequest(_message.Message):
    __slots__ = ("csr", "token", "advertise_addr", "raft_addr", "hostname", "request_id", "availability")
    CSR_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_ADDR_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    token: str
    advertise_addr: str
    raft_addr: str
    hostname: str
    request_id: str
    availability: str
    def __init__(self, csr: _Optional[bytes] = ..., token: _Optional[str] = ..., advertise_addr: _Optional[str] = ..., raft_addr: _Optional[str] = ..., hostname: _Optional[str] = ..., request_id: _Optional[str] = ..., availability: _Optional[str] = ...) -> None: ...

class IssueNodeCertificateResponse(_message.Message):
    __slots__ = ("node_id", "role", "certificate", "cluster_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    certificate: bytes
    cluster_id: str
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., certificate: _Optional[bytes] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class RenewNodeCertificateRequest(_message.Message):
    __slots__ = ("csr",)
    CSR_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    def __init__(self, csr: _Optional[bytes] = ...) -> None: ...

class GetManagerKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetManagerKeysResponse(_message.Message):
    __slots__ = ("data_key", "ca_key", "unlock_key", "raft_members", "previous_data_keys")
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    CA_KEY_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_KEY_FIELD_NUMBER: _ClassVar[int]
    RAFT_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DATA_KEYS_FIELD_NUMBER: _ClassVar[int]
    data_key: bytes
    ca_key: bytes
    unlock_key: str
    raft_members: _containers.RepeatedScalarFieldContainer[str]
    previous_data_keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, data_key: _Optional[bytes] = ..., ca_key: _Optional[bytes] = ..., unlock_key: _Optional[str] = ..., raft_members: _Optional[_Iterable[str]] = ..., previous_data_keys: _Optional[_Iterable[bytes]] = ...) -> None: ...
