"""``swarmsecrets info [--format json|TEMPLATE]``: the Swarm section of ``docker info``.

The text follows docker/cli's layout; raft is shown in seconds where Docker shows ticks, and with
what Docker leaves out (term, leader, commit, applied and snapshot indexes, each member's
reachability). ``--format`` runs a Go template on ``{"Swarm": {...}}`` (Docker's field names where
Docker has the field, so ``{{.Swarm.LocalNodeState}}`` works as with docker); ``json`` prints it all.
"""

from __future__ import annotations

from typing import Any

import click

from swarmsecrets.api.v1 import swarm_pb2
from swarmsecrets.cli.client import Client
from swarmsecrets.cli.common import template_errors
from swarmsecrets.cli.format import unescape_format
from swarmsecrets.cli.gotemplate import Struct, Template
from swarmsecrets.cli.humanize import human_duration
from swarmsecrets.validation import escape_nonprintable

NS = 1_000_000_000


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _seconds(v: float) -> str:
    return f"{v:g} second" + ("" if v == 1 else "s")


def _member_status(m: swarm_pb2.RaftMember) -> str:
    return "Leader" if m.leader else "Reachable" if m.reachable else "Unreachable"


def text(i: swarm_pb2.InfoResponse) -> str:
    lines = [f"Swarm: {i.local_node_state}"]
    if i.local_node_state in ("inactive", "locked"):  # Docker shows nothing more for these
        return "\n".join(lines)
    lines.append(f" NodeID: {i.node_id}")
    if i.error:
        lines.append(f" Error: {escape_nonprintable(i.error)}")
    lines.append(f" Is Manager: {_bool(i.control_available)}")
    if i.control_available and not i.error:
        lines += [
            f" ClusterID: {i.cluster_id}",
            f" Managers: {i.managers}",
            f" Nodes: {i.nodes}",
            " Orchestration:",
            f"  Task History Retention Limit: {i.task_history_limit}",
            " Raft:",
            f"  Snapshot Interval: {i.snapshot_interval}",
            f"  Number of Old Snapshots to Retain: {i.keep_old_snapshots}",
            f"  Heartbeat Interval: {_seconds(i.raft_heartbeat)}",
            f"  Election Timeout: {i.raft_election_min:g} to {_seconds(i.raft_election_max)}",
            f"  Term: {i.raft_term}",
            f"  Leader: {i.raft_leader or '(none)'}",
            f"  Commit Index: {i.commit_index}",
            f"  Applied Index: {i.applied_index}",
            f"  Last Snapshot Index: {i.snapshot_index}",
            "  Members:",
        ]
        lines += [f"   {m.node_id or '(unknown)'} {m.raft_addr}: {_member_status(m)}" for m in i.raft_members]
        lines += [
            " Dispatcher:",
            f"  Heartbeat Period: {human_duration(i.dispatcher_heartbeat)}",
            " CA Configuration:",
            f"  Expiry Duration: {human_duration(i.cert_expiry)}",
            f" Autolock Managers: {_bool(i.autolock)}",
            f" Root Rotation In Progress: {_bool(i.root_rotation_in_progress)}",
        ]
    lines.append(f" Node Address: {i.node_addr}")
    if i.remote_managers:
        lines.append(" Manager Addresses:")
        lines += [f"  {a}" for a in sorted(i.remote_managers)]
    return "\n".join(lines)


def value(i: swarm_pb2.InfoResponse) -> Struct:
    """What --format sees: Docker's ``system.Info`` with only its ``Swarm`` field."""
    ids = {m.addr: m.node_id for m in i.raft_members}
    cluster: Struct | None = None
    raft: Struct | None = None
    if i.control_available and not i.error:
        cluster = Struct("swarm.ClusterInfo", {
            "ID": i.cluster_id,
            "Spec": Struct("swarm.Spec", {
                "Orchestration": Struct("swarm.OrchestrationConfig",
                                        {"TaskHistoryRetentionLimit": i.task_history_limit}),
                "Raft": Struct("swarm.RaftConfig", {
                    "SnapshotInterval": i.snapshot_interval, "KeepOldSnapshots": i.keep_old_snapshots,
                    "HeartbeatSeconds": i.raft_heartbeat, "ElectionMinSeconds": i.raft_election_min,
                    "ElectionMaxSeconds": i.raft_election_max}),
                "Dispatcher": Struct("swarm.DispatcherConfig",
                                     {"HeartbeatPeriod": round(i.dispatcher_heartbeat * NS)}),
                "CAConfig": Struct("swarm.CAConfig", {"NodeCertExpiry": i.cert_expiry * NS}),
                "EncryptionConfig": Struct("swarm.EncryptionConfig", {"AutoLockManagers": i.autolock}),
            }),
            "RootRotationInProgress": i.root_rotation_in_progress,
        })
        raft = Struct("swarm.RaftStatus", {
            "Term": i.raft_term, "Leader": i.raft_leader, "CommitIndex": i.commit_index,
            "AppliedIndex": i.applied_index, "SnapshotIndex": i.snapshot_index,
            "Members": [Struct("swarm.RaftMember", {
                "NodeID": m.node_id, "Addr": m.addr, "RaftAddr": m.raft_addr, "Leader": m.leader,
                "Reachable": m.reachable, "Status": _member_status(m)}) for m in i.raft_members],
        })
    swarm: dict[str, Any] = {
        "NodeID": i.node_id, "NodeAddr": i.node_addr, "LocalNodeState": i.local_node_state,
        "ControlAvailable": i.control_available, "Error": i.error,
        "RemoteManagers": [Struct("swarm.Peer", {"NodeID": ids.get(a, ""), "Addr": a})
                           for a in sorted(i.remote_managers)],
        "Nodes": i.nodes, "Managers": i.managers, "Cluster": cluster, "Raft": raft,
    }
    return Struct("system.Info", {"Swarm": Struct("swarm.Info", swarm)})


@click.command("info")
@click.option("-f", "--format", "fmt", default="", metavar="string",
              help="Format output using a custom template: 'json' prints in JSON format, "
                   "'TEMPLATE' prints output using the given Go template.")
@click.pass_obj
def info(client: Client, fmt: str) -> None:
    """Display the swarm part of docker info for this node."""
    i = client.call(client.swarm.Info, swarm_pb2.InfoRequest())
    if not fmt:
        click.echo(text(i))
        return
    with template_errors():
        tmpl = Template("{{json .}}" if fmt == "json" else unescape_format(fmt))
        click.echo(tmpl.execute(value(i)))
