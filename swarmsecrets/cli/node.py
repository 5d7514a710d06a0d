"""``swarmsecrets node ls|inspect|update|rm|promote|demote``, shaped like docker's."""

from __future__ import annotations

from collections.abc import Callable

import click

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2, swarm_pb2
from swarmsecrets.cli.client import CLIError, Client
from swarmsecrets.cli.common import (
    PRETTY,
    each,
    finish,
    inspect_format,
    list_format,
    render_inspect,
    render_rows,
)
from swarmsecrets.cli.format import natural_sorted, pretty_print
from swarmsecrets.cli.gotemplate import GoTime, NilMap, Row, Struct

DEFAULT_TABLE = ("table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}"
                 "\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}")
HEADERS = {"ID": "ID", "Self": "", "Hostname": "HOSTNAME", "Status": "STATUS", "Availability": "AVAILABILITY",
           "ManagerStatus": "MANAGER STATUS", "EngineVersion": "ENGINE VERSION"}
# docker's node pretty template without the parts we have no data for (resources, plugins); the TLS
# info adds the certificate's expiry.
PRETTY_TEMPLATE = """ID:\t\t\t{{.ID}}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 - {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Hostname:              \t{{.Hostname}}
Joined at:             \t{{.CreatedAt}}
Status:
 State:\t\t\t{{.StatusState}}
 {{- if .HasStatusMessage}}
 Message:              \t{{.StatusMessage}}
 {{- end}}
 Availability:         \t{{.SpecAvailability}}
 {{- if .Status.Addr}}
 Address:\t\t{{.StatusAddr}}
 {{- end}}
{{- if .HasManagerStatus}}
Manager Status:
 Address:\t\t{{.ManagerStatusAddr}}
 Raft Status:\t\t{{.ManagerStatusReachability}}
 {{- if .IsManagerStatusLeader}}
 Leader:\t\tYes
 {{- else}}
 Leader:\t\tNo
 {{- end}}
{{- end}}
Platform:
 Operating System:\t{{.PlatformOS}}
 Architecture:\t\t{{.PlatformArchitecture}}
Engine Version:\t\t{{.EngineVersion}}
{{- if .HasTLSInfo}}
TLS Info:
 TrustRoot:
{{- range .TLSInfoTrustRoot}}
{{.}}
{{- end}}
 Issuer Subject:\t{{.TLSInfoCertIssuerSubject}}
 Issuer Public Key:\t{{.TLSInfoCertIssuerPublicKey}}
 Certificate Expiry:\t{{.TLSInfoCertNotAfter}}
{{- end}}"""


@click.group()
def node() -> None:
    """Manage swarm nodes."""


def manager_status(n: objects_pb2.Node) -> str:
    """Leader / Reachable / Unreachable; blank for workers."""
    if not n.HasField("manager_status"):
        return ""
    return "Leader" if n.manager_status.leader else pretty_print(n.manager_status.reachability)


def node_row(n: objects_pb2.Node, self_id: str) -> Row:
    return Row("node.nodeContext", {
        "ID": n.id,
        "Self": n.id == self_id,
        "Hostname": n.description.hostname,
        "Status": pretty_print(n.status.state),
        "Availability": pretty_print(n.spec.availability),
        "ManagerStatus": manager_status(n),
        "EngineVersion": n.description.engine_version,
    }, HEADERS)


NodeFilter = Callable[[objects_pb2.Node], bool]


def node_filter(args: tuple[str, ...]) -> NodeFilter:
    """docker's ``node ls -f``: ``id`` and ``name`` (hostname) match by prefix, ``role`` and ``membership``
    exactly, several values of one of these OR'd; every ``node.label=KEY[=VALUE]`` must hold; nodes
    here have no engine labels, so a ``label`` filter matches none."""
    by_key: dict[str, list[str]] = {}
    for arg in args:
        if not arg:
            continue
        key, sep, value = arg.partition("=")
        if not sep:
            raise CLIError("bad format of filter (expected name=value)")
        key = key.strip().lower()
        if key not in ("id", "name", "role", "membership", "node.label", "label"):
            raise CLIError(f"invalid filter '{key}'")
        by_key.setdefault(key, []).append(value.strip())
    for role in by_key.get("role", []):
        if role.lower() not in ("manager", "worker"):
            raise CLIError(f"Invalid role filter: '{role}'")
    for membership in by_key.get("membership", []):
        if membership.lower() not in ("accepted", "pending"):
            raise CLIError(f"Invalid membership filter: '{membership}'")

    def match(n: objects_pb2.Node) -> bool:
        checks = {
            "id": lambda v: n.id.startswith(v),
            "name": lambda v: n.description.hostname.startswith(v),
            "role": lambda v: n.spec.role == v.lower(),
            "membership": lambda v: v.lower() == "accepted",
        }
        if not all(any(check(v) for v in by_key[k]) for k, check in checks.items() if k in by_key):
            return False
        for label in by_key.get("node.label", []):
            k, sep, v = label.partition("=")
            if k not in n.spec.labels or (sep and n.spec.labels[k] != v):
                return False
        return "label" not in by_key

    return match


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="filter",
              help="Filter output based on conditions provided (id, name, role, membership, node.label).")
@click.option("--format", "fmt", default="", help="'table', 'table TEMPLATE', 'json' or a Go template.")
@click.pass_obj
def ls(client: Client, quiet: bool, filters: tuple[str, ...], fmt: str) -> None:
    """List nodes in the swarm."""
    wanted = node_filter(filters)
    nodes = [n for n in client.call(client.control.ListNodes, control_pb2.ListNodesRequest()).nodes if wanted(n)]
    self_id = client.call(client.swarm.Info, swarm_pb2.InfoRequest()).node_id if nodes and not quiet else ""
    rows = [node_row(n, self_id) for n in natural_sorted(nodes, key=lambda n: n.description.hostname)]
    header = Row("node.nodeContext", {}, HEADERS)
    click.echo(render_rows(list_format(fmt, quiet, DEFAULT_TABLE), rows, header), nl=False)


node.add_command(ls, "list")


def node_struct(n: objects_pb2.Node) -> Struct:
    """The inspect view, shaped like docker's swarm.Node (its TLSInfo also says when the node's
    certificate expires)."""
    ms = n.manager_status
    description: dict[str, object] = {
        "Hostname": n.description.hostname,
        "Platform": Struct("swarm.Platform", {"Architecture": n.description.platform_arch,
                                              "OS": n.description.platform_os}),
        "Engine": Struct("swarm.EngineDescription", {"EngineVersion": n.description.engine_version}),
    }
    # Empty until the node's first certificate is recorded (a manager that joined a moment ago).
    description["TLSInfo"] = Struct("swarm.TLSInfo", {
        "TrustRoot": n.tls_info.trust_root,
        "CertIssuerSubject": n.tls_info.cert_issuer_subject,
        "CertIssuerPublicKey": n.tls_info.cert_issuer_public_key,
        "CertNotAfter": GoTime(n.tls_info.cert_not_after),
    }, omitempty=("TrustRoot", "CertIssuerSubject", "CertIssuerPublicKey", "CertNotAfter"))
    return Struct("swarm.Node", {
        "ID": n.id,
        "Version": Struct("swarm.Version", {"Index": n.version.index}),
        "CreatedAt": GoTime(n.created_at),
        "UpdatedAt": GoTime(n.updated_at),
        "Spec": Struct("swarm.NodeSpec", {
            "Labels": dict(n.spec.labels) or NilMap(),
            "Role": n.spec.role,
            "Availability": n.spec.availability,
        }),
        "Description": Struct("swarm.NodeDescription", description),
        "Status": Struct("swarm.NodeStatus", {"State": n.status.state, "Message": n.status.message,
                                              "Addr": n.status.addr}, omitempty=("Message", "Addr")),
        "ManagerStatus": Struct("swarm.ManagerStatus", {"Leader": ms.leader, "Reachability": ms.reachability,
                                                        "Addr": ms.addr}, omitempty=("Leader",))
        if n.HasField("manager_status") else None,
    })


def _pretty_context(n: objects_pb2.Node) -> Struct:
    ms = n.manager_status
    return Struct("node.nodeInspectContext", {
        "ID": n.id,
        "Labels": dict(n.spec.labels),
        "Hostname": n.description.hostname,
        "CreatedAt": pretty_print(GoTime(n.created_at).go_string()),
        "StatusState": pretty_print(n.status.state),
        "HasStatusMessage": bool(n.status.message),
        "StatusMessage": pretty_print(n.status.message),
        "SpecAvailability": pretty_print(n.spec.availability),
        "Status": Struct("swarm.NodeStatus", {"Addr": n.status.addr}),
        "StatusAddr": n.status.addr,
        "HasManagerStatus": n.HasField("manager_status"),
        "ManagerStatusAddr": ms.addr,
        "ManagerStatusReachability": pretty_print(ms.reachability),
        "IsManagerStatusLeader": ms.leader,
        "PlatformOS": n.description.platform_os,
        "PlatformArchitecture": n.description.platform_arch,
        "EngineVersion": n.description.engine_version,
        "HasTLSInfo": n.HasField("tls_info"),
        # Line by line: a value's newlines would print escaped.
        "TLSInfoTrustRoot": n.tls_info.trust_root.strip().splitlines(),
        "TLSInfoCertIssuerSubject": n.tls_info.cert_issuer_subject,
        "TLSInfoCertIssuerPublicKey": n.tls_info.cert_issuer_public_key,
        "TLSInfoCertNotAfter": GoTime(n.tls_info.cert_not_after).go_string()
        if n.HasField("tls_info") else "",
    })


@node.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.option("-f", "--format", "fmt", default="", help="Go template for each node.")
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
@click.pass_obj
def inspect(client: Client, pretty: bool, fmt: str, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes ("self" is this node)."""
    spec = inspect_format(pretty, fmt)

    def get(ref: str) -> objects_pb2.Node:
        if ref == "self":
            ref = client.call(client.swarm.Info, swarm_pb2.InfoRequest()).node_id
        return client.call(client.control.GetNode, control_pb2.GetNodeRequest(node_id=ref)).node

    found, failed = each(refs, get)
    if spec == PRETTY:
        out = render_rows(PRETTY_TEMPLATE, [_pretty_context(n) for n in found])
    else:
        out = render_inspect([node_struct(n) for n in found], spec)
    click.echo(out, nl=False)
    finish(failed)


@node.command("update")
@click.option("--availability", default="", metavar="active|pause|drain", help="Availability of the node.")
@click.option("--label-add", "label_add", multiple=True, metavar="list",
              help="Add or update a node label (key=value).")
@click.option("--label-rm", "label_rm", multiple=True, metavar="list", help="Remove a node label if exists.")
@click.argument("ref", metavar="NODE")
@click.pass_obj
def update(client: Client, availability: str, label_add: tuple[str, ...], label_rm: tuple[str, ...],
           ref: str) -> None:
    """Update a node."""
    labels: dict[str, str] = {}
    for label in label_add:
        try:
            key, value = validation.parse_label(label)
        except errors.SwarmError as e:
            raise CLIError(f'invalid argument "{label}" for "--label-add" flag: {e.message}') from None
        labels[key] = value
    if availability:
        try:
            availability = validation.parse_availability(availability)
        except errors.SwarmError as e:
            raise CLIError(e.message) from None
    client.write(client.control.UpdateNode, control_pb2.UpdateNodeRequest(
        node_id=ref, availability=availability, label_add=labels, label_rm=label_rm))
    click.echo(ref)


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force-remove a node from the swarm.")
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
@click.pass_obj
def rm(client: Client, force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm."""

    def remove(ref: str) -> None:
        client.write(client.control.RemoveNode, control_pb2.RemoveNodeRequest(node_id=ref, force=force))
        click.echo(ref)

    _, failed = each(refs, remove)
    finish(failed)


node.add_command(rm, "rm")
node.add_command(rm, "remove")


def _change_role(client: Client, refs: tuple[str, ...], role: str, unchanged: str, changed: str) -> None:
    """docker's promote/demote: look the node up, say so if it already has the role, else change it.

    Messages (``{}`` is the node as typed) go to stdout; errors are collected and reported after the rest.
    """

    def one(ref: str) -> None:
        n = client.call(client.control.GetNode, control_pb2.GetNodeRequest(node_id=ref)).node
        if n.spec.role == role:
            click.echo(unchanged.format(ref))
            return
        client.write(client.control.UpdateNode, control_pb2.UpdateNodeRequest(node_id=n.id, role=role))
        click.echo(changed.format(ref))

    _, failed = each(refs, one)
    finish(failed)


@node.command("promote")
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
@click.pass_obj
def promote(client: Client, refs: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm."""
    _change_role(client, refs, "manager", "Node {} is already a manager.",
                 "Node {} promoted to a manager in the swarm.")


@node.command("demote")
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
@click.pass_obj
def demote(client: Client, refs: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm."""
    _change_role(client, refs, "worker", "Node {} is already a worker.", "Manager {} demoted in the swarm.")
