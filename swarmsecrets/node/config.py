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
import json
import tomllib
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from swarmsecrets import __version__, errors
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
    # allow_inf_nan: TOML has inf and nan, and neither is a usable timer.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


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
        try:
            self.timing()
        except ValueError as e:  # RaftTiming states the rule between the timers
            raise ValueError(str(e).removeprefix("raft timing: ")) from None
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
            raise ValueError("expected a unix socket address, unix:///path/to.sock")
        return host

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, addr: str) -> str:
        if not addr:
            return addr
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9323")
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
            kwargs.update(type=_number, metavar="SECONDS")
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
        if choices:  # checked by the schema, whose message names the value given
            kwargs.update(metavar="{" + ",".join(map(str, choices)) + "}")
        flags = [_flag(path)] + _SHORT_FLAGS.get(path, [])
        p.add_argument(*reversed(flags), **kwargs)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _number(text: str) -> float | str:
    """A number flag's value; text that is not a number goes on to the schema, which says what it expects."""
    try:
        return float(text)
    except ValueError:
        return text


def _read_file(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


# --- one line for each bad setting: the key or flag, the value given, what is expected ------------

_MAX_SHOWN = 60  # a value longer than this is cut in the message


def _shown(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _toml(value: Any) -> str:
    """``value`` written as in a TOML file, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(_shown(value), ensure_ascii=False)
    if isinstance(value, dict):
        return _shown("{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }")
    if isinstance(value, list):
        return _shown("[" + ", ".join(_toml(v) for v in value) + "]")
    return _shown(str(value))


def _flag_text(value: Any) -> str:
    """A flag's value as typed (numbers have been parsed: 5.0 was typed 5)."""
    return _shown(repr(value).removesuffix(".0") if isinstance(value, float) else str(value))


def _field(loc: tuple[str, ...]) -> Any:
    model: Any = DaemonConfig
    info = None
    for name in loc:
        if model is None or name not in model.model_fields:
            return None
        info = model.model_fields[name]
        model = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) \
            else None
    return info


def _keys(model: type[BaseModel], prefix: str) -> str:
    return ", ".join(prefix + name for name in model.model_fields)


def _expected(loc: tuple[str, ...], e: ErrorDetails) -> str:
    """What the setting at ``loc`` takes, from its type and bounds in the schema."""
    info = _field(loc)
    if e["type"] == "value_error" or info is None:  # a validator's own words
        return str(e["msg"]).removeprefix("Value error, ")
    kind = info.annotation
    bounds = [f"{word} {getattr(m, attr)}" for m in info.metadata
              for attr, word in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"),
                                 ("le", "at most")) if getattr(m, attr, None) is not None]
    if get_origin(kind) is Literal:
        what = "one of " + ", ".join(json.dumps(c) for c in get_args(kind))
    elif kind is bool:
        what = "true or false"
    elif kind in (int, float):
        what = "an integer" if kind is int else "a finite number" if e["type"] == "finite_number" else "a number"
        what += " of seconds" if "seconds" in (info.description or "") else ""
    elif kind is str:
        what = "a non-empty string" if any(getattr(m, "min_length", 0) for m in info.metadata) else "a string"
    elif isinstance(kind, type) and issubclass(kind, BaseModel):
        what = f"a table [{'.'.join(loc)}] of {_keys(kind, '')}"
    else:
        what = str(e["msg"]).lower().removeprefix("input should be ")
    return "expected " + " ".join([what, *bounds])


def _describe(err: ValidationError, flags: dict[tuple[str, ...], Any], source: str) -> str:
    """The schema's errors as one line: for each bad setting, the flag or key as the user wrote it,
    the value given and what is expected. ``flags``: the settings given as flags; ``source``: the file."""
    def where(loc: tuple[str, ...]) -> str:
        return _flag(loc) if loc in flags else f"{'.'.join(loc)} in {source}"

    def given(loc: tuple[str, ...], value: Any) -> str:
        return json.dumps(_flag_text(value), ensure_ascii=False) if loc in flags else _toml(value)

    parts: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        if loc in seen:  # a union type reports each alternative; the first says enough
            continue
        seen.add(loc)
        if e["type"] == "extra_forbidden":
            table = _field(loc[:-1]) if len(loc) > 1 else None
            section = table.annotation if table is not None else DaemonConfig
            prefix = "".join(f"{p}." for p in loc[:-1])
            parts.append(f"unknown key {'.'.join(loc)} = {_toml(e['input'])} in {source}: "
                         f"expected one of {_keys(section, prefix)}")
        elif loc == ("raft",) and e["type"] == "value_error":  # the timers one against another
            rule = str(e["msg"]).removeprefix("Value error, ")
            timers = e["input"] if isinstance(e["input"], dict) else {}
            shown = []
            for name, info in RaftSettings.model_fields.items():
                if name not in rule:
                    continue
                key = ("raft", name)
                value = timers.get(name, info.default)
                shown.append(f"{_flag(key)} {_flag_text(value)}" if key in flags
                             else f"raft.{name} = {_toml(value)}" + ("" if name in timers else " (default)"))
            parts.append(f"contradictory raft timers {', '.join(shown)}: {rule}")
        else:
            word = "argument" if loc in flags else "value"
            parts.append(f"invalid {word} {given(loc, e['input'])} for {where(loc)}: {_expected(loc, e)}")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> DaemonConfig:
    """The settings from ``--config`` and the flags; exits 2 with one line on stderr if they are bad."""
    p = _parser()
    args = vars(p.parse_args(argv))
    config_path = args.pop("config")
    doc: dict[str, Any] = {}
    if config_path is not None:
        try:
            doc = _read_file(config_path)
        except OSError as e:
            p.error(f"cannot read --config {json.dumps(config_path)}: {errors.os_reason(e)}")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            reason = str(e) if isinstance(e, tomllib.TOMLDecodeError) else "not UTF-8 text"
            p.error(f"cannot read --config {json.dumps(config_path)}: expected TOML: {reason[:1].lower()}{reason[1:]}")
    flags: dict[tuple[str, ...], Any] = {}
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
        flags[path] = value
    try:
        return DaemonConfig.model_validate(doc)
    except ValidationError as e:
        p.error(_describe(e, flags, config_path or "the flags"))
