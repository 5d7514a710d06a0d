"""A hostile task against its neighbours and its node: a task explicitly run as root (``--user 0``) on a
manager that runs tasks tries every path to another service's secret and to the manager's keys; a task
left behind by a killed worker daemon must not outlive it; a FIFO in a task's secrets must not wedge the
worker."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.worker import secretsfs
from swarmsecrets.worker.secretsfs import FileSpec, SecretsFS
from tests.framework import Cluster, Node, wait_until
from tests.framework.node import child_env
from tests.worker.conftest import force_unmount, mounts_below

CAP_SYS_ADMIN = 21
PYTHON = "/usr/bin/python3"  # reachable by any user (the test venv's may live under /root)

# What a task tries, as root or as the default user; its findings go to $OUT/$ROLE.json.
PROBE = r"""
import ctypes, glob, json, os, time

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None

env = os.environ
report = {"uid": os.getuid(), "own": read("/run/secrets/" + env["OWN"])}
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
report["cap_eff"] = int(status["CapEff"].strip(), 16)
report["no_new_privs"] = int(status["NoNewPrivs"].strip())
if env["ROLE"] == "attacker":
    victim = env["VICTIM"]
    # (a) the other task's mount namespace through its /proc/<pid>/root; the same path to our own works
    report["own_via_proc"] = read("/proc/self/root/run/secrets/" + env["OWN"])
    report["via_proc"] = [read(p) for p in glob.glob("/proc/[0-9]*/root/run/secrets/" + victim)]
    # (b) take the mounts away and look at what lies below them
    libc = ctypes.CDLL(None, use_errno=True)
    report["unmounted"] = [p for p in ("/run/secrets", env["SECRETS_ROOT"], env["DATA_DIR"])
                           if libc.umount2(p.encode(), 2) == 0]
    report["below"] = [read(p) for p in glob.glob("/run/secrets/" + victim)]
    # (c) the secrets root and the manager's state directory (node key, wrapped keys, raft log)
    report["root"] = [read(p) for p in glob.glob(env["SECRETS_ROOT"] + "/tasks/*/" + victim)]
    report["data"] = sorted(os.path.join(d, f) for d, _, fs in os.walk(env["DATA_DIR"]) for f in fs
                            if read(os.path.join(d, f)) is not None)
    report["block_devices"] = [p for p in glob.glob("/dev/*")
                               if os.path.exists(p) and os.stat(p).st_mode & 0o170000 == 0o060000]
    # (d) the daemon itself: its control socket, and its memory and environment through /proc
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(env["SOCK"])
            report["socket"] = True
        except OSError:
            report["socket"] = False
    def first_bytes(pid):
        try:
            with open(f"/proc/{pid}/maps") as f:
                start = int(f.readline().split("-")[0], 16)
            with open(f"/proc/{pid}/mem", "rb") as f:
                f.seek(start)
                return len(f.read(16))
        except (OSError, ValueError):
            return None
    pid = env["DAEMON_PID"]
    report["daemon"] = {"environ": read(f"/proc/{pid}/environ"), "mem": first_bytes(pid)}
    report["own_mem"] = first_bytes("self")  # the control: the same reads work on a process it may see
    report["visible"] = len(glob.glob("/proc/[0-9]*/cmdline"))
    # every process this task can see: none is the daemon (its command line names its data dir)
    report["seen"] = [c for c in (read(p) for p in glob.glob("/proc/[0-9]*/cmdline"))
                      if c and "--data-dir" in c.split("\0")]
tmp = os.path.join(env["OUT"], "." + env["ROLE"])
with open(tmp, "w") as f:
    json.dump(report, f)
os.rename(tmp, os.path.join(env["OUT"], env["ROLE"] + ".json"))
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One manager that runs tasks (as Swarm's managers do unless drained) and one worker."""
    c = Cluster(Path(tmp_path_factory.mktemp("cluster")), managers=1, workers=1, manager_availability="active")
    with c.started():
        yield c


@pytest.fixture(scope="module")
def out() -> Iterator[Path]:
    """Where tasks write what they found: /tmp, so that a task run as nobody can reach it."""
    path = Path(tempfile.mkdtemp(prefix=f"swarmsecrets-test-{os.getpid()}-probe-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Set-up goes through gRPC rather than the CLI: a CLI process costs a second of CI per call.

def place_on(cluster: Cluster, node: Node) -> None:
    """Let only ``node`` take new tasks."""
    control = cluster.managers[0].control()
    for n in cluster.members:
        control.UpdateNode(control_pb2.UpdateNodeRequest(
            node_id=n.node_id, availability="active" if n is node else "drain"), timeout=10)


def create_secret(m: Node, name: str) -> str:
    """A new secret with a random value; the value."""
    value = secrets.token_hex(16)
    m.control().CreateSecret(control_pb2.CreateSecretRequest(
        spec=objects_pb2.SecretSpec(name=name, data=value.encode())), timeout=10)
    return value


def create_service(m: Node, name: str, secret: str, command: list[str], env: dict[str, str], user: str = "") -> None:
    """A service with ``secret`` at /run/secrets/<secret>, with Docker's file defaults (0:0, 0444)."""
    ref = objects_pb2.SecretReference(secret_name=secret,
                                      file=objects_pb2.FileTarget(name=secret, uid="0", gid="0", mode=0o444))
    m.control().CreateService(control_pb2.CreateServiceRequest(spec=objects_pb2.ServiceSpec(
        name=name, mode="replicated", command=command, env=env, user=user, secrets=[ref])), timeout=10)


def remove_service(m: Node, name: str) -> None:
    m.control().RemoveService(control_pb2.RemoveServiceRequest(service_id=name), timeout=10)


def report(out: Path, role: str) -> dict[str, Any]:
    path = out / f"{role}.json"
    wait_until(path.exists, 30, 0.1, f"the {role} task's report")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


@pytest.fixture(scope="module")
def probes(cluster: Cluster, out: Path) -> dict[str, dict[str, Any]]:
    """A victim service (default user) and an attacker service (``--user 0``), both on the manager m1."""
    m1 = cluster.managers[0]
    place_on(cluster, m1)
    victim_pw, attacker_pw = create_secret(m1, "victim_pw"), create_secret(m1, "attacker_pw")
    env = {"OUT": str(out), "SECRETS_ROOT": str(m1.secrets_root), "DATA_DIR": str(m1.data_dir), "VICTIM": "victim_pw",
           "SOCK": str(m1.sock), "DAEMON_PID": str(m1.pid)}
    create_service(m1, "victim", "victim_pw", [PYTHON, "-c", PROBE], {**env, "ROLE": "victim", "OWN": "victim_pw"})
    victim = report(out, "victim")
    create_service(m1, "attacker", "attacker_pw", [PYTHON, "-c", PROBE],
                   {**env, "ROLE": "attacker", "OWN": "attacker_pw"}, user="0")
    attacker = report(out, "attacker")
    remove_service(m1, "victim")
    remove_service(m1, "attacker")
    return {"victim": victim, "attacker": attacker, "victim_pw": victim_pw, "attacker_pw": attacker_pw}


def test_each_task_reads_its_own_secret(probes: dict[str, Any]) -> None:
    """The control: the probes' paths are real, each task gets its own secret, the attacker also through
    its own /proc/<pid>/root."""
    assert probes["victim"]["own"] == probes["victim_pw"]
    assert probes["attacker"]["own"] == probes["attacker_pw"]
    assert probes["attacker"]["own_via_proc"] == probes["attacker_pw"]
    assert probes["attacker"]["uid"] == 0


def test_a_root_task_cannot_reach_another_tasks_secrets(probes: dict[str, Any]) -> None:
    # (a) no other task's /proc/<pid>/root; (b) no umount of its secrets, the secrets root or the data dir,
    # nothing below; (c) the secrets root shows nothing
    paths = ("via_proc", "unmounted", "below", "root")
    assert {p: probes["attacker"][p] for p in paths} == {p: [] for p in paths}


def test_a_root_task_on_a_manager_reads_none_of_its_state(cluster: Cluster, probes: dict[str, Any]) -> None:
    m1 = cluster.managers[0]
    on_disk = [p for p in ("certificates/swarm-node.key", "keys", "raft") if (m1.data_dir / p).exists()]
    assert on_disk == ["certificates/swarm-node.key", "keys", "raft"]  # what the attacker is after is there
    assert probes["attacker"]["data"] == []
    assert probes["attacker"]["block_devices"] == []  # nor the disk below it
    # (d) nor the daemon: its socket (the operator's), its memory, its environment, the process at all
    assert Path(f"/proc/{m1.pid}/environ").read_bytes() and m1.sock.is_socket()  # there to be found
    assert probes["attacker"]["socket"] is False
    assert probes["attacker"]["daemon"] == {"environ": None, "mem": None}
    assert probes["attacker"]["seen"] == []
    assert probes["attacker"]["own_mem"] == 16 and probes["attacker"]["visible"] >= 2


def test_a_task_runs_unprivileged(probes: dict[str, Any]) -> None:
    assert probes["victim"]["uid"] != 0  # (d): the default user is not root
    for role in ("victim", "attacker"):  # (e): even as root, no CAP_SYS_ADMIN, and no way to gain privileges
        assert not probes[role]["cap_eff"] >> CAP_SYS_ADMIN & 1, role
        assert probes[role]["no_new_privs"] == 1, role


def test_the_daemon_dumps_no_core(cluster: Cluster) -> None:
    """(f): the daemon's memory holds keys and secrets: no core file (and, set with it, not dumpable)."""
    for n in cluster.members:
        assert n.pid is not None
        limits = Path(f"/proc/{n.pid}/limits").read_text().splitlines()
        core = next(line for line in limits if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core


def test_the_daemons_start_makes_it_undumpable() -> None:
    """What (f) cannot see from outside: a root observer may ptrace anything. The start-up step that set
    the limit above also leaves the process not dumpable (PR_GET_DUMPABLE answers 0)."""
    program = ("import ctypes; from swarmsecrets.node.main import make_undumpable; "
               "before = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0); make_undumpable(); "
               "print(before, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=child_env(), check=True)
    assert run.stdout.split() == ["1", "0"]


# --- a task outlives its worker daemon --------------------------------------------------------------


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (a task's, not its helpers': they get no env)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in env and state != "Z":
                found.append(int(entry))
    return found


def test_a_task_dies_with_its_killed_worker_and_its_secret_with_it(cluster: Cluster) -> None:
    m1, w1 = cluster.managers[0], cluster.workers[0]
    place_on(cluster, w1)
    mark = secrets.token_hex(8)
    marker = f"SWARMSECRETS_TEST_MARK={mark}"
    create_secret(m1, "lingering_pw")
    # a root task with a child of its own: the child is not the process the agent started
    create_service(m1, "lingering", "lingering_pw", ["sh", "-c", "sleep 3600 & wait"],
                   {"SWARMSECRETS_TEST_MARK": mark}, user="0")
    tasks = w1.secrets_root / "tasks"
    try:
        wait_until(lambda: len(processes_with(marker)) == 2 and mounts_below(str(tasks)), 30, 0.1,
                   "the task and its child running on w1, its tmpfs mounted")
        w1.kill(signal.SIGKILL)
        remove_service(m1, "lingering")
        w1.start()
        cluster.wait_workers_ready()
        wait_until(lambda: processes_with(marker) == [], 20, 0.1, "the task's processes gone")
        wait_until(lambda: mounts_below(str(tasks)) == [], 20, 0.1, "the task's tmpfs unmounted")
    finally:
        for pid in processes_with(marker):  # only if the test failed
            os.kill(pid, signal.SIGKILL)
        place_on(cluster, m1)


# --- a FIFO in a task's secrets --------------------------------------------------------------------


@pytest.fixture
def fs() -> Iterator[SecretsFS]:
    path = tempfile.mkdtemp(prefix=f"swarmsecrets-test-{os.getpid()}-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", path], check=True)
    try:
        yield SecretsFS(path)
    finally:
        force_unmount(path)
        shutil.rmtree(path, ignore_errors=True)


def test_a_fifo_in_a_tasks_secrets_does_not_wedge_the_worker(fs: SecretsFS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task dir belongs to the task's user: during an update it can swap a file the agent has just
    looked at for a FIFO. The agent must not block on it; the other secrets are still delivered."""
    first = [FileSpec("a", b"A", 0, 0, 0o444), FileSpec("b", b"B", 0, 0, 0o444)]
    task_dir = Path(fs.materialize("t1", "app", first))
    real_stat = os.stat
    planted: list[Path] = []

    def stat_then_plant(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        # the task wins the race between the agent's stat of "a" and its open
        result = real_stat(path, *args, **kwargs)
        if path == "a" and not planted:
            os.unlink("a", dir_fd=kwargs["dir_fd"])
            os.mkfifo("a", 0o644, dir_fd=kwargs["dir_fd"])
            planted.append(task_dir / "a")
        return result

    monkeypatch.setattr(secretsfs.os, "stat", stat_then_plant)
    done = threading.Event()

    def update() -> None:
        fs.materialize("t1", "app", [first[0], FileSpec("b", b"B2", 0, 0, 0o444)])
        done.set()

    worker = threading.Thread(target=update, daemon=True)
    worker.start()
    try:
        wait_until(done.is_set, 10, 0.05, "the update to finish")
    finally:
        monkeypatch.undo()
        if not done.is_set() and planted:  # the old code blocks in open(): give it a writer to let it go
            os.close(os.open(planted[0], os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
    assert planted
    assert (task_dir / "a").read_bytes() == b"A" and (task_dir / "a").is_file()
    assert (task_dir / "b").read_bytes() == b"B2"
    fs.wipe()
