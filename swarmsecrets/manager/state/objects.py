"""The replicated objects: Cluster, Node, Secret, Service, Task.

Every object is a frozen dataclass with slots. Frozen, because the store hands out the very
object it holds: a reader can keep it, pass it to another thread or compare it later, and no
deep copy is needed to protect the replicated state from a caller (nor the caller from a later
apply). Slots, because a swarm may hold a hundred thousand secrets, and a slotted instance is
a fraction of the size of a dict. Containers inside objects are typed as read-only
(``Mapping``, ``tuple``) so the type checker rejects an attempt to mutate them in place.
We chose dataclasses over the protobuf messages of the API: protobuf messages are mutable
(a pure apply could change a reader's object), carry wire concerns (presence, defaults) that the
state does not need, and cannot be frozen.

A change is a new object (``dataclasses.replace``) swapped into the store under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from swarmsecrets.validation import DEFAULT_SECRET_MODE

# Task states after which a task never runs again.
TERMINAL_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned"})

# The one empty map that every object without labels (or env) shares: a hundred thousand secrets
# must not hold a hundred thousand empty dicts. Never mutated: objects are frozen, maps read-only.
NO_LABELS: Mapping[str, str] = {}

# Docker's default task history retention limit.
DEFAULT_TASK_HISTORY = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """What apply stamps on every object: creation and change times (the proposer's clock, carried
    in the command) and the raft index of the last change (optimistic concurrency)."""

    created_at: int = 0
    updated_at: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinTokens:
    """The two join tokens, sealed with the cluster's data key."""

    worker: bytes
    manager: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RootRotation:
    """A root CA rotation in progress: the new root, its key (sealed with the data key) and the
    cross-signed intermediate (the new root's subject and key, signed by the current root)."""

    ca_cert: str
    ca_key: bytes
    cross_signed: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster(Meta):
    id: str
    root_ca_cert: str
    join_tokens: JoinTokens
    autolock: bool = False
    unlock_key: bytes | None = None  # sealed with the data key; None without autolock
    key_id: str = ""  # the current data key: it seals new values, and the sealed fields above
    # While the data key rotates: the previous key's id, and the current key sealed under it (so
    # that every manager that holds the previous key learns the current one from the log or a
    # snapshot). Both empty once every record is re-encrypted.
    rotation_from: str = ""
    rotation_key: bytes = b""
    # Rotate the data key this often (ns; 0: never), counting from ``key_rotated_at``.
    key_rotation_interval: int = 0
    key_rotated_at: int = 0
    # The unlock key rotated since the data key last did: the leader rotates the data key next.
    data_key_rotation_requested: bool = False
    # Lifetime of the node certificates issued from now on, in seconds; 0: the default (90 days).
    node_cert_expiry: int = 0
    root_rotation: RootRotation | None = None
    # Finished tasks kept per service for `service ps` (negative: all of them).
    task_history_limit: int = DEFAULT_TASK_HISTORY
    # The period (ns) the leader asks of agents' heartbeats; 0: the leader's --dispatcher-heartbeat
    # (clusters created before the setting was stored). ``swarm init`` seeds it from that flag.
    dispatcher_heartbeat: int = 0

    def trust_bundle(self) -> str:
        """Every root the swarm trusts now: the current one, and the new one during a rotation."""
        return self.root_ca_cert + (self.root_rotation.ca_cert if self.root_rotation else "")

    def desired_root(self) -> str:
        """The root every node's certificate must come from: the new one during a rotation."""
        return self.root_rotation.ca_cert if self.root_rotation else self.root_ca_cert


@dataclass(frozen=True, slots=True, kw_only=True)
class Node(Meta):
    id: str
    role: str  # "manager" | "worker"
    hostname: str = ""
    addr: str = ""  # advertised control address (HOST:PORT) or the worker's host
    raft_addr: str = ""  # managers only
    engine_version: str = ""
    arch: str = ""
    availability: str = "active"  # "active" | "pause" | "drain"
    status: str = "unknown"  # workers: "ready" | "down" (set by the leader's dispatcher)
    status_message: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    cert_serial: str = ""
    # The node's latest certificate: its notAfter (unix seconds), its issuer's subject (RFC 4514)
    # and the hex SHA-256 of its issuer's SubjectPublicKeyInfo (DER). Empty until one is recorded.
    cert_not_after: int = 0
    cert_issued_at: int = 0
    cert_issuer: str = ""
    cert_issuer_key: str = ""
    # Managers: the highest state version (see commands.STATE_VERSION) this member can apply.
    # 0 in records written before members advertised it: such a member knows version 1.
    state_version: int = 0
    # The hex SHA-256 of the roots bundle (PEM) the node says it trusts; "" before it said.
    trust_roots: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret(Meta):
    id: str
    name: str
    data: bytes  # SecretBox ciphertext under the data key ``key_id``; never plaintext
    key_id: str
    labels: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)

    def public(self) -> Secret:
        """The secret as command results carry it: without the payload. (Built directly: one is
        made per secret created, and on every load of a snapshot's remembered outcomes.)"""
        return Secret(id=self.id, name=self.name, data=b"", key_id=self.key_id, labels=self.labels,
                      created_at=self.created_at, updated_at=self.updated_at, version=self.version)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """A service's use of a secret: which one (id, and its name when referenced) and the file."""

    secret_id: str
    secret_name: str
    target: str
    uid: str = "0"
    gid: str = "0"
    mode: int = DEFAULT_SECRET_MODE


@dataclass(frozen=True, slots=True, kw_only=True)
class Service(Meta):
    id: str
    name: str
    mode: str  # "replicated" | "global"
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    user: str = ""
    secrets: tuple[SecretRef, ...] = ()
    update_action: str = "restart"
    # Placement constraints as the user wrote them (see manager/constraint.py), sorted.
    constraints: tuple[str, ...] = ()
    # Bumped by apply when anything but the replica count changes: tasks carry the spec version
    # they run, so a worker sees that it must restart them.
    spec_version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Task(Meta):
    id: str
    service_id: str
    service_name: str
    slot: int  # 1.. for replicated services, 0 for global ones
    node_id: str
    desired_state: str = "running"
    state: str = "assigned"
    message: str = ""
    err: str = ""
    exit_code: int = 0
    status_ts: int = 0  # when the worker observed ``state`` (its clock)
    spec_version: int = 1
