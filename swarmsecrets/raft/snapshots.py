"""Raft snapshots, installed into pysyncobj in place of its Serializer.

Stock pysyncobj pickles the whole state on the raft thread (stalling heartbeats long enough to
cost the leadership), renames the dump without fsync, unpickles it without restriction and sends
it to lagging followers in chunks whose offsets it never checks. SnapshotStore instead writes
the state machine's snapshot from a forked child (never on the raft thread), fsyncs and renames
it with a directory fsync, checks it with a BLAKE2b trailer, loads it with the restricted
unpickler, and sends it in offset-checked chunks. A state machine may give its state as an
iterator of frames: each is pickled and written in turn, and read back one at a time, so
neither writing nor loading a large state holds a second copy of it. A snapshot that finds no
room on the disk removes its partial file and leaves the previous snapshot and the journal as they were; ``full``
says so until a snapshot succeeds again, and attempts are spaced by ``DISK_FULL_RETRY``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import stat
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from swarmsecrets.fsutil import open_private, publish
from swarmsecrets.raft import wire

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]
Clock = Callable[[], float]

# v1: one state pickle (what members before framed snapshots read); v2: any number of frames.
SNAPSHOT_MAGIC = b"SWRS\x00\x00\x00\x01"
FRAMES_MAGIC = b"SWRS\x00\x00\x00\x02"
_U64 = struct.Struct("!Q")
_DIGEST = 32
# A follower's connection may hold this much unsent snapshot data before we pause the transfer.
TRANSFER_BACKLOG = 8 * 1024 * 1024
# A snapshot child running longer than this is presumed stuck (killed, retried later).
SNAPSHOT_CHILD_TIMEOUT = 600.0
# After a snapshot found the disk full, wait this long before forking the next attempt.
DISK_FULL_RETRY = 5.0
_EXIT_DISK_FULL = 3  # a snapshot child's exit status: ENOSPC or EDQUOT
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class SnapshotError(Exception):
    pass


def _read_snapshot(path: str, *, verify: bool) -> dict[str, Any]:
    """The header of a snapshot file; with ``verify`` its checksum is checked."""
    with open(path, "rb") as f:
        return _open_snapshot(f, path, verify=verify)[0]


def _open_snapshot(f: BinaryIO, path: str, *, verify: bool) -> tuple[dict[str, Any], bool, int, Any]:
    """Read the header of the snapshot open as ``f``: (header, framed, end of the frames, the
    checksum of what was read so far); ``f`` is left at the first frame. With ``verify`` the
    whole file's checksum is checked first."""
    magic = f.read(len(SNAPSHOT_MAGIC))
    if magic not in (SNAPSHOT_MAGIC, FRAMES_MAGIC):
        raise SnapshotError(f"{path} is not a swarmsecrets raft snapshot")
    size = os.fstat(f.fileno()).st_size
    if verify:
        f.seek(0)
        digest = hashlib.blake2b(digest_size=_DIGEST)
        remaining = size - _DIGEST
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        if remaining or f.read(_DIGEST) != digest.digest():
            raise SnapshotError(f"{path}: checksum mismatch")
        f.seek(len(magic))
    digest = hashlib.blake2b(magic, digest_size=_DIGEST)
    head_len_bytes = f.read(_U64.size)
    (head_len,) = _U64.unpack(head_len_bytes)
    head_bytes = f.read(head_len)
    digest.update(head_len_bytes)
    digest.update(head_bytes)
    return dict(wire.loads(head_bytes)), magic == FRAMES_MAGIC, size - _DIGEST, digest


def _frames(f: BinaryIO, path: str, end: int, digest: Any = None) -> Iterator[Any]:
    """The frames of an open snapshot, decoded one at a time, up to ``end``. With ``digest`` (the
    checksum of the file up to the first frame) the checksum is checked after the last frame, in
    the same pass: a reader that consumes every frame before it uses any (as the state machine
    does) never uses a damaged file."""
    while f.tell() < end:
        length_bytes = f.read(_U64.size)
        (length,) = _U64.unpack(length_bytes)
        if length > end - f.tell():
            raise SnapshotError(f"{path}: a frame runs past the end of the file")
        body = f.read(length)
        if digest is not None:
            digest.update(length_bytes)
            digest.update(body)
        yield wire.loads(body)
    if digest is not None and f.read(_DIGEST) != digest.digest():
        raise SnapshotError(f"{path}: checksum mismatch")


def _hash_received(recv: dict[str, Any], offset: int, chunk: bytes, size: int) -> None:
    """Checksum a received chunk as it arrives (the file is not read a second time): the bytes
    before the trailer go into the digest, the trailer's are kept to compare with it (one byte
    more at most: a transfer longer than it announced fails the comparison, holding no more)."""
    body_end = size - _DIGEST
    view = memoryview(chunk)
    split = max(0, min(len(chunk), body_end - offset))
    recv["digest"].update(view[:split])
    recv["trailer"] = (recv["trailer"] + view[split:])[-(_DIGEST + 1):]


class _Hashing:
    """A write-only file wrapper that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.digest = hashlib.blake2b(digest_size=_DIGEST)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.f.write(data)


def _release_inherited_sockets() -> None:
    """In a snapshot child: let go of the raft sockets, so that a node restarted while the
    child still runs can bind its port and peers see its connections close. Each socket fd is
    pointed at /dev/null rather than closed, so a late socket finalizer cannot close a file the
    child opened meanwhile under the same number."""
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.dup2(null, fd)
    os.close(null)


class SnapshotStore:
    """Replaces pysyncobj's Serializer (same duck-typed interface, installed into SyncObj).

    The file is ``MAGIC, u64 len, header pickle, then u64 len + pickle per frame, BLAKE2b-256 of
    all before``; the header holds the two log entries SyncObj keeps at the snapshot point and the
    member addresses (plain strings; TCPNode objects are rebuilt here, never unpickled).
    ``snapshot`` returns either the state (one frame, SNAPSHOT_MAGIC: the layout members before
    frames read) or an iterator of frames (FRAMES_MAGIC); ``restore`` gets the state back as it
    was given: the value, or an iterator of the frames.
    """

    def __init__(self, path: str, snapshot: Callable[[], Any], restore: Callable[[Any], None],
                 chunk_size: int, backlog: Callable[[Any], int], clock: Clock = time.monotonic,
                 on_written: Callable[[float], None] = lambda seconds: None) -> None:
        """``on_written``: told how long each snapshot took, from its start to its file in place."""
        self.path = path
        self._on_written = on_written
        self._clock = clock
        self._snapshot = snapshot
        self._restore = restore
        self._chunk = chunk_size
        self._backlog = backlog
        self._pid = 0
        self._started = 0.0
        self._job_id: int | None = None
        self._job_pair: tuple[Entry, Entry] | None = None
        self.full: str | None = None  # why the last snapshot (written or received) found no room
        self._retry_at = 0.0
        self.pair: tuple[Entry, Entry] | None = None  # (prev, last) of the newest snapshot on disk
        self._sending: dict[Any, dict[str, Any]] = {}
        self._receiving: dict[str, Any] | None = None
        d = os.path.dirname(os.path.abspath(path))
        for name in os.listdir(d):
            if name.startswith(os.path.basename(path) + ".tmp") or name == os.path.basename(path) + ".recv":
                os.unlink(os.path.join(d, name))
        if os.path.exists(path):
            head = _read_snapshot(path, verify=False)
            self.pair = (head["prev"], head["last"])

    def read_header(self) -> dict[str, Any] | None:
        return _read_snapshot(self.path, verify=False) if os.path.exists(self.path) else None

    # --- taking snapshots (pysyncobj calls these on the raft thread) ----------------------

    def checkSerializing(self) -> tuple[int, int | None]:
        if not self._pid:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, -1
        if pid == 0:
            if self._clock() - self._started < SNAPSHOT_CHILD_TIMEOUT:
                return SERIALIZER_STATE.SERIALIZING, self._job_id
            log.error("raft snapshot child %d stuck for %.0fs: killing it", self._pid, SNAPSHOT_CHILD_TIMEOUT)
            self._kill_child()
            return SERIALIZER_STATE.FAILED, self._job_id
        self._pid = 0
        if status != 0:
            if status > 0 and os.waitstatus_to_exitcode(status) == _EXIT_DISK_FULL:
                self._no_room(f"{os.strerror(errno.ENOSPC).lower()} (writing {self.path})")
            else:
                log.error("raft snapshot child failed (status %d)", status)
            return SERIALIZER_STATE.FAILED, self._job_id
        self.pair = self._job_pair
        self._room_again()
        self._on_written(self._clock() - self._started)
        return SERIALIZER_STATE.SUCCESS, self._job_id

    def _no_room(self, why: str) -> None:
        if self.full is None:  # once per episode
            log.error("raft: cannot write a snapshot: %s; the previous snapshot and the journal are "
                      "kept, retrying every %.0f s", why, DISK_FULL_RETRY)
        self.full = why
        self._retry_at = self._clock() + DISK_FULL_RETRY

    def _room_again(self) -> None:
        if self.full is not None:
            log.warning("raft: snapshots are written again")
        self.full = None

    def serialize(self, data: tuple[Any, Entry, Entry, Any], id: int) -> None:
        if self._pid or (self.full is not None and self._clock() < self._retry_at):
            return
        _, last, prev, cluster = data
        head = {"prev": prev, "last": last, "members": sorted(n.address for n in cluster)}
        self._job_id, self._job_pair = id, (prev, last)
        self._started = self._clock()
        parent = os.getpid()
        self._launch(lambda: self._write(head, parent))

    def write_now(self, prev: Entry, last: Entry, members: list[str]) -> None:
        """Write a snapshot at ``last`` in this process (no raft loop runs: see recovery.seed)."""
        self._write({"prev": prev, "last": last, "members": sorted(members)})
        self.pair = (prev, last)

    def _launch(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a forked child, so pickling a large state never stalls the raft loop."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _release_inherited_sockets()
                job()
                code = 0
            except OSError as e:
                if e.errno in _DISK_FULL_ERRNOS:
                    code = _EXIT_DISK_FULL  # the parent logs it, once
                else:
                    log.exception("raft snapshot child failed")
            except BaseException:
                log.exception("raft snapshot child failed")
            finally:
                os._exit(code)
        self._pid = pid

    def _write(self, head: dict[str, Any], parent: int | None = None) -> None:
        tmp = f"{self.path}.tmp.{os.getpid()}"
        state = self._snapshot()
        try:
            self._write_file(tmp, head, state)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a partial snapshot must not hold the space the next one needs
            raise
        if parent is not None and self._orphaned(parent):
            os.unlink(tmp)
            raise SnapshotError("the node that asked for this snapshot is gone")
        publish(tmp, self.path, erase_old=True)

    @staticmethod
    def _write_file(tmp: str, head: dict[str, Any], state: Any) -> None:
        framed = isinstance(state, Iterator)
        with open_private(tmp) as raw:
            out = _Hashing(raw)
            out.write(FRAMES_MAGIC if framed else SNAPSHOT_MAGIC)
            head_bytes = wire.dumps(head)
            out.write(_U64.pack(len(head_bytes)))
            out.write(head_bytes)
            for frame in state if framed else (state,):
                frame_bytes = wire.dumps(frame)
                wire.loads(frame_bytes)  # refuse to publish a snapshot our own loader would reject
                out.write(_U64.pack(len(frame_bytes)))
                out.write(frame_bytes)
            raw.write(out.digest.digest())
            raw.flush()
            os.fsync(raw.fileno())

    @staticmethod
    def _orphaned(parent: int) -> bool:
        """A child whose node crashed must not publish: the restarted node may have a newer
        snapshot and a journal compacted to it by now."""
        return os.getppid() != parent

    def _kill_child(self) -> None:
        if self._pid:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0

    def close(self) -> None:
        self._kill_child()
        for t in self._sending.values():
            t["file"].close()
        self._sending.clear()
        if self._receiving is not None:
            self._receiving["file"].close()
            self._receiving = None

    # --- loading -------------------------------------------------------------------------

    def deserialize(self) -> tuple[None, Entry, Entry, set[TCPNode]]:
        """Load and restore the state machine; SyncObj gets the raft part (no object state)."""
        with open(self.path, "rb") as f:
            # A framed file is checked as its frames are read (one pass over it, not two).
            framed = f.read(len(FRAMES_MAGIC)) == FRAMES_MAGIC
            f.seek(0)
            snap, framed, end, digest = _open_snapshot(f, self.path, verify=not framed)
            prev, last = tuple(snap["prev"]), tuple(snap["last"])
            members = snap["members"]
            if not (isinstance(members, list) and all(isinstance(m, str) for m in members)):
                raise SnapshotError(f"{self.path}: malformed member list")
            if framed:
                self._restore(_frames(f, self.path, end, digest))
            else:
                self._restore(next(_frames(f, self.path, end)))
        self.pair = (prev, last)
        return None, last, prev, {TCPNode(m) for m in members}

    # --- sending to a lagging follower (leader side) -------------------------------------------

    def getTransmissionData(self, node: Any) -> tuple[Any, ...] | None:
        if self._backlog(node) > TRANSFER_BACKLOG:
            return None  # flow control: let the connection drain first
        t = self._sending.get(node)
        if t is None:
            if self.pair is None or not os.path.exists(self.path):
                return None
            f = open(self.path, "rb")  # noqa: SIM115 - kept open across calls until the last chunk
            size = os.fstat(f.fileno()).st_size
            t = self._sending[node] = {"file": f, "offset": 0, "size": size,
                                       "ident": (self.pair[1][1], self.pair[1][2], size)}
        offset = t["offset"]
        chunk = t["file"].read(self._chunk)
        t["offset"] += len(chunk)
        last = t["offset"] >= t["size"] or not chunk
        if last:
            t["file"].close()
            del self._sending[node]
        # Index 2 must be the "last" flag: SyncObj reads it to finish the transfer.
        return t["ident"], offset, last, chunk

    def cancelTransmisstion(self, node: Any) -> None:  # sic: pysyncobj's spelling
        t = self._sending.pop(node, None)
        if t is not None:
            t["file"].close()

    # --- receiving from the leader (follower side) ------------------------------------------

    def setTransmissionData(self, data: Any) -> bool:
        if not (isinstance(data, tuple) and len(data) == 4 and isinstance(data[0], tuple)
                and isinstance(data[1], int) and isinstance(data[2], bool) and isinstance(data[3], bytes)):
            return False
        ident, offset, last, chunk = data
        recv = self._receiving
        tmp = f"{self.path}.recv"
        try:
            if offset == 0:
                if recv is not None:
                    recv["file"].close()
                recv = self._receiving = {"ident": ident, "received": 0, "file": open_private(tmp),
                                          "digest": hashlib.blake2b(digest_size=_DIGEST), "trailer": b""}
            elif recv is None or recv["ident"] != ident or recv["received"] != offset:
                return False  # a chunk of another transfer, or out of order: wait for a fresh start
            recv["file"].write(chunk)
            _hash_received(recv, offset, chunk, ident[2])
            recv["received"] += len(chunk)
            if not last:
                return False
            self._receiving = None
            f = recv["file"]
            f.flush()
            os.fsync(f.fileno())
            f.close()
        except OSError as e:
            if e.errno not in _DISK_FULL_ERRNOS:
                raise
            # No room for the leader's snapshot: drop the partial file; the leader starts over.
            self._drop_receiving()
            self._no_room(f"{os.strerror(e.errno).lower()} (receiving {tmp})")
            return False
        try:
            if recv["received"] != ident[2]:
                raise SnapshotError("snapshot transfer ended short")
            if recv["trailer"] != recv["digest"].digest():
                raise SnapshotError(f"{tmp}: checksum mismatch")
            head = _read_snapshot(tmp, verify=False)
        except Exception:
            log.exception("raft: discarding a snapshot received from the leader")
            os.unlink(tmp)
            return False
        self._kill_child()  # a local snapshot still being written is older: it must not win the rename
        publish(tmp, self.path, erase_old=True)
        self.pair = (tuple(head["prev"]), tuple(head["last"]))
        self._room_again()
        return True

    def _drop_receiving(self) -> None:
        recv, self._receiving = self._receiving, None
        if recv is not None:
            with contextlib.suppress(OSError):
                recv["file"].close()
        with contextlib.suppress(OSError):
            os.unlink(f"{self.path}.recv")
