"""`swarmsecrets info`: Docker's Swarm section for each node state, and what --format sees."""

from __future__ import annotations

import json

from swarmsecrets.api.v1 import swarm_pb2
from swarmsecrets.cli.gotemplate import Template
from swarmsecrets.cli.info import text, value


def _manager(**over: object) -> swarm_pb2.InfoResponse:
    fields: dict[str, object] = dict(
        local_node_state="active", node_id="n1", control_available=True, cluster_id="c1", managers=2, nodes=3,
        node_addr="10.0.0.1", remote_managers=["10.0.0.2:2377", "10.0.0.1:2377"], task_history_limit=5,
        snapshot_interval=10000, keep_old_snapshots=0, raft_heartbeat=1.0, raft_election_min=2.5,
        raft_election_max=5.0, dispatcher_heartbeat=5.0, cert_expiry=90 * 24 * 3600, autolock=True,
        raft_term=7, raft_leader="n2", commit_index=120, applied_index=118, snapshot_index=100,
        raft_members=[
            swarm_pb2.RaftMember(node_id="n1", raft_addr="10.0.0.1:2378", addr="10.0.0.1:2377", reachable=True),
            swarm_pb2.RaftMember(node_id="n2", raft_addr="10.0.0.2:2378", addr="10.0.0.2:2377", leader=True,
                                 reachable=False),
        ])
    fields.update(over)
    return swarm_pb2.InfoResponse(**fields)  # type: ignore[arg-type]


def test_a_manager_shows_dockers_section_then_raft() -> None:
    assert text(_manager()) == "\n".join([
        "Swarm: active",
        " NodeID: n1",
        " Is Manager: true",
        " ClusterID: c1",
        " Managers: 2",
        " Nodes: 3",
        " Orchestration:",
        "  Task History Retention Limit: 5",
        " Raft:",
        "  Snapshot Interval: 10000",
        "  Number of Old Snapshots to Retain: 0",
        "  Heartbeat Interval: 1 second",
        "  Election Timeout: 2.5 to 5 seconds",
        "  Term: 7",
        "  Leader: n2",
        "  Commit Index: 120",
        "  Applied Index: 118",
        "  Last Snapshot Index: 100",
        "  Members:",
        "   n1 10.0.0.1:2378: Reachable",
        "   n2 10.0.0.2:2378: Leader",
        " Dispatcher:",
        "  Heartbeat Period: 5 seconds",
        " CA Configuration:",
        "  Expiry Duration: 3 months",
        " Autolock Managers: true",
        " Root Rotation In Progress: false",
        " Node Address: 10.0.0.1",
        " Manager Addresses:",
        "  10.0.0.1:2377",
        "  10.0.0.2:2377",
    ])


def test_other_states_show_what_docker_shows() -> None:
    assert text(swarm_pb2.InfoResponse(local_node_state="inactive")) == "Swarm: inactive"
    assert text(swarm_pb2.InfoResponse(local_node_state="locked", node_id="n1")) == "Swarm: locked"
    worker = text(swarm_pb2.InfoResponse(local_node_state="active", node_id="w1", node_addr="10.0.0.9",
                                         remote_managers=["10.0.0.1:2377"]))
    assert worker == "Swarm: active\n NodeID: w1\n Is Manager: false\n Node Address: 10.0.0.9\n" \
                     " Manager Addresses:\n  10.0.0.1:2377"
    # A manager the swarm no longer admits: the error, and no cluster view (as Docker).
    err = text(_manager(local_node_state="error", error="certificate expired\x1b[2J"))
    assert " Error: certificate expired\\x1b[2J\n Is Manager: true\n Node Address: 10.0.0.1\n" in err
    assert "ClusterID" not in err and " Raft:" not in err


def test_format_sees_dockers_field_names() -> None:
    v = value(_manager())
    doc = json.loads(Template("{{json .}}").execute(v))
    assert doc["Swarm"]["Cluster"]["Spec"]["Dispatcher"]["HeartbeatPeriod"] == 5 * 10**9
    assert doc["Swarm"]["RemoteManagers"][0] == {"NodeID": "n1", "Addr": "10.0.0.1:2377"}
    assert [m["Status"] for m in doc["Swarm"]["Raft"]["Members"]] == ["Reachable", "Leader"]
    assert Template("{{.Swarm.Raft.Term}} {{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}").execute(v) \
        == "7 true"
    worker = value(swarm_pb2.InfoResponse(local_node_state="active", node_id="w1"))
    assert json.loads(Template("{{json .}}").execute(worker))["Swarm"].get("Raft") is None
