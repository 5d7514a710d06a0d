"""The durable raft journal and its metadata, installed into pysyncobj in place of its own.

pysyncobj's FileJournal is an mmap it never flushes (an acknowledged entry can vanish with a
power cut), and it writes its term/vote file by a rename without fsync (a member can vote twice
in one term after a crash). DurableJournal replaces both:

- The log is an append-only file of ``[len][crc32][idx][term][command]`` records. Appends are
  buffered and written + fdatasync'd by ``sync()`` (group commit: one fdatasync covers every
  entry appended since the last); a torn or corrupt tail is cut off on load; truncation is
  fsync'd before anything is appended after it; compaction rewrites the file through
  tmp + fsync + rename + directory fsync. Offsets are 64-bit (stock's mmap turns a file over
  4 GiB into corruption).
- A full disk (ENOSPC, EDQUOT; stock's mmap turns it into SIGBUS) is not fatal: whatever part
  of the failed write reached the file is cut off again, everything not yet durable stays in
  memory, ``DiskFull`` is raised and ``full`` says why. The caller acknowledges nothing and
  retries ``persist()``, which rewrites every byte not known to be on disk (after a failed
  fdatasync the kernel may have dropped the pages, so they are never trusted) until it
  succeeds. Any other write error is fatal, as before.
- Only the newest ``RESIDENT_ENTRIES`` commands (and the first two entries, which SyncObj reads
  on every tick) are held in memory; an older entry keeps its index and term, and its command
  is read back from the file when asked for (a lagging follower, a compaction). Between two
  snapshots the log holds thousands of entries, each a copy of a value the state already holds.
- Metadata (term, vote, commit index, members) is JSON written atomically and durably before
  ``setCurrentTerm`` returns, i.e. before SyncObj sends a vote or a RequestVote. On a full
  disk a vote raises ``DiskFull`` (so it is never sent); a new term without a vote, or a new
  member list, is kept in memory and written by the next ``persist()``, before any
  acknowledgement goes out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from pysyncobj.journal import Journal

from swarmsecrets.fsutil import fsync_dir, write_all, write_private
from swarmsecrets.raft.errors import DiskFull, StorageError

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]

JOURNAL_MAGIC = b"SWRJ\x00\x00\x00\x01"
_RECORD = struct.Struct("!IIQQ")  # command length, crc32(idx, term, command), idx, term
_IDX_TERM = struct.Struct("!QQ")
MAX_RECORD = 64 * 1024 * 1024
# Commands kept in memory at the end of the log: what followers that keep up and the apply loop
# read. Older ones are read from the file (they are on disk: only synced entries are dropped).
RESIDENT_ENTRIES = 256
# Write errors that mean "no room now": retried once space returns. Every other error is fatal.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _record(command: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(command, zlib.crc32(_IDX_TERM.pack(idx, term)))
    return _RECORD.pack(len(command), crc, idx, term) + command


class DurableJournal(Journal):  # type: ignore[misc]  # pysyncobj ships no type information
    """pysyncobj's Journal interface on a file that is fdatasync'd before entries count."""

    def __init__(self, path: str, meta_path: str) -> None:
        self._path = path
        self._meta_path = meta_path
        self._dir = os.path.dirname(os.path.abspath(path))
        # Each entry as (command, idx, term); an entry whose command is only on disk holds None.
        self._entries: list[tuple[bytes | None, int, int]] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._resident_from = 0        # entries before this position (but the first two) hold None
        self._pending = bytearray()    # records after _end: not known to be on disk
        self._end = 0                  # file offset up to which every byte is fdatasync'd
        self._dirty = False            # truncated since the last fdatasync
        self.synced_index = 0          # raft index of the last entry known to be on disk
        self.syncs = 0                 # fdatasync calls for entries (tests count group commits)
        self.failure: str | None = None  # fatal: set once, never cleared
        self.full: str | None = None     # why the last write found no room; cleared by persist()
        self._meta_pending = False       # a term or member list not yet on disk (acks wait for it)
        self._fd = -1
        self._open_and_load()
        self._meta = self._load_meta()
        self._meta_dirty = False

    # --- file --------------------------------------------------------------------------

    def _open_and_load(self) -> None:
        fresh = not os.path.exists(self._path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if fresh or os.fstat(self._fd).st_size == 0:
            write_all(self._fd, JOURNAL_MAGIC, 0)
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
                old = len(self._entries) - 1 - RESIDENT_ENTRIES
                if old >= 2:  # read from the file: drop its command now, never hold them all
                    self._entries[old] = (None, *self._entries[old][1:])
                    self._resident_from = old + 1
        if offset < size:
            log.warning("raft journal %s: dropping %d bytes of torn tail at offset %d (%s)",
                        self._path, size - offset, offset, why)
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._end = offset
        self.synced_index = self._entries[-1][1] if self._entries else 0
        self._drop_old_commands()

    def _drop_old_commands(self) -> None:
        """Let go of the commands of synced entries older than the resident window."""
        entries = self._entries
        stop = len(entries) - RESIDENT_ENTRIES
        pos = max(self._resident_from, 2)
        while pos < stop and self._offsets[pos] < self._end:
            _, idx, term = entries[pos]
            entries[pos] = (None, idx, term)
            pos += 1
        self._resident_from = max(self._resident_from, pos)

    def _read_command(self, pos: int) -> bytes:
        """The command of the entry at ``pos``, from the file (or the buffer not yet written)."""
        offset = self._offsets[pos]
        if pos + 1 < len(self._offsets) and self._offsets[pos + 1] <= self._end:
            # The next record's offset bounds this one: one read for its header and command.
            record = os.pread(self._fd, self._offsets[pos + 1] - offset, offset)
            if len(record) == self._offsets[pos + 1] - offset:
                return record[_RECORD.size:]
        if offset >= self._end:
            head = bytes(self._pending[offset - self._end:offset - self._end + _RECORD.size])
        else:
            head = os.pread(self._fd, _RECORD.size, offset)
        length = _RECORD.unpack(head)[0]
        start = offset + _RECORD.size
        if start >= self._end:
            return bytes(self._pending[start - self._end:start - self._end + length])
        command = os.pread(self._fd, length, start)
        if len(command) != length:
            raise StorageError(f"raft journal {self._path}: entry at offset {offset} is short on disk")
        return command

    def _entry(self, pos: int) -> Entry:
        command, idx, term = self._entries[pos]
        if command is None:
            return self._read_command(pos), idx, term
        return command, idx, term

    def entries(self, pos: int, count: int | None = None, max_bytes: int | None = None) -> list[Entry]:
        """The entries from position ``pos``: at most ``count``, and stopping at the first that
        brings their commands' total to ``max_bytes`` (SyncObj's batching rule), so that a
        lagging follower's batch reads only what it sends."""
        stop = len(self._entries) if count is None else min(len(self._entries), pos + count)
        out: list[Entry] = []
        total = 0
        for i in range(max(pos, 0), stop):
            entry = self._entry(i)
            out.append(entry)
            total += len(entry[0])
            if max_bytes is not None and total >= max_bytes:
                break
        return out

    def sync(self) -> None:
        """Write buffered appends and fdatasync them: the group commit point. A truncation is
        made durable first, so that no new record can land on disk ahead of it."""
        with self._guard():
            if self._dirty:
                os.fdatasync(self._fd)
                self._dirty = False
            if self._pending:
                try:
                    write_all(self._fd, self._pending, self._end)
                    os.fdatasync(self._fd)
                except OSError as e:
                    if e.errno in DISK_FULL_ERRNOS:
                        self._cut_unsynced()
                    raise
                self._end += len(self._pending)
                self._pending = bytearray()
                self.syncs += 1
        if self._entries:
            self.synced_index = self._entries[-1][1]
            self._drop_old_commands()

    def _cut_unsynced(self) -> None:
        """After a failed write: drop whatever part of it reached the file. A partial record
        would be cut at load anyway, but a later, shorter rewrite could leave an old complete
        record right behind it, which a load would take for the next entry."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._end)
            self._dirty = True

    def persist(self) -> None:
        """Make everything held in memory durable: entries, then a pending term or member
        list. Raises DiskFull while there is no room; ``full`` is cleared once it succeeds."""
        self.sync()
        if self._meta_pending:
            self._store_meta()
        self.full = None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self.failure is not None:
            raise StorageError(self.failure)
        try:
            yield
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                self.full = f"{os.strerror(e.errno).lower()} (writing {e.filename or self._path})"
                raise DiskFull(self.full) from e
            self.failure = f"raft journal {self._path}: {e}"
            raise StorageError(self.failure) from e

    @property
    def needs_sync(self) -> bool:
        return bool(self._pending) or self._dirty or self._meta_pending or self.full is not None

    def _truncate_file(self, offset: int) -> None:
        """Cut the file at ``offset`` (at or below _end) and make the cut durable now; on a
        full disk the fdatasync is left to the next sync, which does it before any write."""
        with self._guard():
            os.ftruncate(self._fd, offset)
        self._pending = bytearray()
        self._end = offset
        self._dirty = True
        with contextlib.suppress(DiskFull):
            self.sync()

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
        self._resident_from = 0
        self._truncate_file(len(JOURNAL_MAGIC))
        self.synced_index = 0

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        offset = self._offsets[entryFrom]
        if offset >= self._end:
            del self._pending[offset - self._end:]  # never written: nothing to cut on disk
        else:
            self._truncate_file(offset)
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._resident_from = min(self._resident_from, entryFrom)
        self.synced_index = min(self.synced_index, self._entries[-1][1] if self._entries else 0)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the first ``entryTo`` entries by rewriting the file (tmp, fsync, rename)."""
        if entryTo <= 0:
            return
        if entryTo >= len(self._entries):
            raise ValueError("raft journal: compaction would delete every entry")
        keep = self.entries(entryTo)
        tmp = f"{self._path}.compact"
        out = bytearray(JOURNAL_MAGIC)
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(out))
            out += _record(command, idx, term)
        with self._guard():
            # The compacted entries are in a snapshot now: the old file's bytes are erased, not just
            # unlinked (they may hold values sealed under a key that is being retired).
            write_private(self._path, out, tmp=tmp, erase_old=True)
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDWR)
        self._entries = list(keep)
        self._offsets = offsets
        self._resident_from = 0
        self._pending = bytearray()
        self._end = len(out)
        self._dirty = False
        self.synced_index = keep[-1][1]
        self._drop_old_commands()

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return [self._entry(pos) for pos in range(*item.indices(len(self._entries)))]
        entry = self._entries[item]
        if entry[0] is None:
            return self._entry(item if item >= 0 else len(self._entries) + item)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return (self._entry(pos) for pos in range(len(self._entries)))

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        try:
            if self.failure is None:
                with contextlib.suppress(DiskFull):  # what is not on disk was never acknowledged
                    self.sync()
                    if self._meta_dirty or self._meta_pending:
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
        with self._guard():
            write_private(self._meta_path, json.dumps(self._meta, sort_keys=True).encode())
        self._meta_dirty = self._meta_pending = False

    def _store_meta_or_defer(self) -> None:
        """Store the metadata now; on a full disk keep it pending for the next persist()."""
        try:
            self._store_meta()
        except DiskFull:
            self._meta_pending = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit_index", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = None if votedForNodeId is None else str(votedForNodeId)
        if votedForNodeId is None:
            # A term alone may wait: nothing is acknowledged before persist() stores it.
            self._store_meta_or_defer()
        else:
            self._store_meta()  # a vote, ours or for another, is never sent before it is on disk

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> str | None:
        voted = self._meta.get("voted_for")
        return None if voted is None else str(voted)

    def set_members(self, members: list[str]) -> None:
        self._meta["members"] = sorted(members)
        self._store_meta_or_defer()

    def get_members(self) -> list[str] | None:
        members = self._meta.get("members")
        return list(members) if members else None

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty and self.full is None:
            with contextlib.suppress(DiskFull):
                self._store_meta()
