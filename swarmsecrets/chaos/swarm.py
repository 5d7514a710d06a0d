"""Real swarmsecretsd processes on lab hosts, formed into a swarm, and read from the root namespace.

Each daemon runs as ``ip netns exec <host> python -m swarmsecrets.node ...`` in its own process group,
listening for raft and gRPC on its lab address. Its unix socket lives in the lab's run dir, which the
harness reaches from the root namespace: clients are never partitioned from their manager (Jepsen's
control node). A worker mounts each task's tmpfs in its private mount namespace (``ip netns exec`` makes
one), so the harness reads the files through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from swarmsecrets import validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2, swarm_pb2
from swarmsecrets.chaos.checker import FileObs
from swarmsecrets.chaos.lab import Lab, LabError
from swarmsecrets.cli.client import Client
from swarmsecrets.worker.secretsfs import TMPFS_MAGIC, fs_type

SWARM_PORT = 2377
SERVICE = "chaos-files"
# Where the atomic writes of secretsfs stage a file before the rename; not a secret a task sees.
TMP_PREFIX = ".swarmsecrets-tmp-"


@dataclass(frozen=True)
class RaftTimings:
    """The lab runs fast timers so fault windows can be short; report.md says so."""

    heartbeat: float = 0.05
    election_min: float = 0.4
    election_max: float = 0.8
    dispatcher_heartbeat: float = 1.0

    def flags(self) -> list[str]:
        return ["--raft-heartbeat", str(self.heartbeat), "--raft-election-min", str(self.election_min),
                "--raft-election-max", str(self.election_max), "--dispatcher-heartbeat",
                str(self.dispatcher_heartbeat)]


@dataclass
class Member:
    name: str
    host: int
    role: str
    ip: str
    data_dir: Path
    sock: Path
    secrets_root: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    node_id: str = ""

    @property
    def addr(self) -> str:
        return f"{self.ip}:{SWARM_PORT}"

    @property
    def target(self) -> str:
        return f"unix://{self.sock}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Swarm:
    lab: Lab
    managers: int
    workers: int
    out_dir: Path
    timings: RaftTimings = field(default_factory=RaftTimings)
    log_level: str = "info"
    members: list[Member] = field(init=False)

    def __post_init__(self) -> None:
        if self.lab.hosts < self.managers + self.workers:
            raise ValueError("the lab has fewer hosts than members")
        (self.out_dir / "nodes").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "logs").mkdir(parents=True, exist_ok=True)
        roles = ["manager"] * self.managers + ["worker"] * self.workers
        self.members = []
        for i, role in enumerate(roles):
            host = i + 1
            name = f"m{host}" if role == "manager" else f"w{host - self.managers}"
            self.members.append(Member(
                name=name, host=host, role=role, ip=self.lab.ip(host), data_dir=self.out_dir / "nodes" / name,
                sock=self.lab.run_dir / f"{name}.sock", secrets_root=self.lab.shm_dir(name),
                log=self.out_dir / "logs" / f"{name}.log"))

    # --- members ---------------------------------------------------------------------------------

    @property
    def manager_members(self) -> list[Member]:
        return [m for m in self.members if m.role == "manager"]

    @property
    def worker_members(self) -> list[Member]:
        return [m for m in self.members if m.role == "worker"]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    # --- processes --------------------------------------------------------------------------------

    def spawn(self, m: Member) -> None:
        m.data_dir.mkdir(parents=True, exist_ok=True)
        m.secrets_root.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "swarmsecrets.node", "--data-dir", str(m.data_dir), "--host", m.target,
                "--log-level", self.log_level, *self.timings.flags(), "--secrets-root", str(m.secrets_root)]
        m.proc = self.lab.spawn(m.host, argv, log=m.log)
        m.paused = False

    def wait_socket(self, m: Member, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not m.sock.exists():
            if m.proc is None or m.proc.poll() is not None:
                raise LabError(f"{m.name} exited at start; see {m.log}")
            if time.monotonic() > deadline:
                raise LabError(f"{m.name} did not open {m.sock} within {timeout:g}s")
            time.sleep(0.05)

    def start(self, m: Member) -> None:
        self.spawn(m)
        self.wait_socket(m)

    def kill(self, m: Member) -> None:
        """SIGKILL the daemon's process group and reap it; its stale socket goes too, as a restart would."""
        if m.proc is None:
            return
        self.lab.signal(m.proc, signal.SIGKILL)
        m.proc.wait(timeout=20)
        self.lab.forget(m.proc)
        m.proc = None
        m.paused = False
        m.sock.unlink(missing_ok=True)

    def pause(self, m: Member) -> None:
        if m.proc is not None:
            self.lab.signal(m.proc, signal.SIGSTOP)
            m.paused = True

    def resume(self, m: Member) -> None:
        if m.proc is not None:
            self.lab.signal(m.proc, signal.SIGCONT)
        m.paused = False

    # --- formation --------------------------------------------------------------------------------

    def form(self, timeout: float = 60.0) -> None:
        """Start every daemon, init on m1, join managers one by one, then workers; wait until workers are Ready."""
        for m in self.members:
            self.spawn(m)
        for m in self.members:
            self.wait_socket(m)
        first = self.members[0]
        with closing(Client(first.target)) as c:
            c.call(c.swarm.Init, swarm_pb2.InitRequest(advertise_addr=first.addr), timeout=timeout)
            tokens = c.call(c.control.GetCluster, control_pb2.GetClusterRequest()).cluster.join_tokens
        for m in self.members[1:]:
            token = tokens.manager if m.role == "manager" else tokens.worker
            with closing(Client(m.target)) as c:
                c.call(c.swarm.Join, swarm_pb2.JoinRequest(remote_addr=first.addr, join_token=token,
                                                           advertise_addr=m.addr), timeout=timeout)
        for m in self.members:
            with closing(Client(m.target)) as c:
                m.node_id = c.call(c.swarm.Info, swarm_pb2.InfoRequest()).node_id
        self.wait_workers_ready(timeout)

    def wait_workers_ready(self, timeout: float) -> None:
        want = {w.node_id for w in self.worker_members}
        deadline = time.monotonic() + timeout
        while True:
            ready = set()
            try:
                with closing(Client(self.members[0].target)) as c:
                    nodes = c.call(c.control.ListNodes, control_pb2.ListNodesRequest(), timeout=5).nodes
                ready = {n.id for n in nodes if n.status.state == "ready"}
            except Exception:  # the CLI's errors and gRPC's; retried until the deadline
                pass
            if want <= ready:
                return
            if time.monotonic() > deadline:
                raise LabError(f"workers not Ready after {timeout:g}s: {sorted(want - ready)}")
            time.sleep(0.2)

    def create_secret(self, name: str, data: bytes) -> str:
        with closing(Client(self.members[0].target)) as c:
            req = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=data))
            return str(c.write(c.control.CreateSecret, req).secret.id)

    def create_service(self, bindings: dict[str, str]) -> int:
        """A global service with no command (files only) bound to ``{target: secret name}``; its version."""
        refs = [secret_ref(name, target) for target, name in bindings.items()]
        spec = objects_pb2.ServiceSpec(name=SERVICE, mode="global", secrets=refs)
        with closing(Client(self.members[0].target)) as c:
            resp = c.write(c.control.CreateService, control_pb2.CreateServiceRequest(spec=spec))
        return int(resp.service.version.index)

    # --- reads --------------------------------------------------------------------------------------

    def is_leader(self, m: Member, timeout: float = 1.0) -> bool | None:
        """Whether m says it leads (through a read barrier); None if it cannot say."""
        if not m.running or m.paused:
            return None
        try:
            with closing(Client(m.target)) as c:
                node = c.control.GetNode(control_pb2.GetNodeRequest(node_id="self"), timeout=timeout).node
            return bool(node.manager_status.leader)
        except grpc.RpcError:
            return None

    def leader(self) -> Member | None:
        for m in self.manager_members:
            if self.is_leader(m):
                return m
        return None

    def worker_files(self, w: Member) -> list[FileObs]:
        """Every file under the worker's ``tasks/`` as its own mount namespace shows it."""
        if w.proc is None or w.proc.poll() is not None:
            return []
        tasks = Path(f"/proc/{w.proc.pid}/root") / str(w.secrets_root).lstrip("/") / "tasks"
        out: list[FileObs] = []
        try:
            task_ids = sorted(os.listdir(tasks))
        except OSError:
            return out
        for task in task_ids:
            task_dir = tasks / task
            try:
                tmpfs = fs_type(str(task_dir)) == TMPFS_MAGIC
                for dirpath, _dirs, files in os.walk(task_dir):
                    for f in files:
                        if f.startswith(TMP_PREFIX):
                            continue
                        path = Path(dirpath) / f
                        st = path.stat(follow_symlinks=False)
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        out.append(FileObs(task, str(path.relative_to(task_dir)), sha(path.read_bytes()), st.st_uid,
                                           st.st_gid, stat.S_IMODE(st.st_mode), tmpfs))
            except OSError:  # the task dir went away while we looked
                continue
        return out


def secret_ref(name: str, target: str) -> objects_pb2.SecretReference:
    """As the CLI builds ``--secret source=NAME,target=TARGET`` (uid 0, gid 0, mode 0444 by default)."""
    r = validation.parse_secret_spec(f"source={name},target={target}")
    return objects_pb2.SecretReference(secret_name=r.source, file=objects_pb2.FileTarget(
        name=r.target, uid=r.uid, gid=r.gid, mode=r.mode))
