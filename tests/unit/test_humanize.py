"""Durations and timestamps as docker prints them (go-units' HumanDuration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from swarmsecrets.cli.humanize import human_duration, parse_timestamp, since, split_rfc3339


@pytest.mark.parametrize(("seconds", "want"), [
    (-5, "Less than a second"),
    (0.999, "Less than a second"),
    (1, "1 second"),
    (1.9, "1 second"),
    (2, "2 seconds"),
    (59, "59 seconds"),
    (60, "About a minute"),
    (119, "About a minute"),
    (120, "2 minutes"),
    (59 * 60 + 59, "59 minutes"),
    (3600, "About an hour"),
    (89 * 60, "About an hour"),
    (90 * 60, "2 hours"),
    (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"),
    (13 * 86400, "13 days"),
    (14 * 86400, "2 weeks"),
    (59 * 86400, "8 weeks"),
    (60 * 86400, "2 months"),
    (729 * 86400, "24 months"),
    (730 * 86400, "2 years"),
])
def test_human_duration(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want


def test_since() -> None:
    now = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
    assert since("2026-11-28T04:00:00.123456789Z", now) == "2 hours ago"
    assert since((now - timedelta(seconds=28)).isoformat(), now) == "28 seconds ago"
    assert since("", now) == ""
    assert since("2026-13-40T00:00:00Z", now) == ""


def test_parse_timestamp_nanoseconds() -> None:
    ts = parse_timestamp("2026-11-28T04:58:11.084570123Z")
    assert ts == datetime(2026, 11, 28, 4, 58, 11, 84570, tzinfo=UTC)


def test_split_rfc3339_keeps_fraction_and_zone_as_written() -> None:
    assert split_rfc3339("2026-11-28T04:58:11.084570000Z") == ("2026-11-28", "04:58:11", "084570000", "Z")
    assert split_rfc3339("2026-11-28T04:58:11+02:00") == ("2026-11-28", "04:58:11", None, "+02:00")
    assert split_rfc3339("2026-11-28 04:58:11") is None
