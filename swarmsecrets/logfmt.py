"""The daemon's log lines on stderr, as logfmt (``time=… level=… logger=… msg="…"``) or one JSON
object per line.

An event an operator acts on (a leader elected, a node down, a task failed…) is logged through
``event``: its name and fields are stable keys (``event=leader_elected term=4 leader=…``) next to
the prose, so that a line can be matched without parsing the message. Under systemd (stderr is the
journal stream named by ``JOURNAL_STREAM``) each line starts with its syslog priority, ``<3>`` for an
error, so that journald records the level (the sd-daemon(3) convention).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from typing import Any, Literal

from swarmsecrets.wire import utc_second

LogFormat = Literal["text", "json"]

# The record attribute that carries an event's name and fields.
_FIELDS = "swarmsecrets_fields"

# syslog priorities (sd-daemon(3)): what journald records as each line's level.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def event(logger: logging.Logger, level: int, name: str, msg: str, /, **fields: object) -> None:
    """Log event ``name`` with ``fields`` as stable keys; ``msg`` is the prose for a human."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={_FIELDS: {"event": name, **fields}})


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    return dict(getattr(record, _FIELDS, None) or {})


_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')


def _quote(value: str) -> str:
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _timestamp(record: logging.LogRecord) -> str:
    """``record.created`` in UTC to the millisecond (microseconds rounded half-even as datetime does,
    then truncated)."""
    frac, whole = math.modf(record.created)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{utc_second(int(whole))}.{micros // 1000:03d}Z"


class LogfmtFormatter(logging.Formatter):
    # One line per audited write: built in one pass, the event's fields read in place.
    def format(self, record: logging.LogRecord) -> str:
        line = (f"time={_timestamp(record)} level={record.levelname.lower()} logger={record.name} "
                f"msg={_quote(record.getMessage())}")
        fields = getattr(record, _FIELDS, None)
        if fields:
            line += "".join([f" {k}={_quote(v if type(v) is str else _text(v))}" for k, v in fields.items()])
        if record.exc_info:
            line += f" error={_quote(self.formatException(record.exc_info))}"
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        for k, v in fields_of(record).items():
            doc.setdefault(k, sorted(v) if isinstance(v, (set, frozenset)) else v)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class JournalPrefix(logging.Formatter):
    """Puts ``<N>`` (the line's syslog priority) before what ``inner`` formats."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{self.inner.format(record)}"


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd connected (``JOURNAL_STREAM`` is its
    ``device:inode``): a redirected stderr of a process started by a unit is not."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return bool(value) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


def formatter(fmt: LogFormat, journal: bool) -> logging.Formatter:
    inner: logging.Formatter = JSONFormatter() if fmt == "json" else LogfmtFormatter()
    return JournalPrefix(inner) if journal else inner


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither format shows where a line was logged from, nor the thread or process: skip looking
    # them up for every record (the logging module's own switches; they cost microseconds a line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # gRPC's own debug lines say nothing an operator can act on.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
