"""``swarmsecrets swarm init|join|join-token|leave|unlock|unlock-key|update``: docker's texts, our command name."""

from __future__ import annotations

import base64
import binascii
import getpass
import os
import sys

import click

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, swarm_pb2
from swarmsecrets.cli.client import SWARM_TIMEOUT, CLIError, Client
from swarmsecrets.cli.service import PflagCommand

# Docker's swarm port, used when an address is given without one.
DEFAULT_PORT = 2377
UNLOCK_KEY_PREFIX = "SWMKEY-1-"
ROLES = ("worker", "manager")


def unlock_instructions(key: str) -> str:
    return ("To unlock a swarm manager after it restarts, run the `swarmsecrets swarm unlock`\n"
            f"command and provide the following key:\n\n    {key}\n\n"
            "Remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager.\n")


def _parse(value: str, default_port: int) -> tuple[str, int]:
    try:
        return validation.validate_addr(value, default_port)
    except errors.SwarmError as e:
        raise CLIError(e.message) from None


def _addr(value: str, default_port: int) -> str:
    """HOST[:PORT] checked and normalised to HOST:PORT; "" stays "" (the daemon picks)."""
    return validation.format_addr(*_parse(value, default_port)) if value else ""


def _availability(value: str) -> str:
    try:
        return validation.parse_join_availability(value)
    except errors.SwarmError as e:
        raise CLIError(e.message) from None


@click.group()
def swarm() -> None:
    """Manage the swarm."""


@swarm.command("init")
@click.option("--advertise-addr", default="", help="Address other nodes reach this one at (HOST[:PORT]).")
@click.option("--listen-addr", default="", help="Address to listen on (HOST[:PORT]); default: advertised.")
@click.option("--raft-addr", default="", help="Raft address (HOST:PORT); default: advertised port + 1.")
@click.option("--autolock", is_flag=True, help="Require an unlock key to start a stopped manager.")
@click.option("--force-new-cluster", is_flag=True, help="Force create a new cluster from current state.")
@click.option("--availability", default="active", metavar="active|pause|drain",
              help="Availability of the node (\"active\", \"pause\", \"drain\").")
@click.option("--restore", "restore", default="", metavar="FILE",
              help="Start a one-manager swarm from a backup ('swarm backup'); its key is read from stdin.")
@click.pass_obj
def init(client: Client, advertise_addr: str, listen_addr: str, raft_addr: str, autolock: bool,
         force_new_cluster: bool, availability: str, restore: str) -> None:
    """Initialize a swarm."""
    if restore and (force_new_cluster or autolock):
        raise CLIError("--restore cannot be combined with --force-new-cluster or --autolock")
    if not advertise_addr and not force_new_cluster:
        raise CLIError("--advertise-addr is required (HOST:PORT of this node's swarm port)")
    host, port = _parse(advertise_addr, DEFAULT_PORT) if advertise_addr else ("", DEFAULT_PORT)
    availability = _availability(availability)
    restore_key = ""
    if restore:
        restore = os.path.abspath(restore)
        restore_key = read_key("Enter the key of the backup: ")
        check_unlock_key(restore_key)
    req = swarm_pb2.InitRequest(
        advertise_addr=validation.format_addr(host, port) if advertise_addr else "",
        listen_addr=_addr(listen_addr, port),
        raft_addr=_addr(raft_addr, 0),
        autolock=autolock,
        force_new_cluster=force_new_cluster,
        availability=availability,
        restore_path=restore,
        restore_key=restore_key,
    )
    resp = client.call(client.swarm.Init, req, timeout=SWARM_TIMEOUT)
    click.echo(f"Swarm initialized: current node ({resp.node_id}) is now a manager.\n")
    click.echo("To add a worker to this swarm, run the following command:\n\n"
               f"    {resp.worker_join_command}\n")
    click.echo("To add a manager to this swarm, run 'swarmsecrets swarm join-token manager' "
               "and follow the instructions.\n")
    if resp.unlock_key:
        click.echo(unlock_instructions(resp.unlock_key), nl=False)


@swarm.command("join")
@click.option("--token", required=True, help="Token for entry into the swarm.")
@click.option("--advertise-addr", default="", help="Address other nodes reach this one at (HOST[:PORT]).")
@click.option("--listen-addr", default="", help="Address to listen on (HOST[:PORT]).")
@click.option("--raft-addr", default="", help="Raft address (HOST:PORT); default: advertised port + 1.")
@click.option("--availability", default="active", metavar="active|pause|drain",
              help="Availability of the node (\"active\", \"pause\", \"drain\").")
@click.argument("remote", metavar="HOST:PORT")
@click.pass_obj
def join(client: Client, token: str, advertise_addr: str, listen_addr: str, raft_addr: str,
         availability: str, remote: str) -> None:
    """Join a swarm as a worker or a manager (the token decides)."""
    availability = _availability(availability)
    port = _parse(advertise_addr, DEFAULT_PORT)[1] if advertise_addr else DEFAULT_PORT
    req = swarm_pb2.JoinRequest(
        remote_addr=_addr(remote, DEFAULT_PORT),
        join_token=token,
        advertise_addr=_addr(advertise_addr, DEFAULT_PORT),
        listen_addr=_addr(listen_addr, port),
        raft_addr=_addr(raft_addr, 0),
        availability=availability,
    )
    resp = client.call(client.swarm.Join, req, timeout=SWARM_TIMEOUT)
    role = "manager" if resp.role == "manager" else "worker"
    click.echo(f"This node joined a swarm as a {role}.")


@swarm.command("join-token")
@click.option("-q", "--quiet", is_flag=True, help="Only display token.")
@click.option("--rotate", is_flag=True, help="Rotate join token.")
@click.argument("role", metavar="(worker|manager)")
@click.pass_obj
def join_token(client: Client, quiet: bool, rotate: bool, role: str) -> None:
    """Manage join tokens."""
    if role not in ROLES:
        raise CLIError(f"unknown role {role}")
    if rotate:
        req = control_pb2.RotateJoinTokenRequest(role=role)
        tokens = client.write(client.control.RotateJoinToken, req).join_tokens
        if not quiet:
            click.echo(f"Successfully rotated {role} join token.\n")
    else:
        tokens = client.call(client.control.GetCluster, control_pb2.GetClusterRequest()).cluster.join_tokens
    token = tokens.worker if role == "worker" else tokens.manager
    if quiet:
        click.echo(token)
        return
    node_id = client.call(client.swarm.Info, swarm_pb2.InfoRequest()).node_id
    node = client.call(client.control.GetNode, control_pb2.GetNodeRequest(node_id=node_id)).node
    if node.HasField("manager_status"):
        click.echo(f"To add a {role} to this swarm, run the following command:\n\n"
                   f"    swarmsecrets swarm join --token {token} {node.manager_status.addr}\n")


@swarm.command("leave")
@click.option("-f", "--force", is_flag=True, help="Force this node to leave the swarm, ignoring warnings.")
@click.pass_obj
def leave(client: Client, force: bool) -> None:
    """Leave the swarm."""
    client.call(client.swarm.Leave, swarm_pb2.LeaveRequest(force=force), timeout=SWARM_TIMEOUT)
    click.echo("Node left the swarm.")


def check_unlock_key(key: str) -> None:
    """``SWMKEY-1-`` and 32 bytes in unpadded base64, checked before the key is sent."""
    body = key[len(UNLOCK_KEY_PREFIX):] if key.startswith(UNLOCK_KEY_PREFIX) else ""
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise CLIError("invalid key string")


def read_key(prompt: str) -> str:
    """Without echo on a terminal; otherwise one line from stdin (so it can be piped)."""
    try:
        if sys.stdin.isatty():
            return getpass.getpass(prompt)
        return sys.stdin.readline().strip()
    except EOFError:
        return ""


@swarm.command("unlock")
@click.pass_obj
def unlock(client: Client) -> None:
    """Unlock a locked manager after a restart."""
    state = client.call(client.swarm.Info, swarm_pb2.InfoRequest()).local_node_state
    if state == "inactive":
        raise CLIError("error: this node is not part of a swarm")
    if state != "locked":
        raise CLIError("error: swarm is not locked")
    key = read_key("Enter unlock key: ")
    check_unlock_key(key)
    client.call(client.swarm.Unlock, swarm_pb2.UnlockRequest(unlock_key=key), timeout=SWARM_TIMEOUT)


@swarm.command("unlock-key")
@click.option("-q", "--quiet", is_flag=True, help="Only display the key.")
@click.option("--rotate", is_flag=True, help="Rotate the unlock key.")
@click.pass_obj
def unlock_key(client: Client, quiet: bool, rotate: bool) -> None:
    """Manage the unlock key."""
    if rotate:
        cluster = client.call(client.control.GetCluster, control_pb2.GetClusterRequest()).cluster
        if not cluster.autolock:
            raise CLIError("cannot rotate because autolock is not turned on")
        key = client.write(client.control.RotateUnlockKey, control_pb2.RotateUnlockKeyRequest()).unlock_key
        if not quiet:
            click.echo("Successfully rotated manager unlock key.")
    else:
        key = client.call(client.control.GetUnlockKey, control_pb2.GetUnlockKeyRequest()).unlock_key
    if not key:
        raise CLIError("no unlock key is set")
    if quiet:
        click.echo(key)
    else:
        click.echo(unlock_instructions(key), nl=False)


@swarm.command("update", cls=PflagCommand)
@click.option("--autolock/--no-autolock", default=None,
              help="Change manager autolocking setting (true|false).")
@click.pass_obj
def update(client: Client, autolock: bool | None) -> None:
    """Update the swarm."""
    if autolock is None:
        click.echo("Swarm updated.")
        return
    was = client.call(client.control.GetCluster, control_pb2.GetClusterRequest()).cluster.autolock
    resp = client.write(client.control.UpdateCluster, control_pb2.UpdateClusterRequest(autolock=autolock))
    click.echo("Swarm updated.")
    if autolock and not was and resp.unlock_key:
        click.echo(unlock_instructions(resp.unlock_key), nl=False)


@swarm.command("backup")
@click.argument("file", metavar="FILE")
@click.pass_obj
def backup(client: Client, file: str) -> None:
    """Write a consistent, encrypted backup of the swarm to FILE (any manager)."""
    path = os.path.abspath(file)
    resp = client.call(client.swarm.Backup, swarm_pb2.BackupRequest(path=path), timeout=SWARM_TIMEOUT)
    click.echo(f"Backup written to {resp.path}: {resp.secrets} secrets, {resp.nodes} nodes, "
               f"raft index {resp.applied_index}.\n")
    if resp.backup_key:
        click.echo("To restore it on a new manager, run `swarmsecrets swarm init --restore FILE "
                   "--advertise-addr HOST:PORT`\nand provide the following key on its standard input:\n\n"
                   f"    {resp.backup_key}\n\n"
                   "Remember to store this key in a password manager, apart from the file, since\n"
                   "without it you will not be able to restore this backup. It is shown only once.")
    else:
        click.echo("The swarm is autolocked: this backup opens with its current unlock key\n"
                   "(`swarmsecrets swarm unlock-key`). Keep that key: without it you will not be able\n"
                   "to restore this backup.")
