"""swarmsecretsd's settings: one typed schema for the TOML file and the flags.

``DaemonConfig`` holds every setting with its type, default, bounds and help. The TOML file
(``--config``) uses the field names as keys (the raft timers under ``[raft]``); each field is
also a flag (``data_dir`` is ``--data-dir``, ``raft.heartbeat`` is ``--raft-heartbeat``), and a
flag given on the command line overrides the file. Unknown keys, wrong types and out-of-range
values are refused with one line on stderr and exit status 2, before anything starts.
"""

from __future__ import annotations

import argparse
import grp
import tomllib
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from swarmsecrets import __version__
from swarmsecrets.manager.dispatcher import HEARTBEAT_PERIOD
from swarmsecrets.raft import RaftTiming

PROG = "swarmsecretsd"
# The CLI socket has a runtime directory of its own (systemd's RuntimeDirectory=swarmsecretsd, removed
# on stop), apart from the workers' secrets root.
DEFAULT_HOST = "unix:///run/swarmsecretsd/swarmsecretsd.sock"
DEFAULT_DATA_DIR = "/var/lib/swarmsecrets"
DEFAULT_SECRETS_ROOT = "/run/swarmsecrets"
UNIX_SCHEME = "unix://"

_RAFT_DEFAULTS = RaftTiming()


class _Schema(BaseModel):
    # strict: a TOML string is not silently a number or a boolean; extra: unknown keys are refused.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RaftSettings(_Schema):
    """Raft timers in seconds (``[raft]`` in the file, ``--raft-*`` flags)."""

    heartbeat: float = Field(default=_RAFT_DEFAULTS.heartbeat, gt=0,
                             description="seconds between leader heartbeats")
    election_min: float = Field(default=_RAFT_DEFAULTS.election_min, gt=0,
                                description="minimum election timeout, seconds")
    election_max: float = Field(default=_RAFT_DEFAULTS.election_max, gt=0,
                                description="maximum election timeout, seconds")
    leader_fallback: float = Field(default=_RAFT_DEFAULTS.leader_fallback, gt=0,
                                   description="a leader that heard from no majority for this many seconds steps down")

    @model_validator(mode="after")
    def _consistent(self) -> RaftSettings:
        self.timing()  # RaftTiming states the rule between the timers; its ValueError becomes the message
        return self

    def timing(self) -> RaftTiming:
        return RaftTiming(heartbeat=self.heartbeat, election_min=self.election_min,
                          election_max=self.election_max, leader_fallback=self.leader_fallback)


class DaemonConfig(_Schema):
    data_dir: str = Field(default=DEFAULT_DATA_DIR, min_length=1, description="state directory")
    host: str = Field(default=DEFAULT_HOST, description="unix socket for the CLI, unix:///path/to.sock")
    group: str = Field(default="", description="group (name or id) whose members may use the CLI socket, "
                                                "made 0660; none: root only, 0600")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines as logfmt text or one JSON object each")
    secrets_root: str = Field(default=DEFAULT_SECRETS_ROOT, min_length=1,
                              description="workers: where task secrets go, on tmpfs")
    dev_allow_non_tmpfs: bool = Field(
        default=False, description="development only: allow a secrets root that is not tmpfs (secrets may reach disk)")
    dispatcher_heartbeat: float = Field(
        default=HEARTBEAT_PERIOD, gt=0,
        description="managers: seconds between agents' heartbeats (down after 3 missed); seeds the cluster's "
                    "setting at 'swarm init', which 'swarm update --dispatcher-heartbeat' changes")
    min_cert_expiry: float = Field(
        default=3600.0, gt=0,
        description="for tests only: managers: the shortest node certificate lifetime 'swarm update "
                    "--cert-expiry' accepts, in seconds (Docker's minimum, the default, is one hour)")
    metrics_addr: str = Field(
        default="", description="serve Prometheus metrics over plain HTTP at HOST:PORT /metrics (like dockerd's "
                                "--metrics-addr; keep it on loopback or a private network); off when empty")
    raft: RaftSettings = Field(default=RaftSettings(), description="raft timers")

    @field_validator("host")
    @classmethod
    def _unix_socket(cls, host: str) -> str:
        if not host.startswith(UNIX_SCHEME) or len(host) == len(UNIX_SCHEME):
            raise ValueError(f"must be unix:///path/to.sock, got {host!r}")
        return host

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, addr: str) -> str:
        if not addr:
            return addr
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9323, got {addr!r}")
        return addr

    @field_validator("group")
    @classmethod
    def _known_group(cls, group: str) -> str:
        if group:
            socket_group_id(group)
        return group

    @property
    def socket_path(self) -> str:
        return self.host[len(UNIX_SCHEME):]

    def timing(self) -> RaftTiming:
        return self.raft.timing()


def socket_group_id(group: str) -> int:
    """The id of ``group``, a name or a number, as dockerd's ``--group`` takes it."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        pass
    if group.isdigit():
        return int(group)
    raise ValueError(f"group {group} not found")


# --- the flags, made from the schema ------------------------------------------------------------

def _flag(path: tuple[str, ...]) -> str:
    return "--" + "-".join(path).replace("_", "-")


def _fields() -> list[tuple[tuple[str, ...], Any]]:
    """(key path, field info) of every leaf setting, in schema order."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, info in DaemonConfig.model_fields.items():
        if info.annotation is RaftSettings:
            out += [((name, sub), subinfo) for sub, subinfo in RaftSettings.model_fields.items()]
        else:
            out.append(((name,), info))
    return out


# dockerd's short forms
_SHORT_FLAGS: dict[tuple[str, ...], list[str]] = {("host",): ["-H"], ("group",): ["-G"]}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, no usage block: the operator sees what is wrong and nothing else."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> _Parser:
    p = _Parser(prog=PROG, description="The swarmsecrets daemon.")
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the flags ([raft] for raft-*)")
    for path, info in _fields():
        dest = ".".join(path)
        default = info.get_default(call_default_factory=True)
        if info.annotation is bool:
            p.add_argument(_flag(path), dest=dest, action="store_true", default=None, help=info.description)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "metavar": path[-1].upper(),
                                  "help": info.description + (f" (default {default})" if default != "" else "")}
        if info.annotation is float:
            kwargs.update(type=float, metavar="SECONDS")
        choices = getattr(info.annotation, "__args__", None)
        if choices:
            kwargs.update(choices=list(choices), metavar=None)
        flags = [_flag(path)] + _SHORT_FLAGS.get(path, [])
        p.add_argument(*reversed(flags), **kwargs)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _read_file(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _describe(err: ValidationError, from_flags: set[tuple[str, ...]], source: str) -> str:
    """The schema's errors as one line, naming each setting as the user wrote it (flag or key)."""
    unknown = [".".join(str(p) for p in e["loc"]) for e in err.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        return f"unknown keys in {source}: {', '.join(sorted(unknown))}"
    parts = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        if loc == ("raft",) and e["type"] == "value_error":  # the timers one against another
            where = "raft settings"
        elif loc in from_flags:
            where = _flag(loc)
        else:
            where = f"{'.'.join(loc)} in {source}"
        parts.append(f"invalid {where}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> DaemonConfig:
    """The settings from ``--config`` and the flags; exits 2 with one line on stderr if they are bad."""
    p = _parser()
    args = vars(p.parse_args(argv))
    config_path = args.pop("config")
    doc: dict[str, Any] = {}
    if config_path:
        try:
            doc = _read_file(config_path)
        except (OSError, tomllib.TOMLDecodeError) as e:
            p.error(f"cannot read config {config_path}: {e}")
    from_flags: set[tuple[str, ...]] = set()
    for dest, value in args.items():
        if value is None:
            continue
        path = tuple(dest.split("."))
        section = doc
        for key in path[:-1]:
            table = section.get(key)
            section[key] = dict(table) if isinstance(table, dict) else {}
            section = section[key]
        section[path[-1]] = value
        from_flags.add(path)
    try:
        return DaemonConfig.model_validate(doc)
    except ValidationError as e:
        p.error(_describe(e, from_flags, config_path or "the flags"))
