"""The replicated state machine: objects, commands, apply, snapshot (DESIGN §4).

``apply`` is pure and deterministic: no clock, no randomness, no I/O. The proposer
puts IDs, timestamps and a request id into each command. Results are plain data:
``{"ok": value}`` or ``{"err": [kind, message]}`` (see errors.to_wire).

Secret payloads exist here only as SecretBox ciphertext; so do the join tokens
and the unlock key. Every command carries a request id: a retried command (same
id) returns the first outcome instead of running again.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

from swarmsecrets import errors

log = logging.getLogger(__name__)

# Idempotency records are kept this long (by the proposers' clocks) and at most this many.
REQUEST_TTL_NS = 24 * 3600 * 10**9
MAX_REQUESTS = 200_000

Result = dict[str, Any]


def _ok(value: Any = None) -> Result:
    return {"ok": value}


def _err(e: errors.SwarmError) -> Result:
    return {"err": list(errors.to_wire(e))}


def unwrap(result: Result) -> Any:
    """The value of an apply result, or raise its typed error."""
    if "err" in result:
        raise errors.from_wire(*result["err"])
    return result.get("ok")


_KINDS = ("nodes", "secrets", "services", "tasks", "removed_nodes", "requests")
TERMINAL_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned"})


def _empty_state() -> dict[str, Any]:
    state: dict[str, Any] = {kind: {} for kind in _KINDS}
    state["cluster"] = None
    return state


class Store:
    """Objects by kind, each a plain dict. Reads take the lock; apply runs on the raft thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state: dict[str, Any] = _empty_state()
        self._names: dict[str, str] = {}  # lower-case secret name -> id
        self.applied_index = 0
        self._listeners: list[Callable[[dict[str, Any], Result], None]] = []

    # --- raft StateMachine protocol -------------------------------------------------

    def apply(self, command: dict[str, Any], index: int) -> Result:
        with self.lock:
            self.applied_index = index
            rid = command.get("rid")
            requests = self.state["requests"]
            if rid and rid in requests:
                return requests[rid]["result"]
            handler = _HANDLERS.get(command.get("op", ""))
            if handler is None:
                result = _err(errors.InvalidArgument(f"unknown command {command.get('op')!r}"))
            else:
                try:
                    result = handler(self, command, index)
                except errors.SwarmError as e:
                    result = _err(e)
                except Exception as e:  # apply never raises: a bad command fails alone, on every node alike
                    log.exception("command %r at index %d failed", command.get("op"), index)
                    result = _err(errors.SwarmError(f"internal error applying {command.get('op')}: {e}"))
            if rid:
                requests[rid] = {"result": result, "ts": int(command.get("ts", 0))}
                self._prune_requests(int(command.get("ts", 0)))
        for listener in self._listeners:
            try:
                listener(command, result)
            except Exception:  # a listener must never break apply
                log.exception("state listener failed")
        return result

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "applied_index": self.applied_index}

    def restore(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.state = copy.deepcopy(data["state"]) if data else _empty_state()
            for kind in _KINDS:
                self.state.setdefault(kind, {})
            self.applied_index = int(data.get("applied_index", 0)) if data else 0
            self._names = {s["name"].lower(): sid for sid, s in self.state["secrets"].items()}

    def add_listener(self, fn: Callable[[dict[str, Any], Result], None]) -> None:
        """Called after every apply (on the raft thread) with the command and its result."""
        self._listeners.append(fn)

    def _prune_requests(self, now_ns: int) -> None:
        requests = self.state["requests"]
        while requests:
            oldest = next(iter(requests))
            if len(requests) > MAX_REQUESTS or requests[oldest]["ts"] < now_ns - REQUEST_TTL_NS:
                del requests[oldest]
            else:
                break

    # --- reads (callers hold no lock; we copy out) -------------------------------------

    @property
    def cluster(self) -> dict[str, Any] | None:
        with self.lock:
            c = self.state["cluster"]
            return dict(c) if c else None

    def secrets(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(s) for s in self.state["secrets"].values()]

    def nodes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(n) for n in self.state["nodes"].values()]

    def node(self, node_id: str) -> dict[str, Any] | None:
        with self.lock:
            n = self.state["nodes"].get(node_id)
            return dict(n) if n else None

    def resolve_secret(self, ref: str) -> dict[str, Any]:
        """Docker's resolution: full ID, then exact name, then unique ID prefix."""
        with self.lock:
            secrets = self.state["secrets"]
            if ref in secrets:
                return dict(secrets[ref])
            by_name = [s for s in secrets.values() if s["name"] == ref]
            if len(by_name) == 1:
                return dict(by_name[0])
            by_prefix = [s for sid, s in secrets.items() if ref and sid.startswith(ref)]
            if len(by_prefix) == 1:
                return dict(by_prefix[0])
            if len(by_prefix) > 1:
                raise errors.secret_ambiguous(ref, len(by_prefix))
            raise errors.secret_not_found(ref)

    def resolve_node(self, ref: str) -> dict[str, Any]:
        with self.lock:
            nodes = self.state["nodes"]
            if ref in nodes:
                return dict(nodes[ref])
            by_name = [n for n in nodes.values() if n["hostname"] == ref]
            if len(by_name) == 1:
                return dict(by_name[0])
            by_prefix = [n for nid, n in nodes.items() if ref and nid.startswith(ref)]
            if len(by_prefix) == 1:
                return dict(by_prefix[0])
            if len(by_prefix) > 1 or len(by_name) > 1:
                raise errors.node_ambiguous(ref, max(len(by_prefix), len(by_name)))
            raise errors.node_not_found(ref)

    def has_request(self, rid: str) -> bool:
        with self.lock:
            return rid in self.state["requests"]

    def services_using_secret(self, secret_id: str) -> list[str]:
        with self.lock:
            return sorted(
                svc["name"] for svc in self.state["services"].values()
                if any(ref.get("secret_id") == secret_id for ref in svc.get("secrets", []))
            )

    def services(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(s) for s in self.state["services"].values()]

    def service(self, service_id: str) -> dict[str, Any] | None:
        with self.lock:
            s = self.state["services"].get(service_id)
            return copy.deepcopy(s) if s else None

    def tasks(self, service_id: str | None = None, node_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(t) for t in self.state["tasks"].values()
                    if (service_id is None or t["service_id"] == service_id)
                    and (node_id is None or t["node_id"] == node_id)]

    def secret(self, secret_id: str) -> dict[str, Any] | None:
        with self.lock:
            s = self.state["secrets"].get(secret_id)
            return dict(s) if s else None

    def is_removed_node(self, node_id: str) -> bool:
        with self.lock:
            return node_id in self.state["removed_nodes"]

    def resolve_service(self, ref: str) -> dict[str, Any]:
        """Like secrets: full ID, then exact name, then unique ID prefix."""
        with self.lock:
            services = self.state["services"]
            if ref in services:
                return copy.deepcopy(services[ref])
            by_name = [s for s in services.values() if s["name"] == ref]
            if len(by_name) == 1:
                return copy.deepcopy(by_name[0])
            by_prefix = [s for sid, s in services.items() if ref and sid.startswith(ref)]
            if len(by_prefix) == 1:
                return copy.deepcopy(by_prefix[0])
            if len(by_prefix) > 1:
                raise errors.InvalidArgument(f"service {ref} is ambiguous ({len(by_prefix)} matches found)")
            raise errors.NotFound(f"service {ref} not found")


# --- command handlers: (store, command, raft index) -> result; raise SwarmError to fail --------------

def _init_cluster(store: Store, cmd: dict[str, Any], index: int) -> Result:
    if store.state["cluster"] is not None:
        raise errors.FailedPrecondition("the cluster is already initialized")
    cluster = dict(cmd["cluster"])
    cluster.update(created_at=cmd["ts"], updated_at=cmd["ts"], version=index)
    store.state["cluster"] = cluster
    _put_node(store, cmd["node"], cmd["ts"], index)
    return _ok(cluster["id"])

def _put_node(store: Store, node: dict[str, Any], ts: int, index: int) -> dict[str, Any]:
    nodes = store.state["nodes"]
    old = nodes.get(node["id"])
    new = dict(old or {"created_at": ts, "availability": "active"})
    new.update(node)
    new.update(updated_at=ts, version=index)
    nodes[node["id"]] = new
    return new

def _add_node(store: Store, cmd: dict[str, Any], index: int) -> Result:
    node = cmd["node"]
    if node["id"] in store.state["nodes"]:
        raise errors.AlreadyExists(f"node {node['id']} already exists")
    if node.get("raft_addr") and any(
        n.get("raft_addr") == node["raft_addr"] for n in store.state["nodes"].values()
    ):
        raise errors.AlreadyExists(f"raft address {node['raft_addr']} is already used by another manager")
    return _ok(_put_node(store, node, cmd["ts"], index))

def _update_node(store: Store, cmd: dict[str, Any], index: int) -> Result:
    node = cmd["node"]
    if node["id"] not in store.state["nodes"]:
        raise errors.node_not_found(node["id"])
    return _ok(_put_node(store, node, cmd["ts"], index))

def _remove_node(store: Store, cmd: dict[str, Any], index: int) -> Result:
    """Forget a node and refuse its certificate from now on; its tasks are rescheduled."""
    if store.state["nodes"].pop(cmd["node_id"], None) is None:
        raise errors.node_not_found(cmd["node_id"])
    store.state["removed_nodes"][cmd["node_id"]] = cmd["ts"]
    for task in store.state["tasks"].values():
        if task["node_id"] == cmd["node_id"]:
            task.update(state="orphaned", desired_state="shutdown", updated_at=cmd["ts"], version=index)
    return _ok()

def _update_cluster(store: Store, cmd: dict[str, Any], index: int) -> Result:
    cluster = store.state["cluster"]
    if cluster is None:
        raise errors.NotInSwarm()
    cluster.update(cmd["changes"])
    cluster.update(updated_at=cmd["ts"], version=index)
    return _ok(dict(cluster))

def _create_secret(store: Store, cmd: dict[str, Any], index: int) -> Result:
    name = cmd["name"]
    if name.lower() in store._names:
        raise errors.secret_exists(name)
    if cmd["id"] in store.state["secrets"]:
        raise errors.AlreadyExists(f"secret {cmd['id']} already exists")
    secret = {
        "id": cmd["id"], "name": name, "labels": dict(cmd.get("labels") or {}),
        "data": cmd["data"], "key_id": cmd["key_id"],
        "created_at": cmd["ts"], "updated_at": cmd["ts"], "version": index,
    }
    store.state["secrets"][secret["id"]] = secret
    store._names[name.lower()] = secret["id"]
    return _ok(_public(secret))

def _update_secret(store: Store, cmd: dict[str, Any], index: int) -> Result:
    secret = store.state["secrets"].get(cmd["id"])
    if secret is None:
        raise errors.secret_not_found(cmd["id"])
    if cmd["version"] != secret["version"]:
        raise errors.UpdateOutOfSequence()
    secret["labels"] = dict(cmd.get("labels") or {})
    secret.update(updated_at=cmd["ts"], version=index)
    return _ok(_public(secret))

def _remove_secret(store: Store, cmd: dict[str, Any], index: int) -> Result:
    secret = store.state["secrets"].get(cmd["id"])
    if secret is None:
        raise errors.NotFound(f"could not find secret {cmd['id']}")
    users = store.services_using_secret(cmd["id"])
    if users:
        raise errors.secret_in_use(secret["name"], users)
    del store.state["secrets"][cmd["id"]]
    store._names.pop(secret["name"].lower(), None)
    return _ok()


def _check_secret_refs(store: Store, refs: list[dict[str, Any]]) -> None:
    """Each reference names an existing secret by id, with its current name (Swarm's rule)."""
    secrets = store.state["secrets"]
    missing = sorted({r["secret_name"] for r in refs
                      if r["secret_id"] not in secrets or secrets[r["secret_id"]]["name"] != r["secret_name"]})
    if missing:
        noun = "secret" if len(missing) == 1 else "secrets"
        raise errors.InvalidArgument(f"{noun} not found: {', '.join(missing)}")


def _create_service(store: Store, cmd: dict[str, Any], index: int) -> Result:
    svc = dict(cmd["service"])
    if any(s["name"].lower() == svc["name"].lower() for s in store.state["services"].values()):
        raise errors.AlreadyExists(f"service {svc['name']} already exists")
    _check_secret_refs(store, svc.get("secrets", []))
    svc.update(created_at=cmd["ts"], updated_at=cmd["ts"], version=index, spec_version=1)
    store.state["services"][svc["id"]] = svc
    return _ok(copy.deepcopy(svc))


def _update_service(store: Store, cmd: dict[str, Any], index: int) -> Result:
    svc = store.state["services"].get(cmd["id"])
    if svc is None:
        raise errors.NotFound(f"service {cmd['id']} not found")
    if cmd.get("version") and cmd["version"] != svc["version"]:
        raise errors.UpdateOutOfSequence()
    changes = cmd["changes"]
    if "secrets" in changes:
        _check_secret_refs(store, changes["secrets"])
    spec_changed = cmd.get("force") or any(svc.get(k) != v for k, v in changes.items() if k != "replicas")
    svc.update(changes)
    if spec_changed:
        svc["spec_version"] = svc.get("spec_version", 1) + 1
    svc.update(updated_at=cmd["ts"], version=index)
    return _ok(copy.deepcopy(svc))


def _remove_service(store: Store, cmd: dict[str, Any], index: int) -> Result:
    svc = store.state["services"].pop(cmd["id"], None)
    if svc is None:
        raise errors.NotFound(f"service {cmd['id']} not found")
    tasks = store.state["tasks"]
    for tid in [tid for tid, t in tasks.items() if t["service_id"] == cmd["id"]]:
        del tasks[tid]
    return _ok()


def _schedule(store: Store, cmd: dict[str, Any], index: int) -> Result:
    """The leader's scheduler decisions, as one batch: new tasks, changed tasks, deleted tasks."""
    tasks = store.state["tasks"]
    for t in cmd.get("create", []):
        if t["service_id"] in store.state["services"] and t["id"] not in tasks:
            tasks[t["id"]] = dict(t, created_at=cmd["ts"], updated_at=cmd["ts"], version=index)
    for change in cmd.get("update", []):
        task = tasks.get(change["id"])
        if task is not None:
            task.update(change["changes"])
            task.update(updated_at=cmd["ts"], version=index)
    for tid in cmd.get("delete", []):
        tasks.pop(tid, None)
    return _ok()


def _task_status(store: Store, cmd: dict[str, Any], index: int) -> Result:
    """Status reports of workers' agents, batched; a node can only report on its own tasks."""
    tasks = store.state["tasks"]
    for report in cmd["reports"]:
        for u in report["updates"]:
            _apply_task_status(tasks.get(u["task_id"]), report["node_id"], u, cmd["ts"], index)
    return _ok()


def _apply_task_status(task: dict[str, Any] | None, node_id: str, u: dict[str, Any], ts: int, index: int) -> None:
    if task is None or task["node_id"] != node_id:
        return
    task.update(state=u["state"], message=u.get("message", ""), err=u.get("err", ""),
                exit_code=u.get("exit_code", 0), status_ts=u.get("ts", ts), updated_at=ts, version=index)
    if u.get("spec_version"):
        task["spec_version"] = u["spec_version"]


def _public(secret: dict[str, Any]) -> dict[str, Any]:
    """A secret as results carry it: never the payload."""
    return {k: v for k, v in secret.items() if k != "data"}


_HANDLERS: dict[str, Callable[[Store, dict[str, Any], int], Result]] = {
    "init_cluster": _init_cluster,
    "add_node": _add_node,
    "update_node": _update_node,
    "remove_node": _remove_node,
    "update_cluster": _update_cluster,
    "create_secret": _create_secret,
    "update_secret": _update_secret,
    "remove_secret": _remove_secret,
    "create_service": _create_service,
    "update_service": _update_service,
    "remove_service": _remove_service,
    "schedule": _schedule,
    "task_status": _task_status,
}
