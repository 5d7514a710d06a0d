"""Linearizable reads on the leader without a log entry (Raft's read index).

A read asks for a point after which local state reflects every write acknowledged before it.
Without this, such a point costs a no-op entry: appended, fdatasync'd on a majority, committed and
applied. With it, the leader notes its commit index, proves it still leads by one round of
AppendEntries that a majority answers, and serves the read once it has applied that index.

The proof: the leader stamps every AppendEntries with its latest read sequence number (``rs``),
and in its replies a member echoes the number and term of the last one it accepted from that
leader. An echo of ``n`` in the leader's term means the member accepted, in that term, a message
sent after read ``n`` began; a majority of such echoes (the leader counting itself) means no
other leader could have committed anything by then. An echo counts only in the term it names: a
restarted leader numbers from zero again, but only in a later term.

The commit index is only a valid read point once an entry of the leader's own term is committed
(its election no-op): until then, and whenever a majority of voters has not echoed anything in
this term (members of a release without echoes), a read takes the no-op entry as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObj

from swarmsecrets.raft.errors import NoLeader

# False: every read takes a no-op entry through the log (what members did before read indexes).
READ_INDEX = True
# How long the answer of ``read_index_ready`` is trusted (a membership change asks again at once).
READY_RECHECK = 1.0


@dataclass(slots=True)
class _Read:
    seq: int
    index: int  # the commit index when the read began
    done: Future[None]


class ReadIndexMixin(SyncObj):  # type: ignore[misc]  # pysyncobj ships no type information
    """Read indexes for a SyncObj subclass; all of it runs on the raft thread. The host class
    sets ``clock`` (see ``PreVoteMixin``)."""

    clock: Callable[[], float]

    def _init_read_index(self, ready: Callable[[], bool]) -> None:
        """``ready``: whether every member reads the read-index fields; until it says so, no
        message carries them (a member of an earlier release refuses the peer that sends them)."""
        self._read_index_ready = ready
        self._fields_ok = False
        self._ready_checked_at = -1e18
        self._read_seq = 0  # the last number given to a read; stamped on AppendEntries
        self._read_round_due = False  # a read waits for an AppendEntries round to carry its number
        self._echoed: dict[Any, int] = {}  # leader: the highest number each member echoed in this term
        self._unconfirmed: list[_Read] = []  # leader: waiting for a majority's echo, oldest first
        self._confirmed: list[_Read] = []  # leader: waiting for the commit index to be applied
        self._accepted_rs: dict[Any, tuple[int, int]] = {}  # member: (term, number) last accepted per leader

    # --- leader ---------------------------------------------------------------------------

    def begin_read(self, done: Future[None]) -> bool:
        """Start a read that ``done`` reports. False when a read index cannot answer it now (not
        the leader, no entry of this term committed, too few members echo): take a no-op entry."""
        if not READ_INDEX or not self._isLeader() or not self._fields_allowed():
            return False
        commit = self.raftCommitIndex
        entries = self._SyncObj__getEntries(commit, 1)
        if not entries or entries[0][2] != self.raftCurrentTerm:
            return False
        voters = self._SyncObj__otherNodes
        if 1 + sum(1 for n in voters if n in self._echoed) <= (len(voters) + 1) / 2:
            return False
        self._read_seq += 1
        read = _Read(self._read_seq, commit, done)
        if voters:
            self._unconfirmed.append(read)
            self._read_round_due = True
        else:
            self._confirmed.append(read)  # alone in its group: its own vote is the majority
            self.serve_reads()
        return True

    def _fields_allowed(self) -> bool:
        now = self.clock()
        if now - self._ready_checked_at >= READY_RECHECK:
            self._fields_ok = bool(self._read_index_ready())
            self._ready_checked_at = now
        return self._fields_ok

    def members_changed(self) -> None:
        """Ask ``ready`` again before the next read: a member may have joined. Reads waiting for
        echoes are failed at once (their callers retry), not left to time out unstamped."""
        self._ready_checked_at = -1e18
        self._fields_ok = False
        self._drop_reads()

    def read_round_due(self) -> bool:
        """Whether an AppendEntries round must go out now to carry a read's number (then taken)."""
        due, self._read_round_due = self._read_round_due, False
        return due

    def stamp_read_seq(self, message: dict[str, Any]) -> None:
        """Every AppendEntries this leader sends carries its latest read number, once every
        member reads it."""
        if self._fields_ok:
            message["rs"] = self._read_seq

    def _read_echo(self, node: Any, message: dict[str, Any]) -> None:
        """A member's reply echoes a read number: count it, and confirm what a majority covers."""
        rs = message.get("rs")
        if (not isinstance(rs, int) or message.get("rt") != self.raftCurrentTerm or not self._isLeader()
                or node not in self._SyncObj__otherNodes):
            return
        if rs <= self._echoed.get(node, -1):
            return
        self._echoed[node] = rs
        voters = self._SyncObj__otherNodes
        while self._unconfirmed:
            read = self._unconfirmed[0]
            if 1 + sum(1 for n in voters if self._echoed.get(n, -1) >= read.seq) <= (len(voters) + 1) / 2:
                break
            self._confirmed.append(self._unconfirmed.pop(0))
        self.serve_reads()

    def serve_reads(self) -> None:
        """Answer the confirmed reads whose index is applied here; fail every read once this
        member no longer leads (the caller retries, through whichever member leads). Run after
        every tick, as entries apply."""
        if not (self._unconfirmed or self._confirmed):
            return
        if not self._isLeader():
            self._drop_reads()
            return
        applied = self.raftLastApplied
        while self._confirmed and self._confirmed[0].index <= applied:
            done = self._confirmed.pop(0).done
            if not done.done():
                done.set_result(None)
        self._unconfirmed = [r for r in self._unconfirmed if not r.done.done()]  # timed out

    def _drop_reads(self) -> None:
        """Fail every read in progress and forget the echoes (another term's, from now on)."""
        reads, self._unconfirmed, self._confirmed = self._unconfirmed + self._confirmed, [], []
        self._echoed.clear()
        for read in reads:
            if not read.done.done():
                read.done.set_exception(
                    NoLeader("the read was not confirmed before this member's leadership or membership changed"))

    # --- member -----------------------------------------------------------------------------

    def asks_read_echo(self, node: Any, message: dict[str, Any]) -> bool:
        """Whether an AppendEntries carries a read number this member has not accepted yet: it
        must be answered (with the echo), even when it only moves the commit index on."""
        rs = message.get("rs")
        return isinstance(rs, int) and self._accepted_rs.get(node) != (message["term"], rs)

    def _accept_read_seq(self, node: Any, message: dict[str, Any]) -> None:
        """An AppendEntries this member accepts (its term is current): remember its number. Call
        before SyncObj handles the message (which may raise this member's term to it)."""
        rs = message.get("rs")
        if isinstance(rs, int) and message["term"] >= self.raftCurrentTerm:
            self._accepted_rs[node] = (message["term"], rs)

    def read_echo(self, node: Any) -> dict[str, int]:
        """The echo to add to a reply to ``node``: only while it leads in the term it stamped in
        (a member that restarted since, maybe on an earlier release, gets none)."""
        accepted = self._accepted_rs.get(node)
        if accepted is None or accepted[0] != self.raftCurrentTerm:
            return {}
        return {"rs": accepted[1], "rt": accepted[0]}
