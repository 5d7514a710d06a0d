"""``swarmsecrets secret create|inspect|ls|rm``, with docker's flags, texts and output."""

from __future__ import annotations

import errno
import os
import sys
from datetime import UTC, datetime

import click

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
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
from swarmsecrets.cli.humanize import since

# The docker CLI's own cap on what it reads; the size rule itself is validation's.
READ_LIMIT = 2 * validation.MAX_SECRET_SIZE

DEFAULT_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}"
HEADERS = {"ID": "ID", "Name": "NAME", "Driver": "DRIVER", "CreatedAt": "CREATED", "UpdatedAt": "UPDATED",
           "Labels": "LABELS"}
PRETTY_TEMPLATE = """ID:              {{.ID}}
Name:              {{.Name}}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 - {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Driver:            {{.Driver}}
Created at:        {{.CreatedAt}}
Updated at:        {{.UpdatedAt}}"""


@click.group()
def secret() -> None:
    """Manage secrets."""


def read_data(source: str) -> bytes:
    """The payload from a file or ``-`` (stdin), with docker's error texts."""
    if source == "-":
        data = sys.stdin.buffer.read(READ_LIMIT)
        if not data:
            raise CLIError("error reading from STDIN: data is empty")
        return data
    try:
        with open(source, "rb") as f:
            data = f.read(READ_LIMIT)
    except OSError as e:
        # Worded like Go's *PathError, as docker prints it.
        op = "read" if e.errno == errno.EISDIR else "open"
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise CLIError(f"error reading from {source}: {op} {source}: {reason}") from None
    if not data:
        raise CLIError(f"error reading from {source}: data is empty")
    return data


@secret.command("create")
@click.option("-l", "--label", "labels", multiple=True, metavar="key=value", help="Secret labels.")
@click.argument("name")
@click.argument("file", required=False, metavar="FILE|-")
@click.pass_obj
def create(client: Client, labels: tuple[str, ...], name: str, file: str | None) -> None:
    """Create a secret from a file or STDIN as content."""
    try:
        parsed = dict(validation.parse_label(label) for label in labels)
        if file is None:
            raise CLIError("secret file is required")
        data = read_data(file)
        validation.validate_secret_name(name)
        validation.validate_secret_data(data)
    except errors.SwarmError as e:
        raise CLIError(e.message) from None
    spec = objects_pb2.SecretSpec(name=name, labels=parsed, data=data)
    resp = client.write(client.control.CreateSecret, control_pb2.CreateSecretRequest(spec=spec))
    click.echo(resp.secret.id)


def secret_struct(s: objects_pb2.Secret) -> Struct:
    """The inspect view (docker's swarm.Secret). Built field by field so a payload can never leak out."""
    return Struct("swarm.Secret", {
        "ID": s.id,
        "Version": Struct("swarm.Version", {"Index": s.version.index}),
        "CreatedAt": GoTime(s.created_at),
        "UpdatedAt": GoTime(s.updated_at),
        "Spec": Struct("swarm.SecretSpec", {"Name": s.spec.name, "Labels": dict(s.spec.labels) or NilMap()}),
    })


def _pretty_context(s: objects_pb2.Secret) -> Struct:
    return Struct("secret.secretInspectContext", {
        "ID": s.id,
        "Name": s.spec.name,
        "Labels": dict(s.spec.labels),
        "Driver": "",
        "CreatedAt": pretty_print(GoTime(s.created_at).go_string()),
        "UpdatedAt": pretty_print(GoTime(s.updated_at).go_string()),
    })


@secret.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.option("-f", "--format", "fmt", default="", help="Go template for each secret.")
@click.argument("names", nargs=-1, required=True, metavar="SECRET...")
@click.pass_obj
def inspect(client: Client, pretty: bool, fmt: str, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more secrets (never their data)."""
    spec = inspect_format(pretty, fmt)
    found, failed = each(names, lambda ref: client.call(
        client.control.GetSecret, control_pb2.GetSecretRequest(secret_id=ref)).secret)
    if spec == PRETTY:
        out = render_rows(PRETTY_TEMPLATE, [_pretty_context(s) for s in found])
    else:
        out = render_inspect([secret_struct(s) for s in found], spec)
    click.echo(out, nl=False)
    finish(failed)


def secret_row(s: objects_pb2.Secret, now: datetime) -> Row:
    labels = dict(s.spec.labels)
    return Row("formatter.secretContext", {
        "ID": s.id,
        "Name": s.spec.name,
        "Driver": "",
        "CreatedAt": since(s.created_at, now),
        "UpdatedAt": since(s.updated_at, now),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
    }, HEADERS, labels)


@click.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="Filter output (id=<prefix>, name=<prefix>, names=<name>, label=<key>[=<value>]).")
@click.option("--format", "fmt", default="", help="'table', 'table TEMPLATE', 'json' or a Go template.")
@click.pass_obj
def ls(client: Client, quiet: bool, filters: tuple[str, ...], fmt: str) -> None:
    """List secrets."""
    try:
        f = validation.parse_filters(list(filters))
    except errors.SwarmError as e:
        raise CLIError(e.message) from None
    req = control_pb2.ListSecretsRequest(filters=control_pb2.ListSecretsRequest.Filters(
        names=f.names, name_prefixes=f.name_prefixes, id_prefixes=f.id_prefixes, labels=f.labels))
    secrets = client.call(client.control.ListSecrets, req).secrets
    now = datetime.now(UTC)
    rows = [secret_row(s, now) for s in natural_sorted(secrets, key=lambda s: s.spec.name)]
    header = Row("formatter.secretContext", {}, HEADERS, {})
    click.echo(render_rows(list_format(fmt, quiet, DEFAULT_TABLE), rows, header), nl=False)


@click.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="SECRET...")
@click.pass_obj
def rm(client: Client, names: tuple[str, ...]) -> None:
    """Remove one or more secrets."""

    def remove(ref: str) -> None:
        client.write(client.control.RemoveSecret, control_pb2.RemoveSecretRequest(secret_id=ref))
        click.echo(ref)

    _, failed = each(names, remove)
    finish(failed)


for _name, _cmd in (("ls", ls), ("list", ls), ("rm", rm), ("remove", rm)):
    secret.add_command(_cmd, _name)
