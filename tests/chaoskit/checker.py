"""Pure checks from a recorded history to anomalies.

Every check is a necessary condition of linearizability (or of the delivery contract), so every anomaly
is a real bug, never a harness artefact: sound, not complete. An op may take effect anywhere between
its start and its end; an indeterminate op (``info``) anywhere from its start on, forever. Names are
unique regardless of case, as the store enforces.

Results are ``{anomaly kind: [evidence, ...]}``; an empty dict means no anomaly.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INF = math.inf
Anomalies = dict[str, list[dict[str, Any]]]
Entry = tuple[str, str]  # (name, id) as a list shows it


@dataclass(frozen=True)
class Op:
    """One client operation: ``f`` is create, remove, list, svc-update or svc-read.

    Values: create ok -> the id, fail -> "conflict" or the error; remove fail -> "not-found" or the error;
    list ok -> [(name, id)]; svc-update -> {"target", "cond" (the service version it was conditioned
    on), "version" (the new one, if ok)}, with ``name`` the secret it binds at that target.
    """

    process: int
    f: str
    name: str = ""
    start: float = 0.0
    end: float = 0.0
    type: str = "ok"
    value: Any = None
    node: str = ""

    @property
    def until(self) -> float:
        """The latest moment the op may take effect."""
        return INF if self.type == "info" else self.end

    @property
    def key(self) -> str:
        return self.name.lower()

    def brief(self) -> dict[str, Any]:
        d: dict[str, Any] = {"process": self.process, "f": self.f, "name": self.name, "type": self.type,
                             "start": round(self.start, 3), "end": round(self.end, 3), "node": self.node}
        if self.f != "list":
            d["value"] = self.value
        return d


@dataclass(frozen=True)
class FileObs:
    """A secret file on a worker: where, what bytes (a hash), owner, mode, on tmpfs or not."""

    task: str
    target: str
    sha: str
    uid: int
    gid: int
    mode: int
    tmpfs: bool = True


@dataclass(frozen=True)
class Snapshot:
    """Everything under one worker's tasks/ at one poll (an empty tuple: nothing there). The read
    began at ``t`` and ended at ``t_end`` (None: at once): a file it saw was there at some moment
    in between, not necessarily at ``t``."""

    worker: str
    t: float
    files: tuple[FileObs, ...] = ()
    t_end: float | None = None

    @property
    def until(self) -> float:
        return self.t if self.t_end is None else self.t_end


@dataclass(frozen=True)
class Cut:
    """Managers cut off from a majority between start and end: they must acknowledge nothing meanwhile."""

    nodes: frozenset[str]
    start: float
    end: float


@dataclass(frozen=True)
class Expected:
    """A file a worker must hold at the end."""

    sha: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o444


@dataclass
class _Found:
    kinds: Anomalies = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, **evidence: Any) -> None:
        self.kinds[kind].append(evidence)

    def result(self) -> Anomalies:
        return {k: v for k, v in self.kinds.items() if v}


def merge(*results: Anomalies) -> Anomalies:
    out: Anomalies = defaultdict(list)
    for r in results:
        for kind, items in r.items():
            out[kind].extend(items)
    return dict(out)


def _between(a: Op, r: Op, b: Op) -> bool:
    """Whether r may take effect after a and before b, each within its own interval."""
    m = max(a.start, r.start)
    return m <= r.until and m <= b.until


def _group(ops: Iterable[Op]) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        out[o.key].append(o)
    return out


# --- the secrets history ---------------------------------------------------------------------------


def check_history(ops: Sequence[Op], finals: Mapping[str, Sequence[Entry]],
                  linearizable_lists: bool = True) -> Anomalies:
    """Creates, removes and lists against each other and against the final read of every manager."""
    found = _Found()
    creates = [o for o in ops if o.f == "create"]
    ok_creates = [c for c in creates if c.type == "ok"]
    creates_by_name = _group(creates)
    ok_by_name = _group(ok_creates)
    removes = [o for o in ops if o.f == "remove"]
    effective_removes = _group(r for r in removes if r.type in ("ok", "info"))
    ok_removes = _group(r for r in removes if r.type == "ok")
    lists = [o for o in ops if o.f == "list" and o.type == "ok"]
    by_id: dict[str, list[Op]] = defaultdict(list)
    for c in ok_creates:
        by_id[str(c.value)].append(c)

    for sid, cs in by_id.items():
        if len(cs) > 1:
            found.add("duplicate-id", id=sid, ops=[c.brief() for c in cs])

    reads: list[tuple[str, float, Sequence[Entry]]] = [
        (f"list p{o.process}@{o.node}", o.end, [tuple(e) for e in o.value]) for o in lists]
    reads += [(f"final@{node}", INF, entries) for node, entries in finals.items()]
    unknown_ids: dict[str, set[str]] = defaultdict(set)
    for label, end, entries in reads:
        names = Counter(name.lower() for name, _ in entries)
        for name, n in names.items():
            if n > 1:
                found.add("duplicate-name", read=label, name=name, times=n)
        for sid, n in Counter(sid for _, sid in entries).items():
            if n > 1:
                found.add("duplicate-id", read=label, id=sid, times=n)
        for name, sid in entries:
            if sid in by_id:
                c = by_id[sid][0]
                if c.key != name.lower():
                    found.add("id-changed-name", read=label, id=sid, listed_as=name, created=c.brief())
                if c.start > end:
                    found.add("read-from-future", read=label, read_end=round(end, 3), id=sid, create=c.brief())
                continue
            infos = [c for c in creates_by_name.get(name.lower(), []) if c.type == "info"]
            if not any(c.start <= end for c in infos):
                found.add("phantom", read=label, name=name, id=sid)
            unknown_ids[name.lower()].add(sid)
    for name, sids in unknown_ids.items():
        infos = [c for c in creates_by_name.get(name, []) if c.type == "info"]
        if infos and len(sids) > len(infos):
            found.add("phantom", name=name, ids=sorted(sids), indeterminate_creates=len(infos))

    for node, entries in finals.items():
        ids = {sid for _, sid in entries}
        for c in ok_creates:
            if str(c.value) not in ids and not any(r.until >= c.start for r in effective_removes.get(c.key, [])):
                found.add("lost", node=node, create=c.brief())
        for name, rs in ok_removes.items():
            for r in rs:
                for c in ok_by_name.get(name, []):
                    if r.start > c.end and str(c.value) in ids:
                        found.add("resurrected", node=node, create=c.brief(), remove=r.brief())

    if len({frozenset(tuple(e) for e in entries) for entries in finals.values()}) > 1:
        sets = {node: {tuple(e) for e in entries} for node, entries in finals.items()}
        union = set().union(*sets.values())
        found.add("managers-disagree", missing={node: sorted(union - s) for node, s in sets.items() if union - s})

    for name, cs in ok_by_name.items():
        rs = effective_removes.get(name, [])
        for i, a in enumerate(cs):
            for b in cs[i + 1:]:
                if a.value == b.value:
                    continue
                if not any(_between(a, r, b) or _between(b, r, a) for r in rs):
                    found.add("double-create", name=name, creates=[a.brief(), b.brief()])

    for c in creates:
        if c.type == "fail" and c.value == "conflict":
            rivals = [o for o in creates_by_name[c.key] if o is not c and o.type in ("ok", "info") and o.start <= c.end]
            if not rivals:
                found.add("spurious-conflict", create=c.brief())

    for r in removes:
        if r.type != "fail" or r.value != "not-found":
            continue
        for c in ok_by_name.get(r.key, []):
            if c.end < r.start and not any(_between(c, r2, r) for r2 in effective_removes.get(r.key, [])
                                           if r2 is not r):
                found.add("stale-not-found", remove=r.brief(), create=c.brief())
                break

    if linearizable_lists:
        for lst in lists:
            ids = {sid for _, sid in lst.value}
            for c in ok_creates:
                if c.end < lst.start and str(c.value) not in ids and not any(
                        _between(c, r, lst) for r in effective_removes.get(c.key, [])):
                    found.add("stale-list", list=lst.brief(), missing=c.brief())
            for _name, sid in lst.value:
                for c in by_id.get(sid, [])[:1]:
                    for r in ok_removes.get(c.key, []):
                        if r.start > c.end and r.end < lst.start:
                            found.add("stale-list", list=lst.brief(), removed=c.brief(), remove=r.brief())
    return found.result()


def check_minority(ops: Sequence[Op], cuts: Sequence[Cut]) -> Anomalies:
    """A manager cut off from the majority must not acknowledge anything that started after the cut
    and returned before the heal: every write needs a majority, every read a barrier through one."""
    found = _Found()
    for cut in cuts:
        for o in ops:
            if o.node in cut.nodes and o.type == "ok" and o.start >= cut.start and o.end <= cut.end:
                found.add("minority-ack", op=o.brief(), cut=sorted(cut.nodes),
                          cut_start=round(cut.start, 3), cut_end=round(cut.end, 3))
    return found.result()


# --- service bindings and worker tmpfs --------------------------------------------------------------


def binding_windows(ops: Sequence[Op]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """When each secret may be bound at each target: ``{(target, secret name): [(from, to), ...]}``.

    From the start of an update that binds it (ok or info: an info one may apply at any time after).
    Until the end of an acknowledged update that binds something else there and must apply after it:
    updates are conditioned on the service version, so an ok update conditioned on version V comes
    after every update that produced a version <= V, and kills every pending update conditioned on
    a version <= V (it can no longer apply). With no such update the window stays open.
    """
    updates = [o for o in ops if o.f == "svc-update" and o.type in ("ok", "info")]
    oks = [o for o in updates if o.type == "ok" and int(o.value.get("cond", 0)) > 0]
    windows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for u in updates:
        target = u.value["target"]
        floor = int(u.value["version"]) if u.type == "ok" else int(u.value["cond"])
        enders = [v.end for v in oks if v is not u and v.value["target"] == target and v.key != u.key
                  and int(v.value["cond"]) >= floor]
        windows[(target, u.name)].append((u.start, min(enders, default=INF)))
    return dict(windows)


def delivery_deadline(t: float, disruptions: Sequence[tuple[float, float]], grace: float,
                      reconnect: float) -> float:
    """By when a worker must have caught up with a change acknowledged at t: ``grace`` later, or, if a
    disruption (fault, leader change) overlaps that, ``reconnect`` after the disruption ended."""
    deadline = t + grace
    for _ in range(len(disruptions) + 1):
        later = [end + reconnect for start, end in disruptions if start <= deadline < end + reconnect]
        if not later:
            break
        deadline = max(later)
    return deadline


def check_workers(snapshots: Sequence[Snapshot], windows: Mapping[tuple[str, str], Sequence[tuple[float, float]]],
                  names_by_sha: Mapping[str, str], meta: Mapping[str, tuple[int, int, int]],
                  disruptions: Sequence[tuple[float, float]], grace: float, reconnect: float) -> Anomalies:
    """Every file seen on a worker holds the bytes of a secret bound at that target at that moment
    (within the delivery deadline after its binding ended), with the bound owner and mode."""
    found = _Found()
    bad: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for snap in snapshots:
        for f in snap.files:
            name = names_by_sha.get(f.sha)
            if name is None:
                bad[("worker-wrong-bytes", snap.worker, f.target, f.sha)].append(snap.t)
                continue
            if meta.get(f.target) is not None and (f.uid, f.gid, f.mode) != meta[f.target]:
                bad[("worker-wrong-mode", snap.worker, f.target, f"{f.uid}:{f.gid} {f.mode:o}")].append(snap.t)
            spans = windows.get((f.target, name), [])
            # Outside only if no moment of the read falls inside a window.
            if not any(lo <= snap.until and snap.t <= delivery_deadline(hi, disruptions, grace, reconnect)
                       for lo, hi in spans):
                bad[("worker-outside-window", snap.worker, f.target, name)].append(snap.t)
    for (kind, worker, target, what), times in bad.items():
        found.add(kind, worker=worker, target=target, what=what, first=round(min(times), 3),
                  last=round(max(times), 3), polls=len(times),
                  windows=[(round(lo, 3), hi if hi == INF else round(hi, 3))
                           for lo, hi in windows.get((target, what), [])])
    return found.result()


def check_worker_final(final: Mapping[str, Snapshot], expected: Mapping[str, Expected]) -> Anomalies:
    """At quiescence each worker holds exactly one task dir, on tmpfs, with exactly the bound files."""
    found = _Found()
    for worker, snap in sorted(final.items()):
        tasks = sorted({f.task for f in snap.files})
        if len(tasks) > 1:
            found.add("worker-extra-at-end", worker=worker, tasks=tasks)
        by_target: dict[str, list[FileObs]] = defaultdict(list)
        for f in snap.files:
            by_target[f.target].append(f)
            if not f.tmpfs:
                found.add("worker-not-tmpfs", worker=worker, task=f.task, target=f.target)
        for target, exp in sorted(expected.items()):
            files = by_target.pop(target, [])
            if not files:
                found.add("worker-missing-at-end", worker=worker, target=target)
            for f in files:
                if f.sha != exp.sha:
                    found.add("worker-wrong-bytes", worker=worker, target=target, sha=f.sha, expected=exp.sha)
                if (f.uid, f.gid, f.mode) != (exp.uid, exp.gid, exp.mode):
                    found.add("worker-wrong-mode", worker=worker, target=target,
                              got=f"{f.uid}:{f.gid} {f.mode:o}", expected=f"{exp.uid}:{exp.gid} {exp.mode:o}")
        for target, files in sorted(by_target.items()):
            found.add("worker-extra-at-end", worker=worker, target=target, tasks=sorted({f.task for f in files}))
    return found.result()


def check_untouched(snapshots: Sequence[Snapshot], worker: str, start: float, end: float) -> Anomalies:
    """A worker cut off from every manager keeps its files exactly as they were (Swarm's rule)."""
    found = _Found()
    during = sorted((s for s in snapshots if s.worker == worker and start <= s.t <= end), key=lambda s: s.t)
    if not during:
        return {}
    first = set(during[0].files)
    for s in during[1:]:
        if set(s.files) != first:
            found.add("worker-changed-while-cut", worker=worker, t=round(s.t, 3),
                      before=sorted(f.target + "=" + f.sha for f in first),
                      after=sorted(f.target + "=" + f.sha for f in s.files))
            break
    return found.result()
