"""Times for people, as docker prints them: ``2 hours ago`` from an RFC 3339 timestamp (go-units' HumanDuration)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["human_duration", "parse_timestamp", "since", "split_rfc3339"]

_RFC3339_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")


def split_rfc3339(ts: str) -> tuple[str, str, str | None, str] | None:
    """An RFC 3339 timestamp's date, clock, fractional digits (None if absent) and zone; None if it is not one."""
    m = _RFC3339_RE.fullmatch(ts)
    if not m:
        return None
    date, clock, frac, zone = m.groups()
    return date, clock, frac, zone


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which ``docker secret ls`` shows followed by " ago"."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = math.floor(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def parse_timestamp(ts: str) -> datetime | None:
    """An RFC 3339 timestamp (any number of fractional digits), or None if it is not one."""
    parts = split_rfc3339(ts)
    if parts is None:
        return None
    date, clock, frac, zone = parts
    tz = UTC
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        base = datetime.fromisoformat(f"{date}T{clock}").replace(tzinfo=tz)
    except ValueError:
        return None
    return base + timedelta(microseconds=int((frac or "0")[:6].ljust(6, "0")))


def since(ts: str, now: datetime | None = None) -> str:
    """``2 hours ago`` for a timestamp; empty if the timestamp is missing or malformed."""
    then = parse_timestamp(ts)
    if then is None:
        return ""
    now = now or datetime.now(UTC)
    return human_duration((now - then).total_seconds()) + " ago"
