"""A holder of a worker join token, and then the worker it becomes, sends what no honest node sends:
a 1 MB hostname, a CSR that does not parse, terminal escapes in its hostname and task errors, a task
status too large for one raft entry, a hostname spelled like another node's ID. The managers refuse
each with a clear error, write nothing for it, keep applying the good reports next to it, and show
what they did keep with its control characters escaped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from swarmsecrets.api.v1 import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    objects_pb2,
)
from swarmsecrets.ca import certs
from tests.framework import Cluster, Node
from tests.security.attack import joiner_channel, node_channel, write_identity

ESC = "\x1b]0;pwned\x07\x1b[2J"


@dataclass
class Joiner:
    """The attacker's side: a worker token and a channel that needs no certificate."""

    token: str
    root_pem: bytes
    channel: grpc.Channel

    def issue(self, **fields: object) -> ca_pb2.IssueNodeCertificateResponse:
        if "csr" not in fields:
            _, fields["csr"] = certs.generate_key_and_csr()
        request = ca_pb2.IssueNodeCertificateRequest(token=self.token, **fields)  # type: ignore[arg-type]
        response: ca_pb2.IssueNodeCertificateResponse = ca_pb2_grpc.NodeCAStub(self.channel).IssueNodeCertificate(
            request, timeout=15)
        return response


@pytest.fixture(scope="module")
def joiner(cluster: Cluster) -> Iterator[Joiner]:
    m1 = cluster.managers[0]
    token = m1.ok("swarm", "join-token", "-q", "worker").strip()
    root_pem = (m1.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()
    with joiner_channel(m1.addr, root_pem, token) as ch:
        yield Joiner(token, root_pem, ch)


def node_ids(node: Node) -> set[str]:
    with node_channel(node.addr, node.data_dir / "certificates") as ch:
        nodes = control_pb2_grpc.ControlStub(ch).ListNodes(control_pb2.ListNodesRequest(), timeout=10).nodes
    return {n.id for n in nodes}


def task_list(node: Node) -> list[objects_pb2.Task]:
    with node_channel(node.addr, node.data_dir / "certificates") as ch:
        return list(control_pb2_grpc.ControlStub(ch).ListTasks(control_pb2.ListTasksRequest(), timeout=10).tasks)


def remove_node(node: Node, node_id: str) -> None:
    with node_channel(node.addr, node.data_dir / "certificates") as ch:
        control_pb2_grpc.ControlStub(ch).RemoveNode(control_pb2.RemoveNodeRequest(node_id=node_id, force=True),
                                                    timeout=15)


def refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    return e.value


def test_join_with_oversize_or_malformed_fields_writes_no_node(cluster: Cluster, joiner: Joiner) -> None:
    m1 = cluster.managers[0]
    before = node_ids(m1)
    for fields, expected in [
        ({"hostname": "h" * 1_000_000}, "invalid hostname 'hhhh"),
        ({"hostname": "evil" + ESC}, "invalid hostname"),
        ({"hostname": "box", "csr": b"-----BEGIN CERTIFICATE REQUEST-----\nnot a csr\n"},
         "invalid certificate request"),
        ({"hostname": "box", "csr": b"A" * 2_000_000}, "invalid certificate request"),
    ]:
        e = refusal(lambda fields=fields: joiner.issue(**fields))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert expected in (e.details() or "") and len(e.details() or "") < 200, e.details()
    assert node_ids(m1) == before
    # The same token, with honest fields, does join: the refusals above were about the fields.
    joined = joiner.issue(hostname="honest-box")
    assert joined.role == "worker"
    assert node_ids(m1) == before | {joined.node_id}
    remove_node(m1, joined.node_id)


def test_hostname_shaped_like_a_node_id_prefix_is_ambiguous(cluster: Cluster, joiner: Joiner) -> None:
    m1 = cluster.managers[0]
    target = m1.info().node_id
    prefix = target[:6]
    shadow = joiner.issue(hostname=prefix)
    try:
        # Docker resolves the name first: `node update --availability drain <prefix>` would hit the shadow.
        err = m1.fails("node", "inspect", "--format", "{{.ID}}", prefix)
        assert err == f"Error response from daemon: node {prefix} is ambiguous (2 matches found)"
        assert m1.ok("node", "inspect", "--format", "{{.ID}}", target).strip() == target
    finally:
        remove_node(m1, shadow.node_id)


def test_hostile_worker_session_and_status_reports(cluster: Cluster, joiner: Joiner, tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    leader = cluster.leader()
    key, csr = certs.generate_key_and_csr()
    issued = joiner.issue(hostname="hostile", csr=csr)
    cert_dir = write_identity(tmp_path / "certificates", joiner.root_pem, issued.certificate, key)
    with node_channel(m1.addr, m1.data_dir / "certificates") as ch:
        control = control_pb2_grpc.ControlStub(ch)
        for name in ("bounds_a", "bounds_b"):
            control.CreateService(control_pb2.CreateServiceRequest(spec=objects_pb2.ServiceSpec(
                name=name, mode="global", command=["/bin/sleep", "600"])), timeout=15)
    try:
        with node_channel(leader.addr, cert_dir) as ch:
            stub = dispatcher_pb2_grpc.DispatcherStub(ch)
            # A session whose hostname carries terminal escapes (or is 1 MB) is refused; the node's record
            # keeps the hostname it joined with.
            for bad in ("evil" + ESC, "h" * 1_000_000):
                e = refusal(lambda bad=bad: next(iter(stub.Session(
                    dispatcher_pb2.SessionRequest(hostname=bad), timeout=10))))
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid hostname" in (e.details() or "")
            listing = m1.ok("node", "ls")
            assert "\x1b" not in listing and "hostile" in listing

            session = stub.Session(dispatcher_pb2.SessionRequest(hostname="hostile"), timeout=60)
            first = next(iter(session))
            session_id = first.session_id
            alive = threading.Event()

            def heartbeat() -> None:  # the node stays Ready (its tasks assigned) while the test runs
                while not alive.wait(first.heartbeat_period_ms / 3000):
                    stub.Heartbeat(dispatcher_pb2.HeartbeatRequest(session_id=session_id), timeout=10)

            beating = threading.Thread(target=heartbeat, daemon=True)
            beating.start()
            try:
                tasks: dict[str, str] = {}
                assignments = stub.Assignments(dispatcher_pb2.AssignmentsRequest(session_id=session_id),
                                               timeout=20)
                for msg in assignments:
                    for c in msg.changes:
                        if c.HasField("task") and c.action == dispatcher_pb2.AssignmentChange.UPDATE:
                            tasks[c.task.service_name] = c.task.id
                    if {"bounds_a", "bounds_b"} <= set(tasks):
                        break
                assignments.cancel()

                def report(task_id: str, state: str, err: str) -> dispatcher_pb2.TaskStatusUpdate:
                    return dispatcher_pb2.TaskStatusUpdate(task_id=task_id, status=objects_pb2.TaskStatus(
                        state=state, err=err))

                # One call: a good report with terminal escapes in its error, one whose error alone is
                # larger than a raft entry may be, and one with a made-up state.
                e = refusal(lambda: stub.UpdateTaskStatus(dispatcher_pb2.UpdateTaskStatusRequest(
                    session_id=session_id, updates=[
                        report(tasks["bounds_a"], "running", "boom" + ESC),
                        report(tasks["bounds_b"], "running", "E" * 1_100_000),
                        report(tasks["bounds_b"], "x" * 100_000, ""),
                    ]), timeout=15))
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (e.details() or "").startswith("task status refused: invalid task state 'xxxx")
                assert len(e.details() or "") < 200

                # The good reports went in, the oversize error cut; shown, the escapes are escaped.
                by_id = {t.id: t for t in task_list(m1)}
                a, b = by_id[tasks["bounds_a"]].status, by_id[tasks["bounds_b"]].status
                assert (a.state, a.err) == ("running", "boom" + ESC)
                assert b.state == "running" and b.err.endswith("E... (truncated)") and len(b.err) <= 1024
                table = m1.ok("service", "ps", "--no-trunc", "bounds_a", "bounds_b")
                assert "\x1b" not in table and "\x07" not in table
                assert '"boom\\x1b]0;pwned\\a\\x1b[2J"' in table
                # json stays exact: JSON escapes of the very characters the worker sent.
                as_json = m1.ok("service", "ps", "--no-trunc", "--format", "json", "bounds_a")
                assert '"Error":"\\"boom\\u001b]0;pwned\\u0007\\u001b[2J\\""' in as_json
            finally:
                alive.set()
                beating.join()
                session.cancel()
    finally:
        with node_channel(m1.addr, m1.data_dir / "certificates") as ch:
            control = control_pb2_grpc.ControlStub(ch)
            for name in ("bounds_a", "bounds_b"):
                control.RemoveService(control_pb2.RemoveServiceRequest(service_id=name), timeout=15)
            control.RemoveNode(control_pb2.RemoveNodeRequest(node_id=issued.node_id, force=True), timeout=15)
