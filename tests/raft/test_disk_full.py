"""A member whose disk fills: it loses nothing, acknowledges nothing it could not write, refuses
writes, keeps serving reads, stops leading, and recovers by itself once space returns.

Data directories sit on small tmpfs mounts (tests/framework/smallfs.py) filled with a ballast file; an
fdatasync that fails for lack of space (thin provisioning, network filesystems) is injected.
``RAFT_STOCK=disk_full`` makes a full disk fatal again, ``hand_over`` keeps a full leader
leading, ``full_vote`` lets a full member stand for election.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import SERIALIZER_STATE

from swarmsecrets import fsutil
from swarmsecrets.raft import StorageFull, Unavailable, UnknownOutcome, snapshots
from swarmsecrets.raft.errors import DiskFull
from swarmsecrets.raft.journal import DurableJournal
from swarmsecrets.raft.node import RaftNode, _RaftSyncObj
from tests.framework import wait_until
from tests.raft.conftest import Cluster
from tests.raft.test_journal import CLUSTER, PAIR, Box, entries, store, wait_serialized
from tests.framework.smallfs import SmallFs

Factory = Callable[..., Cluster]
NO_SPACE = "no space left on device"


# --- the journal ---------------------------------------------------------------------------------

def test_no_room_keeps_the_entries_and_a_retry_writes_them(tmp_path: Path) -> None:
    with SmallFs(tmp_path / "fs", 1) as fs:
        j = DurableJournal(str(fs.path / "j"), str(fs.path / "m"))
        for e in entries(5):
            j.add(*e)
        j.persist()
        fs.fill()
        big = [(b"x" * 3000, i, 1) for i in range(6, 12)]  # more than the journal's last page holds
        for e in big:
            j.add(*e)
        with pytest.raises(DiskFull, match=NO_SPACE):
            j.persist()
        assert j.full and NO_SPACE in j.full
        assert j.synced_index == 5 and os.path.getsize(fs.path / "j") == j._end, "a failed write left bytes behind"
        with pytest.raises(DiskFull):
            j.setCurrentTerm(2, "127.0.0.1:9")  # a vote is never kept only in memory
        j.setCurrentTerm(3, None)               # a term alone waits for the next persist()
        j.set_members(["127.0.0.1:1", "127.0.0.1:2"])
        assert list(DurableJournal(str(fs.path / "j"), str(fs.path / "m2"))) == entries(5)  # a crash now
        fs.free()
        j.persist()
        assert j.full is None and j.synced_index == 11
        j._destroy()
        again = DurableJournal(str(fs.path / "j"), str(fs.path / "m"))
        assert list(again) == entries(5) + big
        assert again.getCurrentTerm() == 3 and again.get_members() == ["127.0.0.1:1", "127.0.0.1:2"]
        again._destroy()


def test_a_failed_fdatasync_for_lack_of_space_rewrites_everything_unsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may drop the pages of a failed fdatasync: the retry writes them again from memory."""
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(3):
        j.add(*e)
    j.persist()
    end = j._end
    real_fdatasync = os.fdatasync
    failing = [True]

    def fdatasync(fd: int) -> None:
        if failing and fd == j._fd:
            failing.clear()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fdatasync(fd)

    written: list[tuple[int, int]] = []
    real_write_all = fsutil.write_all

    def write_all(fd: int, data: Any, offset: int | None = None) -> None:
        written.append((len(data), offset or 0))
        real_write_all(fd, data, offset)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr("swarmsecrets.raft.journal.write_all", write_all)
    for e in entries(4, start=4):
        j.add(*e)
    with pytest.raises(DiskFull):
        j.persist()
    j.persist()
    assert written[0] == written[1] and written[1][1] == end, "the retry did not rewrite every unsynced byte"
    j._destroy()
    assert list(DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))) == entries(7)


def test_a_write_cut_short_leaves_no_old_record_behind_a_newer_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records 6, 7 (term 1) reach the file but not the disk; the leader replaces them with 6'
    (term 2, the same length). Unless the failed write is cut off, 7 of term 1 would follow 6' of
    term 2 on the next load."""
    j = DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))
    for e in entries(5):
        j.add(*e)
    j.persist()
    real_fdatasync = os.fdatasync
    failing = [True]

    def fdatasync(fd: int) -> None:
        if failing and fd == j._fd:
            failing.clear()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    j.add(b"six", 6, 1)
    j.add(b"sev", 7, 1)
    with pytest.raises(DiskFull):
        j.persist()
    j.deleteEntriesFrom(5)  # SyncObj's index of entry 6
    j.add(b"SIX", 6, 2)
    j.persist()
    j._destroy()
    assert list(DurableJournal(str(tmp_path / "j"), str(tmp_path / "m"))) == entries(5) + [(b"SIX", 6, 2)]


def test_a_snapshot_that_finds_no_room_keeps_the_previous_one(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "DISK_FULL_RETRY", 0.0)
    with SmallFs(tmp_path / "fs", 1) as fs:
        box = Box({"data": {"k": b"\x01" * 2000}})
        s = store(fs.path / "snap", box)
        s.serialize((None, PAIR[1], PAIR[0], CLUSTER), 41)
        assert wait_serialized(s) == SERIALIZER_STATE.SUCCESS
        before = (fs.path / "snap").read_bytes()
        fs.fill()
        box.state = {"data": {"k": b"\x02" * 200_000}}
        s.serialize((None, (b"l", 52, 3), (b"p", 51, 3), CLUSTER), 51)
        assert wait_serialized(s) == SERIALIZER_STATE.FAILED
        assert s.full and NO_SPACE in s.full
        assert (fs.path / "snap").read_bytes() == before and s.pair == PAIR
        assert sorted(os.listdir(fs.path)) == ["ballast", "snap"], "a partial snapshot was left behind"
        fs.free()
        s.serialize((None, (b"l", 52, 3), (b"p", 51, 3), CLUSTER), 51)
        assert wait_serialized(s) == SERIALIZER_STATE.SUCCESS
        assert s.full is None and s.pair == ((b"p", 51, 3), (b"l", 52, 3))
        s.close()


def test_a_private_file_that_finds_no_room_leaves_nothing_behind(tmp_path: Path) -> None:
    with SmallFs(tmp_path / "fs", 1) as fs:
        fsutil.write_private(str(fs.path / "keys.json"), b"old")
        fs.fill()
        with pytest.raises(OSError) as raised:
            fsutil.write_private(str(fs.path / "keys.json"), b"n" * 100_000)
        assert raised.value.errno == errno.ENOSPC
        assert (fs.path / "keys.json").read_bytes() == b"old"
        assert sorted(os.listdir(fs.path)) == ["ballast", "keys.json"]


# --- a cluster -------------------------------------------------------------------------------------

@pytest.fixture
def small_disks(cluster_factory: Factory) -> Iterator[tuple[Cluster, dict[str, SmallFs]]]:
    """Three members, each with its data directory on its own 4 MiB filesystem."""
    c = cluster_factory()
    with ExitStack() as stack:
        disks = {a: stack.enter_context(SmallFs(c.root / a.replace(":", "_"), 4)) for a in c.addrs}
        stack.callback(c.stop)
        c.start()
        yield c, disks


_keys = itertools.count()


def put(node: RaftNode, acked: list[str], timeout: float = 3.0) -> bool:
    """One write through ``node``; True if it was acknowledged (and recorded as such)."""
    key = f"k{next(_keys)}"
    try:
        node.propose({"op": "set", "k": key, "v": "v" * 300}, timeout)
    except (Unavailable, UnknownOutcome):
        return False
    acked.append(key)
    return True


def fill_until_full(node: RaftNode, disk: SmallFs, writer: RaftNode, acked: list[str]) -> None:
    """Fill ``node``'s disk and write through ``writer`` until ``node`` reports it is full (the
    journal's last page may take a few entries first)."""
    disk.fill()

    def full() -> str:
        put(writer, acked, 1.0)
        return node.status().disk_full

    wait_until(full, timeout=30, interval=0.01, what="the member to run out of room")


def match_index(leader: RaftNode, addr: str) -> int:
    so = leader._sync
    assert isinstance(so, _RaftSyncObj)
    return int(leader.call_in_loop(
        lambda: {n.address: i for n, i in so._SyncObj__raftMatchIndex.items()}.get(addr, 0)).result(5))


def check_everything_everywhere(c: Cluster, acked: list[str]) -> None:
    state = c.converge()
    missing = [k for k in acked if k not in state]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"


def test_a_full_follower_acknowledges_nothing_and_catches_up_by_itself(
        small_disks: tuple[Cluster, dict[str, SmallFs]]) -> None:
    c, disks = small_disks
    leader = c.leader()
    follower = c.followers()[0]
    journal = follower._sync._journal if follower._sync else None
    assert journal is not None
    acked: list[str] = []
    assert put(follower, acked)  # the same write that is refused below, while there is room
    fill_until_full(follower, disks[follower.self_addr], leader, acked)
    for _ in range(20):  # the others go on without it
        assert put(leader, acked)
    assert NO_SPACE in follower.status().disk_full
    assert match_index(leader, follower.self_addr) <= journal.synced_index < leader.status().commit_index, \
        "the full follower acknowledged entries it did not write"
    with pytest.raises(StorageFull, match=f"cannot persist: {NO_SPACE}"):
        follower.propose({"op": "set", "k": "refused", "v": 1}, 3.0)
    follower.read_barrier(5.0)  # reads go on: a barrier through the leader, applied here
    assert acked[-1] in c.machines[follower.self_addr].copy()
    episodes = follower.status().disk_full_episodes

    disks[follower.self_addr].free()
    wait_until(lambda: follower.status().disk_full == "", what="the follower to write again")
    assert follower.status().disk_full_episodes == episodes
    assert put(follower, acked, 5.0)
    wait_until(lambda: match_index(leader, follower.self_addr) >= journal.synced_index >= leader.status().commit_index,
               what="the follower to acknowledge again")
    check_everything_everywhere(c, acked)
    c.stop(follower.self_addr)
    c.start(follower.self_addr)
    check_everything_everywhere(c, acked)


def test_a_full_leader_hands_over_refuses_writes_and_serves_reads(
        small_disks: tuple[Cluster, dict[str, SmallFs]]) -> None:
    c, disks = small_disks
    old = c.leader()
    acked: list[str] = []
    assert put(old, acked)
    fill_until_full(old, disks[old.self_addr], old, acked)
    wait_until(lambda: not old.status().is_leader, timeout=5, what="the full leader to step down")
    new = c.leader(among=[a for a in c.addrs if a != old.self_addr])
    assert put(new, acked, 5.0)
    with pytest.raises(StorageFull, match=f"cannot persist: {NO_SPACE}"):
        old.propose({"op": "set", "k": "refused", "v": 1}, 3.0)
    old.read_barrier(5.0)
    assert acked[-1] in c.machines[old.self_addr].copy()

    disks[old.self_addr].free()
    wait_until(lambda: old.status().disk_full == "", what="the old leader to write again")
    assert put(old, acked, 5.0)
    check_everything_everywhere(c, acked)
    c.stop(old.self_addr)
    c.start(old.self_addr)
    check_everything_everywhere(c, acked)


def test_a_full_leader_with_no_spare_member_commits_nothing_until_space_returns(
        small_disks: tuple[Cluster, dict[str, SmallFs]]) -> None:
    """One member down, the leader's disk full: only one member can persist, so nothing may be
    acknowledged (the leader must not count its own unwritten copy), and the full member
    neither stands for election nor votes until it can write its vote."""
    c, disks = small_disks
    leader = c.leader()
    follower, down = c.followers()
    c.stop(down.self_addr)
    acked: list[str] = []
    assert put(follower, acked, 5.0)
    fill_until_full(leader, disks[leader.self_addr], follower, acked)
    term = leader.status().term
    rounds = follower.status().pre_vote_rounds
    for _ in range(3):
        assert not put(follower, acked, 1.0), "a write was acknowledged while only one member could persist it"
    wait_until(lambda: follower.status().pre_vote_rounds >= rounds + 2, what="the follower to seek votes")
    assert not leader.status().is_leader and leader.status().term == term, "the full member stood for election"

    disks[leader.self_addr].free()
    wait_until(lambda: put(follower, acked, 2.0), timeout=20, what="writes to resume")
    c.start(down.self_addr)
    check_everything_everywhere(c, acked)


def test_a_lone_member_out_of_space_acknowledges_nothing_and_still_serves_reads(
        cluster_factory: Factory) -> None:
    c = cluster_factory(1)
    with SmallFs(c.root / c.addrs[0].replace(":", "_"), 4) as disk:
        try:
            c.start()
            node = c.leader()
            acked: list[str] = []
            fill_until_full(node, disk, node, acked)
            journal = node._sync._journal if node._sync else None
            assert journal is not None
            assert node.status().commit_index <= journal.synced_index, "committed entries that are not on disk"
            assert not put(node, acked), "a write was acknowledged while the only member could not persist it"
            assert node.status().commit_index <= journal.synced_index, "committed entries that are not on disk"
            node.read_barrier(2.0)
            assert set(acked) <= set(c.machines[node.self_addr].copy())
            disk.free()
            wait_until(lambda: put(node, acked, 2.0), timeout=20, what="writes to resume")
            c.stop()
            c.start()
            check_everything_everywhere(c, acked)
        finally:
            c.stop()
