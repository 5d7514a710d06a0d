"""The seed end to end: 3 managers, 2 workers, a service with a secret in tmpfs, rotation, cleanup."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from swarmsecrets import rpcutil, wire
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from swarmsecrets.ca import certs
from tests.framework import Cluster, Node, wait_until
from tests.framework.node import child_env

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="workers need root for tmpfs mounts")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Workers join through m2, a follower at first: joining does not need the leader.
    c = Cluster(Path(tmp_path_factory.mktemp("fleet")), managers=3, workers=2, worker_join_via=1)
    c.managers[1].extra_args += ("--log-format", "json")  # m2 logs JSON; the others logfmt
    with c.started():
        yield c


_LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_records(node: Node) -> list[dict[str, str]]:
    """The node's log lines as key/value records, from JSON or logfmt (every line must parse)."""
    out = []
    for line in node.log_path.read_text().splitlines():
        if line.startswith("{"):
            out.append({k: str(v) for k, v in json.loads(line).items()})
        else:
            pairs = _LOGFMT_PAIR.findall(line)
            assert pairs and pairs[0][0] == "time", line
            out.append({k: json.loads(v) if v.startswith('"') else v for k, v in pairs})
    return out


def events(node: Node, name: str) -> list[dict[str, str]]:
    return [r for r in log_records(node) if r.get("event") == name]


def test_a_normal_start_and_join_logs_no_warning(fleet: Cluster) -> None:
    """First in this module: the fleet has only formed. Nothing looked like a failure, and the
    events an operator follows are there with their fields (m2's lines are JSON)."""
    assert all(line.startswith("{") for line in fleet.managers[1].log_path.read_text().splitlines())
    for node in fleet.members:
        bad = [r for r in log_records(node) if r["level"] in ("warning", "error")]
        assert bad == [], f"{node.name}: {bad}"
    leader = fleet.leader()
    elected = events(leader, "leader_elected")
    assert elected[-1]["is_leader"] in ("true", "True") and elected[-1]["leader"] == leader.raft_addr
    joined = {r["node"]: r["role"] for r in events(leader, "node_joined")}
    ids = {n.name: n.info().node_id for n in fleet.members}
    assert joined == {ids[n.name]: n.role for n in fleet.members if n is not fleet.managers[0]}
    assert {r["node"] for r in events(leader, "node_ready")} >= {ids[w.name] for w in fleet.workers}


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def task_file(w: Node, service: str, target: str) -> Path:
    return w.secrets_root / "services" / service / target


def test_audit_lines_for_writes_and_deliveries(fleet: Cluster) -> None:
    """Every Control write is audited with who (the socket peer's uid, or the certificate's CN),
    what, which object, the result and the request id; every secret sent to a node too; never a payload."""
    m2 = fleet.managers[1]
    w1 = fleet.workers[0]
    payload = "audited-payload-never-logged"
    secret_id = m2.ok("secret", "create", "audited", "-", input=payload).strip()
    [line] = [r for r in events(m2, "control_write") if r["object"] == "audited"]
    assert (line["caller"], line["method"], line["id"], line["result"]) == (
        f"uid:{os.getuid()}", "CreateSecret", secret_id, "OK")
    assert line["request_id"] not in ("", "-") and line["logger"] == "swarmsecrets.audit"

    with _worker_channel(w1, m2) as ch, pytest.raises(grpc.RpcError) as e:
        control_pb2_grpc.ControlStub(ch).RemoveSecret(control_pb2.RemoveSecretRequest(secret_id=secret_id), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    w1_id = w1.info().node_id
    # An abort reaches the caller before the server's handler returns: the line may follow it.
    denied = wait_until(lambda: [r for r in events(m2, "control_write") if r["method"] == "RemoveSecret"], 10, 0.05,
                        "the denied write's audit line")
    assert [(r["caller"], r["object"], r["result"]) for r in denied] == [
        (f"cn:{w1_id}", secret_id, "PERMISSION_DENIED")]

    m2.ok("service", "create", "--name", "audited-svc", "--secret", "audited", "--", "sleep", "600")
    leader = fleet.leader()

    def delivered() -> list[dict[str, str]]:
        return [r for r in events(leader, "secret_delivered") if r["secret"] == secret_id]

    [sent] = wait_until(delivered, 30, 0.2, "the delivery's audit line")
    control = m2.control()
    task = control.ListTasks(control_pb2.ListTasksRequest(service_id="audited-svc"), timeout=10).tasks[0]
    version = control.GetSecret(control_pb2.GetSecretRequest(secret_id=secret_id), timeout=10).secret.version.index
    assert (sent["node"], sent["tasks"], int(sent["version"])) == (task.node_id, task.id, version)
    for node in fleet.members:
        assert payload not in node.log_path.read_text()
    m2.ok("service", "rm", "audited-svc")
    m2.ok("secret", "rm", "audited")



def test_service_logs(fleet: Cluster) -> None:
    """``service logs`` on a follower (it relays the leader's stream): a task's output from its
    worker's files, with and without --tail and -t, and -f shows a line written afterwards."""
    m1, m2 = fleet.managers[0], fleet.managers[1]
    go = fleet.root / "logs-go"
    program = f"echo one; echo two >&2; echo three; while [ ! -e {go} ]; do sleep 0.05; done; echo after; sleep 600"
    # as root: it reads the test's root-only temp dir
    m1.ok("service", "create", "--name", "logsvc", "--user", "0", "--", "sh", "-c", program)

    def tasks() -> list[control_pb2.objects__pb2.Task]:
        return list(m1.control().ListTasks(control_pb2.ListTasksRequest(service_id="logsvc"), timeout=10).tasks)

    def logs(*args: str) -> list[str]:
        return m2.ok("service", "logs", *args, "logsvc").splitlines()

    [task] = wait_until(tasks, 30, 0.2, "the task")
    prefix = f"logsvc.1.{task.id[:12]}@{socket.gethostname()}    | "
    assert wait_until(lambda: logs() if len(logs()) == 3 else None, 30, 0.2, "the task's output") == [
        prefix + "one", prefix + "two", prefix + "three"]
    assert logs("--tail", "1") == [prefix + "three"]
    [stamped] = logs("-t", "--tail", "1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z " + re.escape(prefix + "three"), stamped)

    follow = subprocess.Popen([sys.executable, "-m", "swarmsecrets.cli.main", "-H", m2.host_url, "service", "logs",
                               "-f", "--tail", "1", "logsvc"], stdout=subprocess.PIPE, env=child_env())
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(line.decode().rstrip("\n") for line in follow.stdout or ()),
                              daemon=True)
    reader.start()
    try:
        wait_until(lambda: seen == [prefix + "three"], 30, 0.1, "the last line, followed")
        go.touch()
        wait_until(lambda: seen == [prefix + "three", prefix + "after"], 30, 0.1, "the new line, followed")
    finally:
        follow.kill()
        follow.wait()
    m1.ok("service", "rm", "logsvc")

def test_seed_walkthrough(fleet: Cluster) -> None:
    m1, m2, _ = fleet.managers
    w1, w2 = fleet.workers
    m1.ok("secret", "create", "db_pass", "-", input="database_password\n")
    out_file = fleet.root / "app-read.txt"
    program = f"import time; open('{out_file}', 'w').write(open('/run/secrets/password').read()); time.sleep(600)"
    # as root: it writes what it read into the test's root-only temp dir
    m2.ok("service", "create", "--name", "app", "--user", "0", "--secret",
          "source=db_pass,target=password,uid=2000,gid=3000,mode=0400", "--", "python3", "-c", program)

    def placed() -> Node | None:
        for w in (w1, w2):
            if task_file(w, "app", "password").exists():
                return w
        return None

    runner = wait_until(placed, 30, 0.2, "the secret on the worker that runs app")
    idle = w2 if runner is w1 else w1
    f = task_file(runner, "app", "password")
    st = f.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (2000, 3000)
    assert f.read_bytes() == b"database_password\n"
    # The task's own command read it from /run/secrets/password.
    wait_until(lambda: out_file.exists() and out_file.read_text() == "database_password\n", 30, 0.2, "the task")
    assert files_under(idle.secrets_root) == []
    ps = m1.ok("service", "ps", "app")
    assert "app.1" in ps and "Running" in ps
    assert "secret 'db_pass' is in use by the following service: app" in m1.fails("secret", "rm", "db_pass")

    # Rotation in one command; the file never goes missing.
    m1.ok("secret", "create", "db_pass_1", "-", input="new_password\n")
    seen: list[bytes] = []
    m1.ok("service", "update", "--secret-rm", "db_pass", "--secret-add", "source=db_pass_1,target=password", "app")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = f.read_bytes()  # raises if the file is ever missing
        seen.append(data)
        if data == b"new_password\n":
            break
        time.sleep(0.01)
    assert seen[-1] == b"new_password\n"
    assert set(seen) <= {b"database_password\n", b"new_password\n"}
    wait_until(lambda: out_file.read_text() == "new_password\n", 30, 0.2, "the restarted task to read the new secret")
    m1.ok("secret", "rm", "db_pass")
    for w in (w1, w2):
        assert all(p.read_bytes() != b"database_password\n" for p in files_under(w.secrets_root))

    m1.ok("service", "rm", "app")
    wait_until(lambda: files_under(runner.secrets_root) == [], 20, 0.2, "the task's secrets to be removed")


def test_inspect_and_ls(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    m1.ok("secret", "create", "cfg", "-", input="x")
    m1.ok("service", "create", "--name", "files-only", "--mode", "global", "--secret", "cfg")
    doc = json.loads(m1.ok("service", "inspect", "files-only"))[0]
    assert doc["Spec"]["Name"] == "files-only"
    wait_until(lambda: "2/2" in m1.ok("service", "ls"), 30, 0.3, "a global service on both workers")
    for w in fleet.workers:
        p = task_file(w, "files-only", "cfg")
        assert p.read_bytes() == b"x" and stat.S_IMODE(p.stat().st_mode) == 0o444
    m1.ok("service", "rm", "files-only")
    for w in fleet.workers:
        wait_until(lambda w=w: files_under(w.secrets_root) == [], 20, 0.2, "cleanup")


def node_id(n: Node) -> str:
    return certs.identity_from_pem((n.data_dir / "certificates" / "swarm-node.crt").read_bytes()).node_id


def test_attached_create_shows_progress_and_update_action_signal(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    m1.ok("secret", "create", "sig1", "-", input="one")
    m1.ok("secret", "create", "sig2", "-", input="two")
    log = fleet.root / "hups.txt"
    program = ("import signal, time\n"
               f"signal.signal(signal.SIGHUP, lambda *a: open('{log}', 'a').write(open('/run/secrets/s').read()))\n"
               "time.sleep(600)\n")
    out = m1.ok("service", "create", "--detach=false", "--name", "hup", "--user", "0", "--update-action", "signal:HUP",
                "--secret", "source=sig1,target=s", "--", "python3", "-c", program, timeout=90)
    assert "overall progress: 1 out of 1 tasks" in out and "converged" in out, out
    m1.ok("service", "update", "--secret-rm", "sig1", "--secret-add", "source=sig2,target=s", "hup")
    # The same process got SIGHUP and read the new value: no restart.
    wait_until(lambda: log.exists() and log.read_text() == "two", 30, 0.2, "the task to be signalled")
    m1.ok("service", "rm", "hup")


def test_drain_moves_tasks_and_wipes_secrets(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    w1, w2 = fleet.workers
    m1.ok("secret", "create", "drained", "-", input="d")
    m1.ok("service", "create", "--name", "mover", "--replicas", "2", "--secret", "drained")
    wait_until(lambda: all(task_file(w, "mover", "drained").exists() for w in (w1, w2)), 30, 0.2, "both replicas")
    assert m1.ok("node", "update", "--availability", "drain", node_id(w1)).strip() == node_id(w1)
    wait_until(lambda: files_under(w1.secrets_root) == [], 30, 0.3, "the drained node to hold no secret")
    wait_until(lambda: m1.ok("service", "ls", "--format", "{{.Replicas}}", ).split() == ["2/2"], 30, 0.3,
               "both replicas running on the other worker")
    m1.ok("node", "update", "--availability", "active", node_id(w1))
    m1.ok("service", "rm", "mover")
    for w in (w1, w2):
        wait_until(lambda w=w: files_under(w.secrets_root) == [], 20, 0.2, "cleanup")


def test_tasks_of_a_down_worker_move_and_come_back(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    w1, w2 = fleet.workers
    m1.ok("secret", "create", "mobile", "-", input="m")
    m1.ok("service", "create", "--name", "mobile", "--secret", "mobile", "--", "sleep", "600")
    runner = wait_until(lambda: next((w for w in (w1, w2) if task_file(w, "mobile", "mobile").exists()), None),
                        30, 0.2, "placement")
    other = w2 if runner is w1 else w1
    runner.kill()  # SIGKILL: the agent cannot clean up; heartbeats stop
    wait_until(lambda: task_file(other, "mobile", "mobile").exists(), 30, 0.3, "the task on the other worker")
    assert "Down" in m1.ok("node", "ls", "--format", "{{.ID}} {{.Status}}")
    ps = m1.ok("service", "ps", "mobile")
    assert "Running" in ps and ("Orphaned" in ps or "Shutdown" in ps), ps
    runner.start()
    wait_until(lambda: "Down" not in m1.ok("node", "ls", "--format", "{{.Status}}"), 30, 0.3, "the worker back")
    # It came back with stale task dirs from before the kill: the agent clears them.
    wait_until(lambda: files_under(runner.secrets_root) == [], 30, 0.3, "stale secrets wiped on restart")
    m1.ok("service", "rm", "mobile")


def test_workers_ride_through_leader_failover(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    w1, w2 = fleet.workers
    m1.ok("secret", "create", "steady", "-", input="s1")
    pidfile = fleet.root / "steady.pid"
    m1.ok("service", "create", "--name", "steady", "--mode", "global", "--user", "0", "--secret", "steady", "--",
          "python3", "-c", f"import os, time; open('{pidfile}', 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)")
    wait_until(lambda: all(task_file(w, "steady", "steady").exists() for w in (w1, w2)), 30, 0.2, "placement")
    wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 30, 0.2, "both tasks running")
    before = {w.name: task_file(w, "steady", "steady").stat().st_ino for w in (w1, w2)}
    leader = fleet.leader()
    leader.kill()
    survivor = next(n for n in fleet.managers if n.proc is not None)
    new_leader = fleet.leader()
    assert new_leader is not leader
    # Meanwhile nothing moved on the workers: same files, same processes.
    for w in (w1, w2):
        assert task_file(w, "steady", "steady").stat().st_ino == before[w.name]
        assert task_file(w, "steady", "steady").read_bytes() == b"s1"
    # Sessions move to the new leader; assignments resume and converge.
    survivor.ok("secret", "create", "steady2", "-", input="s2")
    survivor.ok("service", "update", "--secret-add", "source=steady2,target=extra", "steady")
    wait_until(lambda: all(task_file(w, "steady", "extra").exists() for w in (w1, w2)), 40, 0.2,
               "the update after failover")
    leader.start()
    wait_until(lambda: leader.cli("secret", "ls").returncode == 0, 30, 0.3, "the old leader back")
    survivor.ok("service", "rm", "steady")
    assert len(pidfile.read_text().split()) == 4  # each task restarted once, for the update: never for the failover


def _identity(w: Node) -> tuple[bytes, bytes, bytes]:
    d = w.data_dir / "certificates"
    return tuple((d / f).read_bytes() for f in ("swarm-root-ca.crt", "swarm-node.key", "swarm-node.crt"))  # type: ignore[return-value]


def _worker_channel(w: Node | tuple[bytes, bytes, bytes], m: Node) -> grpc.Channel:
    ca, key, cert = _identity(w) if isinstance(w, Node) else w
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(m.addr, creds, options=wire.TLS_CHANNEL_OPTIONS)


def test_a_worker_gets_only_its_own_assignments(fleet: Cluster) -> None:
    """Crafted calls with w1's certificate: another node's session is refused, and the leader
    streams w1 only its own tasks, whatever the request says."""
    w1, w2 = fleet.workers[0], fleet.workers[1]
    leader = fleet.leader()
    m1 = fleet.managers[0]
    m1.ok("secret", "create", "only-w2", "-", input="w2-only")
    m1.ok("service", "create", "--name", "pinned", "--secret", "only-w2")
    wait_until(lambda: any(task_file(w, "pinned", "only-w2").exists() for w in (w1, w2)), 30, 0.2, "placement")
    holder, other = (w1, w2) if task_file(w1, "pinned", "only-w2").exists() else (w2, w1)
    with _worker_channel(holder, leader) as ch_holder, _worker_channel(other, leader) as ch_other:
        holder_stub = dispatcher_pb2_grpc.DispatcherStub(ch_holder)
        other_stub = dispatcher_pb2_grpc.DispatcherStub(ch_other)
        stolen = next(iter(holder_stub.Session(dispatcher_pb2.SessionRequest(hostname="x"), timeout=10)))
        with pytest.raises(grpc.RpcError) as e:
            next(iter(other_stub.Assignments(dispatcher_pb2.AssignmentsRequest(session_id=stolen.session_id),
                                             timeout=10)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "session invalid"
        own = next(iter(other_stub.Session(dispatcher_pb2.SessionRequest(hostname="x"), timeout=10)))
        first = next(iter(other_stub.Assignments(dispatcher_pb2.AssignmentsRequest(session_id=own.session_id),
                                                 timeout=10)))
        names = {c.secret.name for c in first.changes if c.HasField("secret")}
        assert "only-w2" not in names
        with pytest.raises(grpc.RpcError) as e:
            control_pb2_grpc.ControlStub(ch_other).ListSecrets(control_pb2.ListSecretsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    m1.ok("service", "rm", "pinned")


# --- placement and cluster settings ------------------------------------------------------------------

def _tasks(m: Node, service: str) -> list[objects_pb2.Task]:
    return [t for t in m.control().ListTasks(control_pb2.ListTasksRequest(service_id=service), timeout=10).tasks
            if t.desired_state == "running"]


def test_constraints_place_tasks_by_node_labels_and_say_why_not(fleet: Cluster) -> None:
    """A label on w1; a service constrained to it runs only there; one whose constraint no node
    satisfies shows Swarm's pending reason in `service ps`, and runs once the constraint goes."""
    m1 = fleet.managers[0]
    w1, w2 = fleet.workers
    w1_id, w2_id = node_id(w1), node_id(w2)
    assert m1.ok("node", "update", "--label-add", "zone=east", "--label-add", "tier", w1_id).strip() == w1_id
    labels = m1.control().GetNode(control_pb2.GetNodeRequest(node_id=w1_id), timeout=10).node.spec.labels
    assert dict(labels) == {"zone": "east", "tier": ""}
    assert m1.fails("node", "update", "--label-rm", "nope", w1_id).endswith("key nope doesn't exist in node's labels")
    assert m1.fails("service", "create", "-d", "--name", "bad", "--constraint", "node.labels.zone=east", "--",
                    "sleep", "600").endswith("constraint expected one operator from ==, !=")

    spec = objects_pb2.ServiceSpec(name="east", mode="replicated", replicas=2, command=["sleep", "600"],
                                   constraints=["node.labels.zone == east", "node.role!=manager"])
    m1.control().CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=10)
    wait_until(lambda: sorted((t.node_id, t.status.state) for t in _tasks(m1, "east")) ==
               [(w1_id, "running"), (w1_id, "running")], 30, 0.2, "both replicas running on w1")

    m1.ok("service", "create", "-d", "--name", "west", "--constraint", "node.labels.zone==west", "--",
          "sleep", "600")
    reason = ("no suitable node (3 nodes not available for new tasks; "
              "scheduling constraints not satisfied on 2 nodes)")
    wait_until(lambda: [(t.node_id, t.status.state, t.status.err) for t in _tasks(m1, "west")] ==
               [("", "pending", reason)], 30, 0.2, "a pending task")
    row = m1.ok("service", "ps", "--no-trunc", "--format", "{{.Name}}|{{.Node}}|{{.CurrentState}}|{{.Error}}",
                "west").strip()
    name, node, current, error = row.split("|")
    assert (name, node, current.split()[0], error) == ("west.1", "", "Pending", f'"{reason}"')

    m1.ok("service", "update", "-d", "--constraint-rm", "node.labels.zone==west", "west")
    wait_until(lambda: [(t.node_id in (w1_id, w2_id), t.status.state) for t in _tasks(m1, "west")] ==
               [(True, "running")], 30, 0.2, "the task placed once the constraint is gone")
    for name in ("east", "west"):
        m1.control().RemoveService(control_pb2.RemoveServiceRequest(service_id=name), timeout=10)
    m1.control().UpdateNode(control_pb2.UpdateNodeRequest(node_id=w1_id, label_rm=["zone", "tier"]), timeout=10)


def _heartbeat_told(w: Node, since: int) -> float | None:
    """The last heartbeat period the worker's agent logged after offset ``since`` of its log."""
    found = re.findall(r"heartbeat period: ([0-9.e+-]+)s", w.log_path.read_text(errors="replace")[since:])
    return float(found[-1]) if found else None


def test_swarm_update_settings_are_stored_and_the_heartbeat_applies_at_once(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    w1 = fleet.workers[0]
    before = m1.control().GetCluster(control_pb2.GetClusterRequest(), timeout=10).cluster
    # The daemons' --dispatcher-heartbeat seeded the cluster at init.
    assert (before.dispatcher_heartbeat_period_ms, before.task_history_retention_limit) == (1000, 5)
    since = len(w1.log_path.read_text(errors="replace"))
    assert m1.ok("swarm", "update", "--dispatcher-heartbeat", "3s", "--task-history-limit", "2") == "Swarm updated.\n"
    after = m1.control().GetCluster(control_pb2.GetClusterRequest(), timeout=10).cluster
    assert (after.dispatcher_heartbeat_period_ms, after.task_history_retention_limit) == (3000, 2)
    # Without a restart, the leader tells the workers the new period (jittered by up to 10 %).
    wait_until(lambda: 2.7 <= (_heartbeat_told(w1, since) or 0) <= 3.3, 30, 0.2, "the worker to hear of 3s")
    assert "heartbeat time period cannot be a negative duration" in m1.fails(
        "swarm", "update", "--dispatcher-heartbeat", "-1s")
    assert 'invalid argument "x" for "--task-history-limit" flag' in m1.fails(
        "swarm", "update", "--task-history-limit", "x")
    # A period no heartbeat message can carry is refused, and the one set stays.
    assert "maximum dispatcher heartbeat period is: 24h0m0s" in m1.fails(
        "swarm", "update", "--dispatcher-heartbeat", "2562047h")
    assert m1.control().GetCluster(control_pb2.GetClusterRequest(),
                                   timeout=10).cluster.dispatcher_heartbeat_period_ms == 3000
    m1.control().UpdateCluster(control_pb2.UpdateClusterRequest(
        autolock=after.autolock, task_history_retention_limit=5, dispatcher_heartbeat_period_ms=1000), timeout=10)


def test_worker_leave_wipes_its_secrets(fleet: Cluster) -> None:
    m1 = fleet.managers[0]
    w1 = fleet.workers[0]
    m1.ok("secret", "create", "leaving", "-", input="l")
    m1.ok("service", "create", "--name", "leaver", "--mode", "global", "--secret", "leaving")
    wait_until(lambda: task_file(w1, "leaver", "leaving").exists(), 30, 0.2, "the secret on w1")
    assert "Node left the swarm." in w1.ok("swarm", "leave")
    assert files_under(w1.secrets_root) == []
    assert "This node is not part of a swarm" in w1.fails("secret", "ls")
    m1.ok("service", "rm", "leaver")


def test_removed_worker_is_refused_and_wipes_its_secrets(fleet: Cluster) -> None:
    """Last: it removes w2 from the fleet."""
    m1 = fleet.managers[0]
    w2 = fleet.workers[1]
    m1.ok("secret", "create", "gone", "-", input="g")
    m1.ok("service", "create", "--name", "everywhere", "--mode", "global", "--secret", "gone")
    wait_until(lambda: task_file(w2, "everywhere", "gone").exists(), 30, 0.2, "the secret on w2")
    assert "is not down and can't be removed" in m1.fails("node", "rm", node_id(w2))
    identity = _identity(w2)
    t0 = time.monotonic()
    m1.ok("node", "rm", "--force", node_id(w2))
    # The very next call with its certificate is refused, on any manager.
    for m in fleet.managers:
        with _worker_channel(identity, m) as ch:
            with pytest.raises(grpc.RpcError) as e:
                next(iter(dispatcher_pb2_grpc.DispatcherStub(ch).Session(dispatcher_pb2.SessionRequest(), timeout=5)))
            assert e.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE)
    leader = fleet.leader()
    with _worker_channel(identity, leader) as ch:
        with pytest.raises(grpc.RpcError) as e:
            next(iter(dispatcher_pb2_grpc.DispatcherStub(ch).Session(dispatcher_pb2.SessionRequest(), timeout=5)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "was removed" in (e.value.details() or "")
        # The agent acts on the kind the leader sends next to the status, not on the text.
        assert rpcutil.error_kind(e.value) == "NodeRemoved"
    wait_until(lambda: files_under(w2.secrets_root) == [], 10, 0.05, "the removed worker to wipe its secrets")
    print(f"removed worker wiped its secrets {time.monotonic() - t0:.2f}s after node rm")
    assert "This node is not part of a swarm" in w2.fails("secret", "ls")
    m1.ok("service", "rm", "everywhere")

