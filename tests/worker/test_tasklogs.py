"""A task's output on disk: bounded by two rotated files, read whole or by tail, followed across a rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from swarmsecrets.worker import tasklogs


def test_output_is_bounded_rotated_and_followed(tmp_path: Path) -> None:
    d = tmp_path / "task"
    w = tasklogs.TaskLogWriter(str(d), max_file=1000)
    w.write(b"first\nsec")
    w.write(b"ond\n")
    records, follower = tasklogs.read(str(d), tail=1)
    assert [data for _, data in records] == [b"second"]
    for i in range(300):  # ~3 KB: several rotations
        w.write(b"line %03d\n" % i)
    w.write(b"no newline yet")
    w.close()  # the last partial line is kept
    assert sorted(os.listdir(d)) == ["output.log", "output.log.1"]
    assert all(os.path.getsize(d / name) <= 1000 for name in os.listdir(d))
    assert stat.S_IMODE(os.stat(d / "output.log").st_mode) == 0o600
    kept = [data for _, data in tasklogs.read(str(d))[0]]
    assert kept[-1] == b"no newline yet" and kept[-2] == b"line 299" and b"first" not in kept
    assert [data for _, data in tasklogs.read(str(d), tail=2)[0]] == [b"line 299", b"no newline yet"]
    # The follower, one rotation behind at most, resumes where its read ended.
    w2 = tasklogs.TaskLogWriter(str(tmp_path / "t2"), max_file=1000)
    w2.write(b"a\n")
    _, f = tasklogs.read(str(tmp_path / "t2"))
    for i in range(60):
        w2.write(b"x%02d\n" % i)
    assert [data for _, data in f.poll()] == [b"x%02d" % i for i in range(60)]
    assert f.poll() == []
    w2.close()
