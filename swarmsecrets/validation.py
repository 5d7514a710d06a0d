"""The one rulebook for user input, shared by the CLI (early, friendly errors) and the manager (authority).

Pure functions: they raise ``errors.InvalidArgument`` with Docker's wording where Docker has one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from swarmsecrets import errors

# SwarmKit's MaxSecretSize (500 KiB); the largest accepted payload is one byte less.
MAX_SECRET_SIZE = 512000
MAX_NAME_LENGTH = 64

# SwarmKit's rule, spelled with '-' last so the class means the same in Python as in Go.
_NAME_RE = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?")
_HOST_LABEL_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_LABEL_WHITESPACE = " \t"


def validate_secret_name(name: str) -> None:
    if not name:
        raise errors.InvalidArgument("name must be provided")
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise errors.InvalidArgument(errors.SECRET_NAME_INVALID)


def validate_secret_data(data: bytes) -> None:
    if not 1 <= len(data) < MAX_SECRET_SIZE:
        raise errors.InvalidArgument(errors.SECRET_SIZE_INVALID)


def parse_label(s: str) -> tuple[str, str]:
    """``key[=value]`` as ``docker secret create -l`` takes it; a missing value is ""."""
    key, _, value = s.partition("=")
    key = key.lstrip(_LABEL_WHITESPACE)
    if not key:
        raise errors.InvalidArgument(f"invalid label '{s}': empty name")
    if any(c in key for c in _LABEL_WHITESPACE):
        raise errors.InvalidArgument(f"label '{key}' contains whitespaces")
    return key, value


def validate_addr(s: str, default_port: int = 0) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (``[v6]:PORT`` for IPv6) into (host, port); host comes back without brackets.

    ``default_port`` 0 means the port is required.
    """
    def bad(reason: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"invalid address '{s}': {reason}")

    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise bad("missing ']'")
        if rest and not rest.startswith(":"):
            raise bad("expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("not an IPv6 address inside [ ]") from None
    else:
        if s.count(":") > 1:
            raise bad("IPv6 addresses must be in brackets, e.g. [::1]:2377")
        host, sep, port_text_or_empty = s.partition(":")
        port_text = port_text_or_empty if sep else None
        if not host:
            raise bad("missing host")
        reason = _host_problem(host)
        if reason:
            raise bad(reason)
    if port_text is None:
        if not default_port:
            raise bad("missing port (expected HOST:PORT)")
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad("port must be a number between 1 and 65535")
    return host, int(port_text)


def _host_problem(host: str) -> str | None:
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "not a valid IPv4 address"
        return None
    if len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        return "not a valid IPv4 address or host name"
    return None


def format_addr(host: str, port: int) -> str:
    """The inverse of validate_addr: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class SecretFilters:
    """``secret ls -f`` filters, shaped like ListSecretsRequest.Filters."""

    names: list[str] = field(default_factory=list)
    name_prefixes: list[str] = field(default_factory=list)
    id_prefixes: list[str] = field(default_factory=list)
    # An empty value means "label present".
    labels: dict[str, str] = field(default_factory=dict)


def parse_filters(args: list[str]) -> SecretFilters:
    """docker's ``-f key=value`` for secrets: id= and name= are prefixes, names= exact, label=k[=v]."""
    out = SecretFilters()
    for arg in args:
        if not arg:
            continue
        key, sep, value = arg.partition("=")
        if not sep:
            raise errors.InvalidArgument("bad format of filter (expected name=value)")
        key, value = key.strip().lower(), value.strip()
        if key == "id":
            out.id_prefixes.append(value)
        elif key == "name":
            out.name_prefixes.append(value)
        elif key == "names":
            out.names.append(value)
        elif key == "label":
            k, _, v = value.partition("=")
            out.labels[k] = v
        else:
            raise errors.InvalidArgument(f"invalid filter '{key}'")
    return out
