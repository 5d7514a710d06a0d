"""The commands of the replicated log: every change to the state is one of these.

A command is a frozen dataclass (see objects.py for why) that carries everything apply needs to
be deterministic: the ids of what it creates, the proposer's clock (``ts``) and a request id
(``rid``). A retried command (same ``rid``) gets the outcome of its first apply.

A client's request id is bound before it enters the log (``bind_request_id``): the id becomes
``<client id>/<binding>``, the binding being a keyed digest of the command kind, the caller as the
transport identified it and the request's content. Apply remembers outcomes by the whole id, so
a first outcome answers only the same request from the same caller: anyone else who replays the
client id (it is readable in the raft log) makes a different id, which never matches. The store
refuses such a replay before it is proposed (``Store.check_request``). Members of the earlier
release apply bound ids alike (an id is just a string to them), so this needs no new version.

Versions, for rolling upgrades. ``STATE_VERSION`` is the highest version of the state and its
commands that this code can apply. Each command kind declares the version that introduced it
(``SINCE``). A member refuses a kind or a version it does not know, as an error result (the
state is untouched); so that no member ever has to, managers advertise their ``STATE_VERSION``
in their Node record and a command is proposed only when every manager supports it
(``require_supported``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from swarmsecrets import errors, ids
from swarmsecrets.manager.state.objects import (
    DEFAULT_TASK_HISTORY,
    Cluster,
    JoinTokens,
    Node,
    RootRotation,
    SecretRef,
    Service,
    Task,
)

# Version 1: the commands below, as the first versioned release defines them. Entries written
# before commands carried a version are read as version 1 (the same kinds and fields).
# Version 2: set_autolock.
# Version 3: set_cert_expiry, record_node_cert (and the fields they set on Cluster and Node);
#   start_root_rotation, finish_root_rotation, set_trust_roots (Cluster.root_rotation, Node.trust_roots);
#   begin_data_key_rotation, reencrypt_secrets, finish_data_key_rotation, set_data_key_rotation,
#   request_data_key_rotation.
# Version 4: update_node_labels, set_cluster_settings (Cluster.task_history_limit and
#   .dispatcher_heartbeat); Service.constraints (in create_service, update_service and init_cluster
#   entries that use the new fields: see Command.needs_version).
# Version 5: no new command; snapshots are written as a stream of frames (manager/state/codec.py),
#   which members of earlier versions cannot read, so a member writes them only once every
#   manager advertises version 5.
# Version 6: batch entries (several commands in one raft entry, applied in order: see
#   manager/state/codec.py), written only once every manager advertises version 6. Objects are
#   versioned by the store's own counter (``Tables.last_version``), which equals the raft index
#   for every command written singly while no batch has been applied. From the same version a
#   leader's raft messages carry read-index fields (raft/readindex.py), which members of earlier
#   versions refuse: a leader adds them only once every manager advertises version 6.
STATE_VERSION = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Base of every command. ``KIND`` names it in the log; ``SINCE`` is the state version that
    introduced it. An ``ALONE`` command always has a raft entry of its own, never shares a batch:
    this manager's subscribers act on it by raft index (the key file's ``as_of``), which must be
    one command's."""

    KIND: ClassVar[str] = ""
    SINCE: ClassVar[int] = 1
    ALONE: ClassVar[bool] = False

    rid: str = field(default_factory=ids.new_request_id)
    ts: int = 0  # the proposer's clock (ns); the manager sets it when proposing

    def needs_version(self) -> int:
        """The state version this command needs: its kind's, or later when it carries a field that
        a later version added (a member that predates the field would refuse the entry)."""
        return self.SINCE


C = TypeVar("C", bound=type[Command])

# Every command class by its KIND: how the codec finds the class of a log entry.
KINDS: dict[str, type[Command]] = {}


def command(kind: str, since: int = 1, *, alone: bool = False) -> Callable[[C], C]:
    """Register a command class under ``kind``, introduced in state version ``since`` (``alone``:
    see ``Command.ALONE``)."""

    def register(cls: C) -> C:
        if kind in KINDS:
            raise ValueError(f"command kind {kind!r} is defined twice")
        cls.KIND = kind
        cls.SINCE = since
        cls.ALONE = alone
        KINDS[kind] = cls
        return cls

    return register


def supported_version(managers: Iterable[Node]) -> int:
    """The highest state version every manager can apply."""
    return min((max(n.state_version, 1) for n in managers), default=STATE_VERSION)


def require_supported(cmd: Command, managers: Iterable[Node]) -> None:
    """Refuse to propose a command that some manager could not apply (a rolling upgrade that has
    not reached every manager yet)."""
    floor = supported_version(managers)
    needs = cmd.needs_version()
    if needs > STATE_VERSION:
        raise errors.FailedPrecondition(
            f"command {cmd.KIND} needs state version {needs}; this manager supports {STATE_VERSION}")
    if needs > floor:
        raise errors.FailedPrecondition(
            f"command {cmd.KIND} needs state version {needs}, but a manager of this swarm supports only "
            f"version {floor}: upgrade every manager first")


# A bound request id ends with a separator and the binding's 32 bytes in hex.
_BINDING_HEX = 64


def bind_request_id(client_rid: str, binding: bytes) -> str:
    """The log's request id for a client's ``client_rid`` and the request's ``binding`` (a keyed
    digest of the command kind, the caller and the content; 32 bytes)."""
    if len(binding) * 2 != _BINDING_HEX:
        raise ValueError("a request binding is 32 bytes")
    return f"{client_rid}/{binding.hex()}"


def client_request_id(rid: str) -> tuple[str, bool]:
    """The client's part of a request id, and whether the id is bound. Ids of the leader's own
    commands, and those proposed by earlier releases, are not bound."""
    head, sep, tail = rid[:-_BINDING_HEX - 1], rid[-_BINDING_HEX - 1:-_BINDING_HEX], rid[-_BINDING_HEX:]
    if sep == "/" and not tail.strip("0123456789abcdef"):
        return head, True
    return rid, False


# --- cluster and nodes -----------------------------------------------------------------------------

@command("init_cluster", alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class InitCluster(Command):
    """Create the cluster record and the first manager's node record (their times are stamped)."""

    cluster: Cluster
    node: Node

    def needs_version(self) -> int:
        seeded = self.cluster.dispatcher_heartbeat or self.cluster.task_history_limit != DEFAULT_TASK_HISTORY
        return 4 if seeded else self.SINCE


@dataclass(frozen=True, slots=True, kw_only=True)
class SealsClusterValues(Command):
    """A command that carries cluster values sealed with the data key; ``sealed_with`` names that
    key (state version 4; "" from older proposers). Applied after a data-key rotation ended that
    retired the key, it is refused: nobody could open what it would store."""

    sealed_with: str = ""

    def needs_version(self) -> int:
        return max(self.SINCE, 4) if self.sealed_with else self.SINCE


def sealed_with(key_id: str, managers: Iterable[Node]) -> str:
    """``key_id`` for a command's ``sealed_with`` where every manager can apply the field, else ""."""
    return key_id if supported_version(managers) >= 4 else ""


@command("update_cluster", alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCluster(SealsClusterValues):
    """Change the sealed join tokens and/or the sealed unlock key (None: unchanged)."""

    join_tokens: JoinTokens | None = None
    unlock_key: bytes | None = None


@command("set_autolock", since=2, alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetAutolock(SealsClusterValues):
    """Turn autolock on with ``unlock_key`` (sealed with the data key), or off (the key is dropped)."""

    autolock: bool
    unlock_key: bytes | None = None


@command("start_root_rotation", since=3, alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class StartRootRotation(SealsClusterValues):
    """Begin a root CA rotation from the root ``from_root`` (PEM; refused if it is no longer the
    current one or a rotation runs), with join tokens that carry the new root's digest."""

    from_root: str
    rotation: RootRotation
    join_tokens: JoinTokens


@command("finish_root_rotation", since=3, alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class FinishRootRotation(Command):
    """The new root ``root`` (PEM) becomes the only one; the old one is no longer trusted.
    ``ca_key``: its key, sealed with the data key, for every manager to keep as the CA key."""

    root: str
    ca_key: bytes


@command("set_trust_roots", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetTrustRoots(Command):
    """Record which roots bundle (``bundle_digest``) a node now trusts, as it reported it."""

    node_id: str
    trust_roots: str
@command("set_cert_expiry", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetCertExpiry(Command):
    """The lifetime, in seconds, of the node certificates issued from now on."""

    seconds: int


@command("set_cluster_settings", since=4)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetClusterSettings(Command):
    """Change the task history limit and/or the dispatcher heartbeat period (ns); None: unchanged."""

    task_history_limit: int | None = None
    dispatcher_heartbeat: int | None = None


@command("add_node")
@dataclass(frozen=True, slots=True, kw_only=True)
class AddNode(Command):
    node: Node


@command("update_node")
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateNode(Command):
    """Change some fields of a node; None leaves a field as it is."""

    id: str
    role: str | None = None
    hostname: str | None = None
    addr: str | None = None
    raft_addr: str | None = None
    engine_version: str | None = None
    arch: str | None = None
    availability: str | None = None
    status: str | None = None
    status_message: str | None = None
    state_version: int | None = None

    @classmethod
    def describing(cls, node: Node) -> UpdateNode:
        """What a node says about itself (its role, addresses, host, release), as an update of its
        record; availability and status are the operator's and the leader's, left as they are."""
        return cls(id=node.id, role=node.role, hostname=node.hostname, addr=node.addr, raft_addr=node.raft_addr,
                   engine_version=node.engine_version, arch=node.arch, state_version=node.state_version)

    def changes(self) -> dict[str, str | int]:
        """The fields this command sets, by name."""
        return {name: value for name in _NODE_FIELDS if (value := getattr(self, name)) is not None}


_NODE_FIELDS = ("role", "hostname", "addr", "raft_addr", "engine_version", "arch", "availability", "status",
                "status_message", "state_version")


@command("update_node_labels", since=4)
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateNodeLabels(Command):
    """Set the labels ``add`` on a node, then drop the labels named in ``remove`` (absent ones: no-op)."""

    node_id: str
    add: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@command("record_node_cert", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class RecordNodeCert(Command):
    """A certificate was issued to the node: remember what ``node inspect`` shows of it. A record
    of a certificate issued before the one recorded (a join's record that waited) changes nothing."""

    node_id: str
    serial: str
    not_after: int
    issued_at: int
    issuer: str
    issuer_key: str


@command("remove_node")
@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode(Command):
    """Forget a node and refuse its certificate from now on; its tasks are orphaned."""

    node_id: str


# --- secrets ---------------------------------------------------------------------------------------

@command("create_secret")
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSecret(Command):
    id: str
    name: str
    data: bytes  # ciphertext, sealed by the proposer
    key_id: str
    labels: Mapping[str, str] = field(default_factory=dict)


@command("update_secret")
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSecret(Command):
    """Replace the labels (the only mutable part of a secret) if the secret is still at ``version``."""

    id: str
    version: int
    labels: Mapping[str, str] = field(default_factory=dict)


@command("remove_secret")
@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveSecret(Command):
    id: str


# --- data-key rotation ----------------------------------------------------------------------------

@command("begin_data_key_rotation", since=3, alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class BeginDataKeyRotation(Command):
    """Make ``key_id`` the current data key: ``sealed_key`` is that key sealed under the current
    one, ``under``. Every manager learns the key as it applies this; records sealed under ``under``
    stay readable until ``FinishDataKeyRotation``."""

    key_id: str
    sealed_key: bytes
    under: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reencrypted:
    """One secret's payload sealed again: ``data`` under ``key_id``, replacing ciphertext under
    ``from_key_id`` (skipped if the secret is no longer under that key)."""

    id: str
    from_key_id: str
    key_id: str
    data: bytes


@command("reencrypt_secrets", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class ReencryptSecrets(Command):
    """A batch of secrets re-encrypted under the current data key (ciphertext only)."""

    secrets: tuple[Reencrypted, ...]


@command("finish_data_key_rotation", since=3, alone=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class FinishDataKeyRotation(Command):
    """End the rotation to ``key_id``: the cluster's sealed values, sealed again under it, replace
    those of the cluster record at ``cluster_version``; the previous key is forgotten. Refused
    while any secret is still sealed under another key."""

    key_id: str
    cluster_version: int
    join_tokens: JoinTokens
    unlock_key: bytes | None = None


@command("set_data_key_rotation", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class SetDataKeyRotation(Command):
    """Rotate the data key every ``interval`` ns (0: only on demand)."""

    interval: int


@command("request_data_key_rotation", since=3)
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDataKeyRotation(Command):
    """Have the leader rotate the data key as soon as it may (the unlock key rotated)."""


# --- services and tasks ----------------------------------------------------------------------------

@command("create_service")
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateService(Command):
    service: Service

    def needs_version(self) -> int:
        return 4 if self.service.constraints else self.SINCE


@command("update_service")
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateService(Command):
    """Change the secrets, the replica count and/or the placement constraints (None: unchanged).
    ``version`` 0 skips the concurrency check; ``force`` bumps the spec version even when nothing changed."""

    id: str
    version: int = 0
    secrets: tuple[SecretRef, ...] | None = None
    replicas: int | None = None
    force: bool = False
    constraints: tuple[str, ...] | None = None

    def needs_version(self) -> int:
        return 4 if self.constraints is not None else self.SINCE


@command("remove_service")
@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveService(Command):
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskChange:
    """A scheduler decision about an existing task."""

    id: str
    desired_state: str
    state: str


@command("schedule")
@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule(Command):
    """The leader's scheduler decisions, as one batch: new tasks, changed tasks, deleted tasks."""

    create: tuple[Task, ...] = ()
    update: tuple[TaskChange, ...] = ()
    delete: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatusUpdate:
    task_id: str
    state: str
    message: str = ""
    err: str = ""
    exit_code: int = 0
    spec_version: int = 0  # 0: the worker did not say
    ts: int = 0  # the worker's observation time as the leader received it; 0: the command's ts


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    node_id: str
    updates: tuple[TaskStatusUpdate, ...]


@command("task_status")
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatus(Command):
    """Workers' status reports, batched; a node can only report on its own tasks."""

    reports: tuple[StatusReport, ...]
