"""``swarmsecrets service create|update|ls|ps|inspect|rm``, with docker's flags, texts and output.

A service here is a command run on nodes with secrets mounted as files; there is no image, so the
COMMAND column stands where docker shows IMAGE.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.cli.client import CALL_TIMEOUT, CLIError, Client
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
from swarmsecrets.cli.humanize import human_duration, parse_timestamp
from swarmsecrets.wire import format_ts

F = TypeVar("F", bound=Callable[..., Any])

# docker's TruncateID length, used for service IDs in `ls` and task IDs in `ps`.
SHORT_ID = 12
# docker's maxErrLength for the ERROR column of `ps`.
MAX_ERR_LENGTH = 30
# How often a non-detached create/update polls, like docker's progress monitor.
POLL_INTERVAL = 0.2
DEFAULT_TIMEOUT = 60.0
FAILED_STATES = frozenset({"failed", "rejected"})

DEFAULT_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Command}}"
HEADERS = {"ID": "ID", "Name": "NAME", "Mode": "MODE", "Replicas": "REPLICAS", "Command": "COMMAND"}
TASK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}"
TASK_HEADERS = {"ID": "ID", "Name": "NAME", "Node": "NODE", "DesiredState": "DESIRED STATE",
                "CurrentState": "CURRENT STATE", "Error": "ERROR"}
# docker's service pretty template, cut to the fields a service has here, plus the update action.
PRETTY_TEMPLATE = """
ID:\t\t{{.ID}}
Name:\t\t{{.Name}}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Service Mode:
{{- if .IsModeGlobal }}\tGlobal
{{- else }}\tReplicated
 Replicas:\t{{ .ModeReplicatedReplicas }}
{{- end }}
{{- if .TaskPlacementConstraints }}
Placement:
 Constraints:\t{{ .TaskPlacementConstraints }}
{{- end }}
UpdateConfig:
 Action:\t{{ .UpdateAction }}
ContainerSpec:
{{- if .ContainerCommand }}
 Command:\t{{ range $arg := .ContainerCommand }}{{ $arg }} {{ end }}
{{- end -}}
{{- if .ContainerEnv }}
 Env:\t\t{{ range $env := .ContainerEnv }}{{ $env }} {{ end }}
{{- end -}}
{{- if .ContainerUser }}
 User: {{ .ContainerUser }}
{{- end }}
{{- if .Secrets }}
Secrets:
{{- range $secret := .Secrets }}
 Target:\t{{$secret.File.Name}}
  Source:\t{{$secret.SecretName}}
{{- end }}{{ end }}"""

# pflag's strconv.ParseBool spellings, for `--detach=false`.
_PFLAG_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
                **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}


class PflagCommand(click.Command):
    """Takes docker's ``--detach=false`` / ``-d=true`` for on/off flags, which click alone refuses.

    Each ``--flag=BOOL`` before the command's positional part (or ``--``) becomes ``--flag`` or its
    ``--no-flag`` twin; values of other options and the service's own arguments are left alone.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        switches: dict[str, str] = {}
        valued: set[str] = set()
        for p in self.params:
            if isinstance(p, click.Option) and p.is_flag and p.secondary_opts:
                switches.update(dict.fromkeys(p.opts, p.secondary_opts[0]))
            elif isinstance(p, click.Option) and not p.is_flag:
                valued.update(p.opts)
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                break
            if arg in valued:
                out += args[i:i + 2]
                i += 2
                continue
            name, sep, value = arg.partition("=")
            if sep and name in switches and value in _PFLAG_BOOLS:
                arg = name if _PFLAG_BOOLS[value] else switches[name]
            elif not arg.startswith("-") and not ctx.allow_interspersed_args:
                break
            out.append(arg)
            i += 1
        return super().parse_args(ctx, out + args[i:])


def detach_options(f: F) -> F:
    """``-d/--detach`` (the default here) and ``--timeout`` for the wait that ``--detach=false`` asks for."""
    f = click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT, show_default=True,
                     metavar="SECONDS", help="With --detach=false: how long to wait for the tasks.")(f)
    return click.option("-d", "--detach/--no-detach", default=True,
                        help="Exit immediately (the default); --detach=false waits until the service converges.")(f)


@click.group()
def service() -> None:
    """Manage services."""


@contextmanager
def local_rules() -> Iterator[None]:
    """The shared validation rules, run before anything is sent: their errors have no daemon prefix."""
    try:
        yield
    except errors.SwarmError as e:
        raise CLIError(e.message) from None


def parse_secrets(specs: tuple[str, ...]) -> list[objects_pb2.SecretReference]:
    """``--secret``/``--secret-add`` values as references by name; the manager resolves the IDs."""
    with local_rules():
        refs = [validation.parse_secret_spec(s) for s in specs]
        validation.check_duplicate_targets(refs)
    return [objects_pb2.SecretReference(secret_name=r.source, file=objects_pb2.FileTarget(
        name=r.target, uid=r.uid, gid=r.gid, mode=r.mode)) for r in refs]


# --- waiting for convergence ------------------------------------------------------------------------

def _progress(client: Client, svc: objects_pb2.Service, current: list[objects_pb2.Task]) -> tuple[int, int]:
    """(running, desired): replicated counts slots 1..replicas, global counts ready active nodes."""
    running = [t for t in current if t.desired_state == "running" and t.status.state == "running"]
    if svc.spec.mode == "global":
        nodes = client.call(client.control.ListNodes, control_pb2.ListNodesRequest()).nodes
        eligible = {n.id for n in nodes if n.status.state == "ready" and n.spec.availability == "active"}
        return len(eligible & {t.node_id for t in running}), len(eligible)
    replicas = svc.spec.replicas
    return len({t.slot for t in running if 1 <= t.slot <= replicas}), replicas


def wait_converged(client: Client, service_id: str, timeout: float) -> None:
    """docker's non-detached create/update: poll until every desired task of the current spec runs.

    A task of the current spec that failed or was rejected ends the wait with its error.
    """
    deadline = time.monotonic() + timeout
    shown: tuple[int, int] | None = None
    while True:
        svc = client.call(client.control.GetService, control_pb2.GetServiceRequest(service_id=service_id)).service
        tasks = client.call(client.control.ListTasks, control_pb2.ListTasksRequest(service_id=svc.id)).tasks
        current = [t for t in tasks if t.spec_version >= svc.spec_version]
        for t in current:
            if t.status.state in FAILED_STATES:
                raise CLIError(f"task {t.id}: {t.status.err or t.status.message or t.status.state}")
        progress = _progress(client, svc, current)
        if progress != shown:
            click.echo(f"overall progress: {progress[0]} out of {progress[1]} tasks")
            shown = progress
        if progress[0] == progress[1]:
            click.echo(f"verify: Service {svc.id} converged")
            return
        if time.monotonic() >= deadline:
            raise CLIError(f"service {svc.id} did not converge within {timeout:g}s "
                           f"({progress[0]} out of {progress[1]} tasks running)")
        time.sleep(POLL_INTERVAL)


# --- create / update --------------------------------------------------------------------------------

@service.command("create", cls=PflagCommand, context_settings={"allow_interspersed_args": False})
@click.option("--name", required=True, metavar="NAME", help="Service name.")
@click.option("--mode", default="replicated", show_default=True, metavar="MODE", help="replicated or global.")
@click.option("--replicas", type=click.IntRange(0, 2**64 - 1), default=None,
              help="Number of tasks (replicated mode; default 1).")
@click.option("--secret", "secrets", multiple=True, metavar="SPEC",
              help="NAME or source=NAME,target=PATH,uid=N,gid=N,mode=0NNN (repeatable).")
@click.option("-e", "--env", "envs", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("-u", "--user", default="", metavar="UID[:GID]",
              help="Numeric user (and group) to run as (default: nobody, 65534:65534).")
@click.option("--update-action", default="restart", show_default=True, metavar="ACTION",
              help="On secret changes: restart, none or signal:SIG.")
@click.option("--constraint", "constraints", multiple=True, metavar="list",
              help="Placement constraints (node.id, node.hostname, node.role, node.labels.KEY; == or !=).")
@detach_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def create(client: Client, name: str, mode: str, replicas: int | None, secrets: tuple[str, ...],
           envs: tuple[str, ...], user: str, update_action: str, constraints: tuple[str, ...], detach: bool,
           timeout: float, command: tuple[str, ...]) -> None:
    """Create a new service running COMMAND [ARG...]."""
    with local_rules():
        validation.validate_service_name(name)
        validation.validate_service_mode(mode, replicas)
        env = validation.parse_env(envs, os.environ)
        validation.validate_user(user)
        action = validation.parse_update_action(update_action)
    refs = parse_secrets(secrets)
    spec = objects_pb2.ServiceSpec(
        name=name, mode=mode, replicas=0 if mode == "global" else (1 if replicas is None else replicas),
        command=command, env=env, user=user, secrets=refs, update_action=action, constraints=constraints)
    resp = client.write(client.control.CreateService, control_pb2.CreateServiceRequest(spec=spec))
    click.echo(resp.service.id)
    if not detach:
        wait_converged(client, resp.service.id, timeout)


@service.command("update", cls=PflagCommand)
@click.option("--secret-add", "secret_add", multiple=True, metavar="SPEC", help="Add or update a secret.")
@click.option("--secret-rm", "secret_rm", multiple=True, metavar="NAME", help="Remove a secret (by secret name).")
@click.option("--replicas", type=click.IntRange(0, 2**64 - 1), default=None, help="Number of tasks.")
@click.option("--force", is_flag=True, help="Restart the tasks even if nothing changed.")
@click.option("--constraint-add", "constraint_add", multiple=True, metavar="list",
              help="Add or update a placement constraint.")
@click.option("--constraint-rm", "constraint_rm", multiple=True, metavar="list", help="Remove a constraint.")
@detach_options
@click.argument("name")
@click.pass_obj
def update(client: Client, secret_add: tuple[str, ...], secret_rm: tuple[str, ...], replicas: int | None,
           force: bool, constraint_add: tuple[str, ...], constraint_rm: tuple[str, ...], detach: bool,
           timeout: float, name: str) -> None:
    """Update a service: removals apply before additions, so one command can swap a secret."""
    req = control_pb2.UpdateServiceRequest(
        service_id=name, secret_rm=secret_rm, secret_add=parse_secrets(secret_add),
        set_replicas=replicas is not None, replicas=replicas or 0, force=force,
        constraint_add=constraint_add, constraint_rm=constraint_rm)
    resp = client.write(client.control.UpdateService, req)
    click.echo(name)
    if not detach:
        wait_converged(client, resp.service.id, timeout)


# --- inspect ----------------------------------------------------------------------------------------

def _ref_struct(r: objects_pb2.SecretReference) -> Struct:
    return Struct("swarm.SecretReference", {
        "File": Struct("swarm.SecretReferenceFileTarget", {
            "Name": r.file.name, "UID": r.file.uid, "GID": r.file.gid, "Mode": r.file.mode}),
        "SecretID": r.secret_id,
        "SecretName": r.secret_name,
    })


def _env_list(spec: objects_pb2.ServiceSpec) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(spec.env.items())]


def service_struct(s: objects_pb2.Service) -> Struct:
    """The inspect view, shaped like docker's swarm.Service where the fields exist here."""
    spec = s.spec
    is_global = spec.mode == "global"
    return Struct("swarm.Service", {
        "ID": s.id,
        "Version": Struct("swarm.Version", {"Index": s.version.index}),
        "CreatedAt": GoTime(s.created_at),
        "UpdatedAt": GoTime(s.updated_at),
        "Spec": Struct("swarm.ServiceSpec", {
            "Name": spec.name,
            "Labels": dict(spec.labels) or NilMap(),
            "TaskTemplate": Struct("swarm.TaskSpec", {
                "ContainerSpec": Struct("swarm.ContainerSpec", {
                    "Command": list(spec.command),
                    "Env": _env_list(spec),
                    "User": spec.user,
                    "Secrets": [_ref_struct(r) for r in spec.secrets],
                }, omitempty=("Command", "Env", "User", "Secrets")),
                **({"Placement": Struct("swarm.Placement", {"Constraints": list(spec.constraints)})}
                   if spec.constraints else {}),
            }),
            "Mode": Struct("swarm.ServiceMode", {
                "Replicated": None if is_global else Struct("swarm.ReplicatedService",
                                                            {"Replicas": spec.replicas}),
                "Global": Struct("swarm.GlobalService", {}) if is_global else None,
            }),
            "UpdateAction": spec.update_action,
        }),
        "ServiceStatus": Struct("swarm.ServiceStatus", {"RunningTasks": s.running_tasks,
                                                        "DesiredTasks": s.desired_tasks}),
    })


def _pretty_context(s: objects_pb2.Service) -> Struct:
    spec = s.spec
    return Struct("service.serviceInspectContext", {
        "ID": s.id,
        "Name": spec.name,
        "Labels": dict(spec.labels),
        "IsModeGlobal": spec.mode == "global",
        "ModeReplicatedReplicas": spec.replicas,
        "UpdateAction": spec.update_action or "restart",
        "TaskPlacementConstraints": list(spec.constraints),
        "ContainerCommand": list(spec.command),
        "ContainerEnv": _env_list(spec),
        "ContainerUser": spec.user,
        "Secrets": [_ref_struct(r) for r in spec.secrets],
    })


@service.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.option("-f", "--format", "fmt", default="", help="Go template for each service.")
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
@click.pass_obj
def inspect(client: Client, pretty: bool, fmt: str, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more services."""
    spec = inspect_format(pretty, fmt)
    found, failed = each(names, lambda ref: client.call(
        client.control.GetService, control_pb2.GetServiceRequest(service_id=ref)).service)
    if spec == PRETTY:
        out = render_rows(PRETTY_TEMPLATE, [_pretty_context(s) for s in found])
    else:
        out = render_inspect([service_struct(s) for s in found], spec)
    click.echo(out, nl=False)
    finish(failed)


# --- ls / ps ----------------------------------------------------------------------------------------

def service_row(s: objects_pb2.Service) -> Row:
    return Row("service.serviceContext", {
        "ID": s.id[:SHORT_ID],
        "Name": s.spec.name,
        "Mode": "global" if s.spec.mode == "global" else "replicated",
        "Replicas": f"{s.running_tasks}/{s.desired_tasks}",
        "Command": " ".join(s.spec.command),
    }, HEADERS)


@click.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", default="", help="'table', 'table TEMPLATE', 'json' or a Go template.")
@click.pass_obj
def ls(client: Client, quiet: bool, fmt: str) -> None:
    """List services."""
    services = client.call(client.control.ListServices, control_pb2.ListServicesRequest()).services
    rows = [service_row(s) for s in natural_sorted(services, key=lambda s: s.spec.name)]
    header = Row("service.serviceContext", {}, HEADERS)
    click.echo(render_rows(list_format(fmt, quiet, DEFAULT_TABLE), rows, header), nl=False)


def task_name(t: objects_pb2.Task) -> str:
    """``<service>.<slot>`` for replicated tasks, ``<service>.<node id>`` for global ones."""
    return f"{t.service_name}.{t.slot}" if t.slot else f"{t.service_name}.{t.node_id}"


def _current_state(t: objects_pb2.Task, now: datetime) -> str:
    state = pretty_print(t.status.state)
    then = parse_timestamp(t.status.timestamp)
    if then is None:
        return state
    return f"{state} {human_duration((now - then).total_seconds()).lower()} ago"


def _task_error(err: str, trunc: bool) -> str:
    if trunc and len(err) > MAX_ERR_LENGTH:
        err = err[:MAX_ERR_LENGTH - 1] + "…"
    return f'"{err}"' if err else ""


def task_rows(tasks: list[objects_pb2.Task], hostnames: dict[str, str], trunc: bool, table: bool,
              now: datetime) -> list[Row]:
    """docker's task list: grouped by name (natural order), newest first within a slot; in a table,
    the older tasks of a slot are indented under the newest."""
    epoch = datetime.min.replace(tzinfo=UTC)
    newest_first = sorted(tasks, key=lambda t: parse_timestamp(t.created_at) or epoch, reverse=True)
    rows: list[Row] = []
    prev = ""
    for t in natural_sorted(newest_first, key=task_name):
        name = task_name(t)
        rows.append(Row("task.taskContext", {
            "ID": t.id[:SHORT_ID] if trunc else t.id,
            "Name": f" \\_ {name}" if table and name == prev else name,
            "Node": hostnames.get(t.node_id, t.node_id),
            "DesiredState": pretty_print(t.desired_state),
            "CurrentState": _current_state(t, now),
            "Error": _task_error(t.status.err, trunc),
        }, TASK_HEADERS))
        prev = name
    return rows


@service.command("ps")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--format", "fmt", default="", help="'table', 'table TEMPLATE', 'json' or a Go template.")
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
@click.pass_obj
def ps(client: Client, quiet: bool, no_trunc: bool, fmt: str, names: tuple[str, ...]) -> None:
    """List the tasks of one or more services."""
    found, failed = each(names, lambda ref: list(client.call(
        client.control.ListTasks, control_pb2.ListTasksRequest(service_id=ref)).tasks))
    tasks = [t for group in found for t in group]
    spec = list_format(fmt, quiet, TASK_TABLE)
    hostnames: dict[str, str] = {}
    if tasks and not quiet:
        nodes = client.call(client.control.ListNodes, control_pb2.ListNodesRequest()).nodes
        hostnames = {n.id: n.description.hostname for n in nodes}
    rows = task_rows(tasks, hostnames, not no_trunc, spec.startswith("table"), datetime.now(UTC))
    header = Row("task.taskContext", {}, TASK_HEADERS)
    click.echo(render_rows(spec, rows, header), nl=False)
    finish(failed)


# --- logs -------------------------------------------------------------------------------------------

def _tail_lines(value: str) -> int:
    """``--tail``: a number of lines; "all", a negative number or anything else means all (Docker's rule)."""
    try:
        n = int(value)
    except ValueError:
        return -1
    return n if n >= 0 else -1


@service.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("-n", "--tail", default="all", show_default=True, help="Number of lines to show from the end of the logs")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.argument("name", metavar="SERVICE")
@click.pass_obj
def logs(client: Client, follow: bool, tail: str, timestamps: bool, name: str) -> None:
    """Fetch the logs of a service."""
    svc = client.call(client.control.GetService, control_pb2.GetServiceRequest(service_id=name)).service
    width = len(str(svc.spec.replicas if svc.spec.HasField("replicas") else 1)) \
        if svc.spec.mode != "global" else 1
    tasks: dict[str, objects_pb2.Task] = {}
    hostnames: dict[str, str] = {}
    prefixes: dict[str, str] = {}

    def prefix(m: objects_pb2.LogMessage) -> str:
        """``<service>.<slot>.<task id>@<node hostname>``, padded to the widest slot, as Docker prints it."""
        if m.task_id not in prefixes:
            if m.task_id not in tasks:
                tasks.update((t.id, t) for t in client.call(
                    client.control.ListTasks, control_pb2.ListTasksRequest(service_id=svc.id)).tasks)
            if m.node_id not in hostnames:
                hostnames.update((n.id, n.description.hostname) for n in client.call(
                    client.control.ListNodes, control_pb2.ListNodesRequest()).nodes)
            task = tasks.get(m.task_id)
            slot = task.slot if task is not None else 0
            pad = " " * max(0, width - len(str(slot)))
            prefixes[m.task_id] = (f"{svc.spec.name}.{slot}.{m.task_id[:SHORT_ID]}"
                                   f"@{hostnames.get(m.node_id) or m.node_id}{pad}")
        return prefixes[m.task_id]

    request = control_pb2.ServiceLogsRequest(service_id=svc.id, follow=follow, tail=_tail_lines(tail))
    out = sys.stdout.buffer
    try:
        for msg in client.stream(client.control.ServiceLogs, request, timeout=None if follow else CALL_TIMEOUT):
            for m in msg.messages:
                stamp = f"{format_ts(m.ts_ns)} " if timestamps else ""
                out.write(f"{stamp}{prefix(m)}    | ".encode() + m.data + b"\n")
            out.flush()
    except KeyboardInterrupt:
        pass


# --- rm ---------------------------------------------------------------------------------------------

@click.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
@click.pass_obj
def rm(client: Client, names: tuple[str, ...]) -> None:
    """Remove one or more services."""

    def remove(ref: str) -> None:
        client.write(client.control.RemoveService, control_pb2.RemoveServiceRequest(service_id=ref))
        click.echo(ref)

    _, failed = each(names, remove)
    finish(failed)


for _name, _cmd in (("ls", ls), ("list", ls), ("rm", rm), ("remove", rm)):
    service.add_command(_cmd, _name)
