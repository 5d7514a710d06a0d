"""Offline operations on a stopped member's raft data: forcing a one-member group out of a
member that lost its quorum, and seeding a new one-member group with a state.

Both work on the files a ``RaftNode`` keeps in its data dir (the journal, its metadata and the
snapshot) while no ``RaftNode`` has them open, and leave data that ``RaftNode.start`` then runs
as a group of one.
"""

from __future__ import annotations

import os
from typing import Any

from pysyncobj.syncobj import _COMMAND_TYPE

from swarmsecrets.raft.journal import DurableJournal
from swarmsecrets.raft.membership import check_addr, encode_change, parse_change
from swarmsecrets.raft.snapshots import SnapshotStore

_MEMBERSHIP = bytes([_COMMAND_TYPE.MEMBERSHIP])
_NO_OP = bytes([_COMMAND_TYPE.NO_OP])

JOURNAL = "raft.journal"
META = "raft.meta"
SNAPSHOT = "raft.snapshot"


def _paths(data_dir: str) -> tuple[str, str, str]:
    return (os.path.join(data_dir, JOURNAL), os.path.join(data_dir, META), os.path.join(data_dir, SNAPSHOT))


def force_new_cluster(data_dir: str, self_addr: str) -> list[str]:
    """Make the raft data in ``data_dir`` that of a group whose one member is ``self_addr``,
    keeping every entry it holds. Returns the other addresses it removed.

    Membership lives in three places: the metadata's member list, the snapshot's header, and the
    membership entries of the log, which every member replays (a restarted one on apply, a new
    one as the leader sends it the log). So the change is written where everyone reads it last:
    a removal of every other address ever named, and the addition of ``self_addr`` (which may be
    a new address), are appended to the log in a new term, and every entry is marked committed.
    Entries this member held but had not seen committed are kept and committed with them: they
    may have been acknowledged by the old group, and a new leader of that group would have
    committed them too. Running it again is harmless (removals of non-members change nothing).
    """
    check_addr(self_addr)
    journal_path, meta_path, snap_path = _paths(data_dir)
    if not os.path.exists(journal_path):
        raise FileNotFoundError(f"no raft journal in {data_dir}")
    journal = DurableJournal(journal_path, meta_path)
    try:
        named = set(journal.get_members() or [])
        if os.path.exists(snap_path):
            store = SnapshotStore(snap_path, lambda: None, lambda data: None, 1, backlog=lambda node: 0)
            head = store.read_header()
            if head is not None:
                named |= set(head.get("members") or [])
        for command, _, _ in journal:
            if command[:1] == _MEMBERSHIP:
                change = parse_change(command[1:])
                if change is not None:
                    named.add(change[1])
        others = sorted(named - {self_addr})
        last_term = journal[-1][2] if len(journal) else 0
        term = max(journal.getCurrentTerm(), last_term) + 1
        index = journal[-1][1] if len(journal) else 0
        if index == 0:
            index = 1
            journal.add(_NO_OP, index, term)
        for addr in others:
            index += 1
            journal.add(_MEMBERSHIP + encode_change("rem", addr), index, term)
        index += 1
        journal.add(_MEMBERSHIP + encode_change("add", self_addr), index, term)
        journal.sync()
        journal.setCurrentTerm(term, None)
        journal.setRaftCommitIndex(index)
        journal.set_members([self_addr])
    finally:
        journal._destroy()
    return others


def seed(data_dir: str, self_addr: str, state: Any, index: int) -> None:
    """Create, in an empty ``data_dir``, the raft data of a one-member group (``self_addr``)
    whose state machine starts from ``state`` (what ``StateMachine.snapshot`` returned) at log
    index ``index``: a snapshot at that index and a journal holding its two entries."""
    check_addr(self_addr)
    if index < 2:
        raise ValueError("a seeded raft log starts at index 2 or later")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    journal_path, meta_path, snap_path = _paths(data_dir)
    if any(os.path.exists(p) for p in (journal_path, meta_path, snap_path)):
        raise FileExistsError(f"{data_dir} already holds raft data")
    term = 1
    prev, last = (_NO_OP, index - 1, term), (_NO_OP, index, term)
    store = SnapshotStore(snap_path, lambda: state, lambda data: None, 1, backlog=lambda node: 0)
    store.write_now(prev, last, [self_addr])
    journal = DurableJournal(journal_path, meta_path)
    try:
        journal.add(*prev)
        journal.add(*last)
        journal.sync()
        journal.setCurrentTerm(term, None)
        journal.setRaftCommitIndex(index)
        journal.set_members([self_addr])
    finally:
        journal._destroy()
