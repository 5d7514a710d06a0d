"""The versioned encoding of commands (raft log entries) and snapshots.

Raft stores and sends plain data only (dicts, lists, str, int, bytes...; its unpickler refuses
anything else), so typed values are encoded here on the way in and decoded on the way out.

The layout is the one that members wrote before entries carried versions, plus a version tag:
a command is ``{"op": KIND, "v": <the version it needs>, "rid": ..., "ts": ..., <fields>}`` and a
whole-state snapshot is ``{"state_version": N, "applied_index": ..., "state": {<tables>}}`` (raft
snapshots are framed since state version 5: see ``snapshot_frames``). Keeping that layout means
that entries and snapshots written by earlier members still load (no tag: read as version 1),
and that during a rolling upgrade a member of the earlier release can still read what an
upgraded leader writes. A command whose kind or version this member does not know is not
decoded at all (``Unsupported``), so it can never be half applied.

A batch entry (state version 6) is ``{"op": "batch", "v": 6, "cmds": [<command>, ...]}``: the
commands are applied in order, each with its own outcome, version and request id, as if each had
an entry of its own. A member of an earlier release refuses it whole (an unknown kind), so one is
written only once every manager advertises version 6.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, fields, is_dataclass, replace
from typing import Any

from swarmsecrets.heap import return_freed_memory
from swarmsecrets.manager.state import commands as c
from swarmsecrets.manager.state.events import Err, Ok, Result
from swarmsecrets.manager.state.objects import NO_LABELS, Cluster, Meta, Node, Secret, Service, Task
from swarmsecrets.manager.state.store import Request, Store, Tables

log = logging.getLogger(__name__)

# What an entry or snapshot without a version tag (written before versions were recorded) is.
UNTAGGED_VERSION = 1
_META = frozenset(f.name for f in fields(Meta))


class Malformed(ValueError):
    """An entry or snapshot that does not have the shape its version defines."""


class Unsupported(ValueError):
    """A command kind or version that this member does not know."""


class SnapshotTooNew(ValueError):
    """A snapshot of a later state version than this member supports."""


# --- generic dataclass <-> plain data --------------------------------------------------------------

# Each class's encoder and decoder is built once from its type hints (a snapshot encodes and
# decodes every object: a hundred thousand secrets must take a fraction of a second, not seconds).
Convert = Callable[[Any, bool], Any]  # (plain value, strict) -> typed value
_ENCODERS: dict[tuple[type[Any], bool], Callable[[Any], dict[str, Any]]] = {}
_DECODERS: dict[type[Any], Convert] = {}


def to_plain(obj: Any, *, meta: bool = True) -> Any:
    """A dataclass (and what it holds) as plain data; ``meta=False`` leaves out the apply stamps."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _encoder(type(obj), meta)(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def _encoder(cls: type[Any], meta: bool) -> Callable[[Any], dict[str, Any]]:
    enc = _ENCODERS.get((cls, meta))
    if enc is None:
        hints = typing.get_type_hints(cls)
        kept = [f for f in fields(cls) if meta or f.name not in _META]
        # A field at its default is left out (decoding restores it): an object written by this
        # version then reads on a manager that predates a field added since, as long as the field
        # is unused; rolling upgrades depend on it.
        plain = [(f.name, _default_of(f)) for f in kept if _is_plain(hints[f.name])]
        nested = [(f.name, _default_of(f)) for f in kept if not _is_plain(hints[f.name])]

        def enc(obj: Any) -> dict[str, Any]:
            out = {}
            for name, default in plain:
                value = getattr(obj, name)
                if default is _REQUIRED or value != default:
                    out[name] = value
            for name, default in nested:
                value = getattr(obj, name)
                if default is _REQUIRED or value != default:
                    out[name] = to_plain(value)
            return out

        _ENCODERS[(cls, meta)] = enc
    return enc


_REQUIRED = object()


def _default_of(f: Any) -> Any:
    """A field's default value, or ``_REQUIRED`` when it has none."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return _REQUIRED


def _is_plain(tp: Any) -> bool:
    """Values of this type are stored as they are (no conversion to plain data needed)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return all(_is_plain(o) for o in typing.get_args(tp))
    return tp in (str, int, bool, bytes, type(None))


def from_plain(cls: type[Any], data: Any, *, strict: bool = False) -> Any:
    """Build ``cls`` from plain data, checking every value's type. Absent fields take their
    defaults; unknown keys are ignored, or refused when ``strict``."""
    return _decoder(cls)(data, strict)


def _decoder(cls: type[Any]) -> Convert:
    dec = _DECODERS.get(cls)
    if dec is not None:
        return dec
    hints = typing.get_type_hints(cls)
    specs = [(f.name, _converter(hints[f.name], f"{cls.__name__}.{f.name}"),
              f.default is MISSING and f.default_factory is MISSING) for f in fields(cls)]
    known = frozenset(f.name for f in fields(cls)) | {"op", "v"}

    def decode(data: Any, strict: bool) -> Any:
        if not isinstance(data, dict):
            raise Malformed(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
        if strict and not known.issuperset(data):
            raise Malformed(f"{cls.__name__}: unknown fields {sorted(set(data) - known)}")
        kwargs: dict[str, Any] = {}
        for name, convert, required in specs:
            if name in data:
                kwargs[name] = convert(data[name], strict)
            elif required:
                raise Malformed(f"{cls.__name__}: missing field {name!r}")
        return cls(**kwargs)

    _DECODERS[cls] = decode
    return decode


def _converter(tp: Any, where: str) -> Convert:
    """A function that checks a plain value against ``tp`` and returns it typed."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [o for o in typing.get_args(tp) if o is not type(None)]
        convert_inner = _converter(inner, where)
        return lambda v, strict: None if v is None else convert_inner(v, strict)
    if origin is tuple:
        item = _converter(typing.get_args(tp)[0], where)

        def convert_tuple(v: Any, strict: bool) -> Any:
            if not isinstance(v, list | tuple):
                raise Malformed(f"{where}: expected a list")
            return tuple(item(x, strict) for x in v)
        return convert_tuple
    if origin is Mapping or origin is dict:
        def convert_map(v: Any, strict: bool) -> Any:
            if not isinstance(v, dict) or not all(type(k) is str and type(x) is str for k, x in v.items()):
                raise Malformed(f"{where}: expected a map of strings")
            return dict(v) if v else NO_LABELS
        return convert_map
    if isinstance(tp, type) and is_dataclass(tp):
        return lambda v, strict: _decoder(tp)(v, strict)
    if tp in (str, bytes, bool):
        def convert_exact(v: Any, strict: bool) -> Any:
            if type(v) is not tp:
                raise Malformed(f"{where}: expected {tp.__name__}")
            return v
        return convert_exact
    if tp is int:
        def convert_int(v: Any, strict: bool) -> Any:
            if type(v) is not int:
                raise Malformed(f"{where}: expected an int")
            return v
        return convert_int
    raise TypeError(f"{where}: no plain-data form for {tp}")


# --- commands --------------------------------------------------------------------------------------

# Kinds whose log layout differs from the flat field list: (flat -> layout, layout -> flat).
_Layout = tuple[Callable[[dict[str, Any]], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]]]


def _nested(key: str, keep: tuple[str, ...]) -> _Layout:
    """Fields other than ``keep`` live in a sub-dict ``key`` (e.g. update_node's ``node``); fields
    left unchanged (None) are left out."""

    def out(flat: dict[str, Any]) -> dict[str, Any]:
        inner = {k: v for k, v in flat.items() if k not in keep and v is not None}
        return {**{k: flat[k] for k in keep if k in flat}, key: inner}

    def into(body: dict[str, Any]) -> dict[str, Any]:
        inner = body.get(key)
        if not isinstance(inner, dict):
            raise Malformed(f"{key}: expected a dict")
        return {**{k: v for k, v in body.items() if k != key}, **inner}

    return out, into


def _schedule_out(flat: dict[str, Any]) -> dict[str, Any]:
    return {**flat, "update": [{"id": u["id"], "changes": {k: v for k, v in u.items() if k != "id"}}
                               for u in flat.get("update", [])]}


def _schedule_in(body: dict[str, Any]) -> dict[str, Any]:
    update = body.get("update", [])
    if not isinstance(update, list) or not all(isinstance(u, dict) and isinstance(u.get("changes"), dict)
                                               for u in update):
        raise Malformed("schedule.update: expected a list of {id, changes}")
    return {**body, "update": [{"id": u.get("id"), **u["changes"]} for u in update]}


_LAYOUTS: dict[type[c.Command], _Layout] = {
    c.UpdateNode: _nested("node", ("rid", "ts", "v", "op")),
    c.UpdateCluster: _nested("changes", ("rid", "ts", "v", "op")),
    c.UpdateService: _nested("changes", ("rid", "ts", "v", "op", "id", "version", "force")),
    c.Schedule: (_schedule_out, _schedule_in),
}


BATCH_OP = "batch"
BATCH_SINCE = 6


def encode_batch(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Several command entries (as ``encode_command`` makes them) as one raft log entry."""
    return {"op": BATCH_OP, "v": BATCH_SINCE, "cmds": entries}


def plain_size(value: Any) -> int:
    """About how many bytes ``value`` (plain data) takes in a raft entry: the lengths of its
    strings and bytes plus a little per item, an overestimate of the pickle's length."""
    if isinstance(value, bytes):
        return len(value) + 9
    if isinstance(value, str):
        return (len(value) if value.isascii() else len(value.encode())) + 9
    if isinstance(value, dict):
        return 2 + sum(plain_size(k) + plain_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(plain_size(v) for v in value)
    return 9


def encode_command(cmd: c.Command) -> dict[str, Any]:
    """A command as a raft log entry."""
    if c.KINDS.get(cmd.KIND) is not type(cmd):
        raise TypeError(f"{type(cmd).__name__} is not a registered command")
    flat = {f.name: _encode_field(getattr(cmd, f.name)) for f in fields(cmd)}
    layout = _LAYOUTS.get(type(cmd))
    body = layout[0](flat) if layout else flat
    return {"op": cmd.KIND, "v": cmd.needs_version(), **body}


def _encode_field(value: Any) -> Any:
    # Objects inside commands travel without their stamps: apply sets those.
    return to_plain(value, meta=False) if isinstance(value, Meta) else to_plain(value)


def decode_command(entry: Any) -> c.Command:
    """A raft log entry as a command; raises Unsupported or Malformed, and nothing else."""
    if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
        raise Malformed("a command is a dict with an 'op'")
    kind = entry["op"]
    version = entry.get("v", UNTAGGED_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Malformed(f"command {kind}: bad version {version!r}")
    cls = c.KINDS.get(kind)
    if cls is None:
        raise Unsupported(f"unknown command kind {kind!r} (state version {version})")
    if version > c.STATE_VERSION:
        raise Unsupported(f"command {kind} of state version {version}; this manager supports {c.STATE_VERSION}")
    layout = _LAYOUTS.get(cls)
    try:
        # No request id: no idempotency record (never a random one, which would differ per member).
        flat = {"rid": "", **(layout[1](entry) if layout else entry)}
        cmd: c.Command = from_plain(cls, flat, strict="v" in entry)
    except Malformed:
        raise
    except Exception as e:  # anything odd in a peer's entry is a malformed entry, not a crash
        raise Malformed(f"command {kind}: {e}") from e
    return cmd


# --- results (kept per request id, so they are part of snapshots) ------------------------------------

_RESULT_TYPES: dict[str, type[Any]] = {"Cluster": Cluster, "Node": Node, "Secret": Secret, "Service": Service}


def _encode_result(result: Result) -> dict[str, Any]:
    if isinstance(result, Err):
        return {"err": [result.kind, result.message]}
    value = result.value
    if isinstance(value, Secret):
        value = value.public()
    if type(value).__name__ in _RESULT_TYPES:
        return {"ok": to_plain(value), "type": type(value).__name__}
    return {"ok": value}


def _decode_result(data: Any) -> Result:
    if not isinstance(data, dict):
        raise Malformed("a result is a dict")
    if "err" in data:
        kind, message = data["err"]
        return Err(str(kind), str(message))
    value = data.get("ok")
    typ = data.get("type")
    if typ is None and isinstance(value, dict):
        typ = _guess_type(value)  # results written before they carried their type
    if typ is not None:
        cls = _RESULT_TYPES.get(typ)
        if cls is None:
            raise Malformed(f"unknown result type {typ!r}")
        if cls is Secret:
            value = {"data": b"", **(value or {})}
        value = from_plain(cls, value)
    return Ok(value)


def _guess_type(value: dict[str, Any]) -> str:
    for key, typ in (("root_ca_cert", "Cluster"), ("role", "Node"), ("mode", "Service"), ("key_id", "Secret")):
        if key in value:
            return typ
    raise Malformed(f"a result of unknown shape: {sorted(value)}")


# --- snapshots -------------------------------------------------------------------------------------
#
# Two forms. The whole-state form (``encode_snapshot``: one dict) is what backups hold and what
# members before state version 5 write and read. The framed form (``snapshot_frames``) is a
# stream of small plain-data frames: a header, then each table in batches of rows, then an end
# frame with the row counts. A member writes it without building the state a second time, and
# reads it back one frame at a time, so neither side holds more than the state plus one frame.
# Secrets and request records, the tables that grow, are tuples in the column order the header
# names instead of one dict per object.

_TABLES: tuple[tuple[str, type[Any]], ...] = (("nodes", Node), ("secrets", Secret), ("services", Service),
                                               ("tasks", Task))
FRAMED = "frames"  # the header's "format"
FRAME_ROWS = 1000  # rows per frame: a frame stays well under a megabyte
SECRET_COLUMNS = ("id", "name", "data", "key_id", "labels", "created_at", "updated_at", "version")
REQUEST_COLUMNS = ("rid", "ts", "result")
# The version that introduced the framed form: written only once every manager reads it.
FRAMED_SINCE = 5


def _versioning(tables: Tables, applied_index: int) -> dict[str, Any]:
    """The snapshot's state version, and the store's version counter when a reader cannot derive
    it from the applied index. Only a batch moves the counter past the applied index; until then
    a member of version 5 reads the snapshot as it reads its own."""
    if tables.last_version > applied_index:
        return {"state_version": BATCH_SINCE, "last_version": tables.last_version}
    return {"state_version": FRAMED_SINCE}


def _last_version(data: dict[str, Any], applied_index: int) -> int:
    last = data.get("last_version", applied_index)
    if type(last) is not int:
        raise Malformed("the snapshot's last_version is not an int")
    return last


def encode_snapshot(tables: Tables, applied_index: int) -> dict[str, Any]:
    """The whole-state form (backups; swarms with a manager before state version 5)."""
    state: dict[str, Any] = {name: {oid: to_plain(o) for oid, o in getattr(tables, name).items()}
                             for name, _ in _TABLES}
    state["cluster"] = to_plain(tables.cluster) if tables.cluster else None
    state["removed_nodes"] = dict(tables.removed_nodes)
    state["requests"] = {rid: {"result": _encode_result(r.result), "ts": r.ts} for rid, r in tables.requests.items()}
    return {**_versioning(tables, applied_index), "applied_index": applied_index, "state": state}


def decode_snapshot(data: Any) -> tuple[Tables, int]:
    """The tables and applied index of a whole-state snapshot (empty for None, as raft restores "nothing")."""
    if not data:
        return Tables(), 0
    if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
        raise Malformed("a snapshot is a dict with a 'state'")
    _check_version(data.get("state_version", UNTAGGED_VERSION))
    state = data["state"]
    tables = Tables()
    for name, cls in _TABLES:
        table = state.get(name) or {}
        if not isinstance(table, dict):
            raise Malformed(f"snapshot table {name} is not a dict")
        getattr(tables, name).update({oid: _shared(from_plain(cls, o)) for oid, o in table.items()})
    tables.cluster = from_plain(Cluster, state["cluster"]) if state.get("cluster") else None
    tables.removed_nodes = {str(k): int(v) for k, v in (state.get("removed_nodes") or {}).items()}
    tables.requests = {str(rid): Request(_decode_result(r["result"]), int(r.get("ts", 0)))
                       for rid, r in (state.get("requests") or {}).items()}
    applied_index = int(data.get("applied_index", 0))
    tables.last_version = _last_version(data, applied_index)
    return tables, applied_index


def _check_version(version: Any) -> None:
    if not isinstance(version, int) or version > c.STATE_VERSION:
        raise SnapshotTooNew(f"the snapshot has state version {version}; this manager supports "
                             f"{c.STATE_VERSION}: upgrade it")


def _shared(obj: Any) -> Any:
    """A decoded secret with the strings many secrets repeat (the data key id) shared."""
    if isinstance(obj, Secret) and sys.intern(obj.key_id) is not obj.key_id:
        return replace(obj, key_id=sys.intern(obj.key_id))
    return obj


def snapshot_frames(tables: Tables, applied_index: int) -> Iterator[Any]:
    """The framed form, produced lazily (a snapshot child encodes one frame at a time)."""
    yield {"format": FRAMED, **_versioning(tables, applied_index), "applied_index": applied_index,
           "columns": {"secrets": list(SECRET_COLUMNS), "requests": list(REQUEST_COLUMNS)}}
    yield "cluster", to_plain(tables.cluster) if tables.cluster else None
    yield "removed_nodes", dict(tables.removed_nodes)
    for name in ("nodes", "services", "tasks"):
        yield from _batches(name, (to_plain(o) for o in getattr(tables, name).values()))
    yield from _batches("secrets", (_secret_row(s) for s in tables.secrets.values()))
    yield from _batches("requests", ((rid, r.ts, _result_row(r.result)) for rid, r in tables.requests.items()))
    yield "end", {name: len(getattr(tables, name)) for name in _ROW_TABLES}


_ROW_TABLES = ("nodes", "services", "tasks", "secrets", "requests")
NO_SECRETS: Mapping[str, Secret] = {}


def _batches(name: str, rows: Iterator[Any]) -> Iterator[tuple[str, list[Any]]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == FRAME_ROWS:
            yield name, batch
            batch = []
    if batch:
        yield name, batch


def _secret_row(s: Secret) -> tuple[Any, ...]:
    return (s.id, s.name, s.data, s.key_id, dict(s.labels) if s.labels else None, s.created_at, s.updated_at,
            s.version)


def _secret_from_row(row: Any, held: Mapping[str, Secret]) -> Secret:
    """A secret from its row; strings and labels equal to those of the secret ``held`` under the
    same id are shared with it (a remembered outcome is the public form of a held secret)."""
    if type(row) is not tuple or len(row) != len(SECRET_COLUMNS):
        raise Malformed("a snapshot secret is a row of its columns")
    sid, name, data, key_id, labels, created_at, updated_at, version = row
    if not (type(sid) is str and type(name) is str and type(data) is bytes and type(key_id) is str
            and type(created_at) is int and type(updated_at) is int and type(version) is int):
        raise Malformed(f"snapshot secret {sid!r}: a field of the wrong type")
    if labels is None:
        labels = NO_LABELS
    elif not (type(labels) is dict and all(type(k) is str and type(v) is str for k, v in labels.items())):
        raise Malformed(f"snapshot secret {sid}: labels are not a map of strings")
    if updated_at == created_at:
        updated_at = created_at
    same = held.get(sid)
    if same is not None:
        sid = same.id
        if same.name == name:
            name = same.name
        if same.labels == labels:
            labels = same.labels
        if same.created_at == created_at:
            created_at = same.created_at
        if same.updated_at == updated_at:
            updated_at = same.updated_at
        if same.version == version:
            version = same.version
    return Secret(id=sid, name=name, data=data, key_id=sys.intern(key_id), labels=labels,
                  created_at=created_at, updated_at=updated_at, version=version)


def _result_row(result: Result) -> tuple[Any, ...]:
    """A remembered outcome: ("err", kind, message), ("secret", row) for the public secret most
    of them are, or ("ok", type name or None, plain value)."""
    if isinstance(result, Err):
        return "err", result.kind, result.message
    value = result.value
    if isinstance(value, Secret):
        return "secret", _secret_row(value.public())
    if type(value).__name__ in _RESULT_TYPES:
        return "ok", type(value).__name__, to_plain(value)
    return "ok", None, value


def _result_from_row(row: Any, secrets: Mapping[str, Secret]) -> Result:
    if type(row) is not tuple or not row:
        raise Malformed("a snapshot result is a tuple")
    if row[0] == "err" and len(row) == 3:
        return Err(str(row[1]), str(row[2]))
    if row[0] == "secret" and len(row) == 2:
        return Ok(_secret_from_row(row[1], secrets))
    if row[0] == "ok" and len(row) == 3:
        typ, value = row[1], row[2]
        if typ is not None:
            cls = _RESULT_TYPES.get(typ)
            if cls is None:
                raise Malformed(f"unknown result type {typ!r}")
            value = from_plain(cls, value)
        return Ok(value)
    raise Malformed(f"a snapshot result of unknown shape {row[0]!r}")


def restore_frames(frames: Iterable[Any]) -> tuple[Tables, int]:
    """The tables and applied index of a framed snapshot, read one frame at a time. A single
    frame that is not a framed header is a whole-state snapshot (written before version 5)."""
    it = iter(frames)
    head = next(it, None)
    if not (isinstance(head, dict) and head.get("format") == FRAMED):
        if next(it, None) is not None:
            raise Malformed("a whole-state snapshot is a single frame")
        return decode_snapshot(head)
    _check_version(head.get("state_version"))
    if head.get("columns") != {"secrets": list(SECRET_COLUMNS), "requests": list(REQUEST_COLUMNS)}:
        raise Malformed(f"snapshot columns {head.get('columns')!r} are not this version's")
    tables = Tables()
    for frame in it:
        if not (type(frame) is tuple and len(frame) == 2 and isinstance(frame[0], str)):
            raise Malformed("a snapshot frame is a (table, rows) pair")
        kind, body = frame
        if kind == "end":
            _check_counts(tables, body)
            if next(it, None) is not None:
                raise Malformed("frames after the end of the snapshot")
            applied_index = int(head.get("applied_index", 0))
            tables.last_version = _last_version(head, applied_index)
            return tables, applied_index
        _load_frame(tables, kind, body)
    raise Malformed("the snapshot ends before its end frame")


def _load_frame(tables: Tables, kind: str, body: Any) -> None:
    if kind == "cluster":
        tables.cluster = from_plain(Cluster, body) if body else None
        return
    if kind == "removed_nodes":
        if not isinstance(body, dict):
            raise Malformed("snapshot removed_nodes is not a map")
        tables.removed_nodes = {str(k): int(v) for k, v in body.items()}
        return
    if not isinstance(body, list):
        raise Malformed(f"snapshot frame {kind!r}: rows are a list")
    if kind == "secrets":
        secrets = tables.secrets
        for row in body:
            secret = _secret_from_row(row, NO_SECRETS)
            secrets[secret.id] = secret
    elif kind == "requests":
        requests = tables.requests
        for row in body:
            if not (type(row) is tuple and len(row) == 3 and type(row[0]) is str and type(row[1]) is int):
                raise Malformed("a snapshot request record is a (rid, ts, result) row")
            result = _result_from_row(row[2], tables.secrets)
            ts = row[1]
            if isinstance(result, Ok) and isinstance(result.value, Secret) and result.value.created_at == ts:
                ts = result.value.created_at  # one int object for both
            requests[row[0]] = Request(result, ts)
    elif kind in ("nodes", "services", "tasks"):
        cls = dict(_TABLES)[kind]
        table = getattr(tables, kind)
        for row in body:
            obj = from_plain(cls, row)
            table[obj.id] = obj
    else:
        raise Malformed(f"unknown snapshot frame {kind!r}")


def _check_counts(tables: Tables, counts: Any) -> None:
    if not isinstance(counts, dict):
        raise Malformed("the snapshot's end frame holds the row counts")
    for name in _ROW_TABLES:
        if counts.get(name) != len(getattr(tables, name)):
            raise Malformed(f"snapshot table {name}: {len(getattr(tables, name))} rows, "
                            f"the end frame says {counts.get(name)}")


# --- the store as raft sees it -----------------------------------------------------------------------

class LogStateMachine:
    """The store behind the raft node's state-machine interface: plain-data entries and snapshots
    in, typed commands and tables inside."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def apply(self, entry: Any, index: int) -> Result | list[Result]:
        """The outcome of a command entry; of a batch entry, the list of its commands' outcomes
        in order (or one error for the whole entry, when it is not a well-formed batch)."""
        if isinstance(entry, dict) and entry.get("op") == BATCH_OP:
            return self._apply_batch(entry, index)
        return self._apply_one(entry, index)

    def _apply_one(self, entry: Any, index: int) -> Result:
        try:
            cmd = decode_command(entry)
        except (Unsupported, Malformed) as e:
            return self.store.refuse(index, str(e))
        return self.store.apply(cmd, index)

    def _apply_batch(self, entry: dict[str, Any], index: int) -> Result | list[Result]:
        version, cmds = entry.get("v"), entry.get("cmds")
        if type(version) is not int or version > c.STATE_VERSION:
            return self.store.refuse(index, f"a batch of state version {version!r}; this manager supports "
                                            f"{c.STATE_VERSION}")
        if not isinstance(cmds, list) or set(entry) != {"op", "v", "cmds"}:
            return self.store.refuse(index, "a batch is {op, v, cmds} with a list of commands")
        return [self._apply_one(cmd, index) for cmd in cmds]

    def snapshot(self) -> Iterator[Any] | dict[str, Any]:
        """The state for the raft snapshot file: an iterator of frames once every manager reads
        them, else the whole-state dict. Runs in a forked child: reads the tables without the lock
        (the fork never inherits a held one)."""
        tables = self.store.tables()
        managers = [n for n in tables.nodes.values() if n.role == "manager"]
        if c.supported_version(managers) >= FRAMED_SINCE:
            return snapshot_frames(tables, self.store.applied_index)
        return encode_snapshot(tables, self.store.applied_index)

    def restore(self, data: Any) -> None:
        """Replace the state with a snapshot: frames (as ``snapshot`` gives them), a whole-state
        dict, or None (raft restores "nothing")."""
        with _collector_paused():
            tables, index = decode_snapshot(data) if data is None or isinstance(data, dict) else restore_frames(data)
        self.store.load(tables, index)
        return_freed_memory()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Building a hundred thousand objects that all stay alive sets off the cyclic garbage
    collector every few hundred of them, each pass over objects that can only survive: a fifth
    of a snapshot's load. It runs again once the load is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
