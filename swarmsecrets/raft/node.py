"""The managers' raft group: pysyncobj 0.3.17 (pinned), made durable, secure and fast.

pysyncobj supplies the Raft algorithm. What it lacks or gets wrong (see
``reference/pysyncobj.md``) is fixed here, in our code, by settings, by installing our own
storage and transport into SyncObj, and by overriding its name-mangled internals in
``_RaftSyncObj`` (each override says which defect it fixes):

- durability: ``raft_journal.DurableJournal`` replaces the never-flushed mmap journal. A leader
  appends a batch, sends it, then fdatasyncs it while the followers do the same, and counts
  itself only after its own sync; a follower acknowledges only after its fdatasync. Term and
  vote are fsynced before they are acted on. Snapshots are written by a forked child
  (``raft_journal.SnapshotStore``) with fsync + directory fsync.
- security: ``raft_transport.TlsTransport`` (mutual TLS, manager certificates of this cluster,
  address bound to the certificate) and ``raft_wire`` (restricted unpickling, frame cap).
- latency: our own loop drives SyncObj's tick; a proposal wakes it through a pipe, the queue is
  drained, appended and sent as one AppendEntries per follower with one fdatasync, and replies
  are handled as they arrive.
- membership: one change at a time (checked on the leader), addresses as plain strings, the
  member list persisted; a removal takes effect on the leader when committed, so the removed
  member learns it (and can remove itself).
- elections: pre-vote with leader stickiness (thesis §9.6, ``_RaftSyncObj._pre_vote_tick``): a
  node whose election timer fires first asks for pre-votes without touching its term, so a member
  that rejoins after a partition or a restart cannot depose a healthy leader.
- errors: no leader -> errors.Unavailable(NO_LEADER) at once; sent but unconfirmed ->
  errors.DeadlineExceeded(UNKNOWN_OUTCOME); an exception in apply -> errors.SwarmError (INTERNAL)
  for the proposer, the same on every member, and the log goes on.
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

import grpc
from pysyncobj import SyncObj, SyncObjConf, SyncObjException
from pysyncobj.config import FAIL_REASON
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _COMMAND_TYPE, _RAFT_STATE

from swarmsecrets import errors
from swarmsecrets.manager import raft_wire
from swarmsecrets.manager.raft_journal import DurableJournal, SnapshotStore, StorageError
from swarmsecrets.manager.raft_transport import TlsTransport

log = logging.getLogger(__name__)

_REGULAR = bytes([_COMMAND_TYPE.REGULAR])
_MEMBERSHIP = bytes([_COMMAND_TYPE.MEMBERSHIP])
_VERSION = bytes([_COMMAND_TYPE.VERSION])
_NO_OP = bytes([_COMMAND_TYPE.NO_OP])
_BARRIER = raft_wire.dumps(None)  # a regular entry that reaches no state machine

# Settings that fix defects of the stock configuration (module-level so tests can show the
# defect by restoring the stock value).
# §7.2: stock chunks any entry >= 64 KiB and ends the chunks too early; with 4 MiB batches and a
# command cap of 1 MiB (raft_wire.MAX_COMMAND_BYTES) the chunked path is never taken (and a
# chunked frame from a peer is refused by raft_wire.valid_message).
APPEND_ENTRIES_BATCH_BYTES = 4 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# §7.4: stock drops a link that received nothing for 3.5 s on its first send, losing the first
# RequestVote between idle followers; dead peers are found by keepalive (TCP_KEEPALIVE) instead.
CONNECTION_IDLE_TIMEOUT = 365 * 24 * 3600.0
TCP_KEEPALIVE = (2, 1, 3)  # idle s, interval s, probes: a vanished peer is dropped after ~5 s
# With no leader, fail proposals at once (NO_LEADER) rather than queueing them until timeout.
COMMANDS_WAIT_LEADER = False
CONNECTION_RETRY = 0.2
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
# Pre-vote (thesis §9.6): False restores stock elections (term+1 and RequestVote as soon as the
# election timer fires), so a rejoining or restarted member deposes the leader.
PRE_VOTE = True


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


@dataclass(frozen=True)
class RaftTLS:
    server_ctx: ssl.SSLContext
    client_ctx: ssl.SSLContext
    cluster_id: str  # peers must present OU swarm-manager, O == cluster_id and a matching raft SAN


class StateMachine(Protocol):
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
    tick_errors: int = 0           # exceptions caught in the raft loop (§7.13)
    last_tick_error: str = ""
    apply_errors: int = 0          # commands whose apply raised (§7.9)
    rejected_peers: int = 0        # raft connections refused (TLS, identity, protocol)


@dataclass(frozen=True)
class _ApplyFailure:
    message: str


class _Refused(errors.FailedPrecondition):
    """The leader refused a membership change (one is pending, or it changes nothing)."""


def _check_addr(addr: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"raft address {addr!r} is not HOST:PORT")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        raise ValueError(f"raft address {addr!r} must name one interface, not a wildcard")


def _encode_command(command: dict[str, Any]) -> bytes:
    if not isinstance(command, dict):
        raise TypeError("a raft command is a dict")
    payload = raft_wire.dumps(command)
    if len(payload) > raft_wire.MAX_COMMAND_BYTES:
        raise ValueError(f"raft command of {len(payload)} bytes exceeds {raft_wire.MAX_COMMAND_BYTES}")
    raft_wire.loads(payload)  # plain data only: what every node's restricted unpickler accepts
    return payload


def _parse_membership(payload: bytes) -> list[str] | None:
    try:
        request = raft_wire.loads(payload)
    except Exception:
        return None
    if (isinstance(request, list) and len(request) == 2 and request[0] in ("add", "rem")
            and isinstance(request[1], str)):
        try:
            _check_addr(request[1])
        except ValueError:
            return None
        return request
    return None


class _Wakeup:
    """A pipe on pysyncobj's poller that ends poll() when a proposal is queued. (Stock notices a
    proposal only at the next tick, and its own PipeNotifier raises once the pipe is full.)"""

    def __init__(self, poller: Any) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()  # no write may race close() onto a reused descriptor
        self._closed = False
        poller.subscribe(self._r, self._drain, POLL_EVENT_TYPE.READ)

    def notify(self) -> None:
        with self._lock:
            if self._closed:
                return
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

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class _RaftSyncObj(SyncObj):
    """SyncObj with our storage, transport, loop and fixes (pysyncobj==0.3.17 internals)."""

    def __init__(self, owner: RaftNode, self_addr: str, others: list[str], conf: SyncObjConf,
                 journal: DurableJournal, snapshots: SnapshotStore) -> None:
        # Set before SyncObj.__init__: TlsTransport reads raft_tls while SyncObj builds it.
        self.raft_tls = owner.tls
        self._owner = owner
        self._journal = journal
        self._snapshots = snapshots
        self._acks: list[tuple[Any, bool, int, bool]] = []
        self._appending_removal = False
        self._leaving: dict[str, float] = {}  # removed members still sent the log (leader)
        self._sent = (0, -1)  # (last log index, commit index) of the last AppendEntries round
        self._wakeup: _Wakeup | None = None
        self._loop_thread = 0
        self.tick_errors = 0
        self.last_tick_error = ""
        self.failure: str | None = None  # set when storage failed and the loop stopped for good
        # Pre-vote state: when an AppendEntries of a current leader last arrived (stickiness), the
        # round in progress (its term and the members that granted) and whether it won.
        self._leader_seen = -1e18
        self._prevote: tuple[int, set[Any]] | None = None
        self._prevote_won = False
        super().__init__(self_addr, others, conf=conf, transportClass=TlsTransport)
        self._install_storage()
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
        return self._SyncObj__transport

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stopping: threading.Event, poll_timeout: float) -> None:
        """Replaces pysyncobj's autoTick thread: syncs before every tick, runs the owner's
        timers, and counts tick exceptions instead of only logging them (§7.13)."""
        self._loop_thread = threading.get_ident()
        while not stopping.is_set():
            try:
                self._sync_and_flush()
                self._onTick(poll_timeout)
                self._owner._after_tick()
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
        if self._isLeader() and (self._SyncObj__getCurrentLogIndex(), self.raftCommitIndex) != self._sent:
            self._SyncObj__sendAppendEntries()
        if self._leaving:
            self._remove_departed()
        self._sync_and_flush()

    def _sync_and_flush(self) -> None:
        if self._journal.needs_sync:
            self._journal.sync()
        acks, self._acks = self._acks, []
        for node, reset, next_idx, success in acks:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=reset, nextNodeIdx=next_idx, success=success)

    # --- pre-vote (thesis §9.6) ---------------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if PRE_VOTE:
            self._pre_vote_tick()
        super()._onTick(timeToWait)

    def _pre_vote_tick(self) -> None:
        """Runs before SyncObj._onTick, which starts an election (term+1, persisted, RequestVote)
        once the election deadline passed. Unless a pre-vote round just won (or the leader asked
        for the election with TimeoutNow), push the deadline out by a fresh election timeout and
        send a pre-vote round instead; a majority of grants sets the deadline to 0 so the next
        tick runs SyncObj's election. Term, vote and state are left untouched here."""
        if (self._SyncObj__raftState == _RAFT_STATE.LEADER or self.selfNode is None
                or not self._SyncObj__transport.ready):
            return
        now = time.monotonic()
        deadline = float(self._SyncObj__raftElectionDeadline)  # type: ignore[has-type]
        if deadline >= now or self._SyncObj__transferInProgress:
            return
        if not self._SyncObj__connectedToAnyone():
            return  # SyncObj does not start an election either
        if self._prevote_won:
            self._prevote_won = False  # SyncObj starts the real election in this tick
            self._prevote = None
            return
        others = self._SyncObj__otherNodes
        if not others:
            return  # a single member is its own majority
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        term = self.raftCurrentTerm + 1
        self._prevote = (term, {self.selfNode})
        message = {"type": "pre_vote", "term": term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in others:
            self._SyncObj__transport.send(node, message)

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        """Answer a pre-vote without changing our term or vote: grant iff the term is ahead of ours,
        no current leader was heard from within the minimum election timeout (a leader never
        grants), and the candidate's log is at least as up-to-date as ours."""
        my_term = self.raftCurrentTerm
        last_term, last_idx = self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()
        granted = (
            message["term"] > my_term
            and self._SyncObj__raftState != _RAFT_STATE.LEADER
            and time.monotonic() - self._leader_seen >= self.conf.raftMinTimeout
            and (message["last_log_term"], message["last_log_index"]) >= (last_term, last_idx)
        )
        self._SyncObj__transport.send(node, {"type": "pre_vote_response", "term": message["term"],
                                             "granted": granted, "current_term": my_term})

    def _on_pre_vote_response(self, node: Any, message: dict[str, Any]) -> None:
        if not message["granted"] and message["current_term"] > self.raftCurrentTerm:
            # Our term is stale (Raft: any higher term makes us a follower of that term).
            self._prevote = None
            self._SyncObj__setCurrentTerm(message["current_term"], None)
            self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
            self._SyncObj__raftLeader = None
            return
        round_ = self._prevote
        if (round_ is None or not message["granted"] or message["term"] != round_[0]
                or round_[0] != self.raftCurrentTerm + 1
                or self._SyncObj__raftState == _RAFT_STATE.LEADER):
            return
        round_[1].add(node)
        voters = {self.selfNode} | set(self._SyncObj__otherNodes)
        if len(round_[1] & voters) > len(voters) / 2:
            self._prevote = None
            self._prevote_won = True
            self._SyncObj__raftElectionDeadline = 0

    # --- overrides of SyncObj internals -----------------------------------------------------

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        """Durability: stock acknowledges AppendEntries before anything reached the disk. Hold the
        reply until the journal is fdatasync'd (by _sync_and_flush, right after this poll)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        self._acks.append((node, reset, nextNodeIdx, success))

    def _SyncObj__sendAppendEntries(self) -> None:
        super()._SyncObj__sendAppendEntries()
        self._sent = (self._SyncObj__getCurrentLogIndex(), self.raftCommitIndex)

    def _SyncObj__onBecomeLeader(self) -> None:
        """Durability: the new leader's no-op must be on disk before the next commit count, which
        always counts the leader itself."""
        super()._SyncObj__onBecomeLeader()
        self._journal.sync()

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:
        """Queue a proposal (ours or forwarded by a follower) and wake the loop at once. Only
        regular and membership commands are admitted: stock would also queue a forwarded VERSION
        command, whose payload it unpickles without restriction."""
        full = command if commandType is None else bytes([commandType]) + command
        kind = full[:1]
        admissible = (
            (kind == _REGULAR and len(full) <= raft_wire.MAX_COMMAND_BYTES + 1)
            or (kind == _MEMBERSHIP and _parse_membership(full[1:]) is not None)
        )
        if not admissible:
            self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)
            return
        super()._applyCommand(full, callback)
        self.wake()

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        kind = command[:1]
        if kind == _REGULAR:
            return self._apply_regular(command[1:])
        if kind == _VERSION:
            return None  # never proposed by us; stock would unpickle it without restriction
        return super()._SyncObj__doApplyCommand(command)

    def _apply_regular(self, payload: bytes) -> Any:
        index = self.raftLastApplied + 1  # SyncObj applies entry lastApplied+1, then increments
        try:
            command = raft_wire.loads(payload)
        except Exception as e:
            log.error("raft: entry %d is not a plain-data command: %s", index, e)
            return _ApplyFailure(f"undecodable command: {e}")
        if command is None:
            return None  # read barrier
        return self._guarded_apply(command, index)

    def _guarded_apply(self, command: Any, index: int) -> Any:
        """§7.9: an exception escaping apply halts the state machine on every node, for good
        (stock retries the same entry forever). Catch it, log it, return an error result and
        go on: every node does the same for the same entry, so states stay identical."""
        try:
            return self._owner.state_machine.apply(command, index)
        except Exception as e:
            self._owner.apply_errors += 1
            log.exception("raft: applying entry %d raised; recorded as a failed command", index)
            return _ApplyFailure(f"{type(e).__name__}: {e}")

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> list[str] | None:
        """Membership entries come from peers: decode them with the restricted unpickler (stock
        unpickles them without restriction) and accept only ['add'|'rem', 'HOST:PORT']."""
        if command[:1] != _MEMBERSHIP:
            return None
        return _parse_membership(command[1:])

    def _SyncObj__changeCluster(self, request: list[str]) -> bool:
        """§7.12: stock never sets __changeClusterIDx, so its one-change-at-a-time guard is dead.
        Record the index the accepted change gets (it is appended right after this returns), so a
        second change is refused until the first is applied. A leader asked to remove itself
        (which pysyncobj refuses) hands leadership over, so the requester's retry succeeds."""
        if request[0] == "rem" and request[1] == self.selfNode.address:
            self.transferLeadership()
            return False
        self._appending_removal = request[0] == "rem"
        try:
            accepted = bool(super()._SyncObj__changeCluster(request))
        finally:
            self._appending_removal = False
        if accepted:
            self._SyncObj__changeClusterIDx = self._SyncObj__getCurrentLogIndex() + 1
        return accepted

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        """Persist the member list whenever it changes, so a restart resumes with it. On the
        leader a removal takes effect when committed, not when appended (as etcd applies
        configuration changes): stock cut the member off at once, so it never learned that its
        removal committed and could not confirm a removal it asked for itself."""
        addr = request[1]
        if self._appending_removal:  # the leader is appending a removal: only check it
            return any(n.address == addr for n in self.otherNodes)
        if self._leave_after_commit(request, reverse):
            return True
        changed = bool(super()._SyncObj__doChangeCluster(request, reverse))
        if changed:
            self._journal.set_members(self.members())
        return changed

    def _leave_after_commit(self, request: Any, reverse: bool) -> bool:
        """Leader applying a committed removal: keep sending the log to the member for one more
        heartbeat, so it learns the commit; _before_poll removes it then."""
        if request[0] != "rem" or reverse or not self._isLeader():
            return False
        if not any(n.address == request[1] for n in self.otherNodes):
            return False
        self._leaving.setdefault(request[1], time.monotonic())
        return True

    def _remove_departed(self) -> None:
        period = self.conf.appendEntriesPeriod
        for addr, since in list(self._leaving.items()):
            if not self._isLeader() or time.monotonic() - since >= period:
                del self._leaving[addr]
                SyncObj._SyncObj__doChangeCluster(self, ["rem", addr])
                self._journal.set_members(self.members())

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:
        """§7.6: compact only up to the snapshot's own entry, and only while the log still holds
        it with at least one entry after. Stock deletes blindly: after a truncation raced the
        snapshot it emptied the log and every later tick raised IndexError."""
        log_ = self._journal
        pair = self._snapshots.pair
        pos = toIDx - log_[0][1]
        if pair is None or pair[0][1] != toIDx or not 0 <= pos < len(log_) - 1 or log_[pos] != pair[0]:
            log.warning("raft: skipping log compaction to %d: the log no longer matches the snapshot", toIDx)
            return
        super()._SyncObj__deleteEntriesTo(toIDx)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pre_vote":
            if self.selfNode is not None:
                self._on_pre_vote(node, message)
            return
        if kind == "pre_vote_response":
            self._on_pre_vote_response(node, message)
            return
        redundant_ack = None
        if kind == "append_entries":
            if message["term"] >= self.raftCurrentTerm:
                # A current leader: refuse pre-votes for a minimum election timeout (stickiness),
                # and drop any pre-vote round of ours (a late majority must not start an election).
                self._leader_seen = time.monotonic()
                self._prevote = None
                self._prevote_won = False
            trimmed = self._trim_append_entries(message)
            if trimmed is None:
                return
            message, redundant_ack = trimmed
        before = self._SyncObj__raftNextIndex.get(node) if kind == "next_node_idx" else None
        super()._SyncObj__onMessageReceived(node, message)
        if before is not None:
            self._keep_next_index(node, message, before)
        if redundant_ack is not None:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=redundant_ack, success=True)

    def _keep_next_index(self, node: Any, message: dict[str, Any], before: int) -> None:
        """§7.5 (leader): a success reply to an earlier batch sets nextIndex to that batch's end,
        moving it back below batches still in flight, which are then sent again. Keep the max."""
        next_index = self._SyncObj__raftNextIndex
        if message["success"] and not message["reset"] and node in next_index and next_index[node] < before:
            next_index[node] = before

    def _trim_append_entries(self, message: dict[str, Any]) -> tuple[dict[str, Any], int | None] | None:
        """§7.5 (follower): stock deletes every entry after prevLogIdx before appending, so a
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

    # --- reads for RaftNode ------------------------------------------------------------------

    def members(self) -> list[str]:
        """The member addresses; a member whose removal committed no longer counts, even while it
        is still sent the log for its last heartbeat."""
        return sorted(({self.selfNode.address} | {n.address for n in self.otherNodes}) - set(self._leaving))


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
        # §7.10: a journal without a dump is unrecoverable after compaction. DurableJournal is
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

    def __init__(self, *, self_addr: str, members: list[str], data_dir: str, tls: RaftTLS,
                 state_machine: StateMachine, timing: RaftTiming = RaftTiming(),
                 tuning: RaftTuning = RaftTuning()) -> None:
        _check_addr(self_addr)
        for m in members:
            _check_addr(m)
        self.self_addr = self_addr
        self.tls = tls
        self.state_machine = state_machine
        self.timing = timing
        self.tuning = tuning
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

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        journal = DurableJournal(os.path.join(self.data_dir, "raft.journal"),
                                 os.path.join(self.data_dir, "raft.meta"))
        try:
            snapshots = SnapshotStore(os.path.join(self.data_dir, "raft.snapshot"),
                                      self.state_machine.snapshot, self.state_machine.restore,
                                      SNAPSHOT_CHUNK_BYTES, backlog=self._backlog)
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
            self._fail(fut, errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME))

    def _require(self) -> _RaftSyncObj:
        so = self._sync
        if so is not None and so.failure is not None:
            raise errors.Unavailable(f"this manager's raft storage failed: {so.failure}")
        if so is None or self._stopping.is_set():
            raise errors.Unavailable(errors.NO_LEADER)
        return so

    def _backlog(self, node: Any) -> int:
        return self._sync.transport.backlog(node) if self._sync is not None else 0

    # --- loop hooks (run on the raft thread) ---------------------------------------------------

    def _after_tick(self) -> None:
        now = time.monotonic()
        expired = []
        with self._deadline_lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                expired.append(heapq.heappop(self._deadlines)[2])
        for fut in expired:
            self._fail(fut, errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME))
        while self._calls:
            self._calls.popleft()()

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
                self._fail(fut, errors.SwarmError(f"internal error applying the command: {result.message}",
                                                  grpc.StatusCode.INTERNAL))
                return
            try:
                fut.set_result(result)
            except InvalidStateError:
                pass
        elif err in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
            self._fail(fut, errors.Unavailable(errors.NO_LEADER))
        elif err == FAIL_REASON.QUEUE_FULL:
            self._fail(fut, errors.Unavailable("the raft proposal queue is full; retry shortly"))
        elif err == FAIL_REASON.REQUEST_DENIED:
            self._fail(fut, _Refused("the raft leader refused the request"))
        else:  # DISCARDED, LEADER_CHANGED, UNKNOWN_OUTCOME: it may have been applied
            self._fail(fut, errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME))

    def _submit(self, payload: bytes, kind: int, fut: Future[Any], timeout: float) -> None:
        try:
            so = self._require()
        except errors.Unavailable as e:
            self._fail(fut, e)
            return
        with self._deadline_lock:
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, next(self._seq), fut))
        so._applyCommand(payload, functools.partial(self._resolve, fut), kind)

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            payload = _encode_command(command)
        except Exception as e:
            fut.set_exception(errors.InvalidArgument(f"invalid raft command: {e}"))
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
            raise errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME) from None

    def read_barrier(self, timeout: float) -> None:
        """Linearizable read point: a no-op entry proposed after this call started is applied
        locally. Concurrent callers share the next barrier (one entry for all of them)."""
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
        self._wait(fut, timeout)

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
        exc = inner.exception()
        if exc is not None:
            self._fail(group, exc)
        elif not group.done():
            group.set_result(None)
        with self._barrier_lock:
            self._barrier_running = False
        self._launch_barrier()

    def wait_ready(self, timeout: float) -> bool:
        """True once a read barrier succeeds: local state has caught up with the leader's commit."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.read_barrier(min(remaining, max(1.0, self.timing.election_max * 2)))
                return True
            except (errors.Unavailable, errors.DeadlineExceeded):
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

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
        )

    # --- membership ----------------------------------------------------------------------------

    def _change(self, op: str, addr: str, timeout: float) -> None:
        """Propose one membership change (forwarded to the leader if need be) and wait until it is
        applied here. The leader admits one change at a time (§7.12); a refused change, or one whose
        outcome a leader change hid, is retried until the member list shows it done or the timeout
        passes."""
        deadline = time.monotonic() + timeout
        payload = raft_wire.dumps([op, addr])
        while True:
            present = addr in self.status().members
            if present == (op == "add"):
                return
            fut: Future[Any] = Future()
            remaining = deadline - time.monotonic()
            self._submit(payload, _COMMAND_TYPE.MEMBERSHIP, fut, max(remaining, 0.01))
            try:
                self._wait(fut, max(remaining, 0.01))
                return
            except errors.DeadlineExceeded:
                if time.monotonic() >= deadline:
                    raise
            except _Refused:
                if time.monotonic() >= deadline:
                    if op == "rem" and self.status().leader == addr:
                        raise errors.Unavailable("the raft leader could not hand leadership over "
                                                 "before its removal") from None
                    raise errors.Unavailable("another raft membership change is still in progress") from None
            time.sleep(0.05)

    def add_member(self, addr: str, timeout: float) -> None:
        _check_addr(addr)
        with self._membership_lock:
            self._change("add", addr, timeout)

    def remove_member(self, addr: str, timeout: float) -> None:
        """Remove a member, this node included (a leader hands leadership over first, since
        pysyncobj's leader cannot remove itself)."""
        _check_addr(addr)
        deadline = time.monotonic() + timeout
        with self._membership_lock:
            members = self.status().members
            if addr not in members:
                return
            if members == [addr]:
                raise errors.FailedPrecondition("cannot remove the last member of the raft group")
            if addr == self.self_addr and self.status().is_leader:
                self.transfer_leadership(max(deadline - time.monotonic(), 0.01))
            self._change("rem", addr, max(deadline - time.monotonic(), 0.01))

    def transfer_leadership(self, timeout: float) -> None:
        """If this node leads, hand leadership to the most caught-up follower and wait for it."""
        so = self._require()
        deadline = time.monotonic() + timeout
        retry_at = 0.0
        outcome: list[int] = []
        while time.monotonic() < deadline:
            st = self.status()
            if not st.is_leader:
                if st.leader is not None:
                    return
            elif time.monotonic() >= retry_at:
                # Denied while no follower has every entry yet: ask again soon. Once sent, give the
                # target an election's time before asking again.
                outcome.clear()
                self.call_in_loop(functools.partial(so.transferLeadership,
                                                    callback=lambda _r, e: outcome.append(e)))
                retry_at = time.monotonic() + self.timing.election_max
            elif outcome and outcome[0] != FAIL_REASON.SUCCESS:
                retry_at = 0.0
            time.sleep(0.02)
        raise errors.Unavailable("leadership transfer did not complete in time")


__all__ = ["RaftNode", "RaftStatus", "RaftTLS", "RaftTiming", "RaftTuning", "StateMachine"]
