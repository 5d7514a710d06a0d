"""swarmsecretsd's bad settings and start-up failures, met as a user meets them: the real daemon
refuses with one line on stderr (the key or flag, the value given, what is expected), no traceback;
exit status 2 for a bad setting, 1 for a daemon that cannot start where it was told to."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.framework import DAEMON_MODULE
from tests.framework.node import child_env


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    status: int
    line: str  # what the one stderr line says, {root} standing for the test's directory
    toml: str = ""  # the --config file's text, written to {root}/<name>.toml


CASES = [
    Case("unknown-key", ("--config", "{root}/unknown-key.toml"), 2,
         "swarmsecretsd: error: unknown key bogus = 1 in {root}/unknown-key.toml: expected one of data_dir, host, ",
         toml="bogus = 1\n"),
    Case("log-level", ("--config", "{root}/log-level.toml"), 2,
         'swarmsecretsd: error: invalid value "verbose" for log_level in {root}/log-level.toml: '
         'expected one of "debug", "info", "warning", "error"', toml='log_level = "verbose"\n'),
    Case("data-dir-type", ("--config", "{root}/data-dir-type.toml"), 2,
         "swarmsecretsd: error: invalid value 5 for data_dir in {root}/data-dir-type.toml: expected a non-empty string",
         toml="data_dir = 5\n"),
    Case("raft-heartbeat", ("--config", "{root}/raft-heartbeat.toml"), 2,
         'swarmsecretsd: error: invalid value "fast" for raft.heartbeat in {root}/raft-heartbeat.toml: '
         "expected a number of seconds greater than 0", toml='[raft]\nheartbeat = "fast"\n'),
    Case("flag-value", ("--dispatcher-heartbeat", "often"), 2,
         'swarmsecretsd: error: invalid argument "often" for --dispatcher-heartbeat: '
         "expected a number of seconds greater than 0"),
    Case("missing-file", ("--config", "{root}/nowhere.toml"), 2,
         'swarmsecretsd: error: cannot read --config "{root}/nowhere.toml": no such file or directory'),
    Case("toml-syntax", ("--config", "{root}/toml-syntax.toml"), 2,
         'swarmsecretsd: error: cannot read --config "{root}/toml-syntax.toml": expected TOML: '
         "invalid value (at line 1, column 12)", toml="data_dir = \n"),
    Case("raft-timers", ("--config", "{root}/raft-timers.toml", "--raft-election-max", "1"), 2,
         "swarmsecretsd: error: contradictory raft timers raft.heartbeat = 0.5, raft.election_min = 1.0, "
         "--raft-election-max 1: need 0 < 3 * heartbeat < election_min < election_max",
         toml="[raft]\nheartbeat = 0.5\nelection_min = 1.0\n"),
    # A data dir below a file cannot be created; Go (and dockerd) say ENOTDIR.
    Case("data-dir-create", ("--data-dir", "{root}/a-file/data", "-H", "unix://{root}/d.sock"), 1,
         "failed to start daemon: data dir {root}/a-file/data: not a directory"),
    # The test holds a listening socket at {root}/served.sock: another daemon's, to this one.
    Case("socket-served", ("--data-dir", "{root}/served", "-H", "unix://{root}/served.sock"), 1,
         "failed to start daemon: listen unix {root}/served.sock: bind: address already in use"),
]


@dataclass(frozen=True)
class Runs:
    root: Path
    by_name: dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Every case run at once (each daemon exits at start)."""
    root = tmp_path_factory.mktemp("config")
    (root / "a-file").write_text("")
    for case in CASES:
        if case.toml:
            (root / f"{case.name}.toml").write_text(case.toml)
    with socket.socket(socket.AF_UNIX) as served:
        served.bind(str(root / "served.sock"))
        served.listen()
        procs = {case.name: subprocess.Popen(
            [sys.executable, "-m", DAEMON_MODULE, *(a.format(root=root) for a in case.argv)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
            for case in CASES}
        out = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert (root / "served.sock").exists(), "the daemon removed a socket another process serves"
    yield Runs(root, out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_naming_the_setting_and_the_value(runs: Runs, case: Case) -> None:
    root, p = runs.root, runs.by_name[case.name]
    assert p.returncode == case.status, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert case.line.format(root=root) in lines[0]
    if case.name == "data-dir-create":
        assert not (root / "d.sock").exists()
