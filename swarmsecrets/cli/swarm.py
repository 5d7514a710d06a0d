"""``swarmsecrets swarm init|join|join-token|leave|unlock|unlock-key|data-key|update|ca``:
docker's texts, our command name."""

from __future__ import annotations

import base64
import binascii
import getpass
import os
import sys
import time

import click

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2, swarm_pb2
from swarmsecrets.ca import certs
from swarmsecrets.cli.client import SWARM_TIMEOUT, CLIError, Client
from swarmsecrets.cli.service import PflagCommand

# Docker's swarm port, used when an address is given without one.
DEFAULT_PORT = 2377
UNLOCK_KEY_PREFIX = "SWMKEY-1-"
ROLES = ("worker", "manager")
# How often `swarm ca --rotate` asks how far the rotation has come (Docker: 200 ms).
ROTATION_POLL = 0.2


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


# A data-key rotation answers once every secret is re-encrypted: it may take minutes on a large swarm.
ROTATE_TIMEOUT = 900.0


@swarm.command("data-key")
@click.option("-q", "--quiet", is_flag=True, help="Only display the key's id.")
@click.option("--rotate", is_flag=True, help="Rotate the data key.")
@click.pass_obj
def data_key(client: Client, quiet: bool, rotate: bool) -> None:
    """Manage the data key.

    The data key encrypts every secret, the join tokens and the unlock key in the managers' raft
    log and snapshots. The command is named like Docker's other key commands (a noun, with
    --rotate: `swarm join-token --rotate`, `swarm unlock-key --rotate`, `swarm ca --rotate`).
    Docker has no command for it: it rotates its data key only with the unlock key, which this
    swarm does too.

    --rotate makes a new key, re-encrypts everything the managers hold under it, erases the old
    key from every manager's disk, and returns once that is done. Only the key's public id is
    ever shown, never the key.
    """
    if rotate:
        info = client.write(client.control.RotateDataKey, control_pb2.RotateDataKeyRequest(), timeout=ROTATE_TIMEOUT)
        if not quiet:
            click.echo("Successfully rotated the swarm data key.")
    else:
        info = client.call(client.control.GetDataKey, control_pb2.GetDataKeyRequest())
    if quiet:
        click.echo(info.key_id)
        return
    click.echo(f"Data key ID:        {info.key_id}")
    if info.rotating_from:
        click.echo(f"Rotating from:      {info.rotating_from}")
    if info.rotated_at:
        click.echo(f"Rotated at:         {info.rotated_at}")
    interval = info.rotation_interval_seconds
    click.echo(f"Rotation interval:  {f'{interval}s' if interval else 'none (on demand)'}")


def _duration(value: str, flag: str) -> float:
    """Seconds of a Go duration flag, with Docker's error for a bad one."""
    try:
        return validation.parse_duration(value)
    except ValueError as e:
        raise CLIError(f'invalid argument "{value}" for "{flag}" flag: {e}') from None


def _cert_expiry(value: str) -> int:
    """Whole seconds of a Go duration (``2160h0m0s``); the minimum is the manager's to check."""
    seconds = _duration(value, "--cert-expiry")
    if seconds < 1:
        minimum = validation.format_duration(certs.MIN_NODE_VALIDITY.total_seconds())
        raise CLIError(f"minimum certificate expiry time is: {minimum}")
    return int(seconds)


def _int64(value: str, flag: str) -> int:
    """An int64 flag's value, with pflag's errors."""
    try:
        n = int(value, 0) if value.strip() == value else int("x")
    except ValueError:
        raise CLIError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: parsing "{value}": '
                       "invalid syntax") from None
    if not -2**63 <= n < 2**63:
        raise CLIError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: parsing "{value}": '
                       "value out of range")
    return n


def _heartbeat_ms(value: str) -> int:
    """Whole milliseconds of ``--dispatcher-heartbeat`` (at least 1)."""
    seconds = _duration(value, "--dispatcher-heartbeat")
    if seconds < 0:
        raise CLIError("heartbeat time period cannot be a negative duration")
    if seconds < 0.001:
        raise CLIError("heartbeat time period must be at least 1ms")
    return int(seconds * 1000)


@swarm.command("update", cls=PflagCommand)
@click.option("--autolock/--no-autolock", default=None,
              help="Change manager autolocking setting (true|false).")
@click.option("--cert-expiry", default=None, metavar="duration",
              help="Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s).")
@click.option("--data-key-rotation-interval", "rotation", default=None, metavar="DURATION",
              help="Rotate the data key this often (e.g. 2160h; 0: only with 'swarm data-key --rotate' "
                   "or 'swarm unlock-key --rotate').")
@click.option("--task-history-limit", "history", default=None, metavar="int",
              help="Task history retention limit (default 5).")
@click.option("--dispatcher-heartbeat", "heartbeat", default=None, metavar="duration",
              help="Dispatcher heartbeat period (ns|us|ms|s|m|h) (default 5s).")
@click.pass_obj
def update(client: Client, autolock: bool | None, cert_expiry: str | None, rotation: str | None,
           history: str | None, heartbeat: str | None) -> None:
    """Update the swarm."""
    expiry = _cert_expiry(cert_expiry) if cert_expiry is not None else 0
    limit = None if history is None else _int64(history, "--task-history-limit")
    heartbeat_ms = 0 if heartbeat is None else _heartbeat_ms(heartbeat)
    interval = None if rotation is None else _duration(rotation, "--data-key-rotation-interval")
    if interval is not None and (interval != 0 and interval < 1):
        raise CLIError("the data key rotation interval must be 0 or at least 1s")
    if interval is not None:
        client.write(client.control.SetDataKeyRotation,
                     control_pb2.SetDataKeyRotationRequest(interval_seconds=int(interval)))
    if autolock is None and not expiry and limit is None and not heartbeat_ms:
        click.echo("Swarm updated.")
        return
    was = client.call(client.control.GetCluster, control_pb2.GetClusterRequest()).cluster.autolock
    resp = client.write(client.control.UpdateCluster, control_pb2.UpdateClusterRequest(
        autolock=was if autolock is None else autolock, node_cert_expiry_seconds=expiry,
        task_history_retention_limit=limit, dispatcher_heartbeat_period_ms=heartbeat_ms))
    click.echo("Swarm updated.")
    if autolock and not was and resp.unlock_key:
        click.echo(unlock_instructions(resp.unlock_key), nl=False)


@swarm.command("ca")
@click.option("--rotate", is_flag=True,
              help="Rotate the swarm CA: a new root CA is generated and every node moves onto it.")
@click.option("-d", "--detach", is_flag=True,
              help="Exit immediately instead of waiting for the root rotation to converge.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.pass_obj
def ca(client: Client, rotate: bool, detach: bool, quiet: bool) -> None:
    """Display and rotate the root CA."""
    if rotate:
        progress = client.write(client.control.RotateRootCA, control_pb2.RotateRootCARequest())
        if not detach:
            progress = _follow_rotation(client, progress, quiet)
    root = client.call(client.control.GetCluster, control_pb2.GetClusterRequest()).cluster.root_ca_cert
    click.echo(root.rstrip("\n"))


def _follow_rotation(client: Client, progress: control_pb2.RootCAProgress,
                     quiet: bool) -> control_pb2.RootCAProgress:
    """Until every node holds a certificate from the new root and trusts only it, printing
    Docker's progress lines as they change (Ctrl-C leaves the rotation running)."""
    if not quiet:
        click.echo(f"desired root digest: {progress.desired_digest}")
    shown: tuple[int, int, int] | None = None
    try:
        while True:
            current = (progress.certs_rotated, progress.roots_rotated, progress.total)
            if not quiet and current != shown:
                click.echo(f"  rotated TLS certificates:  {progress.certs_rotated}/{progress.total} nodes")
                click.echo(f"  rotated CA certificates:   {progress.roots_rotated}/{progress.total} nodes")
                shown = current
            if not progress.in_progress and progress.certs_rotated == progress.total == progress.roots_rotated:
                return progress
            time.sleep(ROTATION_POLL)
            progress = client.call(client.control.GetRootCAProgress, control_pb2.GetRootCAProgressRequest())
    except KeyboardInterrupt:
        click.echo("Operation continuing in background.")
        click.echo("Use `swarmsecrets swarm ca` to check progress.")
        raise SystemExit(0) from None


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
