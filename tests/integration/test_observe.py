"""What an operator watches: `info` (text, JSON, templates), Prometheus metrics scraped over HTTP
(`--metrics-addr`), and the standard gRPC health and reflection services on a manager's port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.framework import Cluster, Node, wait_until
from tests.framework.node import child_env
from tests.security.attack import bootstrap_channel, node_channel

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("observe")), managers=3, workers=1)
    taken = {p for n in c.members for p in (n.port, n.port + 1)}  # chosen, not bound yet
    for n in c.members:
        port = _free_port()
        while port in taken:
            port = _free_port()
        taken.add(port)
        n.extra_args += ("--metrics-addr", f"127.0.0.1:{port}")
    with c.started():
        c.wait_workers_ready()
        yield c


def metrics_url(n: Node) -> str:
    return f"http://{n.extra_args[n.extra_args.index('--metrics-addr') + 1]}/metrics"


def scrape(n: Node) -> Samples:
    with urllib.request.urlopen(metrics_url(n), timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        body = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_info_shows_the_swarm_section_and_raft(cluster: Cluster) -> None:
    m1, m2, m3 = cluster.managers
    w1 = cluster.workers[0]
    out = m1.ok("info")
    for line in ("Swarm: active", f" NodeID: {m1.node_id}", " Is Manager: true", " Managers: 3", " Nodes: 4",
                 " Orchestration:", "  Task History Retention Limit: 5", " Raft:", "  Snapshot Interval: 10000",
                 "  Number of Old Snapshots to Retain: 0", "  Heartbeat Interval: ", "  Election Timeout: ",
                 "  Term: ", "  Leader: ", "  Commit Index: ", "  Applied Index: ", "  Last Snapshot Index: ",
                 " Dispatcher:", "  Heartbeat Period: ", " CA Configuration:", "  Expiry Duration: 3 months",
                 " Autolock Managers: false", " Root Rotation In Progress: false", " Node Address: 127.0.0.1",
                 " Manager Addresses:"):
        assert line in out, (line, out)
    cluster_id = out.split(" ClusterID: ")[1].split("\n")[0]
    assert len(cluster_id) == 25
    members = [line for line in out.splitlines() if line.startswith("   ")]
    assert sorted(line.split()[0] for line in members) == sorted(n.node_id for n in cluster.managers)
    assert sum(line.endswith(": Leader") for line in members) == 1
    assert sum(line.endswith(": Reachable") for line in members) == 2

    doc = json.loads(m2.ok("info", "--format", "json"))
    swarm = doc["Swarm"]
    assert swarm["LocalNodeState"] == "active" and swarm["ControlAvailable"] is True
    assert swarm["NodeID"] == m2.node_id and swarm["Cluster"]["ID"] == cluster_id
    assert swarm["Cluster"]["Spec"]["CAConfig"]["NodeCertExpiry"] == 90 * 24 * 3600 * 10**9
    assert swarm["Cluster"]["Spec"]["EncryptionConfig"]["AutoLockManagers"] is False
    raft = swarm["Raft"]
    assert raft["Leader"] == cluster.leader().node_id
    assert raft["Term"] >= 1 and raft["CommitIndex"] >= raft["AppliedIndex"] > 0
    assert all(m["Reachable"] for m in raft["Members"])
    assert sorted(m["Addr"] for m in raft["Members"]) == sorted(n.addr for n in cluster.managers)

    assert m3.ok("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.Managers}} {{len .Swarm.Raft.Members}}") \
        == "active 3 3\n"
    # A worker: no cluster view, no raft.
    wout = w1.ok("info")
    assert " Is Manager: false" in wout and " Raft:" not in wout and " Manager Addresses:" in wout
    assert w1.ok("info", "-f", "{{json .Swarm.Raft}}") == "null\n"
    err = m1.fails("info", "--format", "{{.Swarm.Nope")
    assert err.startswith("template parsing error: ") and "Traceback" not in err


def test_metrics_move_with_the_cluster(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    leader = cluster.leader()
    before, lead_before = scrape(m1), scrape(leader)
    m1.ok("secret", "create", "observe_pw", "-", input=b"hunter2")
    after, lead_after = scrape(m1), scrape(leader)

    # The secret went through raft: a proposal here, one more secret everywhere.
    assert value(after, "swarmsecrets_raft_proposals_total") > value(before, "swarmsecrets_raft_proposals_total")
    assert value(after, "swarmsecrets_secrets") == value(before, "swarmsecrets_secrets") + 1
    assert value(lead_after, "swarmsecrets_raft_commit_index") > value(lead_before, "swarmsecrets_raft_commit_index")
    assert value(after, "swarmsecrets_raft_fsync_duration_seconds_count") > \
        value(before, "swarmsecrets_raft_fsync_duration_seconds_count")
    method = "/swarmsecrets.v1.Control/CreateSecret"
    assert value(after, "swarmsecrets_grpc_server_handled_total", method=method, code="OK") == \
        value(before, "swarmsecrets_grpc_server_handled_total", method=method, code="OK") + 1
    assert value(after, "swarmsecrets_grpc_server_handling_seconds_count", method=method) >= 1
    # An error counts under its code.
    get = "/swarmsecrets.v1.Control/GetSecret"
    m1.fails("secret", "inspect", "no_such_secret")
    assert value(scrape(m1), "swarmsecrets_grpc_server_handled_total", method=get, code="NOT_FOUND") == \
        value(after, "swarmsecrets_grpc_server_handled_total", method=get, code="NOT_FOUND") + 1

    assert value(lead_after, "swarmsecrets_raft_is_leader") == 1 and value(after, "swarmsecrets_raft_term") >= 1
    assert value(after, "swarmsecrets_raft_is_leader") == (1 if leader is m1 else 0)
    assert sum(v for (name, _), v in after.items() if name == "swarmsecrets_nodes") == 4
    assert value(after, "swarmsecrets_nodes", role="worker", state="ready") == 1
    assert value(after, "swarmsecrets_node_certificate_expiry_timestamp_seconds") > time.time()
    assert value(after, "process_resident_memory_bytes") > 0

    # A task that reads the secret: the leader times the delivery to the worker.
    w1 = cluster.workers[0]
    assert value(scrape(w1), "swarmsecrets_node_certificate_expiry_timestamp_seconds") > time.time()
    m1.ok("service", "create", "--name", "observe_svc", "--secret", "observe_pw", "--", "sleep", "600")

    def delivered() -> Samples | None:
        s = scrape(leader)
        return s if value(s, "swarmsecrets_tasks", state="running") >= 1 and \
            value(s, "swarmsecrets_dispatcher_delivery_seconds_count") > \
            value(lead_after, "swarmsecrets_dispatcher_delivery_seconds_count") else None

    wait_until(delivered, 30, 0.2, "the leader to time the task's delivery and see it running")
    m1.ok("service", "rm", "observe_svc")


def _health(channel: grpc.Channel, service: str = "") -> int:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(resp.status)


def test_health_and_reflection_over_mutual_tls(cluster: Cluster) -> None:
    m1, m2, m3 = cluster.managers
    w1 = cluster.workers[0]
    certs_of = lambda n: n.data_dir / "certificates"  # noqa: E731
    # A worker's certificate is enough; each manager serves, for every service of its port.
    channels = {n.name: node_channel(n.addr, certs_of(w1)) for n in cluster.managers}
    try:
        for ch in channels.values():
            wait_until(lambda ch=ch: _health(ch) == health_pb2.HealthCheckResponse.SERVING, 10, 0.1,
                       "a manager with a leader to serve")
            assert _health(ch, "swarmsecrets.v1.Control") == health_pb2.HealthCheckResponse.SERVING
        watch = health_pb2_grpc.HealthStub(channels["m2"]).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as e:
            _health(channels["m1"], "no.such.Service")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        stub = reflection_pb2_grpc.ServerReflectionStub(channels["m1"])
        [resp] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5))
        names = {s.name for s in resp.list_services_response.service}
        assert {"swarmsecrets.v1.Control", "swarmsecrets.v1.Dispatcher", "grpc.health.v1.Health"} <= names

        # A joiner's bootstrap identity is no member: refused.
        outsider = bootstrap_channel(m1.addr, (certs_of(m1) / "swarm-root-ca.crt").read_bytes())
        with outsider, pytest.raises(grpc.RpcError) as e:
            _health(outsider)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # m1 cut off from the two others: no quorum, not serving; back once they return.
        m2.pause()
        m3.pause()
        try:
            wait_until(lambda: _health(channels["m1"]) == health_pb2.HealthCheckResponse.NOT_SERVING, 20, 0.1,
                       "m1 without quorum to stop serving")
        finally:
            m2.resume()
            m3.resume()
        wait_until(lambda: _health(channels["m1"]) == health_pb2.HealthCheckResponse.SERVING, 20, 0.1,
                   "m1 to serve again once the quorum is back")
    finally:
        for ch in channels.values():
            ch.close()


def test_a_busy_metrics_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        p = subprocess.run([sys.executable, "-m", "swarmsecrets.node", "--data-dir", str(tmp_path / "d"),
                            "-H", f"unix://{tmp_path}/s.sock", "--metrics-addr", addr],
                           capture_output=True, text=True, timeout=60, env=child_env())
    assert p.returncode == 1
    assert f"listen tcp {addr}: bind: address already in use" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "s.sock").exists()
