"""The chaos swarm: a framework cluster on the lab's hosts, plus what the chaos run reads and writes.

Each daemon runs in its host's namespace (tests/framework places it). Its unix socket lives in the lab's
run dir, which the harness reaches from the root namespace: clients are never partitioned from their
manager (Jepsen's control node). A worker mounts each task's tmpfs in its private mount namespace
(``ip netns exec`` makes one), so the harness reads the files through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from swarmsecrets import validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import DEFAULT_RETRY
from swarmsecrets.worker.secretsfs import TMPFS_MAGIC, fs_type
from tests.chaoskit.checker import FileObs
from tests.chaoskit.lab import Lab
from tests.framework import FAST_TIMINGS, Cluster, Namespaces, Node, Timings

SERVICE = "chaos-files"
# Where the atomic writes of secretsfs stage a file before the rename; not a secret a task sees.
TMP_PREFIX = ".swarmsecrets-tmp-"
# The lab runs fast timers so fault windows can be short; report.md says so.
CHAOS_TIMINGS = FAST_TIMINGS
CALL_TIMEOUT = 30.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class Swarm(Cluster):
    """``managers`` then ``workers`` on lab hosts 1.., data under ``out_dir/nodes``, logs in ``out_dir/logs``."""

    def __init__(self, lab: Lab, managers: int, workers: int, out_dir: Path, timings: Timings = CHAOS_TIMINGS,
                 log_level: str = "info") -> None:
        if lab.hosts < managers + workers:
            raise ValueError("the lab has fewer hosts than members")
        self.lab = lab
        self.out_dir = out_dir
        super().__init__(out_dir / "nodes", managers, workers, placement=Namespaces(lab), timings=timings,
                         log_level=log_level, log_dir=out_dir / "logs")

    def create_secret(self, name: str, data: bytes) -> str:
        req = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=data))
        return str(DEFAULT_RETRY.write(self.members[0].control().CreateSecret, req, CALL_TIMEOUT).secret.id)

    def create_service(self, bindings: dict[str, str]) -> int:
        """A global service with no command (files only) bound to ``{target: secret name}``; its version."""
        refs = [secret_ref(name, target) for target, name in bindings.items()]
        spec = objects_pb2.ServiceSpec(name=SERVICE, mode="global", secrets=refs)
        resp = DEFAULT_RETRY.write(self.members[0].control().CreateService, control_pb2.CreateServiceRequest(spec=spec),
                                   CALL_TIMEOUT)
        return int(resp.service.version.index)

    # --- reads --------------------------------------------------------------------------------------

    def worker_files(self, w: Node) -> list[FileObs]:
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
