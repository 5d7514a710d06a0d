"""The one durable-write helper: atomic, fsynced, private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swarmsecrets import fsutil


def test_write_private_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    stale = tmp_path / "state.json.tmp"
    stale.write_bytes(b"leftover of a crash")
    stale.chmod(0o644)
    fsutil.write_private(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not stale.exists()


def test_write_private_fsyncs_the_file_before_the_rename_and_the_directory_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fsutil.write_private(str(tmp_path / "key"), b"secret")
    assert events == ["file", "rename", "dir"]
