"""One member of a raft group: pysyncobj 0.3.17 (pinned), made durable, secure and fast.

pysyncobj supplies the Raft algorithm. What it lacks or gets wrong is fixed here, in our code,
by settings, by installing our own storage and transport into SyncObj, and by overriding its
name-mangled internals in ``_RaftSyncObj`` and its mixins (each override says which defect it
fixes):

- durability (journal.py, snapshots.py): DurableJournal replaces the never-flushed mmap journal.
  A leader appends a batch, sends it, then fdatasyncs it while the followers do the same, and
  counts itself only after its own sync; a follower acknowledges only after its fdatasync. Term
  and vote are fsynced before they are acted on. Snapshots are written by a forked child with
  fsync + directory fsync.
- a full disk: a member whose journal cannot be written holds its acknowledgements, neither
  votes nor stands for election, refuses proposals (StorageFull) and retries the write every
  ``DISK_FULL_RETRY`` until it succeeds; a leader hands leadership to its most caught-up
  follower and steps down at once, because SyncObj counts the leader toward every commit
  whether its copy is on disk or not. Reads (barriers through the leader) go on.
- security (transport.py, wire.py): mutual TLS, peers verified by the host's verifier, the
  address a peer claims bound to its certificate; restricted unpickling and a frame cap.
- latency: our own loop drives SyncObj's tick; a proposal wakes it through a pipe, the queue is
  drained, appended and sent as one AppendEntries per follower with one fdatasync, and replies
  are handled as they arrive. A new commit index is sent at once only when a follower waits for
  it (a command it forwarded, a membership change), else with the next AppendEntries; a
  follower does not answer an AppendEntries that only moves the commit index on.
- membership (membership.py): one change at a time, addresses as plain strings, the member list
  persisted, a removal effective on the leader when committed.
- elections (prevote.py): pre-vote with leader stickiness, so a member that rejoins after a
  partition or a restart cannot depose a healthy leader.
- errors (errors.py): no leader -> NoLeader at once; sent but unconfirmed -> UnknownOutcome; an
  exception in apply -> ApplyFailed for the proposer, the same on every member, and the log goes
  on.

The host hands in what the library must not know: the state machine (``StateMachine``), the TLS
contexts and peer verifier (``RaftTLS``) and the clock.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj import SyncObjConf, SyncObjException
from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _COMMAND_TYPE

from swarmsecrets.raft import wire
from swarmsecrets.raft.errors import (
    ApplyFailed,
    DiskFull,
    InvalidCommand,
    NoLeader,
    Refused,
    StorageError,
    StorageFailed,
    StorageFull,
    Unavailable,
    UnknownOutcome,
)
from swarmsecrets.raft.journal import DurableJournal
from swarmsecrets.raft.membership import MembershipMixin, check_addr, encode_change, parse_change
from swarmsecrets.raft.prevote import PreVoteMixin
from swarmsecrets.raft.readindex import ReadIndexMixin
from swarmsecrets.raft.snapshots import SnapshotStore
from swarmsecrets.raft.transport import Admission, PeerVerifier, TLSConfig, TlsTransport

log = logging.getLogger(__name__)

_REGULAR = bytes([_COMMAND_TYPE.REGULAR])
_MEMBERSHIP = bytes([_COMMAND_TYPE.MEMBERSHIP])
_VERSION = bytes([_COMMAND_TYPE.VERSION])
_NO_OP = bytes([_COMMAND_TYPE.NO_OP])
_BARRIER = wire.dumps(None)  # a regular entry that reaches no state machine

# Settings that fix defects of the stock configuration (module-level so tests can show the
# defect by restoring the stock value).
# Stock chunks any entry >= 64 KiB and ends the chunks too early (the receiver gets a truncated
# entry); with 4 MiB batches and a command cap of 1 MiB (wire.MAX_COMMAND_BYTES) the chunked path
# is never taken (and a chunked frame from a peer is refused by wire.valid_message).
APPEND_ENTRIES_BATCH_BYTES = 4 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Stock drops a link that received nothing for 3.5 s on its first send, losing the first
# RequestVote between idle followers; dead peers are found by keepalive (TCP_KEEPALIVE) instead.
CONNECTION_IDLE_TIMEOUT = 365 * 24 * 3600.0
TCP_KEEPALIVE = (2, 1, 3)  # idle s, interval s, probes: a vanished peer is dropped after ~5 s
# With no leader, fail proposals at once (NO_LEADER) rather than queueing them until timeout.
COMMANDS_WAIT_LEADER = False
CONNECTION_RETRY = 0.2
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
# While the journal finds no room, retry the write this often (each failed try costs little).
DISK_FULL_RETRY = 0.25


@dataclass(frozen=True)
class RaftTiming:
    """Raft timers in seconds. Defaults give sub-second failover on a loaded 2-core box."""

    heartbeat: float = 0.05
    election_min: float = 0.4
    election_max: float = 0.8
    # Check-quorum: a leader that heard from no majority for this long steps down (stock: 30 s).
    leader_fallback: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat * 3 < self.election_min < self.election_max:
            raise ValueError("raft timing: need 0 < 3 * heartbeat < election_min < election_max")
        if self.leader_fallback <= self.heartbeat:
            raise ValueError("raft timing: leader_fallback must exceed the heartbeat")


@dataclass(frozen=True)
class RaftTuning:
    """When to snapshot and compact the log: after this many entries, or this many seconds."""

    snapshot_entries: int = 10_000
    snapshot_interval: float = 600.0


def _ignore(seconds: float) -> None:
    pass


@dataclass(frozen=True)
class RaftObserver:
    """Measurements a host may take of its member (for metrics): each callback gets a duration in
    seconds, runs on the thread that measured it (the raft thread) and must return at once."""

    fsync: Callable[[float], None] = _ignore      # one group commit: the journal made durable
    snapshot: Callable[[float], None] = _ignore   # one snapshot, from its start to its file in place


@dataclass(frozen=True)
class RaftTLS:
    """Mutual TLS of the raft port. Both contexts must require and verify the peer's certificate
    chain; ``verify_peer`` then decides who the peer is and which member addresses it may claim
    (e.g. only managers of this cluster, by the addresses their certificates bind)."""

    server_ctx: ssl.SSLContext
    client_ctx: ssl.SSLContext
    verify_peer: PeerVerifier
    admission: Admission = Admission()  # bounds on connections that have not authenticated yet


class StateMachine(Protocol):
    """What the raft group replicates. ``apply`` must be deterministic: every member applies the
    same commands in the same order and must reach the same state (an exception counts as a
    result: it is reported to the proposer as ApplyFailed, and the log goes on)."""

    def apply(self, command: dict[str, Any], index: int) -> Any: ...
    def snapshot(self) -> Any: ...
    def restore(self, data: Any) -> None: ...


@dataclass
class RaftStatus:
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    members: list[str]
    reachable: set[str]
    tick_errors: int = 0           # exceptions caught in the raft loop
    last_tick_error: str = ""
    apply_errors: int = 0          # commands whose apply raised
    rejected_peers: int = 0        # raft connections refused (TLS, identity, protocol)
    pre_vote_rounds: int = 0       # pre-vote rounds this member started (it heard no leader)
    # Why this member cannot persist raft entries ("" while it can): it refuses writes,
    # acknowledges nothing and retries by itself.
    disk_full: str = ""
    disk_full_episodes: int = 0    # times this member ran out of room since it started
    snapshot_disk_full: str = ""   # why the last snapshot found no room (writes go on)
    snapshot_index: int = 0        # the raft index the newest snapshot on disk holds; 0: none

    @property
    def has_quorum(self) -> bool:
        """Whether this member reaches a majority of the group (itself included)."""
        return len(set(self.members) & self.reachable) * 2 > len(self.members)


@dataclass(frozen=True)
class _ApplyFailure:
    message: str


def _encode_command(command: dict[str, Any]) -> bytes:
    if not isinstance(command, dict):
        raise InvalidCommand("a raft command is a dict")
    payload = wire.dumps(command)
    if len(payload) > wire.MAX_COMMAND_BYTES:
        raise InvalidCommand(f"raft command of {len(payload)} bytes exceeds {wire.MAX_COMMAND_BYTES}")
    try:
        wire.loads(payload)  # plain data only: what every node's restricted unpickler accepts
    except Exception as e:
        raise InvalidCommand(f"a raft command is plain data only: {e}") from None
    return payload


class _Wakeup:
    """A pipe on pysyncobj's poller that ends poll() when a proposal is queued. (Stock notices a
    proposal only at the next tick, and its own PipeNotifier raises once the pipe is full.)"""

    def __init__(self, poller: Any) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()  # no write may race close() onto a reused descriptor
        self._closed = False
        # Set from a notify until the loop has read the pipe empty: every proposal queued while it
        # is set is seen by the loop's next pass, so one pipe write (one wake-up of the raft
        # thread) serves them all. Cleared only after the read, so it is never set with the pipe
        # empty and no wake-up on the way.
        self._pending = False
        poller.subscribe(self._r, self._drain, POLL_EVENT_TYPE.READ)

    def notify(self) -> None:
        if self._pending:
            return
        with self._lock:
            if self._closed:
                return
            self._pending = True
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:
                pass  # a wakeup is already pending

    def _drain(self, fd: int, events: int) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        self._pending = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class _RaftSyncObj(PreVoteMixin, MembershipMixin, ReadIndexMixin):
    """SyncObj with our storage, transport, loop and fixes (pysyncobj==0.3.17 internals)."""

    _journal: DurableJournal

    def __init__(self, owner: RaftNode, self_addr: str, others: list[str], conf: SyncObjConf,
                 journal: DurableJournal, snapshots: SnapshotStore) -> None:
        # Set before SyncObj.__init__: TlsTransport reads raft_tls while SyncObj builds it.
        self.raft_tls = owner.tls
        self._owner = owner
        self._journal = journal
        self._snapshots = snapshots
        self.clock = owner.clock
        self._acks: list[tuple[Any, bool, int, bool]] = []
        self._unanswered: tuple[Any, int] | None = None  # see _only_commits
        self._init_membership()
        self._init_pre_vote()
        self._init_read_index(owner.read_index_ready)
        self._sent = (0, -1)  # (last log index, commit index) of the last AppendEntries round
        # Leader: the last log index a follower waits to see committed (see _append_entries_due),
        # and whether a proposal queued since the loop last took the queue is one it waits for.
        self._awaited = 0
        self._awaited_queued = False
        self._wakeup: _Wakeup | None = None
        self._loop_thread = 0
        self.tick_errors = 0
        self.last_tick_error = ""
        self.failure: str | None = None  # set when storage failed and the loop stopped for good
        self._compact_now = False
        self.disk_full: str | None = None  # set while the journal finds no room (see _no_room)
        self.disk_full_episodes = 0
        self._disk_retry_at = 0.0
        super().__init__(self_addr, others, conf=conf, transportClass=TlsTransport)
        self._install_storage()
        self.transport.stamp_append_entries = self.stamp_read_seq
        self._wakeup = _Wakeup(self._poller)
        self.addOnTickCallback(self._before_poll)

    def _install_storage(self) -> None:
        """Put DurableJournal and SnapshotStore where SyncObj built a MemoryJournal and its
        Serializer (SyncObjConf.journalFile would make the mmap FileJournal), and reload the raft
        state SyncObj.__init__ read from the memory journal."""
        log_ = self._journal
        if len(log_) == 0:
            log_.add(_NO_OP, 1, 0)
            log_.sync()
        self._SyncObj__raftLog = log_
        self._SyncObj__raftCurrentTerm = max(log_.getCurrentTerm(), log_[-1][2])
        self._SyncObj__votedForNodeId = log_.getVotedForNodeId()
        self._SyncObj__raftCommitIndex = log_.getRaftCommitIndex()
        self._SyncObj__serializer = self._snapshots

    @property
    def transport(self) -> TlsTransport:
        transport: TlsTransport = self._SyncObj__transport
        return transport

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stopping: threading.Event, poll_timeout: float) -> None:
        """Replaces pysyncobj's autoTick thread: syncs before every tick, runs the owner's
        timers, and counts tick exceptions instead of only logging them (stock logs them and
        retries forever with nothing surfaced)."""
        self._loop_thread = threading.get_ident()
        while not stopping.is_set():
            try:
                self._sync_and_flush()
                self._onTick(poll_timeout)
                self._owner._after_tick()
            except DiskFull as e:  # raised by a write SyncObj asked for in the middle of a tick
                self._no_room(str(e))
            except StorageError as e:
                self.failure = self.last_tick_error = str(e)
                self.tick_errors += 1
                log.critical("raft: stopping this member: %s", e)
                break
            except Exception as e:
                self.tick_errors += 1
                self.last_tick_error = f"{type(e).__name__}: {e}"
                if self.tick_errors <= 10 or self.tick_errors % 100 == 0:
                    log.exception("raft: tick failed (%d so far)", self.tick_errors)
                stopping.wait(poll_timeout)
        try:
            if self.failure is None:
                self._sync_and_flush()
        finally:
            self._doDestroy()
            self._snapshots.close()
            if self._wakeup is not None:
                self._wakeup.close()
            self._owner._fail_pending()

    def wake(self) -> None:
        if self._wakeup is not None and threading.get_ident() != self._loop_thread:
            self._wakeup.notify()

    def _before_poll(self) -> None:
        """Group commit, run just before SyncObj polls: a leader sends what it appended this tick
        (or a new commit index) as one AppendEntries per follower, then fdatasyncs while the
        followers do the same; every node then sends the acknowledgements held for the sync."""
        if self._isLeader() and (self.read_round_due() or self._append_entries_due()):
            self._SyncObj__sendAppendEntries()
        if self._leaving:
            self._remove_departed()
        if self._sync_and_flush() and self._wakeup is not None and self._own_copy_commits():
            # The leader counts its own copy only from the next pass on; when that vote is the one
            # that commits (always, alone in its group), the next pass must not wait for the poll's
            # timeout.
            self._wakeup.notify()

    def _own_copy_commits(self) -> bool:
        """Leader: whether its own copy completes a majority for the entry after the commit index.
        Usually it does not: the followers reply after the leader's sync, and their replies wake
        the loop, so an extra pass (a wake-up per write) would find nothing to commit."""
        if not self._isLeader():
            return False
        following = self.raftCommitIndex + 1
        if following > self._SyncObj__getCurrentLogIndex():
            return False
        others = self._SyncObj__otherNodes
        match = self._SyncObj__raftMatchIndex
        held = 1 + sum(1 for n in others if match.get(n, 0) >= following)
        return held * 2 > len(others) + 1

    def _append_entries_due(self) -> bool:
        """Leader: new entries go out at once. A new commit index goes out at once only when a
        follower waits for it: a command it forwarded (its proposer, or its read barrier, waits
        until the follower has applied it) or a membership change. Otherwise it rides with the
        next AppendEntries (the next write's, or the heartbeat): sent after every commit, it
        cost the leader a message per follower and every follower an apply and its wake-ups on
        the next write's way, just as that write was being answered and the next one sent."""
        sent_last, sent_commit = self._sent
        if self._SyncObj__getCurrentLogIndex() != sent_last:
            return True
        return sent_commit < self._awaited <= int(self.raftCommitIndex)

    def _SyncObj__applyLogEntries(self) -> Any:
        """Leader: a new commit index a follower waits for goes out before the entries are applied
        here, so that the follower applies them meanwhile instead of after. Not one that commits a
        membership change: a member that sees its removal applied may stop at once, and by then
        the leader must have applied it too (and no longer count that member)."""
        if self._isLeader() and self._append_entries_due() and not self._commits_membership():
            self._SyncObj__sendAppendEntries()
        return super()._SyncObj__applyLogEntries()

    def _commits_membership(self) -> bool:
        """Whether the entries committed but not applied yet hold a membership change."""
        log_ = self._journal
        first = int(log_[0][1]) if len(log_) else 0
        return any(log_[i - first][0][:1] == _MEMBERSHIP
                   for i in range(max(int(self.raftLastApplied) + 1, first), int(self.raftCommitIndex) + 1))

    def _checkCommandsToApply(self) -> None:
        awaited = self._awaited_queued
        self._awaited_queued = False
        super()._checkCommandsToApply()
        if awaited:
            self._awaited = self._SyncObj__getCurrentLogIndex()

    def _sync_and_flush(self) -> bool:
        """Make the journal durable, then send the acknowledgements held for it. Returns whether
        entries were made durable now."""
        journal = self._journal
        synced = False
        if journal.needs_sync:
            if self.disk_full is not None and self.clock() < self._disk_retry_at:
                self._hold_acks()
                return False
            started = time.monotonic()
            try:
                journal.persist()
            except DiskFull as e:
                self._no_room(str(e))
                self._hold_acks()
                return False
            synced = True
            self._owner.observer.fsync(time.monotonic() - started)
            if self.disk_full is not None:
                log.warning("raft: this member can persist again: it accepts writes and acknowledges "
                            "entries again")
                self.disk_full = None
        acks, self._acks = self._acks, []
        transport = self._SyncObj__transport
        for node, reset, next_idx, success in acks:
            transport.send(node, {"type": "next_node_idx", "next_node_idx": next_idx, "reset": reset,
                                  "success": success, **self.read_echo(node)})
        return synced

    # --- a full disk ------------------------------------------------------------------------

    def _hold_acks(self) -> None:
        """Nothing is acknowledged while it is not on disk. Keep only each peer's latest reply:
        it answers the latest AppendEntries, and the leader resends from where it says."""
        latest: dict[Any, tuple[Any, bool, int, bool]] = {}
        for ack in self._acks:
            latest[ack[0]] = ack
        self._acks = list(latest.values())

    def _no_room(self, why: str) -> None:
        """The journal found no room: log it once for the episode, retry later, and stop
        leading (see _hand_over)."""
        self._disk_retry_at = self.clock() + DISK_FULL_RETRY
        if self.disk_full is None:
            self.disk_full_episodes += 1
            log.error("raft: cannot persist: %s; this member refuses writes and acknowledges nothing "
                      "until it can write again (retrying every %.2f s)", why, DISK_FULL_RETRY)
        self.disk_full = why
        if self._isLeader():
            self._hand_over()

    def _hand_over(self, why: str = "this member cannot persist") -> None:
        """A leader that cannot persist steps down now, before the next commit count (SyncObj
        counts the leader itself toward every commit, and its copy is not on disk), and asks its
        most caught-up follower to stand at once (TimeoutNow), so a member that can persist
        leads after one round trip instead of an election timeout. While the disk stays full
        this member neither votes nor stands (see _onTick and _SyncObj__onMessageReceived).
        A leader about to stop hands over the same way (RaftNode.hand_over): having stepped down
        it appends nothing more, and the TimeoutNow follows every entry it sent on the same link."""
        match = self._SyncObj__raftMatchIndex
        ready = [n for n in self._SyncObj__otherNodes if self.isNodeConnected(n)]
        if ready:
            best = max(ready, key=lambda n: match.get(n, 0))
            self._SyncObj__transport.send(best, {"type": "timeout_now", "term": self.raftCurrentTerm})
        log.log(logging.WARNING if self.disk_full is not None else logging.INFO,
                "raft: stepping down as leader: %s", why)
        self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
        self._SyncObj__raftLeader = None

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if self.disk_full is not None:
            # No election (pre-vote included) while this member could not persist its own vote.
            now = self.clock()
            if self._SyncObj__raftElectionDeadline < now + self.conf.raftMinTimeout:
                self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
            self._SyncObj__transferInProgress = False
        super()._onTick(timeToWait)

    def _refuses_vote(self, message: dict[str, Any]) -> bool:
        """A vote must be on disk before it is sent: with no room, do not vote at all (the
        journal would refuse to record it)."""
        return message["type"] == "request_vote" and self.disk_full is not None

    # --- overrides of SyncObj internals -----------------------------------------------------

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        """Durability: stock acknowledges AppendEntries before anything reached the disk. Hold the
        reply until the journal is fdatasync'd (by _sync_and_flush, right after this poll)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        if success and not reset and self._unanswered == (node, nextNodeIdx):
            return
        self._acks.append((node, reset, nextNodeIdx, success))

    def _SyncObj__sendAppendEntries(self) -> None:
        super()._SyncObj__sendAppendEntries()
        self._sent = (self._SyncObj__getCurrentLogIndex(), self.raftCommitIndex)

    def _SyncObj__onBecomeLeader(self) -> None:
        """Durability: the new leader's no-op must be on disk before the next commit count, which
        always counts the leader itself."""
        self._drop_reads()
        super()._SyncObj__onBecomeLeader()
        try:
            self._journal.sync()
        except DiskFull as e:
            self._no_room(str(e))  # steps down again before anything is counted

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:
        """Queue a proposal (ours or forwarded by a follower) and wake the loop at once. Only
        regular and membership commands are admitted: stock would also queue a forwarded VERSION
        command, whose payload it unpickles without restriction."""
        full = command if commandType is None else bytes([commandType]) + command
        kind = full[:1]
        admissible = (
            (kind == _REGULAR and len(full) <= wire.MAX_COMMAND_BYTES + 1)
            or (kind == _MEMBERSHIP and parse_change(full[1:]) is not None)
        )
        if not admissible:
            self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)
            return
        super()._applyCommand(full, callback)
        if isinstance(callback, tuple) or kind == _MEMBERSHIP:  # forwarded by a follower: (node, id)
            self._awaited_queued = True  # set after queueing: the loop's next take sees it
        self.wake()

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        kind = command[:1]
        if kind == _REGULAR:
            return self._apply_regular(command[1:])
        if kind == _VERSION:
            return None  # never proposed by us; stock would unpickle it without restriction
        if kind == _MEMBERSHIP:
            self._owner._applied_membership(parse_change(command[1:]))
            self.members_changed()
        return super()._SyncObj__doApplyCommand(command)

    def _apply_regular(self, payload: bytes) -> Any:
        index = self.raftLastApplied + 1  # SyncObj applies entry lastApplied+1, then increments
        try:
            command = wire.loads(payload)
        except Exception as e:
            log.error("raft: entry %d is not a plain-data command: %s", index, e)
            return _ApplyFailure(f"undecodable command: {e}")
        if command is None:
            return None  # read barrier
        return self._guarded_apply(command, index)

    def _guarded_apply(self, command: Any, index: int) -> Any:
        """An exception escaping apply halts the state machine on every node, for good
        (stock retries the same entry forever). Catch it, log it, return an error result and
        go on: every node does the same for the same entry, so states stay identical."""
        try:
            return self._owner.state_machine.apply(command, index)
        except Exception as e:
            self._owner.apply_errors += 1
            log.exception("raft: applying entry %d raised; recorded as a failed command", index)
            return _ApplyFailure(f"{type(e).__name__}: {e}")

    def compact_now(self) -> None:
        """Snapshot and compact at the next tick, whatever the thresholds and this member's turn
        (``logCompactionSplit`` would otherwise wait for this member's slot)."""
        self._compact_now = True
        self.forceLogCompaction()

    def _over_entry_budget(self) -> bool:
        """Whether the log has outgrown this member's share of the entry threshold. Turns
        (``logCompactionSplit``) pace snapshots by time: stock waits for this member's turn even
        past the threshold, so a busy log grew for minutes (every entry held in memory and
        replayed at a restart). Past the threshold a member snapshots at once; the threshold
        grows by a third per member in id order, so that members do not all fork together. Only
        applied entries count: a snapshot cannot compact the others away."""
        conf = self._SyncObj__conf
        if not len(self._journal):
            return False
        ids = sorted(n.id for n in (self._SyncObj__otherNodes | {self._SyncObj__selfNode}))
        share = 1.0 + ids.index(self._SyncObj__selfNode.id) / (3 * len(ids))
        applied = int(self._SyncObj__raftLastApplied) - int(self._journal[0][1])
        return applied > int(conf.logCompactionMinEntries) * share

    def _SyncObj__tryLogCompaction(self) -> None:
        conf = self._SyncObj__conf
        if not self._compact_now and not self._over_entry_budget():
            super()._SyncObj__tryLogCompaction()
            return
        split = conf.logCompactionSplit
        conf.logCompactionSplit = False
        try:
            super()._SyncObj__tryLogCompaction()
        finally:
            conf.logCompactionSplit = split
        if not self._SyncObj__forceLogCompaction:
            self._compact_now = False  # the snapshot started (or nothing was new to snapshot)

    def _SyncObj__getEntries(self, fromIDx: int | None, count: int | None = None,
                             maxSizeBytes: int | None = None) -> list[Any]:
        """Stock's batch rule, but stock slices the whole rest of the log before cutting the batch
        at ``maxSizeBytes``: the journal reads older commands from disk, so only what is sent."""
        journal = self._journal
        first = journal[0][1]
        if fromIDx is None or fromIDx < first:
            return []
        return journal.entries(fromIDx - first, count, maxSizeBytes)

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:
        """Compact only up to the snapshot's own entry, and only while the log still holds
        it with at least one entry after. Stock deletes blindly: after a truncation raced the
        snapshot it emptied the log and every later tick raised IndexError."""
        log_ = self._journal
        pair = self._snapshots.pair
        pos = toIDx - log_[0][1]
        if pair is None or pair[0][1] != toIDx or not 0 <= pos < len(log_) - 1 or log_[pos] != pair[0]:
            log.warning("raft: skipping log compaction to %d: the log no longer matches the snapshot", toIDx)
            return
        try:
            super()._SyncObj__deleteEntriesTo(toIDx)
        except DiskFull as e:  # the journal is kept whole; the next snapshot compacts it
            log.warning("raft: skipping log compaction to %d: %s", toIDx, e)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        """Pre-vote messages and leader stickiness are handled by PreVoteMixin (next in line)."""
        kind = message["type"]
        if self._refuses_vote(message):
            return
        redundant_ack = None
        if kind == "append_entries":
            if self._only_commits(node, message) and not self.asks_read_echo(node, message):
                self._unanswered = (node, message["prevLogIdx"] + 1)
            trimmed = self._trim_append_entries(message)
            if trimmed is None:
                return
            message, redundant_ack = trimmed
            self._accept_read_seq(node, message)
        before = self._SyncObj__raftNextIndex.get(node) if kind == "next_node_idx" else None
        try:
            super()._SyncObj__onMessageReceived(node, message)
        except DiskFull as e:
            # A vote (or a truncation) that found no room: this message goes unanswered, but the
            # link stays (the transport drops a peer whose message raised).
            self._no_room(str(e))
            return
        finally:
            self._unanswered = None
        if before is not None:
            self._keep_next_index(node, message, before)
        if kind == "next_node_idx":
            self._read_echo(node, message)
        if redundant_ack is not None:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=redundant_ack, success=True)

    def _only_commits(self, node: Any, message: dict[str, Any]) -> bool:
        """Follower: whether an AppendEntries from our leader carries no entry and only moves the
        commit index on, over a log that ends where the leader's does. Stock answers it like any
        other, though the answer tells the leader nothing new (this log's end was acknowledged
        with the entries): a reply and a pass of the leader's loop per follower, on the next
        write's way. The replies the leader's check-quorum counts keep coming: every entry is
        answered, and so is every heartbeat but one carrying a new commit index (never two in a
        row: the commit index moves only after entries, which are answered)."""
        return (not message.get("entries") and "serialized" not in message
                and message["term"] == self.raftCurrentTerm and node == self._SyncObj__raftLeader
                and message.get("prevLogIdx") == self._SyncObj__getCurrentLogIndex()
                and message.get("prevLogTerm") == self._SyncObj__getCurrentLogTerm()
                and message["commit_index"] > self.raftCommitIndex)

    def _keep_next_index(self, node: Any, message: dict[str, Any], before: int) -> None:
        """Leader: a success reply to an earlier batch sets nextIndex to that batch's end,
        moving it back below batches still in flight, which are then sent again. Keep the max."""
        next_index = self._SyncObj__raftNextIndex
        if message["success"] and not message["reset"] and node in next_index and next_index[node] < before:
            next_index[node] = before

    def _trim_append_entries(self, message: dict[str, Any]) -> tuple[dict[str, Any], int | None] | None:
        """Follower: stock deletes every entry after prevLogIdx before appending, so a
        re-sent batch truncates entries already held (applied ones included). Raft truncates only
        at a real conflict: drop the leading entries we already hold with the same term, so SyncObj
        truncates only from the first conflicting entry. If we hold them all, pass SyncObj a
        heartbeat (commit index capped at the batch end) and acknowledge the batch ourselves.
        Returns None for a batch that is not contiguous (never sent by a correct leader)."""
        entries = message.get("entries")
        if not entries or message["term"] < self.raftCurrentTerm:
            return message, None
        prev = message["prevLogIdx"]
        if prev is None or any(e[1] != prev + 1 + i for i, e in enumerate(entries)):
            log.warning("raft: ignoring an AppendEntries with non-contiguous entries")
            return None
        log_ = self._journal
        first, last = log_[0][1], log_[-1][1]
        held = 0
        for _, idx, term in entries:
            # Entries below our first one were compacted after being applied: they match.
            if idx > last or (idx >= first and log_[idx - first][2] != term):
                break
            held += 1
        if held == 0:
            return message, None
        if held < len(entries):
            keep = entries[held:]
            return {**message, "entries": keep, "prevLogIdx": entries[held - 1][1],
                    "prevLogTerm": entries[held - 1][2]}, None
        end = entries[-1][1]
        heartbeat = {k: v for k, v in message.items() if k not in ("entries", "prevLogIdx", "prevLogTerm")}
        heartbeat["commit_index"] = min(message["commit_index"], end)
        return heartbeat, end + 1

def _make_conf(timing: RaftTiming, tuning: RaftTuning, snapshot_path: str) -> SyncObjConf:
    return SyncObjConf(
        autoTick=False,                 # RaftNode's loop drives the ticks
        # Batching on: SyncObj then never sends per command; _before_poll sends each tick's
        # appends as one AppendEntries, so writes go out at once when idle and coalesce under load.
        appendEntriesUseBatch=True,
        appendEntriesPeriod=timing.heartbeat,
        raftMinTimeout=timing.election_min,
        raftMaxTimeout=timing.election_max,
        leaderFallbackTimeout=timing.leader_fallback,
        commandsWaitLeader=COMMANDS_WAIT_LEADER,
        connectionTimeout=CONNECTION_IDLE_TIMEOUT,
        connectionRetryTime=CONNECTION_RETRY,
        tcp_keepalive=TCP_KEEPALIVE,
        appendEntriesBatchSizeBytes=APPEND_ENTRIES_BATCH_BYTES,
        sendBufferSize=SOCKET_BUFFER_BYTES,
        recvBufferSize=SOCKET_BUFFER_BYTES,
        dynamicMembershipChange=True,
        # A journal without a dump is unrecoverable after compaction. DurableJournal is
        # installed in place of journalFile (which would build the mmap FileJournal); the dump
        # file is the SnapshotStore's, always set alongside it.
        journalFile=None,
        fullDumpFile=snapshot_path,
        logCompactionMinEntries=tuning.snapshot_entries,
        logCompactionMinTime=tuning.snapshot_interval,
        logCompactionSplit=True,        # members snapshot in turns, not all at once
        logCompactionBatchSize=SNAPSHOT_CHUNK_BYTES,
        maxBindRetries=1,
        pollerType="poll",
    )


def _align_journal(journal: DurableJournal, snapshots: SnapshotStore) -> None:
    """A crash between a snapshot's rename and the journal's compaction leaves a journal that
    starts before the snapshot. SyncObj then replaces the whole journal with the snapshot's two
    entries, dropping every entry after them (acknowledged ones included). Compact it first."""
    head = snapshots.read_header()
    if head is None or len(journal) == 0:
        return
    prev = tuple(head["prev"])
    first = journal[0][1]
    if first > prev[1]:
        raise RuntimeError(f"raft data is inconsistent: the journal starts at {first}, "
                           f"after the snapshot's entry {prev[1]}")
    pos = prev[1] - first
    if 0 < pos < len(journal) - 1 and journal[pos] == prev:
        journal.deleteEntriesTo(pos)


class RaftNode:
    """One manager's member of the raft group. Thread-safe; see the module docstring."""

    def __init__(self, *, self_addr: str, members: list[str], data_dir: str, tls: TLSConfig,
                 state_machine: StateMachine, timing: RaftTiming = RaftTiming(),
                 tuning: RaftTuning = RaftTuning(), clock: Callable[[], float] = time.monotonic,
                 observer: RaftObserver = RaftObserver(), read_index_ready: Callable[[], bool] = lambda: True) -> None:
        """``clock`` is read wherever this library measures time (proposal deadlines, election
        stickiness, handshake and snapshot timeouts). pysyncobj's own election timers read
        time.monotonic, so a clock handed in must keep its pace and epoch (e.g. a test's offset).
        ``read_index_ready``: whether every member runs a release that reads the read-index
        fields (see ``readindex``); asked on the raft thread, at most once a second."""
        check_addr(self_addr)
        for m in members:
            check_addr(m)
        self.self_addr = self_addr
        self.clock = clock
        self.tls = tls
        self.state_machine = state_machine
        self.timing = timing
        self.tuning = tuning
        self.observer = observer
        self.read_index_ready = read_index_ready
        self.data_dir = data_dir
        self.apply_errors = 0
        self._members_arg = sorted(set(members) | {self_addr})
        self._sync: _RaftSyncObj | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._deadline_lock = threading.Lock()
        self._deadlines: list[tuple[float, int, Future[Any]]] = []
        self._seq = itertools.count()
        self._calls: deque[Callable[[], None]] = deque()
        self._barrier_lock = threading.Lock()
        self._barrier_running = False
        self._barrier_waiting: Future[None] | None = None
        self._barrier_timeout = 0.0
        self._membership_lock = threading.Lock()
        # Set while the committed membership, as applied here, leaves this member out: a member
        # that is being removed waits on it to know the others no longer count it before it stops.
        self.removed = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        journal = DurableJournal(os.path.join(self.data_dir, "raft.journal"),
                                 os.path.join(self.data_dir, "raft.meta"))
        try:
            snapshots = SnapshotStore(os.path.join(self.data_dir, "raft.snapshot"),
                                      self.state_machine.snapshot, self.state_machine.restore,
                                      SNAPSHOT_CHUNK_BYTES, backlog=self._backlog, clock=self.clock,
                                      on_written=self.observer.snapshot)
            _align_journal(journal, snapshots)
            persisted = journal.get_members()
            members = persisted or self._members_arg
            others = [m for m in members if m != self.self_addr]
            conf = _make_conf(self.timing, self.tuning, snapshots.path)
            try:
                self._sync = _RaftSyncObj(self, self.self_addr, others, conf, journal, snapshots)
            except SyncObjException as e:  # SyncObj's only failure here: the port could not be bound
                raise OSError(f"cannot listen on the raft address {self.self_addr}") from e
        except BaseException:
            journal._destroy()
            raise
        if persisted is None:
            journal.set_members(members)
        poll = min(self.timing.heartbeat / 2, 0.05)
        self._thread = threading.Thread(target=self._sync.run, args=(self._stopping, poll),
                                        name=f"raft-{self.self_addr}", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """Whether ``stop`` was called: nothing this member holds will change any more."""
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        if self._sync is not None:
            self._sync.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._fail_pending()

    def _fail_pending(self) -> None:
        """The loop is gone: proposals still waiting will never hear back."""
        with self._deadline_lock:
            pending, self._deadlines = self._deadlines, []
        for _, _, fut in pending:
            self._fail(fut, UnknownOutcome())

    def _require(self) -> _RaftSyncObj:
        so = self._sync
        if so is not None and so.failure is not None:
            raise StorageFailed(f"this member's raft storage failed: {so.failure}")
        if so is None or self._stopping.is_set():
            raise NoLeader()
        return so

    def _require_room(self) -> None:
        """Writes only where they can be persisted: a member out of disk space refuses them at
        once (it could not acknowledge them; reads and barriers still go through it)."""
        so = self._sync
        why = so.disk_full if so is not None else None
        if why is not None:
            raise StorageFull(why)

    def _backlog(self, node: Any) -> int:
        return self._sync.transport.backlog(node) if self._sync is not None else 0

    # --- loop hooks (run on the raft thread) ---------------------------------------------------

    def _after_tick(self) -> None:
        now = self.clock()
        expired = []
        with self._deadline_lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                expired.append(heapq.heappop(self._deadlines)[2])
        for fut in expired:
            self._fail(fut, UnknownOutcome())
        if self._sync is not None:
            self._sync.serve_reads()
        while self._calls:
            self._calls.popleft()()

    def _applied_membership(self, change: list[str] | None) -> None:
        if change is not None and change[1] == self.self_addr:
            if change[0] == "rem":
                self.removed.set()
            else:
                self.removed.clear()

    def call_in_loop(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the raft thread (SyncObj's state is only safe to touch there)."""
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except Exception as e:
                fut.set_exception(e)

        so = self._require()
        self._calls.append(run)
        so.wake()
        return fut

    def compact(self) -> None:
        """Take a snapshot and compact the journal to it as soon as possible (not waiting for the
        thresholds or this member's turn): see ``compacted_to`` for when it is done."""
        self.call_in_loop(self._require().compact_now)

    def compacted_to(self) -> int:
        """The first raft index the journal still holds (every entry before is only in the snapshot)."""
        journal = self._require()._journal
        return int(journal[0][1]) if len(journal) else 0

    # --- proposals ----------------------------------------------------------------------------

    @staticmethod
    def _fail(fut: Future[Any], exc: BaseException) -> None:
        if not fut.done():
            try:
                fut.set_exception(exc)
            except InvalidStateError:
                pass  # resolved or cancelled meanwhile

    def _resolve(self, fut: Future[Any], result: Any, err: int) -> None:
        if fut.done():
            return
        if err == FAIL_REASON.SUCCESS:
            if isinstance(result, _ApplyFailure):
                self._fail(fut, ApplyFailed(f"internal error applying the command: {result.message}"))
                return
            try:
                fut.set_result(result)
            except InvalidStateError:
                pass
        elif err in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
            self._fail(fut, NoLeader())
        elif err == FAIL_REASON.QUEUE_FULL:
            self._fail(fut, Unavailable("the raft proposal queue is full; retry shortly"))
        elif err == FAIL_REASON.REQUEST_DENIED:
            self._fail(fut, Refused("the raft leader refused the request"))
        else:  # DISCARDED, LEADER_CHANGED, UNKNOWN_OUTCOME: it may have been applied
            self._fail(fut, UnknownOutcome())

    def _submit(self, payload: bytes, kind: int, fut: Future[Any], timeout: float) -> None:
        try:
            so = self._require()
        except Unavailable as e:
            self._fail(fut, e)
            return
        with self._deadline_lock:
            heapq.heappush(self._deadlines, (self.clock() + timeout, next(self._seq), fut))
        so._applyCommand(payload, functools.partial(self._resolve, fut), kind)

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            payload = _encode_command(command)
        except InvalidCommand as e:
            fut.set_exception(e)
            return fut
        except Exception as e:  # not picklable at all
            fut.set_exception(InvalidCommand(f"invalid raft command: {e}"))
            return fut
        try:
            self._require_room()
        except StorageFull as e:
            fut.set_exception(e)
            return fut
        self._submit(payload, _COMMAND_TYPE.REGULAR, fut, timeout)
        return fut

    def propose(self, command: dict[str, Any], timeout: float) -> Any:
        return self._wait(self.propose_async(command, timeout), timeout)

    def _wait(self, fut: Future[Any], timeout: float) -> Any:
        try:
            # The loop fails the future at its deadline; the margin only covers a stuck loop.
            return fut.result(timeout + 1.0)
        except FutureTimeout:
            raise UnknownOutcome() from None

    def read_barrier(self, timeout: float) -> None:
        """Linearizable read point: once it returns, local state reflects every write
        acknowledged before this call started (see ``read_barrier_async``)."""
        self._wait(self.read_barrier_async(timeout), timeout)

    def read_barrier_async(self, timeout: float) -> Future[None]:
        """``read_barrier`` without blocking: the future is resolved once the read point is
        applied here (or failed with the raft error), on the raft thread. On the leader the read
        point is its commit index, confirmed by a round of AppendEntries (see ``readindex``);
        elsewhere, or when that cannot answer, a no-op entry."""
        done: Future[None] = Future()
        if self._lone_and_full():
            done.set_result(None)
            return done
        so = self._sync
        if so is None or not so._isLeader():
            return self._barrier_entry(timeout)
        with self._deadline_lock:
            heapq.heappush(self._deadlines, (self.clock() + timeout, next(self._seq), done))

        def begin() -> None:
            if not so.begin_read(done):
                self._barrier_entry(timeout).add_done_callback(functools.partial(self._pass_on, done))

        try:
            self.call_in_loop(begin)
        except Unavailable as e:
            self._fail(done, e)
        return done

    def _pass_on(self, target: Future[None], source: Future[Any]) -> None:
        """Resolve ``target`` as ``source`` was: failed with its error, else done."""
        exc = source.exception()
        if exc is not None:
            self._fail(target, exc)
        elif not target.done():
            try:
                target.set_result(None)
            except InvalidStateError:
                pass

    def _barrier_entry(self, timeout: float) -> Future[None]:
        """A read point through the log: a no-op entry proposed after this call started, applied
        here. Concurrent callers share the next one."""
        with self._barrier_lock:
            if self._barrier_waiting is None:
                self._barrier_waiting = Future()
                self._barrier_timeout = timeout
            else:
                self._barrier_timeout = max(self._barrier_timeout, timeout)
            fut = self._barrier_waiting
            launch = not self._barrier_running
        if launch:
            self._launch_barrier()
        return fut

    def _lone_and_full(self) -> bool:
        """A lone member out of disk space cannot write a barrier, and no write can be acknowledged
        anywhere meanwhile: once it has applied everything committed, its state is current."""
        so = self._sync
        if so is None or so.disk_full is None:
            return False
        st = self.status()
        return st.members == [self.self_addr] and st.last_applied >= st.commit_index

    def _launch_barrier(self) -> None:
        with self._barrier_lock:
            group = self._barrier_waiting
            if group is None or self._barrier_running:
                return
            self._barrier_waiting = None
            self._barrier_running = True
            timeout = self._barrier_timeout
        inner: Future[Any] = Future()
        inner.add_done_callback(functools.partial(self._barrier_done, group))
        self._submit(_BARRIER, _COMMAND_TYPE.REGULAR, inner, timeout)

    def _barrier_done(self, group: Future[None], inner: Future[Any]) -> None:
        self._pass_on(group, inner)
        with self._barrier_lock:
            self._barrier_running = False
        self._launch_barrier()

    def wait_ready(self, timeout: float) -> bool:
        """True once a read barrier succeeds: local state has caught up with the leader's commit."""
        deadline = self.clock() + timeout
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            try:
                self.read_barrier(min(remaining, max(1.0, self.timing.election_max * 2)))
                return True
            except (Unavailable, UnknownOutcome):
                time.sleep(min(0.05, max(0.0, deadline - self.clock())))

    # --- status ------------------------------------------------------------------------------

    def status(self) -> RaftStatus:
        so = self._sync
        if so is None:
            return RaftStatus(None, False, 0, 0, 0, list(self._members_arg), set())
        leader = so._getLeader()
        members = so.members()
        return RaftStatus(
            leader=leader.address if leader is not None else None,
            is_leader=so._isLeader(),
            term=so.raftCurrentTerm,
            commit_index=so.raftCommitIndex,
            last_applied=so.raftLastApplied,
            members=members,
            reachable={self.self_addr} | {n.address for n in so.otherNodes
                                          if n.address in members and so.isNodeConnected(n)},
            tick_errors=so.tick_errors,
            last_tick_error=so.last_tick_error,
            apply_errors=self.apply_errors,
            rejected_peers=so.transport.rejected,
            pre_vote_rounds=so.pre_votes_sent,
            disk_full=so.disk_full or "",
            disk_full_episodes=so.disk_full_episodes,
            snapshot_disk_full=self._snapshot_full(so),
            snapshot_index=self._snapshot_index(so),
        )

    @staticmethod
    def _snapshot_index(so: _RaftSyncObj) -> int:
        pair = so._snapshots.pair
        return int(pair[1][1]) if pair is not None else 0

    @staticmethod
    def _snapshot_full(so: _RaftSyncObj) -> str:
        snapshots: SnapshotStore = so._snapshots
        return snapshots.full or ""

    # --- membership ----------------------------------------------------------------------------

    def _change(self, op: str, addr: str, timeout: float) -> None:
        """Propose one membership change (forwarded to the leader if need be) and wait until it is
        applied here. The leader admits one change at a time; a refused change, or one whose
        outcome a leader change hid, is retried until the member list shows it done or the timeout
        passes."""
        deadline = self.clock() + timeout
        payload = encode_change(op, addr)
        while True:
            present = addr in self.status().members
            if present == (op == "add"):
                return
            self._require_room()
            fut: Future[Any] = Future()
            remaining = deadline - self.clock()
            self._submit(payload, _COMMAND_TYPE.MEMBERSHIP, fut, max(remaining, 0.01))
            try:
                self._wait(fut, max(remaining, 0.01))
                return
            except UnknownOutcome:
                if self.clock() >= deadline:
                    raise
            except Refused:
                if self.clock() >= deadline:
                    if op == "rem" and self.status().leader == addr:
                        raise Unavailable("the raft leader could not hand leadership over "
                                                 "before its removal") from None
                    raise Unavailable("another raft membership change is still in progress") from None
            time.sleep(0.05)

    def add_member(self, addr: str, timeout: float) -> None:
        check_addr(addr)
        with self._membership_lock:
            self._change("add", addr, timeout)

    def remove_member(self, addr: str, timeout: float) -> None:
        """Remove a member, this node included (a leader hands leadership over first, since
        pysyncobj's leader cannot remove itself)."""
        check_addr(addr)
        deadline = self.clock() + timeout
        with self._membership_lock:
            members = self.status().members
            if addr not in members:
                return
            if members == [addr]:
                raise Refused("cannot remove the last member of the raft group")
            if addr == self.self_addr and self.status().is_leader:
                self.transfer_leadership(max(deadline - self.clock(), 0.01))
            self._change("rem", addr, max(deadline - self.clock(), 0.01))

    def hand_over(self, timeout: float) -> None:
        """If this node leads, stop leading at once and let the most caught-up follower stand, as a
        leader out of disk space does (``_hand_over``); for a member about to stop, even under
        writes. Waits until another member leads: Unavailable after ``timeout``, or at once when no
        other member is reachable (e.g. they are stopping too)."""
        so = self._require()
        if not self.status().is_leader:
            return
        self.call_in_loop(functools.partial(so._hand_over, "this member is stopping"))
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            st = self.status()
            if st.leader is not None and st.leader != self.self_addr:
                return
            if not st.reachable - {self.self_addr}:
                raise Unavailable("no other raft member is reachable to hand leadership over to")
            time.sleep(0.02)
        raise Unavailable("no other raft member took leadership over in time")

    def transfer_leadership(self, timeout: float) -> None:
        """If this node leads, hand leadership to the most caught-up follower and wait for it."""
        so = self._require()
        deadline = self.clock() + timeout
        retry_at = 0.0
        outcome: list[int] = []
        while self.clock() < deadline:
            st = self.status()
            if not st.is_leader:
                if st.leader is not None:
                    return
            elif self.clock() >= retry_at:
                # Denied while no follower has every entry yet: ask again soon. Once sent, give the
                # target an election's time before asking again.
                outcome.clear()
                self.call_in_loop(functools.partial(so.transferLeadership,
                                                    callback=lambda _r, e: outcome.append(e)))
                retry_at = self.clock() + self.timing.election_max
            elif outcome and outcome[0] != FAIL_REASON.SUCCESS:
                retry_at = 0.0
            time.sleep(0.02)
        raise Unavailable("leadership transfer did not complete in time")


