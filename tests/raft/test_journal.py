"""Unit tests of the durable journal, its metadata and the snapshot store."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import FileJournal
from pysyncobj.node import TCPNode

from swarmsecrets.raft import journal as journal_module
from swarmsecrets.raft import node, snapshots, wire
from swarmsecrets.raft.journal import JOURNAL_MAGIC, DurableJournal
from swarmsecrets.raft.snapshots import SnapshotError, SnapshotStore
from tests.raft.conftest import STOCK


def journal(tmp: Path) -> Any:
    if "journal" in STOCK:  # pysyncobj's own FileJournal, to show what the fsync tests catch
        return FileJournal(str(tmp / "raft.journal"))
    return DurableJournal(str(tmp / "raft.journal"), str(tmp / "raft.meta"))


def entries(n: int, start: int = 1, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(f"cmd-{i}".encode() * 3, i, term) for i in range(start, start + n)]


class SyncSpy:
    """Records which files reach fsync/fdatasync (by path), in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)

            def spy(fd: int, real: Any = real, name: str = name) -> None:
                self.calls.append((name, os.readlink(f"/proc/self/fd/{fd}")))
                real(fd)

            monkeypatch.setattr(os, name, spy)

    def paths(self) -> list[str]:
        return [p for _, p in self.calls]


def test_appends_survive_reopen(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(50):
        j.add(*e)
    j.sync()
    j._destroy()
    j2 = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    assert list(j2) == entries(50)
    assert j2.synced_index == 50


def test_group_commit_one_fdatasync_for_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = journal(tmp_path)
    spy = SyncSpy(monkeypatch)
    for e in entries(100):
        j.add(*e)
    getattr(j, "sync", lambda: None)()  # what the raft loop does before anything counts the batch
    journal_path = os.path.realpath(tmp_path / "raft.journal")
    assert spy.paths().count(journal_path) == 1, spy.calls
    assert os.path.getsize(journal_path) > 100 * 20


def test_only_the_newest_commands_stay_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older synced commands are dropped from memory and read back from the file: every read
    (an entry, a slice, a batch, iteration, a compaction, a truncation) still sees them."""
    monkeypatch.setattr(journal_module, "RESIDENT_ENTRIES", 3)
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    want = entries(20)
    for e in want:
        j.add(*e)
    assert sum(c is not None for c, _, _ in j._entries) == 20  # nothing dropped before it is on disk
    j.sync()
    assert sum(c is not None for c, _, _ in j._entries) == 2 + 3  # the first two and the newest three
    assert list(j) == want and j[5] == want[5] and j[-1] == want[-1] and j[4:9] == want[4:9]
    assert j.entries(4, max_bytes=2 * len(want[4][0])) == want[4:6]
    assert j.entries(4, count=3) == want[4:7]
    j.deleteEntriesFrom(15)  # entries 16..20 go
    j.add(b"new", 16, 2)
    assert j[-2:] == [want[14], (b"new", 16, 2)]
    j.sync()
    j.deleteEntriesTo(5)  # keep 6..16
    assert list(j) == [*want[5:15], (b"new", 16, 2)]
    assert sum(c is not None for c, _, _ in j._entries) == 2 + 3
    j._destroy()
    j2 = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    assert list(j2) == [*want[5:15], (b"new", 16, 2)]
    assert sum(c is not None for c, _, _ in j2._entries) == 2 + 3


def test_add_refuses_a_gap(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    j.add(b"a", 1, 1)
    with pytest.raises(ValueError):
        j.add(b"c", 3, 1)


def test_torn_tail_is_cut_off(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(5):
        j.add(*e)
    j.sync()
    good = os.path.getsize(tmp_path / "j")
    j.add(b"x" * 1000, 6, 1)
    j.sync()
    j._destroy()
    with open(tmp_path / "j", "r+b") as f:  # a crash tore the last record in half
        f.truncate(good + 500)
    j2 = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    assert list(j2) == entries(5)
    assert os.path.getsize(tmp_path / "j") == good
    j2.add(b"y", 6, 2)  # appends continue right after the last good record
    j2.sync()
    j2._destroy()
    assert DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))[-1] == (b"y", 6, 2)


def test_corrupt_record_ends_the_log(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(5):
        j.add(*e)
    j.sync()
    offset = j._offsets[3]
    j._destroy()
    with open(tmp_path / "j", "r+b") as f:
        f.seek(offset + 30)
        f.write(b"\xff")
    assert list(DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))) == entries(3)


def test_not_a_journal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j").write_bytes(b"PYSYNCOBJ" + b"\0" * 40)
    with pytest.raises(RuntimeError):
        DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))


def test_truncation_is_durable_before_new_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(10):
        j.add(*e)
    j.sync()
    spy = SyncSpy(monkeypatch)
    j.deleteEntriesFrom(6)  # keep entries 1..6
    assert spy.paths() == [os.path.realpath(tmp_path / "j")]
    j.add(b"new", 7, 2)
    j.sync()
    j._destroy()
    reopened = list(DurableJournal(str(tmp_path / "j"), str(tmp_path / "m")))
    assert reopened == entries(6) + [(b"new", 7, 2)]


def test_compaction_erases_the_file_it_replaces(tmp_path: Path) -> None:
    """Compacted entries may hold values sealed under a retired data key: their bytes are
    overwritten, not only unlinked."""
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(10):
        j.add(*e)
    j.sync()
    old = os.open(tmp_path / "j", os.O_RDONLY)
    try:
        size = os.fstat(old).st_size
        assert b"cmd-3" in os.pread(old, size, 0)
        j.deleteEntriesTo(7)
        assert os.pread(old, size, 0) == bytes(size)
    finally:
        os.close(old)
    j._destroy()


def test_compaction_rewrites_durably_and_never_empties(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(10):
        j.add(*e)
    j.add(b"unsynced", 11, 1)
    spy = SyncSpy(monkeypatch)
    j.deleteEntriesTo(7)  # keep 8..11
    # The new file, the rename, then the replaced file, overwritten (see the next test).
    assert spy.calls == [("fsync", os.path.realpath(tmp_path / "j.compact")),
                         ("fsync", os.path.realpath(tmp_path)),
                         ("fsync", os.path.realpath(tmp_path / "j") + " (deleted)")]
    assert [e[1] for e in j] == [8, 9, 10, 11]
    with pytest.raises(ValueError):
        j.deleteEntriesTo(len(j))
    j.add(b"after", 12, 1)
    j.sync()
    j._destroy()
    assert [e[1] for e in DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))] == [8, 9, 10, 11, 12]
    assert (tmp_path / "j").read_bytes().startswith(JOURNAL_MAGIC)


def test_term_and_vote_are_fsynced_before_returning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = journal(tmp_path)
    spy = SyncSpy(monkeypatch)
    j.setCurrentTerm(7, "127.0.0.1:1234")
    synced = spy.paths()
    tmp_meta = [p for p in synced if os.path.basename(p).startswith("raft.meta")]
    assert tmp_meta, f"the term/vote file was not fsynced: {spy.calls}"
    after = synced[synced.index(tmp_meta[0]):]
    assert os.path.realpath(tmp_path) in after, "directory not fsynced after the rename"
    j._destroy()
    j2 = journal(tmp_path)
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (7, "127.0.0.1:1234")


def test_commit_index_and_members_persist(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    j.add(b"a", 1, 0)
    j.setRaftCommitIndex(1)
    j.set_members(["127.0.0.1:2", "127.0.0.1:1"])
    j.onOneSecondTimer()
    j._destroy()
    j2 = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    assert j2.getRaftCommitIndex() == 1
    assert j2.get_members() == ["127.0.0.1:1", "127.0.0.1:2"]


# --- snapshots ---------------------------------------------------------------------------------

class Box:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.restored: Any = None

    def restore(self, data: Any) -> None:
        self.restored = data


def slow(delay: float, box: Box) -> Callable[[], Any]:
    def snapshot() -> Any:
        time.sleep(delay)
        return box.state
    return snapshot


def store(path: Path, box: Box, chunk: int = 1000) -> SnapshotStore:
    return SnapshotStore(str(path), lambda: box.state, box.restore, chunk, backlog=lambda node: 0)


def wait_serialized(s: SnapshotStore) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state, _ = s.checkSerializing()
        if state != SERIALIZER_STATE.SERIALIZING:
            return int(state)
        time.sleep(0.01)
    raise AssertionError("snapshot child did not finish")


PAIR = ((b"p", 41, 3), (b"l", 42, 3))
CLUSTER = {TCPNode("127.0.0.1:1"), TCPNode("127.0.0.1:2")}
STATE = {"data": {"k": b"\x00" * 5000, "n": [1, 2.5, None, True, ("t",)], "s": {1, 2}}}


def test_snapshot_written_by_a_child_and_restored(tmp_path: Path) -> None:
    box = Box(STATE)
    s = store(tmp_path / "snap", box)
    s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    assert wait_serialized(s) == SERIALIZER_STATE.SUCCESS
    assert s.pair == PAIR
    data, last, prev, cluster = store(tmp_path / "snap", box).deserialize()
    assert (data, last, prev) == (None, PAIR[1], PAIR[0])
    assert {n.address for n in cluster} == {"127.0.0.1:1", "127.0.0.1:2"}
    assert box.restored == STATE


def test_framed_snapshot_is_sent_and_restored_one_frame_at_a_time(tmp_path: Path) -> None:
    frames = [{"head": 1}, ("rows", [b"\x01" * 3000] * 3), ("rows", []), ("end", 6)]
    got: list[Any] = []
    leader = SnapshotStore(str(tmp_path / "a"), lambda: iter(frames), lambda data: None, 1000,
                           backlog=lambda node: 0)
    leader.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    assert wait_serialized(leader) == SERIALIZER_STATE.SUCCESS
    assert (tmp_path / "a").read_bytes()[:8] == b"SWRS\x00\x00\x00\x02"
    follower = SnapshotStore(str(tmp_path / "b"), lambda: None, lambda data: got.extend(data), 1000,
                             backlog=lambda node: 0)
    assert transfer(leader, follower)
    follower.deserialize()
    assert got == frames
    # Checked in the same pass as the frames are read: a damaged frame fails the load.
    raw = bytearray((tmp_path / "b").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "b").write_bytes(bytes(raw))
    with pytest.raises(SnapshotError):
        follower.deserialize()


def test_snapshot_of_non_plain_state_fails_without_replacing_the_old_one(tmp_path: Path) -> None:
    box = Box(STATE)
    s = store(tmp_path / "snap", box)
    s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    assert wait_serialized(s) == SERIALIZER_STATE.SUCCESS
    box.state = {"when": time.gmtime()}  # a struct_time: not plain data
    s.serialize((None, (b"l", 50, 3), (b"p", 49, 3), CLUSTER), 49)
    assert wait_serialized(s) == SERIALIZER_STATE.FAILED
    store(tmp_path / "snap", box).deserialize()
    assert box.restored == STATE


def transfer(src: SnapshotStore, dst: SnapshotStore, mangle: Any = None) -> bool:
    done = False
    while True:
        data = src.getTransmissionData("node")
        assert data is not None
        if mangle is not None:
            data = mangle(data)
        done = dst.setTransmissionData(data)
        if data[2]:
            return done


def test_snapshot_transfer_to_a_follower(tmp_path: Path) -> None:
    box = Box(STATE)
    leader = store(tmp_path / "a", box)
    leader.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    wait_serialized(leader)
    follower_box = Box(None)
    follower = store(tmp_path / "b", follower_box)
    assert transfer(leader, follower)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    follower.deserialize()
    assert follower_box.restored == STATE


def test_snapshot_transfer_rejects_gaps_and_corruption(tmp_path: Path) -> None:
    box = Box(STATE)
    leader = store(tmp_path / "a", box)
    leader.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    wait_serialized(leader)
    follower = store(tmp_path / "b", Box(None))
    seen = []

    def skip_second(data: Any) -> Any:
        seen.append(data)
        return data if len(seen) != 2 else (data[0], data[1], data[2], b"")

    assert not transfer(leader, follower, skip_second)

    def flip(data: Any) -> Any:
        chunk = bytearray(data[3])
        if data[1] == 2000:
            chunk[10] ^= 1
        return (data[0], data[1], data[2], bytes(chunk))

    assert not transfer(leader, follower, flip)

    def flip_trailer(data: Any) -> Any:  # the checksum itself, in the last chunk
        return (data[0], data[1], data[2], data[3][:-1] + bytes([data[3][-1] ^ 1]) if data[2] else data[3])

    assert not transfer(leader, follower, flip_trailer)
    assert not (tmp_path / "b").exists()
    assert transfer(leader, follower)


def test_snapshot_with_a_gadget_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Gadget:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    box = Box(None)
    s = store(tmp_path / "snap", box)
    s._write({"prev": PAIR[0], "last": PAIR[1], "members": []})  # a valid file, then a crafted one
    import pickle
    blob = (tmp_path / "snap").read_bytes()
    head_len = int.from_bytes(blob[8:16], "big")
    body = pickle.dumps({"data": Gadget()}, protocol=2)
    start = 16 + head_len
    crafted = blob[:start] + len(body).to_bytes(8, "big") + body
    import hashlib
    (tmp_path / "snap").write_bytes(crafted + hashlib.blake2b(crafted, digest_size=32).digest())
    with pytest.raises(Exception, match="refused to load global"):
        store(tmp_path / "snap", box).deserialize()
    assert not marker.exists()


def test_align_journal_keeps_entries_after_the_snapshot(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    es = entries(10)
    for e in es:
        j.add(*e)
    j.sync()
    s = store(tmp_path / "snap", Box({"data": {}}))
    s._write({"prev": es[4], "last": es[5], "members": []})
    node._align_journal(j, s)
    assert [e[1] for e in j] == [5, 6, 7, 8, 9, 10]


def test_align_journal_refuses_a_snapshot_older_than_the_journal(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(3, start=20):
        j.add(*e)
    s = store(tmp_path / "snap", Box({"data": {}}))
    s._write({"prev": (b"x", 5, 1), "last": (b"y", 6, 1), "members": []})
    with pytest.raises(RuntimeError, match="inconsistent"):
        node._align_journal(j, s)


def test_snapshot_store_refuses_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "snap").write_bytes(b"\x80\x04N.")
    with pytest.raises(SnapshotError):
        store(tmp_path / "snap", Box(None))


def test_wire_round_trip_stays_plain() -> None:
    msg = {"type": "append_entries", "entries": [(b"x" * 10, 1, 1)], "term": 1, "commit_index": 0,
           "prevLogIdx": 0, "prevLogTerm": 0}
    assert wire.loads(wire.dumps(msg)) == msg


def test_snapshot_child_lets_go_of_the_raft_sockets(tmp_path: Path) -> None:
    """A snapshot child outliving its node (kill -9) must not hold the raft port: the restarted
    node could not bind it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    box = Box(STATE)
    # The child serialises for far longer than this test waits for the port: only letting go of
    # the socket (not exiting) can free it in time.
    s = SnapshotStore(str(tmp_path / "snap"), slow(120.0, box), box.restore, 1000,
                      backlog=lambda node: 0)
    try:
        s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
        listener.close()  # the node is gone; its child is still serialising
        deadline = time.monotonic() + 10
        while True:
            again = socket.socket()
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                again.bind(("127.0.0.1", port))
                again.listen()
                break
            except OSError:
                assert time.monotonic() < deadline, "the snapshot child still holds the raft port"
                time.sleep(0.02)
            finally:
                again.close()
    finally:
        s.close()


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_orphaned_snapshot_child_does_not_publish(tmp_path: Path) -> None:
    """The child of a node that crashed must not rename its (older) snapshot over whatever the
    restarted node has written since."""
    child_pid = tmp_path / "child.pid"
    pid = os.fork()
    if pid == 0:
        try:
            box = Box(STATE)
            s = SnapshotStore(str(tmp_path / "snap"), slow(0.5, box), box.restore,
                              1000, backlog=lambda node: 0)
            s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
            child_pid.write_text(str(s._pid))
        finally:
            os._exit(0)  # the node dies at once; its snapshot child carries on
    os.waitpid(pid, 0)
    orphan = int(child_pid.read_text())
    deadline = time.monotonic() + 30
    while _running(orphan):  # reparented: not ours to wait for
        assert time.monotonic() < deadline, "the orphaned snapshot child never finished"
        time.sleep(0.02)
    assert not (tmp_path / "snap").exists()
    assert not list(tmp_path.glob("snap.tmp*")), "the orphan left its temporary file behind"


def test_received_snapshot_wins_over_a_local_one_still_being_written(tmp_path: Path) -> None:
    leader = store(tmp_path / "a", Box({"data": {"from": "leader"}}))
    leader.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    wait_serialized(leader)
    local = Box({"data": {"from": "local"}})
    follower = SnapshotStore(str(tmp_path / "b"), slow(1.0, local), local.restore,
                             1000, backlog=lambda node: 0)
    follower.serialize((None, (b"l", 10, 1), (b"p", 9, 1), CLUSTER), 9)  # older, still being written
    assert transfer(leader, follower)
    wait_serialized(follower)  # the local child is gone, whether killed or finished
    follower.deserialize()
    assert local.restored == {"data": {"from": "leader"}}


def test_transfer_pauses_while_the_connection_is_backed_up(tmp_path: Path) -> None:
    backlog = [0]
    box = Box(STATE)
    s = SnapshotStore(str(tmp_path / "snap"), lambda: box.state, box.restore, 1000,
                      backlog=lambda node: backlog[0])
    s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
    wait_serialized(s)
    backlog[0] = 16 * 1024 * 1024
    assert s.getTransmissionData("node") is None
    backlog[0] = 0
    assert s.getTransmissionData("node") is not None


def test_stuck_snapshot_child_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "child_timeout" not in STOCK:
        monkeypatch.setattr(snapshots, "SNAPSHOT_CHILD_TIMEOUT", 0.3)
    box = Box(STATE)
    s = SnapshotStore(str(tmp_path / "snap"), lambda: time.sleep(60), box.restore, 1000,
                      backlog=lambda node: 0)
    try:
        s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
        assert wait_serialized(s) == SERIALIZER_STATE.FAILED
    finally:
        s.close()


def test_snapshot_is_fsynced_around_its_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock renames its dump without any fsync; run the child's job in-process."""
    s = store(tmp_path / "snap", Box(STATE))
    spy = SyncSpy(monkeypatch)
    s._write({"prev": PAIR[0], "last": PAIR[1], "members": []})
    tmp_synced = [p for _, p in spy.calls if os.path.basename(p).startswith("snap.tmp.")]
    assert tmp_synced and spy.paths()[-1] == os.path.realpath(tmp_path), spy.calls
    assert oct(os.stat(tmp_path / "snap").st_mode & 0o777) == "0o600"
