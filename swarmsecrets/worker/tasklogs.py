"""A task's output on its node's disk: bounded, rotated files under the daemon's data dir.

Each task has a directory ``<root>/<task id>/`` holding ``output.log`` and, once that reached
``MAX_FILE`` bytes, the previous one as ``output.log.1`` (older output is dropped): at most
``2 × MAX_FILE`` bytes per task. Never under the secrets root, which is tmpfs and wiped.
A record is one line: ``<unix ns> <the line as the task wrote it>``; a line longer than
``MAX_LINE`` is cut into several records.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

MAX_FILE = 1024 * 1024
MAX_LINE = 16 * 1024
CURRENT = "output.log"
PREVIOUS = "output.log.1"

Record = tuple[int, bytes]  # (unix ns, line without its newline)


class TaskLogWriter:
    """Appends a task's output as records; thread-safe (the output reader thread writes)."""

    def __init__(self, directory: str, max_file: int = MAX_FILE) -> None:
        self.directory = directory
        self.max_file = max_file
        self._partial = b""
        self._lock = threading.Lock()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._path = os.path.join(directory, CURRENT)
        self._file = _open(self._path)

    def write(self, chunk: bytes) -> None:
        """Output as the task wrote it; a line is recorded once its newline arrives."""
        with self._lock:
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            while len(self._partial) > MAX_LINE:
                lines.append(self._partial[:MAX_LINE])
                self._partial = self._partial[MAX_LINE:]
            self._append(lines)

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._append([self._partial])
                self._partial = b""
            self._file.close()

    def _append(self, lines: list[bytes]) -> None:
        now = time.time_ns()
        for line in lines:
            for i in range(0, max(len(line), 1), MAX_LINE):
                record = b"%d %s\n" % (now, line[i:i + MAX_LINE])
                if self._file.tell() + len(record) > self.max_file and self._file.tell() > 0:
                    self._rotate()
                self._file.write(record)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self._path, os.path.join(self.directory, PREVIOUS))
        self._file = _open(self._path)


def _open(path: str) -> BinaryIO:
    """For appending, readable by the daemon's user only (the output may be sensitive)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab")


def _parse(line: bytes) -> Record | None:
    ts, sep, data = line.partition(b" ")
    if not sep or not ts.isdigit():
        return None
    return int(ts), data


def _records(data: bytes) -> list[Record]:
    """The complete records in ``data`` (a record being written, with no newline yet, waits)."""
    return [r for r in (_parse(line) for line in data.split(b"\n")[:-1]) if r is not None]


def _read_file(path: str) -> tuple[bytes, int]:
    """The file's bytes and inode ("" and 0 if it is absent)."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return b"", 0


class Follower:
    """The records a task appends after a ``read``, across a rotation."""

    def __init__(self, directory: str, ino: int, offset: int) -> None:
        self.directory = directory
        self._ino = ino
        self._offset = offset

    def poll(self) -> list[Record]:
        out: list[Record] = []
        data, ino = _read_file(os.path.join(self.directory, CURRENT))
        if ino == 0:
            return out
        if ino != self._ino:  # rotated: the rest of the file we were reading, then the new one
            old, old_ino = _read_file(os.path.join(self.directory, PREVIOUS))
            if old_ino == self._ino:
                out += _records(old[self._offset:])
            self._ino, self._offset = ino, 0
        data = data[self._offset:]
        self._offset += data.rfind(b"\n") + 1
        return out + _records(data)


def read(directory: str, tail: int = -1) -> tuple[list[Record], Follower]:
    """The task's records, oldest first (with ``tail`` >= 0 only the last ``tail``), and a follower
    for those written after them."""
    previous, _ = _read_file(os.path.join(directory, PREVIOUS))
    current, ino = _read_file(os.path.join(directory, CURRENT))
    records = _records(previous) + _records(current)
    follower = Follower(directory, ino, current.rfind(b"\n") + 1)
    if tail >= 0:
        records = records[len(records) - tail:] if tail else []
    return records, follower


def task_dirs(root: str) -> Iterator[str]:
    try:
        yield from sorted(os.listdir(root))
    except FileNotFoundError:
        return


def remove(root: str, task_id: str) -> None:
    shutil.rmtree(os.path.join(root, task_id), ignore_errors=True)
