"""The store: the replicated objects, the pure apply, and reads.

``apply`` is pure and deterministic: no clock, no randomness, no I/O. Everything it needs (ids,
timestamps, the request id) comes in the command, so every member that applies the same log
reaches the same state. It never raises: a command that fails (a rule, or a bug) fails alone,
on every member alike, as an ``Err`` result. It is idempotent by request id: a retried command
returns its first outcome instead of running again. A client's request id is bound to the
command kind, the caller and the request's content (commands.bind_request_id), so the first
outcome answers only the same request from the same caller; ``check_request`` refuses, before
anything is proposed, a client id that is already remembered for another binding, and records
written before ids were bound (a bare client id) answer no bound request.

Objects are immutable (objects.py): apply swaps new versions into the tables under the lock, and
reads return the stored objects themselves, without copies. Secret payloads exist here only as
ciphertext; so do the join tokens and the unlock key.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from swarmsecrets import errors, validation
from swarmsecrets.manager.state import commands as c
from swarmsecrets.manager.state.events import Applied, Err, Ok, Result, Subscriber
from swarmsecrets.manager.state.objects import NO_LABELS, Cluster, Meta, Node, Secret, SecretRef, Service, Task

log = logging.getLogger(__name__)

# Idempotency records are kept this long (by the proposers' clocks) and at most this many.
REQUEST_TTL_NS = 24 * 3600 * 10**9
MAX_REQUESTS = 200_000


@dataclass(frozen=True, slots=True)
class Request:
    """The first outcome of a request id, and when (proposer's clock) it was applied."""

    result: Result
    ts: int


@dataclass(slots=True)
class Tables:
    """The whole replicated state, as the store holds it (and as the codec reads and writes it)."""

    cluster: Cluster | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    removed_nodes: dict[str, int] = field(default_factory=dict)  # node id -> when it was removed
    requests: dict[str, Request] = field(default_factory=dict)  # in apply order (oldest first)
    # The version the last applied command stamped (see Store.apply); a snapshot written before
    # the counter existed starts it at its applied index.
    last_version: int = 0


@dataclass(frozen=True, slots=True)
class StateView:
    """An immutable view of the scheduling-relevant state at one index, safe to read on any thread
    without the store lock."""

    index: int
    nodes: Mapping[str, Node]
    services: Mapping[str, Service]
    tasks: Mapping[str, Task]
    cluster: Cluster | None = None


class Store:
    """Objects by kind. Reads take the lock briefly; apply runs on the raft thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._t = Tables()
        self._names: dict[str, str] = {}  # lower-case secret name -> id
        self._clients: dict[str, str] = {}  # client request id -> the first remembered request id
        self.applied_index = 0
        self._subscribers: list[Subscriber] = []
        self._view: StateView | None = None

    # --- applying ----------------------------------------------------------------------------

    def apply(self, cmd: c.Command, index: int) -> Result:
        """Apply ``cmd`` from the raft entry at ``index`` (several commands of a batch entry share
        one index). The objects it writes get the next version of the store's counter: the raft
        index itself for a command that has its entry to itself while the counter is behind
        (always, before the first batch: members of earlier releases stamp the index), else one
        past the previous command's, so versions grow by command and are the same on every member."""
        with self.lock:
            self.applied_index = index
            self._view = None
            seen = self._t.requests.get(cmd.rid) if cmd.rid else None
            if seen is not None:
                return seen.result
            version = self._t.last_version = max(self._t.last_version + 1, index)
            if self._replayed(cmd):
                # Proposed before the first one applied (check_request could not see it): it runs
                # as the new request it is, never with the other's outcome.
                log.warning("request id %s of %s at index %d was already used by another caller or for "
                            "another request: applied as a new request", c.client_request_id(cmd.rid)[0],
                            cmd.KIND, index)
            result = self._run(cmd, version)
            if cmd.rid:
                self._t.requests[cmd.rid] = Request(result, cmd.ts)
                self._clients.setdefault(c.client_request_id(cmd.rid)[0], cmd.rid)
                self._prune_requests(cmd.ts)
        self._publish(Applied(index, cmd, result))
        return result

    def _replayed(self, cmd: c.Command) -> bool:
        """Whether ``cmd`` carries a bound request id whose client id is remembered for another
        binding (another caller, kind or content), or by a record written before ids were bound."""
        client, bound = c.client_request_id(cmd.rid)
        first = self._clients.get(client) if bound else None
        return first is not None and first != cmd.rid

    def check_request(self, cmd: c.Command) -> None:
        """Refuse, before it is proposed, a command whose client request id is already remembered
        for another caller, kind or content: a replay never gets another request's outcome."""
        with self.lock:
            replayed = self._replayed(cmd)
        if replayed:
            client = c.client_request_id(cmd.rid)[0]
            log.warning("refused %s: request id %s was already used by another caller or for another request",
                        cmd.KIND, client)
            raise errors.InvalidArgument(
                f"request id {client} was already used for another request; use a new request id")

    def refuse(self, index: int, reason: str) -> Result:
        """A log entry this member cannot apply (an unknown kind or version, or malformed): the
        state is untouched and the entry's outcome is an error, on every member that refuses it."""
        log.error("refused raft entry %d: %s", index, reason)
        with self.lock:
            self.applied_index = index
        return Err.of(errors.FailedPrecondition(f"this manager cannot apply the command: {reason}"))

    def _run(self, cmd: c.Command, version: int) -> Result:
        handler = _HANDLERS.get(type(cmd))
        if handler is None or cmd.SINCE > c.STATE_VERSION:
            log.error("refused command %s (state version %d) at version %d: unknown to this manager",
                      cmd.KIND or type(cmd).__name__, cmd.SINCE, version)
            return Err.of(errors.FailedPrecondition(
                f"this manager cannot apply command {cmd.KIND or type(cmd).__name__!r}"))
        try:
            return Ok(handler(self, cmd, version))
        except errors.SwarmError as e:
            return Err.of(e)
        except Exception as e:  # apply never raises: a bad command fails alone, on every node alike
            log.exception("command %s at version %d failed", cmd.KIND, version)
            return Err.of(errors.SwarmError(f"internal error applying {cmd.KIND}: {e}"))

    def _prune_requests(self, now_ns: int) -> None:
        requests = self._t.requests
        while requests:
            oldest = next(iter(requests))
            if len(requests) > MAX_REQUESTS or requests[oldest].ts < now_ns - REQUEST_TTL_NS:
                del requests[oldest]
                client = c.client_request_id(oldest)[0]
                if self._clients.get(client) == oldest:
                    del self._clients[client]
            else:
                break

    # --- subscribers ------------------------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> None:
        """Call ``fn`` after every apply (on the raft thread, outside the lock)."""
        self._subscribers.append(fn)

    def _publish(self, event: Applied) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:  # a subscriber must never break apply
                log.exception("state subscriber failed")

    # --- whole state (the codec's side) --------------------------------------------------------------

    def tables(self) -> Tables:
        """The live tables, for encoding a snapshot. Only for the raft thread (or a child forked
        from it), which is the only writer: no lock, so a fork never inherits a held one."""
        return self._t

    def load(self, tables: Tables, applied_index: int) -> None:
        """Replace the whole state (a snapshot restore)."""
        names = {name_key(s.name): sid for sid, s in tables.secrets.items()}
        clients: dict[str, str] = {}
        for rid in tables.requests:
            clients.setdefault(c.client_request_id(rid)[0], rid)
        with self.lock:
            self._t = tables
            self._names = names
            self._clients = clients
            self.applied_index = applied_index
            self._view = None

    # --- reads ------------------------------------------------------------------------------------

    @property
    def cluster(self) -> Cluster | None:
        return self._t.cluster

    def view(self) -> StateView:
        """Nodes, services and tasks as of now, frozen (cached until the next apply)."""
        with self.lock:
            if self._view is None:
                self._view = StateView(self.applied_index, MappingProxyType(dict(self._t.nodes)),
                                       MappingProxyType(dict(self._t.services)), MappingProxyType(dict(self._t.tasks)),
                                       self._t.cluster)
            return self._view

    def secrets(self) -> list[Secret]:
        with self.lock:
            return list(self._t.secrets.values())

    def secret(self, secret_id: str) -> Secret | None:
        return self._t.secrets.get(secret_id)

    def nodes(self) -> list[Node]:
        with self.lock:
            return list(self._t.nodes.values())

    def managers(self) -> list[Node]:
        return [n for n in self.nodes() if n.role == "manager"]

    def manager_addrs(self) -> list[str]:
        """The managers' advertised control addresses, sorted."""
        return sorted(n.addr for n in self.managers() if n.addr)

    def control_addr_of(self, raft_addr: str) -> str:
        """The advertised control address of the node at this raft address ("" if unknown)."""
        return next((n.addr for n in self.nodes() if n.raft_addr == raft_addr), "")

    def node(self, node_id: str) -> Node | None:
        return self._t.nodes.get(node_id)

    def is_removed_node(self, node_id: str) -> bool:
        return node_id in self._t.removed_nodes

    def services(self) -> list[Service]:
        with self.lock:
            return list(self._t.services.values())

    def service(self, service_id: str) -> Service | None:
        return self._t.services.get(service_id)

    def tasks(self, service_id: str | None = None, node_id: str | None = None) -> list[Task]:
        with self.lock:
            return [t for t in self._t.tasks.values()
                    if (service_id is None or t.service_id == service_id)
                    and (node_id is None or t.node_id == node_id)]

    def has_request(self, rid: str) -> bool:
        return rid in self._t.requests

    def services_using_secret(self, secret_id: str) -> list[str]:
        with self.lock:
            return sorted(svc.name for svc in self._t.services.values()
                          if any(ref.secret_id == secret_id for ref in svc.secrets))

    def resolve_secret(self, ref: str) -> Secret:
        """Docker's resolution: full ID, then exact name, then unique ID prefix."""
        with self.lock:
            found = _resolve(self._t.secrets, ref, lambda s: s.name)
        if len(found) == 1:
            return found[0]
        if found:
            raise errors.secret_ambiguous(ref, len(found))
        raise errors.secret_not_found(ref)

    def resolve_node(self, ref: str) -> Node:
        """Full ID; else the one node whose hostname is ``ref`` or whose ID starts with it.

        Unlike Docker (hostname first), a hostname never shadows another node's ID prefix: a joiner
        picks its own hostname, so a reference both could mean is ambiguous.
        """
        with self.lock:
            nodes = self._t.nodes
            if ref in nodes:
                return nodes[ref]
            found = [n for nid, n in nodes.items() if n.hostname == ref or (ref and nid.startswith(ref))]
        if len(found) == 1:
            return found[0]
        if found:
            raise errors.node_ambiguous(ref, len(found))
        raise errors.node_not_found(ref)

    def resolve_service(self, ref: str) -> Service:
        """Like secrets: full ID, then exact name, then unique ID prefix."""
        with self.lock:
            found = _resolve(self._t.services, ref, lambda s: s.name)
        if len(found) == 1:
            return found[0]
        if found:
            raise errors.InvalidArgument(f"service {ref} is ambiguous ({len(found)} matches found)")
        raise errors.NotFound(f"service {ref} not found")


def name_key(name: str) -> str:
    """The key of a secret name in the name index (names are unique regardless of case); the name
    itself when it is already lower case, so the index holds no second copy of it."""
    key = name.lower()
    return name if key == name else key


Obj = TypeVar("Obj")


def _resolve(table: Mapping[str, Obj], ref: str, name: Callable[[Obj], str]) -> list[Obj]:
    """The one object with id ``ref``; else the one named ``ref``; else those whose id starts with
    ``ref``. Several matches (by name or by prefix) are returned for the caller's ambiguity error."""
    if ref in table:
        return [table[ref]]
    by_name = [o for o in table.values() if name(o) == ref]
    if len(by_name) == 1:
        return by_name
    by_prefix = [o for oid, o in table.items() if ref and oid.startswith(ref)]
    if len(by_prefix) == 1 or not by_name:
        return by_prefix
    return by_name if len(by_name) >= len(by_prefix) else by_prefix


# --- command handlers: (store, command, version) -> result value; raise SwarmError to fail ----------

CommandT = TypeVar("CommandT", bound=c.Command)
Handler = Callable[["Store", Any, int], object]
_HANDLERS: dict[type[c.Command], Handler] = {}


def _handles(kind: type[CommandT]) -> Callable[[Callable[[Store, CommandT, int], object]],
                                                Callable[[Store, CommandT, int], object]]:
    def register(fn: Callable[[Store, CommandT, int], object]) -> Callable[[Store, CommandT, int], object]:
        _HANDLERS[kind] = fn
        return fn
    return register


M = TypeVar("M", bound=Meta)


def _stamp(obj: M, ts: int, version: int, *, created: bool = False) -> M:
    if created:
        return replace(obj, created_at=ts, updated_at=ts, version=version)
    return replace(obj, updated_at=ts, version=version)


@_handles(c.InitCluster)
def _init_cluster(s: Store, cmd: c.InitCluster, version: int) -> str:
    if s._t.cluster is not None:
        raise errors.FailedPrecondition("the cluster is already initialized")
    s._t.cluster = _stamp(cmd.cluster, cmd.ts, version, created=True)
    s._t.nodes[cmd.node.id] = _stamp(cmd.node, cmd.ts, version, created=True)
    return s._t.cluster.id


@_handles(c.AddNode)
def _add_node(s: Store, cmd: c.AddNode, version: int) -> Node:
    node = cmd.node
    if node.id in s._t.nodes:
        raise errors.AlreadyExists(f"node {node.id} already exists")
    if node.raft_addr and any(n.raft_addr == node.raft_addr for n in s._t.nodes.values()):
        raise errors.AlreadyExists(f"raft address {node.raft_addr} is already used by another manager")
    new = s._t.nodes[node.id] = _stamp(node, cmd.ts, version, created=True)
    return new


@_handles(c.UpdateNode)
def _update_node(s: Store, cmd: c.UpdateNode, version: int) -> Node:
    old = s._t.nodes.get(cmd.id)
    if old is None:
        raise errors.node_not_found(cmd.id)
    new = s._t.nodes[cmd.id] = _stamp(replace(old, **cmd.changes()), cmd.ts, version)  # type: ignore[arg-type]
    return new


@_handles(c.UpdateNodeLabels)
def _update_node_labels(s: Store, cmd: c.UpdateNodeLabels, version: int) -> Node:
    old = s._t.nodes.get(cmd.node_id)
    if old is None:
        raise errors.node_not_found(cmd.node_id)
    labels = {**old.labels, **cmd.add}
    for key in cmd.remove:
        labels.pop(key, None)
    validation.validate_labels(labels)
    new = s._t.nodes[cmd.node_id] = _stamp(replace(old, labels=labels), cmd.ts, version)
    return new


@_handles(c.RemoveNode)
def _remove_node(s: Store, cmd: c.RemoveNode, version: int) -> None:
    if s._t.nodes.pop(cmd.node_id, None) is None:
        raise errors.node_not_found(cmd.node_id)
    s._t.removed_nodes[cmd.node_id] = cmd.ts
    tasks = s._t.tasks
    for tid, task in list(tasks.items()):
        if task.node_id == cmd.node_id:
            tasks[tid] = _stamp(replace(task, state="orphaned", desired_state="shutdown"), cmd.ts, version)


def _require_live_key(cluster: Cluster, cmd: c.SealsClusterValues) -> None:
    if cmd.sealed_with and cluster.key_id and cmd.sealed_with not in (cluster.key_id, cluster.rotation_from):
        raise errors.FailedPrecondition("the data key was rotated while this request was in flight; try again")


@_handles(c.UpdateCluster)
def _update_cluster(s: Store, cmd: c.UpdateCluster, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    _require_live_key(cluster, cmd)
    if cmd.join_tokens is not None:
        cluster = replace(cluster, join_tokens=cmd.join_tokens)
    if cmd.unlock_key is not None:
        if not cluster.autolock:  # turned off by a command that won the race with this rotation
            raise errors.FailedPrecondition("cannot rotate because autolock is not turned on")
        cluster = replace(cluster, unlock_key=cmd.unlock_key)
    new = s._t.cluster = _stamp(cluster, cmd.ts, version)
    return new


@_handles(c.SetCertExpiry)
def _set_cert_expiry(s: Store, cmd: c.SetCertExpiry, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if not 0 < cmd.seconds <= validation.MAX_CERT_EXPIRY:
        raise errors.InvalidArgument(f"a certificate lifetime is between 1 and {validation.MAX_CERT_EXPIRY} seconds")
    new = s._t.cluster = _stamp(replace(cluster, node_cert_expiry=cmd.seconds), cmd.ts, version)
    return new


@_handles(c.SetClusterSettings)
def _set_cluster_settings(s: Store, cmd: c.SetClusterSettings, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if cmd.dispatcher_heartbeat is not None and cmd.dispatcher_heartbeat <= 0:
        raise errors.InvalidArgument("heartbeat time period must be positive")
    if cmd.task_history_limit is not None:
        cluster = replace(cluster, task_history_limit=cmd.task_history_limit)
    if cmd.dispatcher_heartbeat is not None:
        cluster = replace(cluster, dispatcher_heartbeat=cmd.dispatcher_heartbeat)
    new = s._t.cluster = _stamp(cluster, cmd.ts, version)
    return new


@_handles(c.RecordNodeCert)
def _record_node_cert(s: Store, cmd: c.RecordNodeCert, version: int) -> Node:
    old = s._t.nodes.get(cmd.node_id)
    if old is None:
        raise errors.node_not_found(cmd.node_id)
    if cmd.issued_at < old.cert_issued_at:
        return old
    new = s._t.nodes[cmd.node_id] = _stamp(replace(old, cert_serial=cmd.serial, cert_not_after=cmd.not_after,
                                                   cert_issued_at=cmd.issued_at, cert_issuer=cmd.issuer,
                                                   cert_issuer_key=cmd.issuer_key), cmd.ts, version)
    return new


@_handles(c.SetAutolock)
def _set_autolock(s: Store, cmd: c.SetAutolock, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    _require_live_key(cluster, cmd)
    if cmd.autolock and cmd.unlock_key is None:
        raise errors.InvalidArgument("autolock needs an unlock key")
    if cmd.autolock and cluster.autolock:
        return cluster  # already on (a concurrent request won): its key stays, the only one anyone was shown
    new = s._t.cluster = _stamp(replace(cluster, autolock=cmd.autolock,
                                        unlock_key=cmd.unlock_key if cmd.autolock else None), cmd.ts, version)
    return new


@_handles(c.BeginDataKeyRotation)
def _begin_data_key_rotation(s: Store, cmd: c.BeginDataKeyRotation, version: int) -> str:
    """Returns the key id (never the record: remembered outcomes must hold nothing sealed)."""
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if cluster.key_id == cmd.key_id:
        return cmd.key_id  # already current (a retry whose first outcome was pruned)
    if cluster.rotation_from:
        raise errors.FailedPrecondition("a data key rotation is already in progress")
    if cluster.root_rotation is not None:
        # The new CA key is sealed under the data key until the root rotation ends.
        raise errors.FailedPrecondition("a root CA rotation is in progress; rotate the data key once it ends")
    if cluster.key_id != cmd.under:
        raise errors.FailedPrecondition("the data key changed since this rotation was prepared")
    s._t.cluster = _stamp(replace(cluster, key_id=cmd.key_id, rotation_from=cmd.under, rotation_key=cmd.sealed_key,
                                  key_rotated_at=cmd.ts, data_key_rotation_requested=False), cmd.ts, version)
    return cmd.key_id


@_handles(c.ReencryptSecrets)
def _reencrypt_secrets(s: Store, cmd: c.ReencryptSecrets, version: int) -> int:
    """Only records still under the key the proposer read them under, and only into the current
    key: a secret changed meanwhile keeps its newer ciphertext. Not a user change: no stamp."""
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    done = 0
    for item in cmd.secrets:
        secret = s._t.secrets.get(item.id)
        if secret is None or secret.key_id != item.from_key_id or item.key_id != cluster.key_id:
            continue
        s._t.secrets[item.id] = replace(secret, data=item.data, key_id=sys.intern(item.key_id))
        done += 1
    return done


@_handles(c.FinishDataKeyRotation)
def _finish_data_key_rotation(s: Store, cmd: c.FinishDataKeyRotation, version: int) -> str:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if cluster.key_id != cmd.key_id:
        raise errors.FailedPrecondition("the data key changed since this rotation was prepared")
    if not cluster.rotation_from:
        return cmd.key_id
    if cluster.version != cmd.cluster_version:
        raise errors.UpdateOutOfSequence()
    left = sum(1 for secret in s._t.secrets.values() if secret.key_id != cluster.key_id)
    if left:
        raise errors.FailedPrecondition(f"{left} secrets are not re-encrypted under the current data key yet")
    if (cmd.unlock_key is None) != (cluster.unlock_key is None):
        raise errors.UpdateOutOfSequence()
    new = s._t.cluster = _stamp(replace(cluster, rotation_from="", rotation_key=b"", join_tokens=cmd.join_tokens,
                                        unlock_key=cmd.unlock_key), cmd.ts, version)
    # Remembered outcomes that hold the cluster record hold values sealed under the previous key:
    # they answer a retry with the current values instead.
    for rid, seen in s._t.requests.items():
        if isinstance(seen.result, Ok) and isinstance(seen.result.value, Cluster):
            s._t.requests[rid] = Request(Ok(replace(seen.result.value, join_tokens=new.join_tokens,
                                                    unlock_key=new.unlock_key, rotation_key=b"")), seen.ts)
    return cmd.key_id


@_handles(c.SetDataKeyRotation)
def _set_data_key_rotation(s: Store, cmd: c.SetDataKeyRotation, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if cmd.interval < 0:
        raise errors.InvalidArgument("the data key rotation interval cannot be negative")
    new = s._t.cluster = _stamp(replace(cluster, key_rotation_interval=cmd.interval,
                                        key_rotated_at=cluster.key_rotated_at or cmd.ts), cmd.ts, version)
    return new


@_handles(c.RequestDataKeyRotation)
def _request_data_key_rotation(s: Store, cmd: c.RequestDataKeyRotation, version: int) -> None:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    s._t.cluster = _stamp(replace(cluster, data_key_rotation_requested=True), cmd.ts, version)


@_handles(c.StartRootRotation)
def _start_root_rotation(s: Store, cmd: c.StartRootRotation, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    _require_live_key(cluster, cmd)
    if cluster.root_rotation is not None or cluster.root_ca_cert != cmd.from_root:
        raise errors.FailedPrecondition("a root CA rotation is already in progress")
    if cluster.rotation_from:
        raise errors.FailedPrecondition("a data key rotation is in progress; rotate the root CA once it ends")
    new = s._t.cluster = _stamp(replace(cluster, root_rotation=cmd.rotation, join_tokens=cmd.join_tokens),
                                cmd.ts, version)
    return new


@_handles(c.FinishRootRotation)
def _finish_root_rotation(s: Store, cmd: c.FinishRootRotation, version: int) -> Cluster:
    cluster = s._t.cluster
    if cluster is None:
        raise errors.NotInSwarm()
    if cluster.root_rotation is None or cluster.root_rotation.ca_cert != cmd.root:
        raise errors.FailedPrecondition("no root CA rotation to this root is in progress")
    new = s._t.cluster = _stamp(replace(cluster, root_ca_cert=cmd.root, root_rotation=None), cmd.ts, version)
    return new


@_handles(c.SetTrustRoots)
def _set_trust_roots(s: Store, cmd: c.SetTrustRoots, version: int) -> Node:
    old = s._t.nodes.get(cmd.node_id)
    if old is None:
        raise errors.node_not_found(cmd.node_id)
    new = s._t.nodes[cmd.node_id] = _stamp(replace(old, trust_roots=cmd.trust_roots), cmd.ts, version)
    return new


@_handles(c.CreateSecret)
def _create_secret(s: Store, cmd: c.CreateSecret, version: int) -> Secret:
    if name_key(cmd.name) in s._names:
        raise errors.secret_exists(cmd.name)
    if cmd.id in s._t.secrets:
        raise errors.AlreadyExists(f"secret {cmd.id} already exists")
    cluster = s._t.cluster
    if cluster is not None and cluster.key_id and cmd.key_id not in (cluster.key_id, cluster.rotation_from):
        # Sealed under a key that was retired before this applied: nobody could open it.
        raise errors.FailedPrecondition("the data key was rotated while this request was in flight; "
                                        "create the secret again")
    # One string per data key and one empty map for every secret without labels: they are shared
    # by the hundred thousand secrets a swarm may hold.
    secret = Secret(id=cmd.id, name=cmd.name, labels=dict(cmd.labels) if cmd.labels else NO_LABELS,
                    data=cmd.data, key_id=sys.intern(cmd.key_id),
                    created_at=cmd.ts, updated_at=cmd.ts, version=version)
    s._t.secrets[secret.id] = secret
    s._names[name_key(secret.name)] = secret.id
    return secret.public()


@_handles(c.UpdateSecret)
def _update_secret(s: Store, cmd: c.UpdateSecret, version: int) -> Secret:
    secret = s._t.secrets.get(cmd.id)
    if secret is None:
        raise errors.secret_not_found(cmd.id)
    if cmd.version != secret.version:
        raise errors.UpdateOutOfSequence()
    new = s._t.secrets[cmd.id] = _stamp(replace(secret, labels=dict(cmd.labels) if cmd.labels else NO_LABELS),
                                        cmd.ts, version)
    return new.public()


@_handles(c.RemoveSecret)
def _remove_secret(s: Store, cmd: c.RemoveSecret, version: int) -> None:
    secret = s._t.secrets.get(cmd.id)
    if secret is None:
        raise errors.NotFound(f"could not find secret {cmd.id}")
    users = s.services_using_secret(cmd.id)
    if users:
        raise errors.secret_in_use(secret.name, users)
    del s._t.secrets[cmd.id]
    s._names.pop(name_key(secret.name), None)


def _check_secret_refs(s: Store, refs: Iterable[SecretRef]) -> None:
    """Each reference names an existing secret by id, with its current name (Swarm's rule)."""
    secrets = s._t.secrets
    missing = sorted({r.secret_name for r in refs
                      if r.secret_id not in secrets or secrets[r.secret_id].name != r.secret_name})
    if missing:
        noun = "secret" if len(missing) == 1 else "secrets"
        raise errors.InvalidArgument(f"{noun} not found: {', '.join(missing)}")


@_handles(c.CreateService)
def _create_service(s: Store, cmd: c.CreateService, version: int) -> Service:
    svc = cmd.service
    if any(o.name.lower() == svc.name.lower() for o in s._t.services.values()):
        raise errors.service_exists(svc.name)
    _check_secret_refs(s, svc.secrets)
    new = s._t.services[svc.id] = _stamp(replace(svc, spec_version=1), cmd.ts, version, created=True)
    return new


@_handles(c.UpdateService)
def _update_service(s: Store, cmd: c.UpdateService, version: int) -> Service:
    svc = s._t.services.get(cmd.id)
    if svc is None:
        raise errors.NotFound(f"service {cmd.id} not found")
    if cmd.version and cmd.version != svc.version:
        raise errors.UpdateOutOfSequence()
    new = svc
    if cmd.secrets is not None:
        _check_secret_refs(s, cmd.secrets)
        new = replace(new, secrets=cmd.secrets)
    if cmd.replicas is not None:
        new = replace(new, replicas=cmd.replicas)
    if cmd.constraints is not None:
        # Where tasks run, not what they run: the scheduler moves those that no longer fit.
        new = replace(new, constraints=cmd.constraints)
    # A change of anything but the replica count is a new spec: its tasks restart.
    if cmd.force or new.secrets != svc.secrets:
        new = replace(new, spec_version=svc.spec_version + 1)
    new = s._t.services[cmd.id] = _stamp(new, cmd.ts, version)
    return new


@_handles(c.RemoveService)
def _remove_service(s: Store, cmd: c.RemoveService, version: int) -> None:
    if s._t.services.pop(cmd.id, None) is None:
        raise errors.NotFound(f"service {cmd.id} not found")
    tasks = s._t.tasks
    for tid in [tid for tid, t in tasks.items() if t.service_id == cmd.id]:
        del tasks[tid]


@_handles(c.Schedule)
def _schedule(s: Store, cmd: c.Schedule, version: int) -> None:
    tasks = s._t.tasks
    for t in cmd.create:
        if t.service_id in s._t.services and t.id not in tasks:
            tasks[t.id] = _stamp(t, cmd.ts, version, created=True)
    for change in cmd.update:
        task = tasks.get(change.id)
        if task is not None:
            tasks[change.id] = _stamp(replace(task, desired_state=change.desired_state, state=change.state),
                                      cmd.ts, version)
    for tid in cmd.delete:
        tasks.pop(tid, None)


@_handles(c.TaskStatus)
def _task_status(s: Store, cmd: c.TaskStatus, version: int) -> None:
    tasks = s._t.tasks
    for report in cmd.reports:
        for u in report.updates:
            task = tasks.get(u.task_id)
            if task is None or task.node_id != report.node_id:
                continue
            new = replace(task, state=u.state, message=u.message, err=u.err, exit_code=u.exit_code,
                          status_ts=u.ts or cmd.ts)
            if u.spec_version:
                new = replace(new, spec_version=u.spec_version)
            tasks[u.task_id] = _stamp(new, cmd.ts, version)
