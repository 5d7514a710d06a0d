"""The one rulebook for user input, shared by the CLI (early, friendly errors) and the manager (authority).

Pure functions: they raise ``errors.InvalidArgument`` with Docker's wording where Docker has one.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import posixpath
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from swarmsecrets import errors

# SwarmKit's MaxSecretSize (500 KiB); the largest accepted payload is one byte less.
MAX_SECRET_SIZE = 512000
MAX_NAME_LENGTH = 64

# SwarmKit's rule, spelled with '-' last so the class means the same in Python as in Go.
_NAME_RE = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?")
_HOST_LABEL_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_LABEL_WHITESPACE = " \t"


# --- bounds on what remote callers send -------------------------------------------------------------
# Every string and list a caller controls is capped here, before anything reaches raft: a record is
# replicated to every manager, kept in every snapshot and shown by every `ls`.

MAX_HOSTNAME_LENGTH = 253
MAX_ENGINE_VERSION_LENGTH = 64
MAX_ADDR_LENGTH = 300
MAX_CSR_BYTES = 16 * 1024
MAX_REQUEST_ID_LENGTH = 128
MAX_LABELS = 64
MAX_LABEL_KEY_BYTES = 256
MAX_LABEL_VALUE_BYTES = 2048
MAX_COMMAND_ARGS = 1024
MAX_ENV_ENTRIES = 1024
# The command, and the environment, each in total (UTF-8 bytes).
MAX_SPEC_TEXT_BYTES = 64 * 1024
MAX_SECRET_REFS = 256
MAX_FILTER_VALUES = 256
# Joins stop here until nodes are removed: a holder of a join token cannot grow the replicated
# state without bound.
MAX_NODES = 10_000
# Tasks of one replicated service. Docker sets no bound; the scheduler makes a record per slot, so
# an absurd count (2**64-1 is a valid uint64) would stall it for good: one per node at the node cap.
MAX_REPLICAS = MAX_NODES
MAX_TASK_ID_LENGTH = 64
# A task status' message and error are kept to this many bytes; the rest is cut with TRUNCATED_MARK.
MAX_STATUS_TEXT_BYTES = 1024
TRUNCATED_MARK = "... (truncated)"
# The states a task can be in (SwarmKit's names); a worker reports some of them.
TASK_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
                         "complete", "shutdown", "failed", "rejected", "remove", "orphaned"})

_HOSTNAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")
_VISIBLE_ASCII_RE = re.compile(r"[\x21-\x7e]*")


def _brief(s: str | bytes, keep: int = 32) -> str:
    """An oversize or hostile value inside an error line: quoted, cut short, non-printables escaped."""
    text = s.decode("utf-8", "backslashreplace") if isinstance(s, bytes) else s
    shown = escape_nonprintable(text[:keep]) + ("..." if len(text) > keep else "")
    return f"'{shown}'"


def escape_nonprintable(s: str) -> str:
    """``s`` with every non-printable character (controls, terminal escapes, bidi overrides, line and
    paragraph separators, lone surrogates) spelled as Go's ``%q`` spells it: \\t, \\n, \\x1b, \\u202e.
    Printable text, backslashes included, is left as it is: this is for display, not a reversible quoting."""
    if s.isprintable():
        return s
    out = []
    for c in s:
        if c.isprintable():
            out.append(c)
            continue
        code = ord(c)
        if c in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[c])
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


_NAMED_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v"}


def validate_hostname(hostname: str) -> None:
    """A node's hostname as it joins or opens a session: letters, digits, '.', '-' and '_' (a host
    name, which is what the daemon sends), at most 253 characters."""
    if len(hostname) > MAX_HOSTNAME_LENGTH:
        raise errors.InvalidArgument(
            f"invalid hostname {_brief(hostname)}: must be at most {MAX_HOSTNAME_LENGTH} characters")
    if not _HOSTNAME_RE.fullmatch(hostname):
        raise errors.InvalidArgument(
            f"invalid hostname {_brief(hostname)}: only letters, digits, '.', '-' and '_' are allowed")


def validate_engine_version(version: str) -> None:
    if len(version) > MAX_ENGINE_VERSION_LENGTH or not _VISIBLE_ASCII_RE.fullmatch(version):
        raise errors.InvalidArgument(
            f"invalid engine version {_brief(version)}: at most {MAX_ENGINE_VERSION_LENGTH} visible ASCII characters")


def validate_csr(pem: bytes) -> None:
    """A certificate signing request a node sends to join: bounded, parseable, self-signed by its key."""
    if not pem:
        raise errors.InvalidArgument("invalid certificate request: empty")
    if len(pem) > MAX_CSR_BYTES:
        raise errors.InvalidArgument(
            f"invalid certificate request: {len(pem)} bytes exceeds the limit of {MAX_CSR_BYTES}")
    from cryptography import x509  # here: the CLI imports this module and never parses a CSR

    try:
        csr = x509.load_pem_x509_csr(pem)
        valid = csr.is_signature_valid
    except ValueError:
        raise errors.InvalidArgument("invalid certificate request: not a PEM-encoded CSR") from None
    if not valid:
        raise errors.InvalidArgument("invalid certificate request: bad signature")


def validate_request_id(rid: str) -> None:
    if len(rid) > MAX_REQUEST_ID_LENGTH or not _VISIBLE_ASCII_RE.fullmatch(rid):
        raise errors.InvalidArgument(
            f"invalid request id {_brief(rid)}: at most {MAX_REQUEST_ID_LENGTH} visible ASCII characters")


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def validate_labels(labels: Mapping[str, str]) -> None:
    """Labels of a secret, service or node: at most 64, each key non-empty and at most 256 bytes, each
    value at most 2048 bytes."""
    if len(labels) > MAX_LABELS:
        raise errors.InvalidArgument(f"too many labels: {len(labels)} (at most {MAX_LABELS})")
    for key, value in labels.items():
        if not key:
            raise errors.InvalidArgument("invalid label: empty name")
        if _utf8_len(key) > MAX_LABEL_KEY_BYTES:
            raise errors.InvalidArgument(f"invalid label {_brief(key)}: name longer than {MAX_LABEL_KEY_BYTES} bytes")
        if _utf8_len(value) > MAX_LABEL_VALUE_BYTES:
            raise errors.InvalidArgument(
                f"invalid label {_brief(key)}: value longer than {MAX_LABEL_VALUE_BYTES} bytes")


def validate_list_length(what: str, n: int, limit: int) -> None:
    """``what`` names the list in the error: ``too many secret references: 300 (at most 256)``."""
    if n > limit:
        raise errors.InvalidArgument(f"too many {what}: {n} (at most {limit})")


def validate_command(args: Sequence[str]) -> None:
    """A service's command: at most 1024 arguments and 64 KiB, no NUL (exec could not pass it)."""
    validate_list_length("command arguments", len(args), MAX_COMMAND_ARGS)
    if sum(_utf8_len(a) for a in args) > MAX_SPEC_TEXT_BYTES:
        raise errors.InvalidArgument(f"command longer than {MAX_SPEC_TEXT_BYTES} bytes")
    for a in args:
        if "\x00" in a:
            raise errors.InvalidArgument(f"invalid command argument {_brief(a)}: must not contain NUL")


def check_node_count(current: int) -> None:
    """Before a join is written: the swarm holds ``current`` nodes."""
    if current >= MAX_NODES:
        raise errors.FailedPrecondition(
            f"the swarm has reached its limit of {MAX_NODES} nodes: remove nodes that are down "
            "(node rm) before joining more")


def clip_status_text(text: str) -> str:
    """A task status' message or error as the manager keeps it: at most MAX_STATUS_TEXT_BYTES bytes
    of UTF-8, the cut marked."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_STATUS_TEXT_BYTES:
        return text
    keep = MAX_STATUS_TEXT_BYTES - len(TRUNCATED_MARK)
    return raw[:keep].decode("utf-8", "ignore") + TRUNCATED_MARK


def check_task_status(task_id: str, state: str) -> None:
    """A status a worker reports: a plausible task id and a known state."""
    if not task_id or len(task_id) > MAX_TASK_ID_LENGTH or not _VISIBLE_ASCII_RE.fullmatch(task_id):
        raise errors.InvalidArgument(f"invalid task id {_brief(task_id)}")
    if state not in TASK_STATES:
        raise errors.InvalidArgument(f"invalid task state {_brief(state)} for task {task_id}")


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
    if len(s) > MAX_ADDR_LENGTH:
        raise errors.InvalidArgument(f"invalid address {_brief(s)}: must be at most {MAX_ADDR_LENGTH} characters")

    def bad(reason: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"invalid address '{_printable(s)}': {reason}")

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


def raft_addr_for(advertise_addr: str, explicit: str = "") -> str:
    """A manager's raft address: ``explicit`` (--raft-addr) if given, else the advertised host on
    the next port. The one place that rule lives: init, join and promotion all derive it here."""
    if explicit:
        return format_addr(*validate_addr(explicit, 0))
    host, port = validate_addr(advertise_addr, 0)
    if port >= 65535:
        raise errors.InvalidArgument(
            f"invalid address '{advertise_addr}': the raft port (the next one) would be out of range; "
            "pass --raft-addr")
    return format_addr(host, port + 1)


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


# --- services ---------------------------------------------------------------------------------------

SERVICE_MODES = ("replicated", "global")
AVAILABILITIES = ("active", "pause", "drain")
MAX_SERVICE_NAME_LENGTH = 63
DEFAULT_SECRET_MODE = 0o444
MAX_FILE_MODE = 0o777
MAX_TARGET_BYTES = 255
# uid_t is 32 bits and (uid_t)-1 means "leave unchanged" to chown(2), so it is never a real id.
MAX_ID = 2**32 - 2
UPDATE_ACTIONS_HELP = "expected restart, none or signal:<SIGNAL>"

# SwarmKit's isValidDNSName, ^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$, rewritten without the nested
# quantifier that makes Python's backtracking engine exponential. '_' is allowed: stacks name
# their services <stack>_<name>.
_SERVICE_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[-_a-zA-Z0-9]*[a-zA-Z0-9])?")
_OCTAL_DIGITS = frozenset("01234567")


@dataclass(frozen=True)
class SecretRef:
    """One ``--secret``: which secret (by name) and the file it becomes under /run/secrets."""

    source: str
    target: str
    uid: str = "0"
    gid: str = "0"
    mode: int = DEFAULT_SECRET_MODE


def _printable(s: str, keep: int = 300) -> str:
    """User input inside an error line: no NUL, no unencodable surrogates, never more than ``keep``
    characters of it."""
    text = s[:keep].encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return text + ("..." if len(s) > keep else "")


def validate_service_name(name: str) -> None:
    """SwarmKit's rule and texts for service names (a DNS label that may also contain '_')."""
    if not name:
        raise errors.InvalidArgument("meta: name must be provided")
    if not _SERVICE_NAME_RE.fullmatch(name):
        raise errors.InvalidArgument("name must be valid as a DNS name component")
    if len(name) > MAX_SERVICE_NAME_LENGTH:
        raise errors.InvalidArgument("name must be 63 characters or fewer")


def validate_service_mode(mode: str, replicas: int | None) -> None:
    """docker's ``--mode``/``--replicas`` rules; ``replicas`` is None when it was not given."""
    if mode not in SERVICE_MODES:
        raise errors.InvalidArgument(f"Unknown mode: {mode}, only replicated and global supported")
    if mode == "global" and replicas is not None:
        raise errors.InvalidArgument("replicas can only be used with replicated mode")
    if replicas is not None:
        validate_replicas(replicas)


def validate_replicas(replicas: int) -> None:
    if replicas > MAX_REPLICAS:
        raise errors.InvalidArgument(f"replicas must be at most {MAX_REPLICAS} (got {replicas})")


def parse_availability(value: str) -> str:
    """A node availability, case-insensitive like dockerd; returned lower-case."""
    if value.lower() not in AVAILABILITIES:
        raise errors.InvalidArgument(f'invalid Availability: "{_printable(value)}"')
    return value.lower()


def parse_join_availability(value: str) -> str:
    """The ``--availability`` of ``swarm init`` and ``swarm join`` (a node's first availability),
    case-insensitive; "" means active. Docker's CLI wording for a bad value."""
    if not value:
        return "active"
    if value.lower() not in AVAILABILITIES:
        raise errors.InvalidArgument(
            f'invalid availability "{_printable(value)}", only active, pause and drain are supported')
    return value.lower()


def _is_number(s: str) -> bool:
    return s.isascii() and s.isdigit()


def validate_uid_gid(value: str, what: str = "uid") -> None:
    """A numeric uid or gid (``what`` names it in the error). Names such as ``nginx`` are refused
    here instead of failing the task at mount time, as Docker does."""
    if not _is_number(value):
        raise errors.InvalidArgument(f"invalid {what} '{_printable(value)}': must be numeric")
    if int(value) > MAX_ID:
        raise errors.InvalidArgument(f"invalid {what} '{value}': must be at most {MAX_ID}")


def validate_user(value: str) -> None:
    """``--user UID[:GID]``, numeric; "" means the default user."""
    if not value:
        return
    parts = value.split(":")
    if len(parts) > 2 or not all(_is_number(p) for p in parts):
        raise errors.InvalidArgument(f"invalid user '{_printable(value)}': must be UID[:GID] with numeric ids")
    if any(int(p) > MAX_ID for p in parts):
        raise errors.InvalidArgument(f"invalid user '{value}': ids must be at most {MAX_ID}")


def validate_file_mode(mode: int) -> None:
    """Permission bits only: no setuid/setgid/sticky, nothing above 0777."""
    if not 0 <= mode <= MAX_FILE_MODE:
        raise errors.InvalidArgument(f"invalid mode specified: 0{mode:o} (must be at most 0777)")


def parse_file_mode(text: str) -> int:
    """An octal mode, ``0400`` or ``0o400``.

    Docker parses with base auto-detection, so ``mode=400`` silently means decimal 400 = 0620;
    a mode without the leading 0 is refused with a hint instead. What Docker refuses too (not a
    number, or over 32 bits) gets its text, Go's strconv error.
    """
    if not _GO_UINT.fullmatch(text):
        raise errors.InvalidArgument(f"invalid mode specified: strconv.ParseUint: parsing {_go_quote(text)}: "
                                     "invalid syntax")
    if _go_uint(text) > MAX_GO_UINT32:
        raise errors.InvalidArgument(f"invalid mode specified: strconv.ParseUint: parsing {_go_quote(text)}: "
                                     "value out of range")
    digits = text[2:] if text[:2].lower() == "0o" else text if text.startswith("0") else ""
    if digits and _OCTAL_DIGITS.issuperset(digits):
        mode = int(digits, 8)
        validate_file_mode(mode)
        return mode
    if text and _OCTAL_DIGITS.issuperset(text):
        raise errors.InvalidArgument(f"invalid mode specified: {text} (file modes are octal: did you mean 0{text}?)")
    raise errors.InvalidArgument(f"invalid mode specified: {_printable(text)} (file modes are octal, e.g. 0400)")


# Go's unsigned integer literal, as strconv.ParseUint(s, 0, 32) takes it: a base prefix, digits,
# '_' only between digits or after the prefix.
_GO_UINT = re.compile(r"0[xX](_?[0-9a-fA-F])+|0[bB](_?[01])+|0[oO](_?[0-7])+|0(_?[0-7])*|[1-9](_?[0-9])*")
_GO_BASES = {"x": 16, "b": 2, "o": 8}
MAX_GO_UINT32 = 2**32 - 1


def _go_uint(literal: str) -> int:
    """The value of a literal _GO_UINT matched."""
    digits = literal.replace("_", "")
    if len(digits) > 1 and digits[0] == "0":
        base = _GO_BASES.get(digits[1].lower())
        return int(digits[2:], base) if base else int(digits[1:], 8)
    return int(digits)


def _go_quote(text: str) -> str:
    """``text`` as Go's %q writes it (near enough for an error line)."""
    return json.dumps(_printable(text), ensure_ascii=False)


def validate_secret_target(target: str) -> None:
    """The file a secret becomes: a normalized relative path that stays under /run/secrets.

    Docker accepts absolute paths and ``..`` (its filepath.Join lets ``../etc/x`` escape); we do not.
    """
    def bad(reason: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"invalid secret target '{_printable(target)}': {reason}")

    if not target:
        raise bad("must not be empty")
    if "\x00" in target:
        raise bad("must not contain NUL")
    try:
        size = len(target.encode())
    except UnicodeEncodeError:
        raise bad("must be valid UTF-8") from None
    if not target.isprintable():
        raise bad("must not contain control or other non-printable characters")
    if size > MAX_TARGET_BYTES:
        raise bad(f"must be at most {MAX_TARGET_BYTES} bytes")
    if target.startswith("/") or ".." in target.split("/"):
        raise bad("must be a relative path without '..'")
    normal = posixpath.normpath(target)
    if normal == ".":
        raise bad("must name a file")
    if normal != target:
        raise bad(f"must be a normalized path (did you mean '{normal}'?)")


def validate_secret_ref(ref: SecretRef) -> None:
    """Every field of a secret reference; the manager calls this on each reference it receives."""
    validate_secret_name(ref.source)
    validate_secret_target(ref.target)
    validate_uid_gid(ref.uid, "uid")
    validate_uid_gid(ref.gid, "gid")
    validate_file_mode(ref.mode)


def parse_secret_spec(value: str) -> SecretRef:
    """docker's ``--secret``: ``NAME``, or CSV ``source|src=NAME,target=PATH,uid=N,gid=N,mode=0NNN``.

    Keys are case-insensitive; defaults are target = source, uid and gid "0", mode 0444.
    """
    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as e:
        raise errors.InvalidArgument(f"invalid secret '{_printable(value)}': {e}") from None
    source = target = ""
    uid = gid = "0"
    mode = DEFAULT_SECRET_MODE
    if len(fields) == 1 and "=" not in fields[0]:
        source = fields[0]
    else:
        for f in fields:
            key, sep, val = f.partition("=")
            if not sep or not key:
                raise errors.InvalidArgument(f"invalid field '{_printable(f)}' must be a key=value pair")
            match key.lower():
                case "source" | "src":
                    source = val
                case "target":
                    target = val
                case "uid":
                    uid = val
                case "gid":
                    gid = val
                case "mode":
                    mode = parse_file_mode(val)
                case _:
                    raise errors.InvalidArgument(f"invalid field in secret request: {_printable(key)}")
    if not source:
        raise errors.InvalidArgument("source is required")
    ref = SecretRef(source=source, target=target or source, uid=uid, gid=gid, mode=mode)
    validate_secret_ref(ref)
    return ref


def _first_conflict(refs: Sequence[SecretRef]) -> tuple[SecretRef, SecretRef] | None:
    seen: dict[str, SecretRef] = {}
    for ref in refs:
        if ref.target in seen:
            return seen[ref.target], ref
        seen[ref.target] = ref
    return None


def check_conflicting_targets(refs: Sequence[SecretRef]) -> None:
    """The manager's check on a service's final references: no two share a target (SwarmKit's text),
    no target is a directory of another (``a`` and ``a/b``: a worker could not write both), and there
    are at most MAX_SECRET_REFS of them."""
    validate_list_length("secret references", len(refs), MAX_SECRET_REFS)
    conflict = _first_conflict(refs)
    if conflict:
        a, b = conflict
        raise errors.InvalidArgument(
            f"secret references '{a.source}' and '{b.source}' have a conflicting target: '{b.target}'")
    by_target = {ref.target: ref for ref in refs}
    for ref in refs:
        parts = ref.target.split("/")
        for i in range(1, len(parts)):
            outer = by_target.get("/".join(parts[:i]))
            if outer is not None:
                raise errors.InvalidArgument(
                    f"secret references '{outer.source}' and '{ref.source}' have a conflicting target: "
                    f"'{ref.target}' is inside '{outer.target}'")


def check_duplicate_targets(refs: Sequence[SecretRef]) -> None:
    """The CLI's check on the ``--secret``/``--secret-add`` flags of one command (docker's text)."""
    conflict = _first_conflict(refs)
    if conflict:
        raise errors.InvalidArgument(f"duplicate secret target for {conflict[1].source} not allowed")


def parse_update_action(value: str) -> str:
    """What a running task gets when its secrets change: ``restart`` (also for ""), ``none`` or
    ``signal:<SIG>`` with any signal name, with or without ``SIG``, any case; normalized to
    ``signal:SIGHUP`` style with aliases resolved (``signal:iot`` -> ``signal:SIGABRT``)."""
    if not value:
        return "restart"
    kind, sep, sig = value.partition(":")
    kind = kind.lower()
    if kind in ("restart", "none") and not sep:
        return kind
    if kind != "signal" or not sig:
        raise errors.InvalidArgument(f"invalid update action '{_printable(value)}': {UPDATE_ACTIONS_HELP}")
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise errors.InvalidArgument(f"invalid update action '{_printable(value)}': unknown signal '{_printable(sig)}'")
    return f"signal:{signal.Signals[name].name}"


def validate_env(env: Mapping[str, str]) -> None:
    """Environment entries a process can actually receive: a key without '=', no NUL anywhere."""
    validate_list_length("environment variables", len(env), MAX_ENV_ENTRIES)
    if sum(_utf8_len(k) + _utf8_len(v) + 2 for k, v in env.items()) > MAX_SPEC_TEXT_BYTES:
        raise errors.InvalidArgument(f"environment larger than {MAX_SPEC_TEXT_BYTES} bytes")
    for key, value in env.items():
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise errors.InvalidArgument(f"invalid environment variable: {_printable(key)}={_printable(value)}")


def parse_env(items: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """docker's ``-e K=V``; a bare ``K`` takes its value from ``environ`` (the CLI's environment)
    and is left out when it is not set there, which is what docker's container ends up with.
    A later entry for the same key wins."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise errors.InvalidArgument(f"invalid environment variable: {_printable(item)}")
        if not sep:
            if key not in environ:
                continue
            value = environ[key]
        env[key] = value
    validate_env(env)
    return env


# --- durations (Go syntax, as Docker's duration flags take them) ---

# The longest node certificate lifetime (seconds): no longer than the root CA that signs it lives.
MAX_CERT_EXPIRY = 20 * 365 * 86400
# The longest dispatcher heartbeat period (seconds): a node is Down after three missed, so a day
# is already far past any use; beyond it a typo more likely than a plan.
MAX_DISPATCHER_HEARTBEAT = 24 * 3600

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``2160h0m0s``, ``90m``, ``1.5h``), as Docker's flags take them."""
    body = text.strip()
    if body in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def format_duration(seconds: float) -> str:
    """A whole number of seconds as Go prints a duration: ``1h0m0s``, ``1m30s``, ``10s``."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"
