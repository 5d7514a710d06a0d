"""The history and what fills it: client threads, the worker tmpfs poller and the leader monitor.

Clients talk to a manager's unix socket with the local API client, as the CLI does, and retry with the
same request_id under the CLI's own retry policy, swarmsecrets/client/retry.py (that is the contract
under test: a retried create never reports a false conflict). Recording, as Jepsen does: one clock (this process's
time.monotonic, shifted to the run's start); ``fail`` only when the request certainly did not happen
(never sent, or a definite refusal such as "already exists"); anything that may have happened is ``info``.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any


from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from tests.chaoskit.checker import FileObs, Op, Snapshot
from swarmsecrets.client import DEFAULT_RETRY, LocalClient, LocalError, Status
from tests.chaoskit.swarm import SERVICE, Swarm, secret_ref
from tests.framework import Node

# Per attempt: longer than the daemon's own propose (5 s) plus read barrier (5 s) waits.
ATTEMPT_TIMEOUT = 12.0
CONTENDED = [f"C_{i}" for i in range(8)]  # "_" and capitals never prefix an id, so no id-prefix match
TARGET = "cur"
ROTATE_EVERY = 10.0


class History:
    """Records in memory and, line by line, in history.jsonl; times are seconds since the run began."""

    def __init__(self, path: Path) -> None:
        self.t0 = time.monotonic()
        self.wall_t0 = time.time()  # to find a history time in the daemons' logs
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "w", encoding="utf-8")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, default=str)
        with self._lock:
            self.records.append(rec)
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if r["kind"] == kind]

    def ops(self) -> list[Op]:
        return [op_from(r) for r in self.of("op")]

    def snapshots(self) -> list[Snapshot]:
        return [snapshot_from(r) for r in self.of("poll")]


def op_from(r: dict[str, Any]) -> Op:
    return Op(process=r["process"], f=r["f"], name=r.get("name", ""), start=r["start"], end=r["end"],
              type=r["type"], value=r.get("value"), node=r.get("node", ""))


def snapshot_from(r: dict[str, Any]) -> Snapshot:
    return Snapshot(r["worker"], r["t"], tuple(FileObs(**f) for f in r["files"]), t_end=r.get("t_end"))


def record_op(history: History, op: Op, error: str = "") -> None:
    rec: dict[str, Any] = {"kind": "op", **asdict(op)}
    if error:
        rec["error"] = error
    history.record(rec)


def _definite(failure: LocalError, retried: bool) -> str | None:
    """The value of a refusal that says the request did not happen, else None. The outcome refusals
    (conflict, not found, invalid, out of sequence) speak for the request_id, so for every attempt, and
    the checker tests that claim; a refusal about the daemon's state (not a manager, locked, ...) speaks
    only for the last attempt, so after an earlier attempt that may have landed it settles nothing."""
    code, details = failure.code, failure.message or failure.code.name
    if code is Status.ALREADY_EXISTS:
        return "conflict"
    if code is Status.NOT_FOUND:
        return "not-found"
    if code is Status.INVALID_ARGUMENT:
        return details
    if isinstance(failure.error(), errors.UpdateOutOfSequence):
        return "out-of-sequence"
    if code in (Status.FAILED_PRECONDITION, Status.PERMISSION_DENIED) and not retried:
        return details
    return None


def write(call: Callable[[float], Any], stop_by: float) -> tuple[str, Any, str]:
    """One logical write as the CLI makes it: the caller fixed the request_id; transient failures are
    retried with the same id under the CLI's retry policy (swarmsecrets/client/retry.py). One difference:
    a write whose first attempt could not connect is ``fail`` at once instead of waiting for a dead daemon
    to come back, which would teach the checker nothing and stall a quarter of the workload per dead
    manager. Once an attempt may have reached a daemon, connection failures are retried like the rest (a
    killed manager comes back, and the retry must then see the first outcome). Returns (type, response or
    value, error text)."""
    delays = DEFAULT_RETRY.delays(stop_by)
    maybe_sent = False
    while True:
        try:
            return "ok", call(ATTEMPT_TIMEOUT), ""
        except LocalError as e:
            failure = e
            details = e.message or e.code.name
        never_sent = not failure.reached
        if never_sent and not maybe_sent:
            return "fail", None, details
        value = _definite(failure, maybe_sent)
        if value is not None:
            return "fail", value, details
        maybe_sent = maybe_sent or not never_sent
        delay = next(delays, None) if DEFAULT_RETRY.is_transient(failure) else None
        if delay is None:
            return ("info" if maybe_sent else "fail"), None, details
        time.sleep(delay)


def read(call: Callable[[float], Any]) -> tuple[str, Any, str]:
    """A read is one attempt (the CLI does not retry reads); failing changes nothing, so it is ``fail``."""
    try:
        return "ok", call(ATTEMPT_TIMEOUT), ""
    except LocalError as e:
        return "fail", None, e.message or e.code.name


class ServiceFlipper:
    """Service secret updates from one client: ``--secret-rm <pool> --secret-add source=Y,target=cur``,
    conditioned on the service version so that an indeterminate update cannot apply after a later
    acknowledged one (see checker.binding_windows)."""

    def __init__(self, pool: Sequence[str], version: int, bound: str) -> None:
        self.pool = list(pool)
        self.version = version
        self.bound = bound
        self.stale = False
        # Not rebinding the last few keeps each secret's windows apart, so a secret left on a worker is
        # soon outside all of them.
        self.recent: collections.deque[str] = collections.deque([bound], maxlen=len(self.pool) // 2)

    def refresh(self, history: History, process: int, m: Node, control: Any) -> bool:
        start = history.now()
        kind, resp, err = read(lambda t: control.GetService(control_pb2.GetServiceRequest(service_id=SERVICE),
                                                            timeout=t))
        value = None
        if kind == "ok":
            bound = {r.file.name: r.secret_name for r in resp.service.spec.secrets}
            self.version, self.bound, self.stale = int(resp.service.version.index), bound.get(TARGET, ""), False
            value = {"version": self.version, "bound": bound}
        record_op(history, Op(process, "svc-read", SERVICE, start, history.now(), kind, value, m.name), err)
        return kind == "ok"

    def update(self, history: History, process: int, m: Node, control: Any, rng: random.Random,
               stop_by: float) -> None:
        if self.stale and not self.refresh(history, process, m, control):
            return
        fresh = [s for s in self.pool if s != self.bound and s not in self.recent]
        new = rng.choice(fresh or [s for s in self.pool if s != self.bound])
        cond = self.version
        req = control_pb2.UpdateServiceRequest(
            service_id=SERVICE, service_version=objects_pb2.Version(index=cond), secret_rm=self.pool,
            secret_add=[secret_ref(new, TARGET)], request_id=uuid.uuid4().hex)
        start = history.now()
        kind, resp, err = write(lambda t: control.UpdateService(req, timeout=t), stop_by)
        value: dict[str, Any] = {"target": TARGET, "cond": cond}
        if kind == "ok":
            self.version, self.bound = int(resp.service.version.index), new
            self.recent.append(new)
            value["version"] = self.version
        else:
            self.stale = True
        record_op(history, Op(process, "svc-update", new, start, history.now(), kind, value, m.name), err)


class ClientProcess:
    """One of the workload's processes (a thread): paced ops against its own manager, Jepsen style, so
    that clients stuck on a paused or cut-off manager do not stall those of the others. Every
    ROTATE_EVERY s each client moves on to the next manager, so with more managers than clients every
    manager still serves some."""

    def __init__(self, process: int, swarm: Swarm, history: History, rate: float, seed: int,
                 stop: threading.Event, flipper: ServiceFlipper | None) -> None:
        self.process = process
        self.swarm = swarm
        self.history = history
        self.interval = 1.0 / rate
        self.rng = random.Random(seed)
        self.stop = stop
        self.flipper = flipper
        self.seq = 0
        self.channels: dict[str, LocalClient] = {}

    def control(self, m: Node) -> Any:
        if m.name not in self.channels:
            self.channels[m.name] = channel(m)
        return self.channels[m.name].control

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self.stop.is_set():
                self.one()
                next_at = max(next_at + self.interval * self.rng.uniform(0.5, 1.5), time.monotonic() - 1.0)
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            for ch in self.channels.values():
                ch.close()

    def one(self) -> None:
        managers = self.swarm.managers
        m = managers[(self.process + int(self.history.now() // ROTATE_EVERY)) % len(managers)]
        control = self.control(m)
        roll = self.rng.random()
        if self.flipper is not None and roll < 0.2:
            self.flipper.update(self.history, self.process, m, control, self.rng, self.stop_by())
        elif roll < 0.5:
            self.seq += 1
            self.create(m, control, f"U_{self.process}_{self.seq}")
        elif roll < 0.68:
            self.create(m, control, self.rng.choice(CONTENDED))
        elif roll < 0.84:
            self.remove(m, control, self.rng.choice(CONTENDED))
        else:
            self.list(m, control)

    def stop_by(self) -> float:
        """Retries never outlive the run by more than one retry budget."""
        return time.monotonic() + (DEFAULT_RETRY.budget if not self.stop.is_set() else 0.0)

    def create(self, m: Node, control: Any, name: str) -> None:
        self.seq += 1
        data = f"{name}:{self.process}:{self.seq}:{self.rng.getrandbits(32):08x}".encode()
        req = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=data),
                                              request_id=uuid.uuid4().hex)
        start = self.history.now()
        kind, resp, err = write(lambda t: control.CreateSecret(req, timeout=t), self.stop_by())
        value = str(resp.secret.id) if kind == "ok" else resp
        record_op(self.history, Op(self.process, "create", name, start, self.history.now(), kind, value, m.name), err)

    def remove(self, m: Node, control: Any, name: str) -> None:
        req = control_pb2.RemoveSecretRequest(secret_id=name, request_id=uuid.uuid4().hex)
        start = self.history.now()
        kind, resp, err = write(lambda t: control.RemoveSecret(req, timeout=t), self.stop_by())
        value = None if kind == "ok" else resp
        record_op(self.history, Op(self.process, "remove", name, start, self.history.now(), kind, value, m.name), err)

    def list(self, m: Node, control: Any) -> None:
        start = self.history.now()
        kind, resp, err = read(lambda t: control.ListSecrets(control_pb2.ListSecretsRequest(), timeout=t))
        value = [(s.spec.name, s.id) for s in resp.secrets] if kind == "ok" else None
        record_op(self.history, Op(self.process, "list", "", start, self.history.now(), kind, value, m.name), err)


def channel(m: Node) -> LocalClient:
    """A client of its own of one daemon, as the CLI's (a call after a restart connects afresh). Unlike
    the CLI it does not check the socket exists first: a killed manager is a failed call, not an exception."""
    return LocalClient(m.sock)


class Poller:
    """Every ``period`` s, each worker's tmpfs as its mount namespace shows it, one record per worker."""

    def __init__(self, swarm: Swarm, history: History, stop: threading.Event, period: float = 0.1) -> None:
        self.swarm, self.history, self.stop, self.period = swarm, history, stop, period

    def poll(self) -> dict[str, Snapshot]:
        out = {}
        for w in self.swarm.workers:
            t = self.history.now()
            files = tuple(self.swarm.worker_files(w))
            snap = Snapshot(w.name, t, files, t_end=self.history.now())
            self.history.record({"kind": "poll", "worker": w.name, "t": t, "t_end": snap.t_end,
                                 "files": [asdict(f) for f in snap.files]})
            out[w.name] = snap
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            self.stop.wait(self.period)


class LeaderMonitor:
    """Which managers say they lead (through a read barrier), every ``period`` s; changes are recorded."""

    def __init__(self, swarm: Swarm, history: History, stop: threading.Event, period: float = 0.5) -> None:
        self.swarm, self.history, self.stop, self.period = swarm, history, stop, period
        self.leaders: list[str] = []
        self._channels: dict[str, LocalClient] = {}

    def says_leader(self, m: Node) -> bool:
        if not m.running or m.paused:
            return False
        ch = self._channels.setdefault(m.name, channel(m))
        try:
            node = ch.control.GetNode(control_pb2.GetNodeRequest(node_id="self"), timeout=self.period).node
        except LocalError:
            return False
        return bool(node.manager_status.leader)

    def current(self) -> Node | None:
        return next((self.swarm.member(n) for n in self.leaders), None)

    def check(self) -> None:
        leaders = [m.name for m in self.swarm.managers if self.says_leader(m)]
        if leaders != self.leaders:
            self.leaders = leaders
            self.history.record({"kind": "leader", "t": self.history.now(), "leaders": leaders})

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.check()
                self.stop.wait(self.period)
        finally:
            for ch in self._channels.values():
                ch.close()
