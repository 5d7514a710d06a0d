"""swarmsecretsd's flags and TOML config: same keys, flags win, bad input is one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmsecrets import errors
from swarmsecrets.cli import client as cli_client
from swarmsecrets.manager.dispatcher import HEARTBEAT_PERIOD
from swarmsecrets.raft import RaftTiming
from swarmsecrets.node.config import parse_args
from swarmsecrets.validation import raft_addr_for

DEPLOY_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "swarmsecretsd.toml"


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line swarmsecretsd exits 2 with."""
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("swarmsecretsd: error: "), err
    return err


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('data_dir = "/srv/ss"\nhost = "unix:///tmp/x.sock"\n[raft]\nheartbeat = 0.2\n'
                   'election_min = 1.5\nelection_max = 3.0\n')
    c = parse_args(["--config", str(cfg)])
    assert (c.data_dir, c.host, c.socket_path) == ("/srv/ss", "unix:///tmp/x.sock", "/tmp/x.sock")
    assert c.timing().heartbeat == 0.2 and c.timing().election_max == 3.0
    c = parse_args(["--config", str(cfg), "--data-dir", "/other", "--raft-election-max", "4"])
    assert c.data_dir == "/other" and c.timing().election_max == 4.0 and c.timing().election_min == 1.5


def test_defaults_without_file_or_flags() -> None:
    c = parse_args([])
    assert (c.data_dir, c.host, c.log_level, c.secrets_root) == (
        "/var/lib/swarmsecrets", "unix:///run/swarmsecretsd/swarmsecretsd.sock", "info", "/run/swarmsecrets")
    # The socket's directory is systemd's RuntimeDirectory (removed on stop): never the secrets root or in it.
    socket_dir = os.path.dirname(c.socket_path)
    assert os.path.commonpath([socket_dir, c.secrets_root]) not in (socket_dir, c.secrets_root)
    assert cli_client.DEFAULT_HOST == c.host
    assert c.group == ""
    assert c.dev_allow_non_tmpfs is False and c.dispatcher_heartbeat == HEARTBEAT_PERIOD
    assert c.timing() == RaftTiming()


def test_every_flag_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('data_dir = "/a"\nhost = "unix:///a.sock"\nlog_level = "error"\nsecrets_root = "/a/s"\n'
                   'dev_allow_non_tmpfs = false\ndispatcher_heartbeat = 9.0\n'
                   '[raft]\nheartbeat = 0.1\nelection_min = 1.0\nelection_max = 2.0\nleader_fallback = 2.0\n')
    c = parse_args(["--config", str(cfg), "--data-dir", "/b", "-H", "unix:///b.sock", "--log-level", "debug",
                    "--secrets-root", "/b/s", "--dev-allow-non-tmpfs", "--dispatcher-heartbeat", "1",
                    "--raft-heartbeat", "0.05", "--raft-election-min", "0.4", "--raft-election-max", "0.8",
                    "--raft-leader-fallback", "0.9"])
    assert (c.data_dir, c.host, c.log_level, c.secrets_root, c.dev_allow_non_tmpfs, c.dispatcher_heartbeat) == (
        "/b", "unix:///b.sock", "debug", "/b/s", True, 1.0)
    assert c.timing() == RaftTiming(heartbeat=0.05, election_min=0.4, election_max=0.8, leader_fallback=0.9)


def test_the_deploy_example_is_valid_and_states_the_defaults() -> None:
    assert parse_args(["--config", str(DEPLOY_EXAMPLE)]) == parse_args([])


def test_unknown_config_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('data_dirr = "/srv/ss"\n[raft]\nheartbeet = 0.1\n')
    err = refused(["--config", str(cfg)], capsys)
    assert f'unknown key data_dirr = "/srv/ss" in {cfg}: expected one of data_dir, host, ' in err
    assert f"unknown key raft.heartbeet = 0.1 in {cfg}: expected one of raft.heartbeat, raft.election_min, " in err


@pytest.mark.parametrize(("text", "message"), [
    ('dispatcher_heartbeat = "5"\n',
     'invalid value "5" for dispatcher_heartbeat in {cfg}: expected a number of seconds greater than 0'),
    ('dev_allow_non_tmpfs = "yes"\n', 'invalid value "yes" for dev_allow_non_tmpfs in {cfg}: expected true or false'),
    ('log_level = "loud"\n',
     'invalid value "loud" for log_level in {cfg}: expected one of "debug", "info", "warning", "error"'),
    ('host = "/tmp/x.sock"\n',
     'invalid value "/tmp/x.sock" for host in {cfg}: expected a unix socket address, unix:///path/to.sock'),
    ('dispatcher_heartbeat = 0\n',
     "invalid value 0 for dispatcher_heartbeat in {cfg}: expected a number of seconds greater than 0"),
    ('dispatcher_heartbeat = inf\n',
     "invalid value inf for dispatcher_heartbeat in {cfg}: expected a finite number of seconds greater than 0"),
    ('data_dir = 5\n', "invalid value 5 for data_dir in {cfg}: expected a non-empty string"),
    ('[raft]\nheartbeat = "fast"\n',
     'invalid value "fast" for raft.heartbeat in {cfg}: expected a number of seconds greater than 0'),
    ('[raft]\nelection_min = 2.0\n',
     "contradictory raft timers raft.heartbeat = 0.05 (default), raft.election_min = 2.0, "
     "raft.election_max = 0.8 (default): need 0 < 3 * heartbeat < election_min < election_max"),
    ('[raft]\nleader_fallback = 0.01\n', "contradictory raft timers raft.heartbeat = 0.05 (default), "
     "raft.leader_fallback = 0.01: leader_fallback must exceed the heartbeat"),
    ('raft = 3\n', "invalid value 3 for raft in {cfg}: expected a table [raft] of heartbeat, election_min, "),
    ('data_dir = [\n', 'cannot read --config "{cfg}": expected TOML: '),
])
def test_bad_file_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                      message: str) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text(text)
    assert message.format(cfg=cfg) in refused(["--config", str(cfg)], capsys)


@pytest.mark.parametrize(("argv", "message"), [
    (["--dispatcher-heartbeat", "-1"],
     'invalid argument "-1" for --dispatcher-heartbeat: expected a number of seconds greater than 0'),
    (["--raft-heartbeat", "x"], 'invalid argument "x" for --raft-heartbeat: expected a number of seconds greater '),
    (["--log-level", "verbose"],
     'invalid argument "verbose" for --log-level: expected one of "debug", "info", "warning", "error"'),
    (["-H", "tcp://1.2.3.4:1"], 'invalid argument "tcp://1.2.3.4:1" for --host: expected a unix socket address'),
    (["--raft-election-max", "0.3"], "contradictory raft timers raft.heartbeat = 0.05 (default), "
     "raft.election_min = 0.4 (default), --raft-election-max 0.3: need 0 < 3 * heartbeat < "),
    (["--config", "/nonexistent/d.toml"], 'cannot read --config "/nonexistent/d.toml": no such file or directory'),
    (["--config", ""], 'cannot read --config "": no such file or directory'),
    (["--config", "/"], 'cannot read --config "/": is a directory'),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["-G", "no-such-group-here"],
     'invalid argument "no-such-group-here" for --group: group no-such-group-here not found'),
])
def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert message in refused(argv, capsys)


def test_group_by_name_or_id() -> None:
    assert parse_args(["-G", "root"]).group == "root"
    assert parse_args(["--group", "0"]).group == "0"


def test_a_long_value_is_cut_and_control_characters_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('log_level = "' + "x" * 500 + '\\n"\n')
    err = refused(["--config", str(cfg)], capsys)
    assert f'invalid value "{"x" * 60}..." for log_level' in err


def test_raft_address_rule() -> None:
    assert raft_addr_for("10.0.0.1:2377") == "10.0.0.1:2378"
    assert raft_addr_for("10.0.0.1:2377", "10.0.0.1:7000") == "10.0.0.1:7000"
    assert raft_addr_for("[fd00::1]:2377") == "[fd00::1]:2378"
    with pytest.raises(errors.InvalidArgument, match="the raft port"):
        raft_addr_for("10.0.0.1:65535")
    with pytest.raises(errors.InvalidArgument, match="port must be a number"):
        raft_addr_for("10.0.0.1:2377", "10.0.0.1:0")
