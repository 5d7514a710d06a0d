"""The daemon's log lines: logfmt or JSON, event fields, journald priorities under systemd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROGRAM = """
import logging
from swarmsecrets.logfmt import event, setup_logging
setup_logging("info", "{fmt}")
log = logging.getLogger("swarmsecrets.test")
log.info("plain")
event(log, logging.WARNING, "node_down", "node n1 is Down", node="n1", tasks=["t1", "t2"])
"""


def run(tmp_path: Path, fmt: str, journal: bool) -> list[str]:
    """The lines a process writes to a stderr file; with ``journal``, JOURNAL_STREAM names that file
    (as systemd names the journal's stream)."""
    out = tmp_path / f"stderr-{fmt}-{journal}"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(out, "wb") as f:
        if journal:
            st = os.fstat(f.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", _PROGRAM.format(fmt=fmt)], stderr=f, env=env, check=True, timeout=30)
    return out.read_text().splitlines()


def test_json_lines_carry_the_event_fields(tmp_path: Path) -> None:
    plain, down = (json.loads(line) for line in run(tmp_path, "json", journal=False))
    assert (plain["level"], plain["logger"], plain["msg"]) == ("info", "swarmsecrets.test", "plain")
    assert "event" not in plain
    assert {k: down[k] for k in ("level", "event", "node", "tasks")} == {
        "level": "warning", "event": "node_down", "node": "n1", "tasks": ["t1", "t2"]}


def test_logfmt_lines_carry_the_event_fields(tmp_path: Path) -> None:
    _, down = run(tmp_path, "text", journal=False)
    assert down.split(" ", 1)[1] == (
        'level=warning logger=swarmsecrets.test msg="node n1 is Down" event=node_down node=n1 tasks=t1,t2')


def test_under_systemd_each_line_starts_with_its_syslog_priority(tmp_path: Path) -> None:
    plain, down = run(tmp_path, "text", journal=True)
    assert plain.startswith("<6>time=") and down.startswith("<4>time=")
    plain, down = run(tmp_path, "json", journal=True)
    assert plain.startswith("<6>{") and json.loads(down[3:])["event"] == "node_down"
    # JOURNAL_STREAM inherited by a process whose stderr goes elsewhere: no prefix.
    env = {**os.environ, "JOURNAL_STREAM": "1:1"}
    p = subprocess.run([sys.executable, "-c", _PROGRAM.format(fmt="text")], capture_output=True, env=env,
                       check=True, timeout=30)
    assert p.stderr.decode().startswith("time=")


def test_line_times_are_utc_to_the_millisecond_as_datetime_rounds() -> None:
    import datetime
    import logging

    from swarmsecrets.logfmt import _timestamp
    record = logging.LogRecord("x", logging.INFO, "", 0, "", (), None)
    for created in (1700000000.0, 1700000000.9999995, 1700000000.9999996, 1699999999.0004999, 1733447123.456789):
        record.created = created
        expected = datetime.datetime.fromtimestamp(created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert _timestamp(record) == expected
