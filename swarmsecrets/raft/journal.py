"""Durable storage for pysyncobj: the raft journal, its metadata and snapshots.

pysyncobj's FileJournal is an mmap it never flushes, its term/vote file is renamed without
fsync and its snapshot dump is renamed without fsync (reference §3). These classes replace
them inside SyncObj (see raft.py):

- DurableJournal: an append-only file of ``[len][crc32][idx][term][command]`` records. Appends
  are buffered and written + fdatasync'd by ``sync()`` (group commit: one fdatasync covers every
  entry appended since the last); a torn or corrupt tail is cut off on load; truncation is
  fsync'd before anything is appended after it; compaction rewrites the file through
  tmp + fsync + rename + directory fsync. Offsets are 64-bit and a full disk is an OSError,
  not a SIGBUS (§7.11).
- Metadata (term, vote, commit index, members) is JSON written tmp + fsync + rename + directory
  fsync before ``setCurrentTerm`` returns, i.e. before SyncObj sends a vote or a RequestVote.
- SnapshotStore replaces pysyncobj's Serializer: the state machine's snapshot is written by a
  forked child (never on the raft thread), fsync'd and renamed with a directory fsync, checked
  with a BLAKE2b trailer, loaded with the restricted unpickler, and sent to lagging followers
  in offset-checked chunks (§7.7).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import Journal
from pysyncobj.node import TCPNode

from swarmsecrets.manager import raft_wire

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]

JOURNAL_MAGIC = b"SWRJ\x00\x00\x00\x01"
_RECORD = struct.Struct("!IIQQ")  # command length, crc32(idx, term, command), idx, term
_IDX_TERM = struct.Struct("!QQ")
MAX_RECORD = 64 * 1024 * 1024


class StorageError(Exception):
    """A journal write or sync failed. Fatal: after a failed fsync the kernel may have dropped the
    dirty pages, so a retry can succeed without the data; the node must stop, not carry on."""


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: tmp file, fsync, rename, directory fsync."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if offset is not None:
            offset += n
        view = view[n:]


def _private(path: str) -> BinaryIO:
    """A new file only this user can read (snapshots hold the cluster's records)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _record(command: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(command, zlib.crc32(_IDX_TERM.pack(idx, term)))
    return _RECORD.pack(len(command), crc, idx, term) + command


class DurableJournal(Journal):
    """pysyncobj's Journal interface on a file that is fdatasync'd before entries count."""

    def __init__(self, path: str, meta_path: str) -> None:
        self._path = path
        self._meta_path = meta_path
        self._dir = os.path.dirname(os.path.abspath(path))
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._pending = bytearray()    # records appended but not yet written
        self._end = 0                  # file offset where the next record goes
        self._dirty = False            # written or truncated since the last fdatasync
        self.synced_index = 0          # raft index of the last entry known to be on disk
        self.syncs = 0                 # fdatasync calls for entries (tests count group commits)
        self.failure: str | None = None
        self._fd = -1
        self._open_and_load()
        self._meta = self._load_meta()
        self._meta_dirty = False

    # --- file --------------------------------------------------------------------------

    def _open_and_load(self) -> None:
        fresh = not os.path.exists(self._path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if fresh or os.fstat(self._fd).st_size == 0:
            _write_all(self._fd, JOURNAL_MAGIC, 0)
            os.fsync(self._fd)
            fsync_dir(self._dir)
        with open(self._path, "rb") as f:
            if f.read(len(JOURNAL_MAGIC)) != JOURNAL_MAGIC:
                raise RuntimeError(f"{self._path} is not a swarmsecrets raft journal")
            offset = len(JOURNAL_MAGIC)
            size = os.fstat(f.fileno()).st_size
            why = ""
            while offset < size:
                head = f.read(_RECORD.size)
                if len(head) < _RECORD.size:
                    why = "short record header"
                    break
                length, crc, idx, term = _RECORD.unpack(head)
                if length > MAX_RECORD or offset + _RECORD.size + length > size:
                    why = "record runs past the end of the file"
                    break
                command = f.read(length)
                if zlib.crc32(command, zlib.crc32(_IDX_TERM.pack(idx, term))) != crc:
                    why = "checksum mismatch"
                    break
                if self._entries and idx != self._entries[-1][1] + 1:
                    why = f"index {idx} does not follow {self._entries[-1][1]}"
                    break
                self._entries.append((command, idx, term))
                self._offsets.append(offset)
                offset += _RECORD.size + length
        if offset < size:
            log.warning("raft journal %s: dropping %d bytes of torn tail at offset %d (%s)",
                        self._path, size - offset, offset, why)
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._end = offset
        self.synced_index = self._entries[-1][1] if self._entries else 0

    def sync(self) -> None:
        """Write buffered appends and fdatasync them: the group commit point."""
        with self._fatal_on_error():
            if self._pending:
                _write_all(self._fd, self._pending, self._end)
                self._end += len(self._pending)
                self._pending = bytearray()
                self._dirty = True
            if self._dirty:
                os.fdatasync(self._fd)
                self.syncs += 1
                self._dirty = False
        if self._entries:
            self.synced_index = self._entries[-1][1]

    @contextlib.contextmanager
    def _fatal_on_error(self) -> Iterator[None]:
        if self.failure is not None:
            raise StorageError(self.failure)
        try:
            yield
        except OSError as e:
            self.failure = f"raft journal {self._path}: {e}"
            raise StorageError(self.failure) from e

    @property
    def needs_sync(self) -> bool:
        return bool(self._pending) or self._dirty

    def _truncate_file(self, offset: int) -> None:
        self._pending = bytearray()
        with self._fatal_on_error():
            os.ftruncate(self._fd, offset)
            os.fdatasync(self._fd)
        self._dirty = False
        self._end = offset

    # --- pysyncobj Journal interface ---------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._entries and idx != self._entries[-1][1] + 1:
            raise ValueError(f"raft journal: entry {idx} does not follow {self._entries[-1][1]}")
        record = _record(command, idx, term)
        self._offsets.append(self._end + len(self._pending))
        self._pending += record
        self._entries.append((command, idx, term))

    def clear(self) -> None:
        self._entries = []
        self._offsets = []
        self._truncate_file(len(JOURNAL_MAGIC))
        self.synced_index = 0

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        self.sync()
        offset = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._truncate_file(offset)
        self.synced_index = self._entries[-1][1] if self._entries else 0

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the first ``entryTo`` entries by rewriting the file (tmp, fsync, rename)."""
        if entryTo <= 0:
            return
        if entryTo >= len(self._entries):
            raise ValueError("raft journal: compaction would delete every entry")
        keep = self._entries[entryTo:]
        tmp = f"{self._path}.compact"
        out = bytearray(JOURNAL_MAGIC)
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(out))
            out += _record(command, idx, term)
        with self._fatal_on_error():
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, out)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
            fsync_dir(self._dir)
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDWR)
        self._entries = list(keep)
        self._offsets = offsets
        self._pending = bytearray()
        self._end = len(out)
        self._dirty = False
        self.synced_index = keep[-1][1]

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        try:
            if self.failure is None:
                self.sync()
                if self._meta_dirty:
                    self._store_meta()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    # --- metadata ----------------------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        meta = json.loads(raw)  # written atomically: a parse error is real damage, not a torn write
        if not isinstance(meta, dict):
            raise RuntimeError(f"{self._meta_path}: not a raft metadata file")
        return meta

    def _store_meta(self) -> None:
        self.sync()  # a commit index on disk must never point past the entries on disk
        with self._fatal_on_error():
            write_durably(self._meta_path, json.dumps(self._meta, sort_keys=True).encode())
        self._meta_dirty = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit_index", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = None if votedForNodeId is None else str(votedForNodeId)
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> str | None:
        voted = self._meta.get("voted_for")
        return None if voted is None else str(voted)

    def set_members(self, members: list[str]) -> None:
        self._meta["members"] = sorted(members)
        self._store_meta()

    def get_members(self) -> list[str] | None:
        members = self._meta.get("members")
        return list(members) if members else None

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta()


# --- snapshots ---------------------------------------------------------------------------

SNAPSHOT_MAGIC = b"SWRS\x00\x00\x00\x01"
_U64 = struct.Struct("!Q")
_DIGEST = 32
# A follower's connection may hold this much unsent snapshot data before we pause the transfer.
TRANSFER_BACKLOG = 8 * 1024 * 1024
# A snapshot child running longer than this is presumed stuck (killed, retried later).
SNAPSHOT_CHILD_TIMEOUT = 600.0


class SnapshotError(Exception):
    pass


def _read_snapshot(path: str, *, verify: bool, state: bool) -> dict[str, Any]:
    """The header of a snapshot file; with ``verify`` its checksum is checked, with ``state`` the
    state is loaded too."""
    with open(path, "rb") as f:
        if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            raise SnapshotError(f"{path} is not a swarmsecrets raft snapshot")
        (head_len,) = _U64.unpack(f.read(_U64.size))
        head = dict(raft_wire.loads(f.read(head_len)))
        if verify:
            size = os.fstat(f.fileno()).st_size
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
        if state:
            f.seek(len(SNAPSHOT_MAGIC) + _U64.size + head_len)
            (state_len,) = _U64.unpack(f.read(_U64.size))
            head["state"] = raft_wire.loads(f.read(state_len))
        return head


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

    The file is ``MAGIC, u64 len, header pickle, u64 len, state pickle, BLAKE2b-256 of all
    before``; the header holds the two log entries SyncObj keeps at the snapshot point and the
    member addresses (plain strings; TCPNode objects are rebuilt here, never unpickled).
    """

    def __init__(self, path: str, snapshot: Callable[[], Any], restore: Callable[[Any], None],
                 chunk_size: int, backlog: Callable[[Any], int]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._restore = restore
        self._chunk = chunk_size
        self._backlog = backlog
        self._pid = 0
        self._started = 0.0
        self._job_id: int | None = None
        self._job_pair: tuple[Entry, Entry] | None = None
        self.pair: tuple[Entry, Entry] | None = None  # (prev, last) of the newest snapshot on disk
        self._sending: dict[Any, dict[str, Any]] = {}
        self._receiving: dict[str, Any] | None = None
        d = os.path.dirname(os.path.abspath(path))
        for name in os.listdir(d):
            if name.startswith(os.path.basename(path) + ".tmp") or name == os.path.basename(path) + ".recv":
                os.unlink(os.path.join(d, name))
        if os.path.exists(path):
            head = _read_snapshot(path, verify=False, state=False)
            self.pair = (head["prev"], head["last"])

    def read_header(self) -> dict[str, Any] | None:
        return _read_snapshot(self.path, verify=False, state=False) if os.path.exists(self.path) else None

    # --- taking snapshots (pysyncobj calls these on the raft thread) ----------------------

    def checkSerializing(self) -> tuple[int, int | None]:
        if not self._pid:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, -1
        if pid == 0:
            if time.monotonic() - self._started < SNAPSHOT_CHILD_TIMEOUT:
                return SERIALIZER_STATE.SERIALIZING, self._job_id
            log.error("raft snapshot child %d stuck for %.0fs: killing it", self._pid, SNAPSHOT_CHILD_TIMEOUT)
            self._kill_child()
            return SERIALIZER_STATE.FAILED, self._job_id
        self._pid = 0
        if status != 0:
            log.error("raft snapshot child failed (status %d)", status)
            return SERIALIZER_STATE.FAILED, self._job_id
        self.pair = self._job_pair
        return SERIALIZER_STATE.SUCCESS, self._job_id

    def serialize(self, data: tuple[Any, Entry, Entry, Any], id: int) -> None:
        if self._pid:
            return
        _, last, prev, cluster = data
        head = {"prev": prev, "last": last, "members": sorted(n.address for n in cluster)}
        self._job_id, self._job_pair = id, (prev, last)
        self._started = time.monotonic()
        parent = os.getpid()
        self._launch(lambda: self._write(head, parent))

    def _launch(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a forked child, so pickling a large state never stalls the raft loop."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _release_inherited_sockets()
                job()
                code = 0
            except BaseException:
                log.exception("raft snapshot child failed")
            finally:
                os._exit(code)
        self._pid = pid

    def _write(self, head: dict[str, Any], parent: int | None = None) -> None:
        tmp = f"{self.path}.tmp.{os.getpid()}"
        state = self._snapshot()
        with _private(tmp) as raw:
            out = _Hashing(raw)
            out.write(SNAPSHOT_MAGIC)
            head_bytes = raft_wire.dumps(head)
            out.write(_U64.pack(len(head_bytes)))
            out.write(head_bytes)
            state_bytes = raft_wire.dumps(state)
            out.write(_U64.pack(len(state_bytes)))
            out.write(state_bytes)
            raw.write(out.digest.digest())
            raw.flush()
            os.fsync(raw.fileno())
        raft_wire.loads(state_bytes)  # refuse to publish a snapshot our own loader would reject
        if parent is not None and self._orphaned(parent):
            os.unlink(tmp)
            raise SnapshotError("the node that asked for this snapshot is gone")
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

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
        snap = _read_snapshot(self.path, verify=True, state=True)
        prev, last = tuple(snap["prev"]), tuple(snap["last"])
        members = snap["members"]
        if not (isinstance(members, list) and all(isinstance(m, str) for m in members)):
            raise SnapshotError(f"{self.path}: malformed member list")
        self._restore(snap["state"])
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
        if offset == 0:
            if recv is not None:
                recv["file"].close()
            recv = self._receiving = {"ident": ident, "received": 0, "file": _private(f"{self.path}.recv")}
        elif recv is None or recv["ident"] != ident or recv["received"] != offset:
            return False  # a chunk of another transfer, or out of order: wait for a fresh start
        recv["file"].write(chunk)
        recv["received"] += len(chunk)
        if not last:
            return False
        self._receiving = None
        f = recv["file"]
        f.flush()
        os.fsync(f.fileno())
        f.close()
        tmp = f"{self.path}.recv"
        try:
            if recv["received"] != ident[2]:
                raise SnapshotError("snapshot transfer ended short")
            head = _read_snapshot(tmp, verify=True, state=False)
        except Exception:
            log.exception("raft: discarding a snapshot received from the leader")
            os.unlink(tmp)
            return False
        self._kill_child()  # a local snapshot still being written is older: it must not win the rename
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        self.pair = (tuple(head["prev"]), tuple(head["last"]))
        return True
