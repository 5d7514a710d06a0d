"""Durable, private file writes: the one place this package makes a file survive a crash.

A file written here is created 0600 (only this user may read it: the files hold keys, raft
entries and snapshots), replaced atomically (a temporary file, fsync, rename) and made durable
(fsync of the directory, so the rename itself survives a power cut). Imports nothing from the
rest of the package, so every layer (raft, crypto, node state) may use it.
"""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

PRIVATE_MODE = 0o600


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd`` (at ``offset`` if given): os.write may write less."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if offset is not None:
            offset += n
        view = view[n:]


def fsync_dir(path: str) -> None:
    """Make a rename, a new file or a deletion in directory ``path`` durable."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_parent(path: str) -> None:
    """fsync the directory that holds ``path``."""
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def open_private(path: str) -> BinaryIO:
    """A new (or truncated) file only this user can read or write, open for binary writing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE), "wb")


def erase(fd: int) -> None:
    """Overwrite a file's every byte with zeros and fsync it: what it held is gone from the file
    system's view (what a filesystem or device keeps aside, such as copy-on-write blocks, is beyond reach)."""
    size = os.fstat(fd).st_size
    zeros = bytes(min(size, 1 << 20))
    offset = 0
    while offset < size:
        n = min(len(zeros), size - offset)
        write_all(fd, memoryview(zeros)[:n], offset)
        offset += n
    os.fsync(fd)


def publish(tmp: str, path: str, *, erase_old: bool = False) -> None:
    """Rename a fully written and fsynced ``tmp`` over ``path``, durably. With ``erase_old`` the
    file it replaces is overwritten once the rename is durable (it may hold retired secrets)."""
    old = -1
    if erase_old:
        try:
            old = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
    try:
        os.replace(tmp, path)
        fsync_parent(path)
        if old >= 0:
            erase(old)
    finally:
        if old >= 0:
            os.close(old)


def write_private(path: str, data: bytes | bytearray | memoryview, *, tmp: str | None = None,
                  erase_old: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600: write a temporary file
    beside it (``tmp``, default ``PATH.tmp``), fsync it, rename it over ``path``, fsync the
    directory. A crash leaves either the old content or the new, never a mix."""
    tmp = tmp or f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # a stale tmp file may have had another mode
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        # A half-written tmp file holds space the next attempt needs (on a full disk, all of it).
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    publish(tmp, path, erase_old=erase_old)
