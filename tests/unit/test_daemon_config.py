"""swarmsecretsd's flags and TOML config: same keys, flags win, bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmsecrets.daemon import parse_args, raft_addr_for


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('data_dir = "/srv/ss"\nhost = "unix:///tmp/x.sock"\n[raft]\nheartbeat = 0.2\n'
                   'election_min = 1.5\nelection_max = 3.0\n')
    c = parse_args(["--config", str(cfg)])
    assert (c.data_dir, c.host) == ("/srv/ss", "unix:///tmp/x.sock")
    assert c.timing().heartbeat == 0.2 and c.timing().election_max == 3.0
    c = parse_args(["--config", str(cfg), "--data-dir", "/other", "--raft-election-max", "4"])
    assert c.data_dir == "/other" and c.timing().election_max == 4.0 and c.timing().election_min == 1.5


def test_unknown_config_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('data_dirr = "/srv/ss"\n')
    with pytest.raises(SystemExit) as e:
        parse_args(["--config", str(cfg)])
    assert e.value.code == 2
    assert "unknown keys in" in capsys.readouterr().err


def test_raft_address_rule() -> None:
    assert raft_addr_for("10.0.0.1:2377", "") == "10.0.0.1:2378"
    assert raft_addr_for("10.0.0.1:2377", "10.0.0.1:7000") == "10.0.0.1:7000"
