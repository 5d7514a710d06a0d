"""``service`` and the node write commands against an in-test fake daemon that records requests.

Same pattern as test_cli.py: a Control servicer on a unix socket serving whatever FakeDaemon holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2
from swarmsecrets.cli import service as service_mod
from swarmsecrets.cli.main import cli
from tests.unit.fakedaemon import Recorder, serving, ts

SVC_ID = "svc0000000000000000000001"  # 25 characters, like a swarm ID


def ago(**kw: float) -> str:
    return ts(datetime.now(UTC) - timedelta(**kw))


# --- the fake daemon ---------------------------------------------------------------------------------

@dataclass
class FakeDaemon(Recorder):
    services: list[objects_pb2.Service] = field(default_factory=list)
    tasks: list[objects_pb2.Task] = field(default_factory=list)
    nodes: list[objects_pb2.Node] = field(default_factory=list)
    # ListTasks answers: each call takes the next frame; the last one stays (for convergence tests).
    task_frames: list[list[objects_pb2.Task]] = field(default_factory=list)
    # spec_version a service gets on update
    next_spec_version: int = 2

    def find_service(self, ref: str) -> objects_pb2.Service:
        for s in self.services:
            if ref in (s.id, s.spec.name):
                return s
        raise errors.NotFound(f"service {ref} not found")

    def find_node(self, ref: str) -> objects_pb2.Node:
        for n in self.nodes:
            if ref in (n.id, n.description.hostname):
                return n
        raise errors.node_not_found(ref)


@dataclass
class Box:
    fake: FakeDaemon


class Control(control_pb2_grpc.ControlServicer):
    def __init__(self, box: Box) -> None:
        self.box = box

    @property
    def fake(self) -> FakeDaemon:
        return self.box.fake

    def CreateService(self, request: Any, context: Any) -> Any:  # gRPC method names
        def create() -> Any:
            if any(s.spec.name == request.spec.name for s in self.fake.services):
                raise errors.AlreadyExists(f"service {request.spec.name} already exists")
            now = ts(datetime.now(UTC))
            s = objects_pb2.Service(id=f"svc{len(self.fake.services) + 1:022d}", created_at=now, updated_at=now,
                                    version=objects_pb2.Version(index=7), spec=request.spec, spec_version=1)
            self.fake.services.append(s)
            return control_pb2.CreateServiceResponse(service=s)
        return self.fake.handle("CreateService", request, context, create)

    def GetService(self, request: Any, context: Any) -> Any:
        return self.fake.handle("GetService", request, context, lambda: control_pb2.GetServiceResponse(
            service=self.fake.find_service(request.service_id)))

    def ListServices(self, request: Any, context: Any) -> Any:
        return self.fake.handle("ListServices", request, context,
                                lambda: control_pb2.ListServicesResponse(services=self.fake.services))

    def UpdateService(self, request: Any, context: Any) -> Any:
        def update() -> Any:
            s = self.fake.find_service(request.service_id)
            s.spec_version = self.fake.next_spec_version
            return control_pb2.UpdateServiceResponse(service=s)
        return self.fake.handle("UpdateService", request, context, update)

    def RemoveService(self, request: Any, context: Any) -> Any:
        def remove() -> Any:
            self.fake.services.remove(self.fake.find_service(request.service_id))
            return control_pb2.RemoveServiceResponse()
        return self.fake.handle("RemoveService", request, context, remove)

    def ListTasks(self, request: Any, context: Any) -> Any:
        def list_tasks() -> Any:
            s = self.fake.find_service(request.service_id)
            frames = self.fake.task_frames
            if frames:
                return control_pb2.ListTasksResponse(tasks=frames.pop(0) if len(frames) > 1 else frames[0])
            return control_pb2.ListTasksResponse(tasks=[t for t in self.fake.tasks if t.service_id == s.id])
        return self.fake.handle("ListTasks", request, context, list_tasks)

    def ListNodes(self, request: Any, context: Any) -> Any:
        return self.fake.handle("ListNodes", request, context,
                                lambda: control_pb2.ListNodesResponse(nodes=self.fake.nodes))

    def GetNode(self, request: Any, context: Any) -> Any:
        return self.fake.handle("GetNode", request, context, lambda: control_pb2.GetNodeResponse(
            node=self.fake.find_node(request.node_id)))

    def UpdateNode(self, request: Any, context: Any) -> Any:
        return self.fake.handle("UpdateNode", request, context, lambda: control_pb2.UpdateNodeResponse(
            node=self.fake.find_node(request.node_id)))

    def RemoveNode(self, request: Any, context: Any) -> Any:
        def remove() -> Any:
            self.fake.nodes.remove(self.fake.find_node(request.node_id))
            return control_pb2.RemoveNodeResponse()
        return self.fake.handle("RemoveNode", request, context, remove)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Box, str]]:
    sock = tmp_path_factory.mktemp("d") / "s.sock"
    box = Box(FakeDaemon())
    with serving(str(sock), control=Control(box)):
        yield box, f"unix://{sock}"


def node(id_: str, host: str, role: str = "worker", state: str = "ready",
         availability: str = "active") -> objects_pb2.Node:
    return objects_pb2.Node(id=id_, spec=objects_pb2.NodeSpec(role=role, availability=availability),
                            description=objects_pb2.NodeDescription(hostname=host),
                            status=objects_pb2.NodeStatus(state=state))


@pytest.fixture
def fake(server: tuple[Box, str], monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    monkeypatch.setattr(service_mod, "POLL_INTERVAL", 0.01)
    fresh = FakeDaemon(nodes=[node("node1", "mgr-1", "manager"), node("node2", "wrk-1"),
                              node("node3", "wrk-2", availability="drain")])
    server[0].fake = fresh
    return fresh


@pytest.fixture
def invoke(server: tuple[Box, str], fake: FakeDaemon) -> Callable[..., Result]:
    _, host = server

    def go(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, ["-H", host, *args], env=env, catch_exceptions=False)

    return go


def add_service(fake: FakeDaemon, id_: str, name: str, *, mode: str = "replicated", replicas: int = 1,
                running: int = 0, command: tuple[str, ...] = ("sleep", "1000"), spec_version: int = 1,
                **spec: Any) -> objects_pb2.Service:
    s = objects_pb2.Service(
        id=id_, version=objects_pb2.Version(index=11), created_at="2026-11-28T04:58:11.084570000Z",
        updated_at="2026-11-28T05:00:00Z", spec_version=spec_version, running_tasks=running,
        desired_tasks=replicas,
        spec=objects_pb2.ServiceSpec(name=name, mode=mode, replicas=0 if mode == "global" else replicas,
                                     command=command, **spec))
    fake.services.append(s)
    return s


def task(id_: str, *, slot: int = 1, node_id: str = "node2", state: str = "running", desired: str = "running",
         spec_version: int = 1, err: str = "", age: float = 5.2, service: str = "web",
         service_id: str = SVC_ID) -> objects_pb2.Task:
    return objects_pb2.Task(
        id=id_, service_id=service_id, service_name=service, slot=slot, node_id=node_id, desired_state=desired,
        created_at=ago(seconds=age), spec_version=spec_version,
        status=objects_pb2.TaskStatus(state=state, err=err, timestamp=ago(seconds=age)))


def secrets_of(refs: Any) -> list[tuple[str, str, str, str, str, int]]:
    return [(r.secret_id, r.secret_name, r.file.name, r.file.uid, r.file.gid, r.file.mode) for r in refs]


# --- service create -----------------------------------------------------------------------------------

def test_create_sends_the_whole_spec_and_prints_the_id(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("service", "create", "--name", "web", "--secret", "db_pass",
               "--secret", "source=s2,target=password,uid=2000,gid=3000,mode=0400",
               "-e", "A=1", "--env", "HOME", "-e", "UNSET", "--user", "1000:1000",
               "--update-action", "signal:hup", "--", "sleep", "1000", env={"HOME": "/home/x", "UNSET": None})
    assert (r.exit_code, r.stdout, r.stderr) == (0, "svc0000000000000000000001\n", "")
    (req,) = fake.requests
    assert req[0] == "CreateService"
    spec = req[1].spec
    assert (spec.name, spec.mode, spec.replicas, list(spec.command), dict(spec.env), spec.user,
            spec.update_action) == ("web", "replicated", 1, ["sleep", "1000"], {"A": "1", "HOME": "/home/x"},
                                    "1000:1000", "signal:SIGHUP")
    assert secrets_of(spec.secrets) == [("", "db_pass", "db_pass", "0", "0", 0o444),
                                        ("", "s2", "password", "2000", "3000", 0o400)]
    assert len(req[1].request_id) == 32


def test_create_defaults(invoke: Any, fake: FakeDaemon) -> None:
    assert invoke("service", "create", "--name", "web", "sleep", "1").exit_code == 0
    spec = fake.calls("CreateService")[0].spec
    assert (spec.mode, spec.replicas, spec.update_action, spec.user, list(spec.secrets), dict(spec.env)) == (
        "replicated", 1, "restart", "", [], {})


@pytest.mark.parametrize(("args", "mode", "replicas"), [
    (["--replicas", "3"], "replicated", 3),
    (["--replicas", "0"], "replicated", 0),
    (["--mode", "global"], "global", 0),
    (["--mode", "replicated", "--replicas", "2"], "replicated", 2),
])
def test_create_modes(invoke: Any, fake: FakeDaemon, args: list[str], mode: str, replicas: int) -> None:
    assert invoke("service", "create", "--name", "web", *args, "true").exit_code == 0
    spec = fake.calls("CreateService")[0].spec
    assert (spec.mode, spec.replicas) == (mode, replicas)


def test_create_command_keeps_its_own_options(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("service", "create", "--name", "web", "sh", "-c", "echo hi", "--detach=false", "-d")
    assert r.exit_code == 0
    assert list(fake.calls("CreateService")[0].spec.command) == ["sh", "-c", "echo hi", "--detach=false", "-d"]
    assert fake.calls("GetService") == []


@pytest.mark.parametrize(("args", "message"), [
    (["--secret", "src=s1,mode=400"], "invalid mode specified: 400 (file modes are octal: did you mean 0400?)"),
    (["--secret", "src=s1,target=../../etc/shadow"],
     "invalid secret target '../../etc/shadow': must be a relative path without '..'"),
    (["--secret", "src=s1,target=/etc/shadow"],
     "invalid secret target '/etc/shadow': must be a relative path without '..'"),
    (["--secret", "s1", "--secret", "src=s2,target=s1"], "duplicate secret target for s2 not allowed"),
    (["--secret", "src=s1,uid=nginx"], "invalid uid 'nginx': must be numeric"),
    (["--secret", "src=s1,bogus=1"], "invalid field in secret request: bogus"),
    (["--mode", "global", "--replicas", "2"], "replicas can only be used with replicated mode"),
    (["--mode", "job"], "Unknown mode: job, only replicated and global supported"),
    (["--user", "www-data"], "invalid user 'www-data': must be UID[:GID] with numeric ids"),
    (["--update-action", "signal:NOPE"], "invalid update action 'signal:NOPE': unknown signal 'NOPE'"),
    (["-e", "=x"], "invalid environment variable: =x"),
])
def test_create_refused_locally(invoke: Any, fake: FakeDaemon, args: list[str], message: str) -> None:
    r = invoke("service", "create", "--name", "web", *args, "true")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", message + "\n")
    assert fake.requests == []


@pytest.mark.parametrize(("name", "message"), [
    ("my.web", "name must be valid as a DNS name component"),
    ("-web", "name must be valid as a DNS name component"),
    ("w" * 64, "name must be 63 characters or fewer"),
])
def test_create_bad_service_name(invoke: Any, fake: FakeDaemon, name: str, message: str) -> None:
    r = invoke("service", "create", "--name", name, "true")
    assert (r.exit_code, r.stderr) == (1, message + "\n")
    assert fake.requests == []


def test_create_daemon_refusal_is_one_line(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["CreateService"] = [(grpc.StatusCode.INVALID_ARGUMENT, "secret not found: db_pass")]
    r = invoke("service", "create", "--name", "web", "--secret", "db_pass", "true")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "Error response from daemon: secret not found: db_pass\n")


# --- convergence (--detach=false) --------------------------------------------------------------------

def test_create_waits_and_prints_progress(invoke: Any, fake: FakeDaemon) -> None:
    fake.task_frames = [
        [],
        [task("t1", slot=1, state="starting"), task("t2", slot=2, state="assigned")],
        [task("t1", slot=1), task("t2", slot=2, state="starting")],
        [task("t1", slot=1), task("t2", slot=2)],
    ]
    r = invoke("service", "create", "--name", "web", "--replicas", "2", "--detach=false", "true")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (f"{SVC_ID}\n"
                        "overall progress: 0 out of 2 tasks\n"
                        "overall progress: 1 out of 2 tasks\n"
                        "overall progress: 2 out of 2 tasks\n"
                        f"verify: Service {SVC_ID} converged\n")
    assert [q.service_id for q in fake.calls("GetService")] == [SVC_ID] * 4
    assert [q.service_id for q in fake.calls("ListTasks")] == [SVC_ID] * 4


@pytest.mark.parametrize("flag", ["--detach=false", "-d=false", "--no-detach", "--detach=0"])
def test_detach_false_spellings_wait(invoke: Any, fake: FakeDaemon, flag: str) -> None:
    fake.task_frames = [[task("t1")]]
    r = invoke("service", "create", "--name", "web", flag, "true")
    assert r.stdout.endswith(f"verify: Service {SVC_ID} converged\n")


@pytest.mark.parametrize("flags", [[], ["-d"], ["--detach"], ["--detach=true"]])
def test_detached_by_default(invoke: Any, fake: FakeDaemon, flags: list[str]) -> None:
    r = invoke("service", "create", "--name", "web", *flags, "true")
    assert (r.exit_code, r.stdout) == (0, f"{SVC_ID}\n")
    assert fake.calls("ListTasks") == []


def test_wait_fails_with_the_task_error(invoke: Any, fake: FakeDaemon) -> None:
    fake.task_frames = [[task("t1", state="starting")],
                        [task("t1", state="failed", desired="shutdown", err="exec: \"nope\": not found")]]
    r = invoke("service", "create", "--name", "web", "--detach=false", "nope")
    assert r.exit_code == 1
    assert r.stdout == f"{SVC_ID}\noverall progress: 0 out of 1 tasks\n"
    assert r.stderr == 'task t1: exec: "nope": not found\n'


def test_wait_times_out(invoke: Any, fake: FakeDaemon) -> None:
    fake.task_frames = [[task("t1", state="starting")]]
    r = invoke("service", "create", "--name", "web", "--detach=false", "--timeout", "0.1", "true")
    assert r.exit_code == 1
    assert r.stdout == f"{SVC_ID}\noverall progress: 0 out of 1 tasks\n"
    assert r.stderr == f"service {SVC_ID} did not converge within 0.1s (0 out of 1 tasks running)\n"
    assert len(fake.calls("ListTasks")) >= 3


def test_update_waits_for_tasks_of_the_new_spec(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "web", replicas=1)
    fake.task_frames = [[task("old", spec_version=1)],
                        [task("old", spec_version=1, desired="shutdown"), task("new", spec_version=2)]]
    r = invoke("service", "update", "--force", "--detach=false", "web")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == ("web\n"
                        "overall progress: 0 out of 1 tasks\n"
                        "overall progress: 1 out of 1 tasks\n"
                        f"verify: Service {SVC_ID} converged\n")


def test_old_failures_do_not_fail_the_update(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "web", replicas=1)
    fake.task_frames = [[task("old", spec_version=1, state="failed", err="boom"), task("new", spec_version=2)]]
    r = invoke("service", "update", "--detach=false", "web")
    assert (r.exit_code, r.stderr) == (0, "")


def test_global_service_waits_for_ready_active_nodes(invoke: Any, fake: FakeDaemon) -> None:
    fake.nodes.append(node("node4", "wrk-3", state="down"))
    fake.task_frames = [[task("a", slot=0, node_id="node1")],
                        [task("a", slot=0, node_id="node1"), task("b", slot=0, node_id="node2")]]
    r = invoke("service", "create", "--name", "agent", "--mode", "global", "--detach=false", "true")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (f"{SVC_ID}\n"
                        "overall progress: 1 out of 2 tasks\n"
                        "overall progress: 2 out of 2 tasks\n"
                        f"verify: Service {SVC_ID} converged\n")


# --- service update ----------------------------------------------------------------------------------

def test_update_request_removals_then_additions(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "web")
    r = invoke("service", "update", "--secret-rm", "pw", "--secret-rm", "old",
               "--secret-add", "source=pw_v2,target=pw,mode=0400", "--secret-add", "tls", "--replicas", "3",
               "--force", "-d", "web")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "web\n", "")
    (req,) = fake.calls("UpdateService")
    assert (req.service_id, list(req.secret_rm), req.set_replicas, req.replicas, req.force) == (
        "web", ["pw", "old"], True, 3, True)
    assert secrets_of(req.secret_add) == [("", "pw_v2", "pw", "0", "0", 0o400), ("", "tls", "tls", "0", "0", 0o444)]
    assert len(req.request_id) == 32


def test_update_without_replicas_leaves_them(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "web")
    assert invoke("service", "update", "--secret-rm", "pw", "web").exit_code == 0
    (req,) = fake.calls("UpdateService")
    assert (req.set_replicas, req.replicas, req.force, list(req.secret_add)) == (False, 0, False, [])


@pytest.mark.parametrize(("args", "message"), [
    (["--secret-add", "a", "--secret-add", "src=b,target=a"], "duplicate secret target for b not allowed"),
    (["--secret-add", "src=a,mode=600"], "invalid mode specified: 600 (file modes are octal: did you mean 0600?)"),
])
def test_update_refused_locally(invoke: Any, fake: FakeDaemon, args: list[str], message: str) -> None:
    add_service(fake, SVC_ID, "web")
    r = invoke("service", "update", *args, "web")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", message + "\n")
    assert fake.requests == []


def test_update_unknown_service(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("service", "update", "--force", "nope")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "Error response from daemon: service nope not found\n")


# --- service ls --------------------------------------------------------------------------------------

def _ls_fixture(fake: FakeDaemon) -> None:
    add_service(fake, "b" * 25, "web-10", replicas=3, running=2)
    add_service(fake, "a" * 25, "agent", mode="global", running=2, command=())
    fake.services[-1].desired_tasks = 2
    add_service(fake, "c" * 25, "web-9", replicas=1, running=1, command=("sh", "-c", "sleep 5"))


def test_ls_table(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    r = invoke("service", "ls")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "ID             NAME      MODE         REPLICAS   COMMAND\n"
        "aaaaaaaaaaaa   agent     global       2/2        \n"
        "cccccccccccc   web-9     replicated   1/1        sh -c sleep 5\n"
        "bbbbbbbbbbbb   web-10    replicated   2/3        sleep 1000\n")


def test_ls_quiet_json_and_format(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    assert invoke("service", "ls", "-q").stdout == "aaaaaaaaaaaa\ncccccccccccc\nbbbbbbbbbbbb\n"
    first = json.loads(invoke("service", "ls", "--format", "json").stdout.splitlines()[0])
    assert first == {"Command": "", "ID": "aaaaaaaaaaaa", "Mode": "global", "Name": "agent", "Replicas": "2/2"}
    assert invoke("service", "ls", "--format", "{{.Name}}={{.Replicas}}").stdout == "agent=2/2\nweb-9=1/1\nweb-10=2/3\n"


def test_ls_empty(invoke: Any, fake: FakeDaemon) -> None:
    assert invoke("service", "list").stdout == "ID        NAME      MODE      REPLICAS   COMMAND\n"


# --- service ps --------------------------------------------------------------------------------------

def _ps_fixture(fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "web", replicas=2)
    fake.tasks = [
        task("t" * 25, slot=2, age=5.2),
        task("s" * 25, slot=10, node_id="node9", state="starting", age=0),
        task("o" * 25, slot=2, state="failed", desired="shutdown", age=150,
             err="task: non-zero exit (1): the process ran out of patience"),
        task("u" * 25, slot=1, node_id="node1", age=7200),
    ]


def test_ps_table(invoke: Any, fake: FakeDaemon) -> None:
    _ps_fixture(fake)
    r = invoke("service", "ps", "web")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "ID             NAME        NODE      DESIRED STATE   CURRENT STATE                     ERROR\n"
        "uuuuuuuuuuuu   web.1       mgr-1     Running         Running 2 hours ago               \n"
        "tttttttttttt   web.2       wrk-1     Running         Running 5 seconds ago             \n"
        "oooooooooooo    \\_ web.2   wrk-1     Shutdown        Failed 2 minutes ago              "
        '"task: non-zero exit (1): the …"\n'
        "ssssssssssss   web.10      node9     Running         Starting less than a second ago   \n")
    assert [q.service_id for q in fake.calls("ListTasks")] == ["web"]


def test_ps_no_trunc_quiet_and_json(invoke: Any, fake: FakeDaemon) -> None:
    _ps_fixture(fake)
    r = invoke("service", "ps", "--no-trunc", "web")
    assert "ooooooooooooooooooooooooo    \\_ web.2" in r.stdout
    assert '"task: non-zero exit (1): the process ran out of patience"' in r.stdout
    assert invoke("service", "ps", "-q", "web").stdout == "uuuuuuuuuuuu\ntttttttttttt\noooooooooooo\nssssssssssss\n"
    assert len(fake.calls("ListNodes")) == 1  # -q needs no hostnames
    rows = [json.loads(line) for line in invoke("service", "ps", "--format", "json", "web").stdout.splitlines()]
    assert [row["Name"] for row in rows] == ["web.1", "web.2", "web.2", "web.10"]
    assert rows[2] == {"CurrentState": "Failed 2 minutes ago", "DesiredState": "Shutdown",
                       "Error": '"task: non-zero exit (1): the …"', "ID": "oooooooooooo", "Name": "web.2",
                       "Node": "wrk-1"}


def test_ps_global_names_use_the_node(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, SVC_ID, "agent", mode="global")
    fake.tasks = [task("b" * 25, slot=0, node_id="node2", service="agent"),
                  task("a" * 25, slot=0, node_id="node1", service="agent")]
    r = invoke("service", "ps", "--format", "{{.Name}} {{.Node}}", "agent")
    assert r.stdout == "agent.node1 mgr-1\nagent.node2 wrk-1\n"


def test_ps_unknown_service(invoke: Any, fake: FakeDaemon) -> None:
    _ps_fixture(fake)
    r = invoke("service", "ps", "-q", "nope", "web")
    assert r.exit_code == 1
    assert r.stdout == "uuuuuuuuuuuu\ntttttttttttt\noooooooooooo\nssssssssssss\n"
    assert r.stderr == "Error response from daemon: service nope not found\n"


# --- service inspect ---------------------------------------------------------------------------------

def _inspect_fixture(fake: FakeDaemon) -> None:
    s = add_service(fake, SVC_ID, "web", replicas=2, running=1, env={"B": "2", "A": "1"}, user="1000:1000",
                    labels={"team": "db"}, update_action="signal:SIGHUP")
    s.spec.secrets.add(secret_id="sec1", secret_name="db_pass",
                       file=objects_pb2.FileTarget(name="db_pass", uid="0", gid="0", mode=0o444))
    s.spec.secrets.add(secret_id="sec2", secret_name="s2",
                       file=objects_pb2.FileTarget(name="password", uid="2000", gid="3000", mode=0o400))
    add_service(fake, "g" * 25, "agent", mode="global", command=())


def test_inspect_json_like_docker(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("service", "inspect", "web", "agent")
    assert (r.exit_code, r.stderr) == (0, "")
    got = json.loads(r.stdout)
    assert got[0] == {
        "ID": SVC_ID,
        "Version": {"Index": 11},
        "CreatedAt": "2026-11-28T04:58:11.084570000Z",
        "UpdatedAt": "2026-11-28T05:00:00Z",
        "Spec": {
            "Name": "web",
            "Labels": {"team": "db"},
            "TaskTemplate": {"ContainerSpec": {
                "Command": ["sleep", "1000"],
                "Env": ["A=1", "B=2"],
                "User": "1000:1000",
                "Secrets": [
                    {"File": {"Name": "db_pass", "UID": "0", "GID": "0", "Mode": 292},
                     "SecretID": "sec1", "SecretName": "db_pass"},
                    {"File": {"Name": "password", "UID": "2000", "GID": "3000", "Mode": 256},
                     "SecretID": "sec2", "SecretName": "s2"},
                ],
            }},
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateAction": "signal:SIGHUP",
        },
        "ServiceStatus": {"RunningTasks": 1, "DesiredTasks": 2},
    }
    assert got[1]["Spec"]["Mode"] == {"Global": {}}
    assert got[1]["Spec"]["Labels"] is None
    assert got[1]["Spec"]["TaskTemplate"] == {"ContainerSpec": {}}
    assert r.stdout.startswith('[\n    {\n        "ID": ')


def test_inspect_format(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("service", "inspect", "-f",
               "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}} "
               "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}:{{.File.Mode}} {{end}}", "web")
    assert r.stdout == "web 2 db_pass:292 s2:256 \n"


def test_inspect_pretty_like_docker(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("service", "inspect", "--pretty", "web")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "\n"
        f"ID:\t\t{SVC_ID}\n"
        "Name:\t\tweb\n"
        "Labels:\n"
        " team=db\n"
        "Service Mode:\tReplicated\n"
        " Replicas:\t2\n"
        "UpdateConfig:\n"
        " Action:\tsignal:SIGHUP\n"
        "ContainerSpec:\n"
        " Command:\tsleep 1000 \n"
        " Env:\t\tA=1 B=2 \n"
        " User: 1000:1000\n"
        "Secrets:\n"
        " Target:\tdb_pass\n"
        "  Source:\tdb_pass\n"
        " Target:\tpassword\n"
        "  Source:\ts2\n")
    r = invoke("service", "inspect", "--pretty", "agent")
    assert r.stdout == (f"\nID:\t\t{'g' * 25}\nName:\t\tagent\nService Mode:\tGlobal\n"
                        "UpdateConfig:\n Action:\trestart\nContainerSpec:\n")


def test_inspect_missing(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("service", "inspect", "nope", "web")
    assert r.exit_code == 1
    assert [s["ID"] for s in json.loads(r.stdout)] == [SVC_ID]
    assert r.stderr == "Error response from daemon: service nope not found\n"
    r = invoke("service", "inspect", "nope")
    assert (r.exit_code, r.stdout) == (1, "[]\n")


# --- service rm --------------------------------------------------------------------------------------

def test_rm_keeps_going(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, "a" * 25, "one")
    add_service(fake, "b" * 25, "two")
    r = invoke("service", "rm", "one", "nope", "b" * 25)
    assert r.exit_code == 1
    assert r.stdout == "one\n" + "b" * 25 + "\n"
    assert r.stderr == "Error response from daemon: service nope not found\n"
    reqs = fake.calls("RemoveService")
    assert [q.service_id for q in reqs] == ["one", "nope", "b" * 25]
    assert len({q.request_id for q in reqs}) == 3
    assert fake.services == []
    add_service(fake, "a" * 25, "one")
    assert invoke("service", "remove", "one").stdout == "one\n"


def test_rm_retries_with_the_same_request_id(invoke: Any, fake: FakeDaemon) -> None:
    add_service(fake, "a" * 25, "one")
    fake.faults["RemoveService"] = [(grpc.StatusCode.UNAVAILABLE, "restarting")]
    r = invoke("service", "rm", "one")
    assert (r.exit_code, r.stdout) == (0, "one\n")
    a, b = fake.calls("RemoveService")
    assert a.request_id == b.request_id


# --- node update / rm / promote / demote ------------------------------------------------------------

def test_node_update_availability(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "update", "--availability", "DRAIN", "wrk-1")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "wrk-1\n", "")
    (req,) = fake.calls("UpdateNode")
    assert (req.node_id, req.availability, req.role, len(req.request_id)) == ("wrk-1", "drain", "", 32)


def test_node_update_bad_availability(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "update", "--availability", "paused", "wrk-1")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", 'invalid Availability: "paused"\n')
    assert fake.requests == []


def test_node_update_unknown_node(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "update", "--availability", "active", "nope")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "Error response from daemon: node nope not found\n")


def test_node_rm(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "rm", "--force", "node2", "nope", "wrk-2")
    assert r.exit_code == 1
    assert r.stdout == "node2\nwrk-2\n"
    assert r.stderr == "Error response from daemon: node nope not found\n"
    assert [(q.node_id, q.force) for q in fake.calls("RemoveNode")] == [
        ("node2", True), ("nope", True), ("wrk-2", True)]
    assert [n.id for n in fake.nodes] == ["node1"]
    assert invoke("node", "remove", "node1").stdout == "node1\n"
    assert fake.calls("RemoveNode")[-1].force is False


def test_node_promote(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "promote", "wrk-1", "mgr-1", "nope")
    assert r.exit_code == 1
    assert r.stdout == ("Node wrk-1 promoted to a manager in the swarm.\n"
                        "Node mgr-1 is already a manager.\n")
    assert r.stderr == "Error response from daemon: node nope not found\n"
    assert [(q.node_id, q.role, q.availability) for q in fake.calls("UpdateNode")] == [("node2", "manager", "")]


def test_node_demote(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "demote", "node1", "node2")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == "Manager node1 demoted in the swarm.\nNode node2 is already a worker.\n"
    assert [(q.node_id, q.role) for q in fake.calls("UpdateNode")] == [("node1", "worker")]


def test_node_demote_daemon_refusal(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["UpdateNode"] = [(grpc.StatusCode.FAILED_PRECONDITION, "can't demote the last manager")]
    r = invoke("node", "demote", "node1")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "Error response from daemon: can't demote the last manager\n"
