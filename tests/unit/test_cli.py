"""The CLI against an in-test fake daemon (Swarm + Control servicers on a unix socket) that records requests.

This tests the client side: flags, local validation, output formats, error lines, exit codes, retries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc, objects_pb2, swarm_pb2, swarm_pb2_grpc
from swarmsecrets.cli import client as client_mod
from swarmsecrets.client import RetryPolicy
from swarmsecrets.cli.main import cli, run
from tests.unit.fakedaemon import Recorder, serving, ts

REPO = Path(__file__).resolve().parents[2]
UNLOCK_KEY = "SWMKEY-1-" + "A" * 43
WORKER_TOKEN = "SWMTKN-1-" + "d" * 50 + "-" + "w" * 25
MANAGER_TOKEN = "SWMTKN-1-" + "d" * 50 + "-" + "m" * 25
PAYLOAD = b"TOP-SECRET-PAYLOAD-\x00\xff"


# --- the fake daemon ---------------------------------------------------------------------------------

@dataclass
class FakeDaemon(Recorder):
    secrets: list[objects_pb2.Secret] = field(default_factory=list)
    nodes: list[objects_pb2.Node] = field(default_factory=list)
    info: swarm_pb2.InfoResponse = field(default_factory=swarm_pb2.InfoResponse)
    cluster: objects_pb2.Cluster = field(default_factory=objects_pb2.Cluster)
    unlock_key: str = ""
    join_role: str = "manager"

    def find_secret(self, ref: str) -> objects_pb2.Secret:
        for s in self.secrets:
            if ref in (s.id, s.spec.name):
                return s
        raise errors.secret_not_found(ref)


@dataclass
class Box:
    """What the long-lived servicers serve: each test puts a fresh FakeDaemon in."""

    fake: FakeDaemon


class Control(control_pb2_grpc.ControlServicer):
    def __init__(self, box: Box) -> None:
        self.box = box

    @property
    def fake(self) -> FakeDaemon:
        return self.box.fake

    def CreateSecret(self, request: Any, context: Any) -> Any:  # gRPC method names
        def create() -> Any:
            if any(s.spec.name == request.spec.name for s in self.fake.secrets):
                raise errors.secret_exists(request.spec.name)
            now = ts(datetime.now(UTC))
            spec = objects_pb2.SecretSpec(name=request.spec.name, labels=request.spec.labels)
            s = objects_pb2.Secret(id=f"id{len(self.fake.secrets):023d}",
                                   version=objects_pb2.Version(index=5), created_at=now, updated_at=now,
                                   spec=spec)
            self.fake.secrets.append(s)
            return control_pb2.CreateSecretResponse(secret=s)
        return self.fake.handle("CreateSecret", request, context, create)

    def GetSecret(self, request: Any, context: Any) -> Any:
        def get() -> Any:
            s = objects_pb2.Secret()
            s.CopyFrom(self.fake.find_secret(request.secret_id))
            s.spec.data = PAYLOAD  # a buggy daemon: the CLI must still never show it
            return control_pb2.GetSecretResponse(secret=s)
        return self.fake.handle("GetSecret", request, context, get)

    def ListSecrets(self, request: Any, context: Any) -> Any:
        return self.fake.handle("ListSecrets", request, context,
                                lambda: control_pb2.ListSecretsResponse(secrets=self.fake.secrets))

    def RemoveSecret(self, request: Any, context: Any) -> Any:
        def remove() -> Any:
            self.fake.secrets.remove(self.fake.find_secret(request.secret_id))
            return control_pb2.RemoveSecretResponse()
        return self.fake.handle("RemoveSecret", request, context, remove)

    def ListNodes(self, request: Any, context: Any) -> Any:
        return self.fake.handle("ListNodes", request, context,
                                lambda: control_pb2.ListNodesResponse(nodes=self.fake.nodes))

    def GetNode(self, request: Any, context: Any) -> Any:
        def get() -> Any:
            for n in self.fake.nodes:
                if request.node_id == n.id:
                    return control_pb2.GetNodeResponse(node=n)
            raise errors.node_not_found(request.node_id)
        return self.fake.handle("GetNode", request, context, get)

    def GetCluster(self, request: Any, context: Any) -> Any:
        return self.fake.handle("GetCluster", request, context,
                                lambda: control_pb2.GetClusterResponse(cluster=self.fake.cluster))

    def RotateJoinToken(self, request: Any, context: Any) -> Any:
        def rotate() -> Any:
            tokens = self.fake.cluster.join_tokens
            if request.role == "worker":
                tokens.worker = WORKER_TOKEN[:-1] + "2"
            else:
                tokens.manager = MANAGER_TOKEN[:-1] + "2"
            return control_pb2.RotateJoinTokenResponse(join_tokens=tokens)
        return self.fake.handle("RotateJoinToken", request, context, rotate)

    def GetUnlockKey(self, request: Any, context: Any) -> Any:
        return self.fake.handle("GetUnlockKey", request, context,
                                lambda: control_pb2.GetUnlockKeyResponse(unlock_key=self.fake.unlock_key))

    def RotateUnlockKey(self, request: Any, context: Any) -> Any:
        def rotate() -> Any:
            self.fake.unlock_key = "SWMKEY-1-" + "B" * 43
            return control_pb2.GetUnlockKeyResponse(unlock_key=self.fake.unlock_key)
        return self.fake.handle("RotateUnlockKey", request, context, rotate)


class Swarm(swarm_pb2_grpc.SwarmServicer):
    def __init__(self, box: Box) -> None:
        self.box = box

    @property
    def fake(self) -> FakeDaemon:
        return self.box.fake

    def Init(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Init", request, context, lambda: swarm_pb2.InitResponse(
            node_id="node1", unlock_key=UNLOCK_KEY if request.autolock else "",
            worker_join_command=f"swarmsecrets swarm join --token {WORKER_TOKEN} {request.advertise_addr}"))

    def Join(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Join", request, context,
                                lambda: swarm_pb2.JoinResponse(node_id="node9", role=self.fake.join_role))

    def Leave(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Leave", request, context, swarm_pb2.LeaveResponse)

    def Unlock(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Unlock", request, context, swarm_pb2.UnlockResponse)

    def Info(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Info", request, context, lambda: self.fake.info)

    def Backup(self, request: Any, context: Any) -> Any:
        return self.fake.handle("Backup", request, context, lambda: swarm_pb2.BackupResponse(
            path=request.path, applied_index=77, secrets=3, nodes=2,
            backup_key="" if self.fake.unlock_key else UNLOCK_KEY))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Box, str]]:
    sock = tmp_path_factory.mktemp("d") / "s.sock"
    box = Box(FakeDaemon())
    with serving(str(sock), Swarm(box), Control(box)):
        yield box, f"unix://{sock}"


@pytest.fixture
def fake(server: tuple[Box, str]) -> FakeDaemon:
    now = datetime.now(UTC)
    fresh = FakeDaemon(
        info=swarm_pb2.InfoResponse(node_id="node1", local_node_state="active", control_available=True),
        cluster=objects_pb2.Cluster(id="cluster1", join_tokens=objects_pb2.JoinTokens(
            worker=WORKER_TOKEN, manager=MANAGER_TOKEN)),
        nodes=[
            _node("node1", "mgr-2", "manager", leader=True, reachability="reachable", addr="10.0.0.2:2377",
                  now=now),
            _node("node3", "mgr-10", "manager", leader=False, reachability="unreachable",
                  addr="10.0.0.10:2377", state="down", now=now),
            _node("node2", "wrk-1", "worker", availability="drain", now=now),
        ],
    )
    server[0].fake = fresh
    return fresh


def _node(id_: str, host: str, role: str, *, now: datetime, leader: bool = False, reachability: str = "",
          addr: str = "", state: str = "ready", availability: str = "active") -> objects_pb2.Node:
    n = objects_pb2.Node(
        id=id_, version=objects_pb2.Version(index=3), created_at="2026-11-28T04:58:11.084570000Z",
        updated_at=ts(now),
        spec=objects_pb2.NodeSpec(role=role, availability=availability),
        description=objects_pb2.NodeDescription(hostname=host, platform_os="linux", platform_arch="x86_64",
                                                engine_version="0.1.0"),
        status=objects_pb2.NodeStatus(state=state, addr=addr.split(":")[0] if addr else "10.0.0.99"))
    if role == "manager":
        n.manager_status.CopyFrom(
            objects_pb2.ManagerStatus(leader=leader, reachability=reachability, addr=addr))
    return n


def add_secret(fake: FakeDaemon, id_: str, name: str, age: timedelta, labels: dict[str, str] | None = None,
               index: int = 12) -> None:
    when = ts(datetime.now(UTC) - age)
    fake.secrets.append(objects_pb2.Secret(id=id_, version=objects_pb2.Version(index=index), created_at=when,
                                           updated_at=when,
                                           spec=objects_pb2.SecretSpec(name=name, labels=labels or {})))


@pytest.fixture
def invoke(server: tuple[Box, str], fake: FakeDaemon) -> Callable[..., Result]:
    _, host = server

    def go(*args: str, input: bytes | str | None = None) -> Result:
        return CliRunner().invoke(cli, ["-H", host, *args], input=input, catch_exceptions=False)

    return go


def lines(text: str) -> list[str]:
    return text.splitlines()


# --- secret create -----------------------------------------------------------------------------------

def test_create_from_stdin_prints_id_and_sends_everything(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "create", "-l", "env=prod", "--label", "team", "db_pw", "-", input=b"hunter2\n")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "id00000000000000000000000\n", "")
    (req,) = fake.calls("CreateSecret")
    assert req.spec.name == "db_pw"
    assert req.spec.data == b"hunter2\n"
    assert dict(req.spec.labels) == {"env": "prod", "team": ""}
    assert len(req.request_id) == 32 and int(req.request_id, 16) >= 0


def test_create_from_file(invoke: Any, fake: FakeDaemon, tmp_path: Path) -> None:
    f = tmp_path / "cert.pem"
    f.write_bytes(b"\x00binary\xffdata")
    r = invoke("secret", "create", "tls", str(f))
    assert r.exit_code == 0
    assert fake.calls("CreateSecret")[0].spec.data == b"\x00binary\xffdata"


def test_each_create_gets_its_own_request_id(invoke: Any, fake: FakeDaemon) -> None:
    invoke("secret", "create", "a", "-", input="x")
    invoke("secret", "create", "b", "-", input="x")
    a, b = fake.calls("CreateSecret")
    assert a.request_id != b.request_id


def test_create_max_size_accepted(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "create", "big", "-", input=b"x" * 511_999)
    assert r.exit_code == 0
    assert len(fake.calls("CreateSecret")[0].spec.data) == 511_999


@pytest.mark.parametrize("size", [512_000, 2 * 512_000 + 100])
def test_create_too_big_refused_locally(invoke: Any, fake: FakeDaemon, size: int) -> None:
    r = invoke("secret", "create", "big", "-", input=b"x" * size)
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "secret data must be larger than 0 and less than 512000 bytes\n"
    assert fake.requests == []


@pytest.mark.parametrize("name", ["-lead", "trail-", "x" * 65, "bad name", "a/b"])
def test_create_bad_name_refused_locally(invoke: Any, fake: FakeDaemon, name: str) -> None:
    r = invoke("secret", "create", "--", name, "-", input="x")
    assert r.exit_code == 1
    assert r.stderr == f"{errors.SECRET_NAME_INVALID}\n"
    assert fake.requests == []


def test_create_single_char_name_ok(invoke: Any, fake: FakeDaemon) -> None:
    assert invoke("secret", "create", "a", "-", input="x").exit_code == 0


@pytest.mark.parametrize(("label", "message"), [
    ("=x", "invalid label '=x': empty name"),
    ("a b=c", "label 'a b' contains whitespaces"),
])
def test_create_bad_label(invoke: Any, fake: FakeDaemon, label: str, message: str) -> None:
    r = invoke("secret", "create", "-l", label, "s", "-", input="x")
    assert (r.exit_code, r.stderr) == (1, message + "\n")
    assert fake.requests == []


def test_create_read_errors(invoke: Any, fake: FakeDaemon, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    missing = tmp_path / "missing"
    cases = [
        (["s", "-"], b"", "error reading from STDIN: data is empty"),
        (["s", str(empty)], None, f"error reading from {empty}: data is empty"),
        (["s", str(missing)], None,
         f"error reading from {missing}: open {missing}: no such file or directory"),
        (["s", str(tmp_path)], None, f"error reading from {tmp_path}: read {tmp_path}: is a directory"),
        (["s"], None, "secret file is required"),
    ]
    for args, stdin, message in cases:
        r = invoke("secret", "create", *args, input=stdin)
        assert (r.exit_code, r.stdout, r.stderr) == (1, "", message + "\n"), args
    assert fake.requests == []


def test_create_conflict_is_one_error_line(invoke: Any, fake: FakeDaemon) -> None:
    add_secret(fake, "x" * 25, "dup", timedelta(0))
    r = invoke("secret", "create", "dup", "-", input="x")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "Error response from daemon: secret dup already exists\n"
    assert len(fake.calls("CreateSecret")) == 1


def test_create_retries_unavailable_with_the_same_request_id(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["CreateSecret"] = [(grpc.StatusCode.UNAVAILABLE, "the manager is starting")] * 2
    r = invoke("secret", "create", "s1", "-", input="x")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == "id00000000000000000000000\n"
    reqs = fake.calls("CreateSecret")
    assert len(reqs) == 3
    assert len({q.request_id for q in reqs}) == 1


def test_create_retries_what_a_stopping_daemon_cancelled(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["CreateSecret"] = [(grpc.StatusCode.CANCELLED, "CANCELLED")]
    r = invoke("secret", "create", "s1", "-", input="x")
    assert (r.exit_code, r.stderr) == (0, "")
    reqs = fake.calls("CreateSecret")
    assert len(reqs) == 2 and len({q.request_id for q in reqs}) == 1


def test_retry_gives_up_after_the_budget(invoke: Any, fake: FakeDaemon,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "RETRY", RetryPolicy(budget=0.5))
    fake.faults["CreateSecret"] = [(grpc.StatusCode.UNAVAILABLE, "the manager is starting")] * 100
    r = invoke("secret", "create", "s1", "-", input="x")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "Error response from daemon: the manager is starting\n"
    assert 2 <= len(fake.calls("CreateSecret")) < 10


@pytest.mark.parametrize("error", [errors.NoLeader(), errors.SwarmLocked(), errors.NotInSwarm(), errors.NotAManager()])
def test_states_waiting_cannot_fix_are_reported_at_once(invoke: Any, fake: FakeDaemon,
                                                        error: errors.SwarmError) -> None:
    fake.faults["CreateSecret"] = [error] * 2
    r = invoke("secret", "create", "s1", "-", input="x")
    assert (r.exit_code, r.stderr) == (1, f"Error response from daemon: {error.message}\n")
    assert len(fake.calls("CreateSecret")) == 1


def test_a_no_leader_text_without_its_kind_is_retried(invoke: Any, fake: FakeDaemon) -> None:
    """The retry decision reads the error's kind, never its text."""
    fake.faults["CreateSecret"] = [(grpc.StatusCode.UNAVAILABLE, errors.NO_LEADER)]
    r = invoke("secret", "create", "s1", "-", input="x")
    assert r.exit_code == 0, r.stderr
    assert len(fake.calls("CreateSecret")) == 2


def test_reads_are_not_retried(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["ListSecrets"] = [(grpc.StatusCode.UNAVAILABLE, errors.NO_LEADER)]
    r = invoke("secret", "ls")
    assert (r.exit_code, r.stderr) == (1, f"Error response from daemon: {errors.NO_LEADER}\n")
    assert len(fake.calls("ListSecrets")) == 1


def test_deadline_on_a_write_reports_unknown_outcome(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["CreateSecret"] = [(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")]
    r = invoke("secret", "create", "s1", "-", input="x")
    assert r.exit_code == 1
    assert r.stderr == f"{errors.UNKNOWN_OUTCOME}\n"
    assert len(fake.calls("CreateSecret")) == 1


# --- secret inspect ----------------------------------------------------------------------------------

def _inspect_fixture(fake: FakeDaemon) -> None:
    fake.secrets.append(objects_pb2.Secret(
        id="c282ee071b020d72a681856b4", version=objects_pb2.Version(index=11),
        created_at="2026-11-28T04:58:11.084570000Z", updated_at="2026-11-28T04:58:12.000000000Z",
        spec=objects_pb2.SecretSpec(name="s1")))
    fake.secrets.append(objects_pb2.Secret(
        id="c64a136bda45529deab1a5b7e", version=objects_pb2.Version(index=12),
        created_at="2026-11-28T05:00:00.000000001Z", updated_at="2026-11-28T05:00:00.000000001Z",
        spec=objects_pb2.SecretSpec(name="s2", labels={"tier": "web", "env": "", "a": "1"})))


def test_inspect_json_like_docker(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "s1", "c64a136bda45529deab1a5b7e")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == """[
    {
        "ID": "c282ee071b020d72a681856b4",
        "Version": {
            "Index": 11
        },
        "CreatedAt": "2026-11-28T04:58:11.084570000Z",
        "UpdatedAt": "2026-11-28T04:58:12.000000000Z",
        "Spec": {
            "Name": "s1",
            "Labels": null
        }
    },
    {
        "ID": "c64a136bda45529deab1a5b7e",
        "Version": {
            "Index": 12
        },
        "CreatedAt": "2026-11-28T05:00:00.000000001Z",
        "UpdatedAt": "2026-11-28T05:00:00.000000001Z",
        "Spec": {
            "Name": "s2",
            "Labels": {
                "a": "1",
                "env": "",
                "tier": "web"
            }
        }
    }
]
"""
    assert [q.secret_id for q in fake.calls("GetSecret")] == ["s1", "c64a136bda45529deab1a5b7e"]


@pytest.mark.parametrize("args", [[], ["--pretty"], ["-f", "{{json .}}"], ["-f", "{{json .Spec}}"],
                                  ["--format", "{{.Spec}}"]])
def test_inspect_never_shows_data(invoke: Any, fake: FakeDaemon, args: list[str]) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", *args, "s1")
    assert r.exit_code == 0
    assert "TOP-SECRET" not in r.stdout
    assert "Data" not in r.stdout
    assert "VE9QLVNFQ1JFV" not in r.stdout  # the payload in base64


def test_inspect_data_field_is_not_there(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "-f", "{{.Spec.Data}}", "s1")
    assert r.exit_code == 1
    assert "can't evaluate field Data in type swarm.SecretSpec" in r.stderr


def test_inspect_missing_prints_found_then_errors(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "nope", "s1", "gone")
    assert r.exit_code == 1
    assert [s["Spec"]["Name"] for s in json.loads(r.stdout)] == ["s1"]
    assert lines(r.stderr) == ["Error response from daemon: secret nope not found",
                               "Error response from daemon: secret gone not found"]


def test_inspect_all_missing_prints_empty_array(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "inspect", "nope")
    assert (r.exit_code, r.stdout) == (1, "[]\n")
    assert r.stderr == "Error response from daemon: secret nope not found\n"


def test_inspect_templates(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "-f", "{{.ID}} {{.Spec.Name}} {{.Version.Index}} {{json .Spec.Labels}}",
               "s1", "s2")
    assert r.stdout == ('c282ee071b020d72a681856b4 s1 11 null\n'
                        'c64a136bda45529deab1a5b7e s2 12 {"a":"1","env":"","tier":"web"}\n')
    r = invoke("secret", "inspect", "-f", '{{index .Spec.Labels "tier"}}|{{.CreatedAt}}', "s2")
    assert r.stdout == "web|2026-11-28 05:00:00.000000001 +0000 UTC\n"


def test_inspect_template_error(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "-f", "{{.Foo}}", "s1")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == ('template parsing error: template: :1:2: executing "" at <.Foo>: '
                        "can't evaluate field Foo in type swarm.Secret\n")


def test_inspect_pretty_like_docker(invoke: Any, fake: FakeDaemon) -> None:
    _inspect_fixture(fake)
    r = invoke("secret", "inspect", "--pretty", "s1", "s2")
    assert r.exit_code == 0
    assert r.stdout == (
        "ID:              c282ee071b020d72a681856b4\n"
        "Name:              s1\n"
        "Driver:            \n"
        "Created at:        2026-11-28 04:58:11.08457 +0000 utc\n"
        "Updated at:        2026-11-28 04:58:12 +0000 utc\n"
        "ID:              c64a136bda45529deab1a5b7e\n"
        "Name:              s2\n"
        "Labels:\n"
        " - a=1\n"
        " - env\n"
        " - tier=web\n"
        "Driver:            \n"
        "Created at:        2026-11-28 05:00:00.000000001 +0000 utc\n"
        "Updated at:        2026-11-28 05:00:00.000000001 +0000 utc\n")


def test_inspect_pretty_with_extra_format(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "inspect", "-f", "pretty {{.ID}}", "s1")
    assert (r.exit_code, r.stderr) == (1, "cannot supply extra formatting options to the pretty template\n")


# --- secret ls ---------------------------------------------------------------------------------------

def _ls_fixture(fake: FakeDaemon) -> None:
    add_secret(fake, "c" * 25, "10-foo", timedelta(hours=2), {"env": "prod", "app": "db"})
    add_secret(fake, "a" * 25, "2-foo", timedelta(seconds=30))
    add_secret(fake, "b" * 25, "1-foo", timedelta(days=3))


def test_ls_default_table(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    r = invoke("secret", "ls")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "ID                          NAME      DRIVER    CREATED          UPDATED\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbb   1-foo               3 days ago       3 days ago\n"
        "aaaaaaaaaaaaaaaaaaaaaaaaa   2-foo               30 seconds ago   30 seconds ago\n"
        "ccccccccccccccccccccccccc   10-foo              2 hours ago      2 hours ago\n")


def test_ls_empty_table_has_header(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "list")
    assert r.stdout == "ID        NAME      DRIVER    CREATED   UPDATED\n"


def test_ls_quiet_and_formats(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    assert invoke("secret", "ls", "-q").stdout == "b" * 25 + "\n" + "a" * 25 + "\n" + "c" * 25 + "\n"
    assert invoke("secret", "ls", "--format", "{{.Name}}").stdout == "1-foo\n2-foo\n10-foo\n"
    assert invoke("secret", "ls", "-q", "--format", "{{.Name}}").stdout == "1-foo\n2-foo\n10-foo\n"
    assert invoke("secret", "ls", "--format", "table").stdout.startswith("ID   ")
    out = invoke("secret", "ls", "--format", 'table {{.Name}}\\t{{.Labels}}\\t{{.Label "env"}}').stdout
    assert out == ("NAME      LABELS            env\n"
                   "1-foo                       \n"
                   "2-foo                       \n"
                   "10-foo    app=db,env=prod   prod\n")


def test_ls_json(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    got = [json.loads(line) for line in lines(invoke("secret", "ls", "--format", "json").stdout)]
    assert got[2] == {"CreatedAt": "2 hours ago", "Driver": "", "ID": "c" * 25, "Labels": "app=db,env=prod",
                      "Name": "10-foo", "UpdatedAt": "2 hours ago"}
    assert list(got[0]) == sorted(got[0])
    assert [g["Name"] for g in got] == ["1-foo", "2-foo", "10-foo"]


def test_ls_filters_are_sent(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("secret", "ls", "-f", "name=db", "-f", "id=ab", "-f", "label=env=prod", "-f", "label=team")
    assert r.exit_code == 0
    (req,) = fake.calls("ListSecrets")
    assert list(req.filters.name_prefixes) == ["db"]
    assert list(req.filters.id_prefixes) == ["ab"]
    assert dict(req.filters.labels) == {"env": "prod", "team": ""}


@pytest.mark.parametrize(("flt", "message"), [("foo=bar", "invalid filter 'foo'"),
                                              ("name", "bad format of filter (expected name=value)")])
def test_ls_bad_filter(invoke: Any, fake: FakeDaemon, flt: str, message: str) -> None:
    r = invoke("secret", "ls", "-f", flt)
    assert (r.exit_code, r.stderr) == (1, message + "\n")
    assert fake.requests == []


def test_ls_unknown_field(invoke: Any, fake: FakeDaemon) -> None:
    _ls_fixture(fake)
    r = invoke("secret", "ls", "--format", "{{.Nope}}")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == ('template parsing error: template: :1:2: executing "" at <.Nope>: '
                        "can't evaluate field Nope in type *formatter.secretContext\n")


# --- secret rm ---------------------------------------------------------------------------------------

def test_rm_partial_failure(invoke: Any, fake: FakeDaemon) -> None:
    add_secret(fake, "a" * 25, "one", timedelta(0))
    add_secret(fake, "b" * 25, "two", timedelta(0))
    r = invoke("secret", "rm", "one", "nope", "b" * 25)
    assert r.exit_code == 1
    assert r.stdout == "one\n" + "b" * 25 + "\n"
    assert r.stderr == "Error response from daemon: secret nope not found\n"
    reqs = fake.calls("RemoveSecret")
    assert [q.secret_id for q in reqs] == ["one", "nope", "b" * 25]
    assert all(len(q.request_id) == 32 for q in reqs)
    assert len({q.request_id for q in reqs}) == 3
    assert fake.secrets == []


def test_rm_all_ok(invoke: Any, fake: FakeDaemon) -> None:
    add_secret(fake, "a" * 25, "one", timedelta(0))
    r = invoke("secret", "remove", "one")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "one\n", "")


def test_rm_retries_with_same_id(invoke: Any, fake: FakeDaemon) -> None:
    add_secret(fake, "a" * 25, "one", timedelta(0))
    fake.faults["RemoveSecret"] = [(grpc.StatusCode.UNAVAILABLE, "restarting")]
    r = invoke("secret", "rm", "one")
    assert (r.exit_code, r.stdout) == (0, "one\n")
    a, b = fake.calls("RemoveSecret")
    assert a.request_id == b.request_id


# --- connection problems -----------------------------------------------------------------------------

def test_missing_socket(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/none.sock"
    r = CliRunner().invoke(cli, ["-H", host, "secret", "ls"], catch_exceptions=False)
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == f"Cannot connect to the swarmsecrets daemon at {host}. Is the daemon running?\n"


def test_stale_socket_file(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    r = CliRunner().invoke(cli, ["-H", f"unix://{path}", "node", "ls"], catch_exceptions=False)
    assert r.exit_code == 1
    assert r.stderr == f"Cannot connect to the swarmsecrets daemon at unix://{path}. Is the daemon running?\n"


def test_host_from_environment(server: tuple[Box, str], fake: FakeDaemon) -> None:
    _, host = server
    r = CliRunner().invoke(cli, ["secret", "ls", "-q"], env={"SWARMSECRETS_HOST": host},
                           catch_exceptions=False)
    assert r.exit_code == 0
    assert len(fake.calls("ListSecrets")) == 1


def test_unsupported_host() -> None:
    r = CliRunner().invoke(cli, ["-H", "tcp://1.2.3.4:2375", "secret", "ls"], catch_exceptions=False)
    assert r.exit_code == 1
    assert r.stderr == "unsupported host 'tcp://1.2.3.4:2375': expected unix:///path/to/socket\n"


def test_no_traceback_as_a_process(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/none.sock"
    p = subprocess.run([sys.executable, "-m", "swarmsecrets.cli.main", "-H", host, "secret", "rm", "x"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == f"Cannot connect to the swarmsecrets daemon at {host}. Is the daemon running?\n"


def test_run_maps_interrupts_and_surprises(server: tuple[Box, str], fake: FakeDaemon,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _, host = server

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(client_mod.Client, "call", interrupted)
    assert run(["-H", host, "secret", "ls"]) == 130
    assert "Traceback" not in capsys.readouterr().err

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(client_mod.Client, "call", broken)
    assert run(["-H", host, "secret", "ls"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: RuntimeError: boom")


def test_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("swarmsecrets version ")
    assert run(["-H", f"unix://{tmp_path}/x.sock", "secret", "ls"]) == 1
    assert "Cannot connect" in capsys.readouterr().err
    assert run(["secret", "create"]) == 2
    assert run(["--help"]) == 0


# --- swarm -------------------------------------------------------------------------------------------

def test_swarm_init_output(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "init", "--advertise-addr", "10.0.0.2")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "Swarm initialized: current node (node1) is now a manager.\n\n"
        "To add a worker to this swarm, run the following command:\n\n"
        f"    swarmsecrets swarm join --token {WORKER_TOKEN} 10.0.0.2:2377\n\n"
        "To add a manager to this swarm, run 'swarmsecrets swarm join-token manager' and follow the "
        "instructions.\n\n")
    (req,) = fake.calls("Init")
    assert (req.advertise_addr, req.listen_addr, req.raft_addr, req.autolock, req.force_new_cluster,
            req.availability) == ("10.0.0.2:2377", "", "", False, False, "active")


def test_swarm_init_autolock_and_addresses(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "init", "--advertise-addr", "[::1]:4000", "--listen-addr", "0.0.0.0",
               "--raft-addr", "10.0.0.2:4001", "--autolock", "--force-new-cluster")
    assert r.exit_code == 0
    assert r.stdout.endswith(
        "follow the instructions.\n\n"
        "To unlock a swarm manager after it restarts, run the `swarmsecrets swarm unlock`\n"
        "command and provide the following key:\n\n"
        f"    {UNLOCK_KEY}\n\n"
        "Remember to store this key in a password manager, since without it you\n"
        "will not be able to restart the manager.\n")
    (req,) = fake.calls("Init")
    assert (req.advertise_addr, req.listen_addr, req.raft_addr, req.autolock, req.force_new_cluster) == (
        "[::1]:4000", "0.0.0.0:4000", "10.0.0.2:4001", True, True)


@pytest.mark.parametrize(("args", "message"), [
    (["--advertise-addr", "10.0.0.2:99999"],
     "invalid address '10.0.0.2:99999': port must be a number between 1 and 65535"),
    (["--advertise-addr", "10.0.0.2", "--raft-addr", "10.0.0.2"],
     "invalid address '10.0.0.2': missing port (expected HOST:PORT)"),
])
def test_swarm_init_bad_address(invoke: Any, fake: FakeDaemon, args: list[str], message: str) -> None:
    r = invoke("swarm", "init", *args)
    assert (r.exit_code, r.stderr) == (1, message + "\n")
    assert fake.requests == []


@pytest.mark.parametrize("command", [["init", "--advertise-addr", "10.0.0.2"],
                                     ["join", "--token", MANAGER_TOKEN, "--advertise-addr", "10.0.0.3", "10.0.0.2"]])
def test_swarm_init_and_join_availability(invoke: Any, fake: FakeDaemon, command: list[str]) -> None:
    name = command[0].capitalize()
    r = invoke("swarm", *command, "--availability", "Drain")
    assert r.exit_code == 0, r.stderr
    (req,) = fake.calls(name)
    assert req.availability == "drain"
    bad = invoke("swarm", *command, "--availability", "busy")
    assert (bad.exit_code, bad.stderr) == (
        1, 'invalid availability "busy", only active, pause and drain are supported\n')
    assert len(fake.calls(name)) == 1  # the bad one never reached the daemon


def test_swarm_init_force_new_cluster_needs_no_address(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "init", "--force-new-cluster")
    assert r.exit_code == 0, r.stderr
    (req,) = fake.calls("Init")
    assert (req.advertise_addr, req.force_new_cluster, req.restore_path) == ("", True, "")
    bad = invoke("swarm", "init")
    assert (bad.exit_code, bad.stderr) == (1, "--advertise-addr is required (HOST:PORT of this node's swarm port)\n")
    assert len(fake.calls("Init")) == 1


def test_swarm_init_restore_reads_the_key_from_stdin(invoke: Any, fake: FakeDaemon, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = invoke("swarm", "init", "--restore", "swarm.backup", "--advertise-addr", "10.0.0.2", input=UNLOCK_KEY + "\n")
    assert r.exit_code == 0, r.stderr
    (req,) = fake.calls("Init")
    assert (req.restore_path, req.restore_key, req.advertise_addr) == (
        str(tmp_path / "swarm.backup"), UNLOCK_KEY, "10.0.0.2:2377")
    for args, stdin, message in [
        (["--advertise-addr", "10.0.0.2"], "SWMKEY-1-short\n", "invalid key string"),
        (["--advertise-addr", "10.0.0.2", "--force-new-cluster"], UNLOCK_KEY + "\n",
         "--restore cannot be combined with --force-new-cluster or --autolock"),
        ([], UNLOCK_KEY + "\n", "--advertise-addr is required (HOST:PORT of this node's swarm port)"),
    ]:
        bad = invoke("swarm", "init", "--restore", "f", *args, input=stdin)
        assert (bad.exit_code, bad.stderr) == (1, message + "\n")
    assert len(fake.calls("Init")) == 1  # the bad ones never reached the daemon


@pytest.mark.parametrize("autolocked", [False, True])
def test_swarm_backup_output(invoke: Any, fake: FakeDaemon, tmp_path: Path, autolocked: bool) -> None:
    fake.unlock_key = UNLOCK_KEY if autolocked else ""
    r = invoke("swarm", "backup", str(tmp_path / "b"))
    assert (r.exit_code, r.stderr) == (0, "")
    (req,) = fake.calls("Backup")
    assert req.path == str(tmp_path / "b")
    assert r.stdout.startswith(f"Backup written to {tmp_path / 'b'}: 3 secrets, 2 nodes, raft index 77.\n\n")
    if autolocked:
        assert UNLOCK_KEY not in r.stdout and "opens with its current unlock key" in r.stdout
    else:
        assert f"\n    {UNLOCK_KEY}\n" in r.stdout and "It is shown only once." in r.stdout


def test_swarm_init_daemon_error(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["Init"] = [(grpc.StatusCode.FAILED_PRECONDITION, errors.ALREADY_IN_SWARM)]
    r = invoke("swarm", "init", "--advertise-addr", "10.0.0.2:2377")
    assert (r.exit_code, r.stderr) == (1, f"Error response from daemon: {errors.ALREADY_IN_SWARM}\n")
    assert len(fake.calls("Init")) == 1


@pytest.mark.parametrize("role", ["manager", "worker"])
def test_swarm_join(invoke: Any, fake: FakeDaemon, role: str) -> None:
    fake.join_role = role
    r = invoke("swarm", "join", "--token", MANAGER_TOKEN, "--advertise-addr", "10.0.0.3:2377", "10.0.0.2")
    assert (r.exit_code, r.stdout) == (0, f"This node joined a swarm as a {role}.\n")
    (req,) = fake.calls("Join")
    assert (req.remote_addr, req.join_token, req.advertise_addr, req.listen_addr, req.raft_addr,
            req.availability) == ("10.0.0.2:2377", MANAGER_TOKEN, "10.0.0.3:2377", "", "", "active")


def test_join_token_worker(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "join-token", "worker")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == ("To add a worker to this swarm, run the following command:\n\n"
                        f"    swarmsecrets swarm join --token {WORKER_TOKEN} 10.0.0.2:2377\n\n")
    assert [q.node_id for q in fake.calls("GetNode")] == ["node1"]


def test_join_token_quiet(invoke: Any, fake: FakeDaemon) -> None:
    assert invoke("swarm", "join-token", "-q", "manager").stdout == MANAGER_TOKEN + "\n"


def test_join_token_rotate(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "join-token", "--rotate", "manager")
    new = MANAGER_TOKEN[:-1] + "2"
    assert r.stdout == ("Successfully rotated manager join token.\n\n"
                        "To add a manager to this swarm, run the following command:\n\n"
                        f"    swarmsecrets swarm join --token {new} 10.0.0.2:2377\n\n")
    (req,) = fake.calls("RotateJoinToken")
    assert req.role == "manager" and len(req.request_id) == 32
    assert invoke("swarm", "join-token", "--rotate", "-q", "worker").stdout == WORKER_TOKEN[:-1] + "2\n"


def test_join_token_unknown_role(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "join-token", "admin")
    assert (r.exit_code, r.stderr) == (1, "unknown role admin\n")
    assert fake.requests == []


def test_leave(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "leave", "--force")
    assert (r.exit_code, r.stdout) == (0, "Node left the swarm.\n")
    assert fake.calls("Leave")[0].force is True
    fake.faults["Leave"] = [(grpc.StatusCode.FAILED_PRECONDITION, errors.LAST_MANAGER_LEAVE)]
    r = invoke("swarm", "leave")
    assert (r.exit_code, r.stderr) == (1, f"Error response from daemon: {errors.LAST_MANAGER_LEAVE}\n")


def test_unlock_reads_key_from_stdin(invoke: Any, fake: FakeDaemon) -> None:
    fake.info.local_node_state = "locked"
    r = invoke("swarm", "unlock", input=UNLOCK_KEY + "\n")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    assert fake.calls("Unlock")[0].unlock_key == UNLOCK_KEY


@pytest.mark.parametrize(("state", "key", "message"), [
    ("inactive", UNLOCK_KEY, "error: this node is not part of a swarm"),
    ("active", UNLOCK_KEY, "error: swarm is not locked"),
    ("locked", "SWMKEY-1-short", "invalid key string"),
    ("locked", "nonsense", "invalid key string"),
    ("locked", "", "invalid key string"),
])
def test_unlock_refusals(invoke: Any, fake: FakeDaemon, state: str, key: str, message: str) -> None:
    fake.info.local_node_state = state
    r = invoke("swarm", "unlock", input=key + "\n")
    assert (r.exit_code, r.stderr) == (1, message + "\n")
    assert fake.calls("Unlock") == []


def test_unlock_wrong_key_from_daemon(invoke: Any, fake: FakeDaemon) -> None:
    fake.info.local_node_state = "locked"
    fake.faults["Unlock"] = [(grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_UNLOCK_KEY)]
    r = invoke("swarm", "unlock", input=UNLOCK_KEY)
    assert (r.exit_code, r.stderr) == (1, f"Error response from daemon: {errors.INVALID_UNLOCK_KEY}\n")


def test_unlock_key(invoke: Any, fake: FakeDaemon) -> None:
    fake.unlock_key = UNLOCK_KEY
    r = invoke("swarm", "unlock-key")
    assert r.stdout == ("To unlock a swarm manager after it restarts, run the `swarmsecrets swarm unlock`\n"
                        "command and provide the following key:\n\n"
                        f"    {UNLOCK_KEY}\n\n"
                        "Remember to store this key in a password manager, since without it you\n"
                        "will not be able to restart the manager.\n")
    assert invoke("swarm", "unlock-key", "-q").stdout == UNLOCK_KEY + "\n"


def test_unlock_key_rotate(invoke: Any, fake: FakeDaemon) -> None:
    fake.unlock_key = UNLOCK_KEY
    r = invoke("swarm", "unlock-key", "--rotate")
    assert (r.exit_code, r.stderr) == (1, "cannot rotate because autolock is not turned on\n")
    assert fake.calls("RotateUnlockKey") == []
    fake.cluster.autolock = True
    r = invoke("swarm", "unlock-key", "--rotate")
    assert r.stdout.startswith("Successfully rotated manager unlock key.\nTo unlock a swarm manager")
    assert "SWMKEY-1-" + "B" * 43 in r.stdout
    assert len(fake.calls("RotateUnlockKey")[0].request_id) == 32
    assert invoke("swarm", "unlock-key", "--rotate", "-q").stdout == "SWMKEY-1-" + "B" * 43 + "\n"


def test_unlock_key_none_set(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("swarm", "unlock-key")
    assert (r.exit_code, r.stderr) == (1, "no unlock key is set\n")


def test_worker_node_message_passes_through(invoke: Any, fake: FakeDaemon) -> None:
    fake.faults["ListSecrets"] = [(grpc.StatusCode.FAILED_PRECONDITION, errors.NOT_A_MANAGER)]
    r = invoke("secret", "ls")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == f"Error response from daemon: {errors.NOT_A_MANAGER}\n"


# --- node --------------------------------------------------------------------------------------------

def test_node_ls(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "ls")
    assert (r.exit_code, r.stderr) == (0, "")
    assert r.stdout == (
        "ID        HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n"
        "node1 *   mgr-2      Ready     Active         Leader           0.1.0\n"
        "node3     mgr-10     Down      Active         Unreachable      0.1.0\n"
        "node2     wrk-1      Ready     Drain                           0.1.0\n")


def test_node_ls_quiet_and_json(invoke: Any, fake: FakeDaemon) -> None:
    assert invoke("node", "ls", "-q").stdout == "node1\nnode3\nnode2\n"
    assert fake.calls("Info") == []
    first = json.loads(lines(invoke("node", "ls", "--format", "json").stdout)[0])
    assert first == {"Availability": "Active", "EngineVersion": "0.1.0", "Hostname": "mgr-2", "ID": "node1",
                     "ManagerStatus": "Leader", "Self": True, "Status": "Ready"}


def test_node_inspect_self_and_missing(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "inspect", "self", "nope", "node2")
    assert r.exit_code == 1
    got = json.loads(r.stdout)
    assert [n["ID"] for n in got] == ["node1", "node2"]
    assert got[0]["ManagerStatus"] == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.2:2377"}
    assert "ManagerStatus" not in got[1]
    assert got[1]["Spec"] == {"Labels": None, "Role": "worker", "Availability": "drain"}
    assert r.stderr == "Error response from daemon: node nope not found\n"


def test_node_inspect_format_and_pretty(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "inspect", "-f", "{{.Description.Hostname}} {{.Spec.Role}}", "node3")
    assert r.stdout == "mgr-10 manager\n"
    r = invoke("node", "inspect", "--pretty", "self")
    assert r.stdout == (
        "ID:\t\t\tnode1\n"
        "Hostname:              \tmgr-2\n"
        "Joined at:             \t2026-11-28 04:58:11.08457 +0000 utc\n"
        "Status:\n"
        " State:\t\t\tReady\n"
        " Availability:         \tActive\n"
        " Address:\t\t10.0.0.2\n"
        "Manager Status:\n"
        " Address:\t\t10.0.0.2:2377\n"
        " Raft Status:\t\tReachable\n"
        " Leader:\t\tYes\n"
        "Platform:\n"
        " Operating System:\tlinux\n"
        " Architecture:\t\tx86_64\n"
        "Engine Version:\t\t0.1.0\n")
    r = invoke("node", "inspect", "--pretty", "node2")
    assert "Manager Status" not in r.stdout
    assert " State:\t\t\tReady\n" in r.stdout


def test_node_ls_and_inspect_escape_terminal_escapes_but_json_is_exact(invoke: Any, fake: FakeDaemon) -> None:
    hostile = "evil\x1b]0;pwned\x07\x1b[2J"
    fake.nodes.append(_node("node9", hostile, "worker", now=datetime.now(UTC)))
    table = invoke("node", "ls").stdout
    assert "\x1b" not in table and "\x07" not in table
    assert "node9     evil\\x1b]0;pwned\\a\\x1b[2J   Ready" in table
    pretty = invoke("node", "inspect", "--pretty", "node9").stdout
    assert "\x1b" not in pretty and "evil\\x1b]0;pwned\\a\\x1b[2J" in pretty
    as_json = invoke("node", "ls", "--format", "json").stdout
    assert "\x1b" not in as_json
    assert {json.loads(line)["Hostname"] for line in lines(as_json)} >= {hostile}
    assert json.loads(invoke("node", "inspect", "node9").stdout)[0]["Description"]["Hostname"] == hostile


def test_daemon_errors_are_printed_escaped(invoke: Any, fake: FakeDaemon) -> None:
    r = invoke("node", "inspect", "no\x1b[2Jde")
    assert r.exit_code == 1 and "\x1b" not in r.stderr and "no\\x1b[2Jde" in r.stderr


@pytest.mark.parametrize("argv", [["secret", "ls"], ["secret", "inspect", "db_pass"], ["info"]])
def test_everyday_commands_import_neither_grpc_nor_cryptography(server: tuple[Box, str], fake: FakeDaemon,
                                                                argv: list[str]) -> None:
    """A command's start is most of its time: the local API needs neither gRPC nor the cryptography
    package, and a command imports only its own group's module. Fails when an import drags one in."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "swarmsecrets.cli.main", "-H", server[1], *argv],
                       capture_output=True, text=True, timeout=60)
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "swarmsecrets.client.local" in imported, p.stderr  # the check sees the command's own imports
    heavy = sorted(m for m in imported if m.split(".")[0] in ("grpc", "cryptography"))
    assert heavy == [], heavy
    assert "swarmsecrets.cli.service" not in imported and "swarmsecrets.cli.swarm" not in imported
