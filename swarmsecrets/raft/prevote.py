"""Pre-vote with leader stickiness, grafted onto pysyncobj's elections.

Stock pysyncobj starts an election (term+1, persisted, RequestVote) as soon as a member's
election timer fires. A member that comes back from a partition or a restart, and whose timer
fires before the leader reaches it, then raises every member's term and deposes a healthy
leader. With pre-vote, such a member first asks whether it could win: a member grants only if
it has not heard from a current leader within the minimum election timeout, and only if the
candidate's log is at least as up to date as its own. Only a majority of grants lets the real
election start. Asking and answering change no term and no vote.

A follower whose connection to its leader closes (a leader killed or crashed: its kernel closes
its sockets at once) does not wait out an election timeout: it forgets the leader and asks for
pre-votes after a short random delay. A member that still hears the leader refuses, so a link
that merely reset (or a leader that is only slow) costs no election; a leader that pauses or is
cut off without closing its connections is still found by the election timeout.

Such a leader (paused, or cut off) went silent for every member at about the same moment, but a
member whose timer runs out first may ask one that heard the leader a heartbeat later and still
refuses, for a few milliseconds more. Stock would wait out a whole new election timeout before
asking again; a member refused so soon after it last heard the leader asks once more as soon as
every member's refusal window can have closed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.syncobj import _RAFT_STATE

# False restores stock elections (term+1 and RequestVote as soon as the election timer fires),
# so a rejoining or restarted member deposes the leader. Tests switch it to show the defect.
PRE_VOTE = True
# False restores stock's reaction to a closed connection to the leader (none: the followers wait
# out an election timeout). The delay spreads the survivors' pre-votes apart, so that one of them
# usually stands alone instead of both splitting the vote.
LEADER_LOSS_PREVOTE = True
LEADER_LOSS_DELAY = (0.0, 0.06)
# False: a pre-vote refused by a member still within its refusal window is asked again only after
# a whole new election timeout (stock's pace). The margin, in heartbeats, covers how much later
# than this member another one may have heard the leader.
EARLY_RETRY = True
EARLY_RETRY_HEARTBEATS = 1

log = logging.getLogger(__name__)


class PreVoteMixin(SyncObj):  # type: ignore[misc]  # pysyncobj ships no type information
    """Pre-vote for a SyncObj subclass. The host class sets ``clock`` (the monotonic time source
    of pysyncobj's own timers) before SyncObj.__init__ runs."""

    clock: Callable[[], float]

    def _init_pre_vote(self) -> None:
        # When an AppendEntries of a current leader last arrived (stickiness), the round in
        # progress (its term and the members that granted) and whether it won.
        self._leader_seen = -1e18
        self._prevote: tuple[int, set[Any]] | None = None
        self._prevote_won = False
        self.pre_votes_sent = 0  # pre-vote rounds this member started (tests wait on it)
        self._first_entry = 0  # as a new leader, the index of its no-op until it commits
        # When a current leader was last heard (unlike _leader_seen, kept when its connection
        # closes), and whether the one early retry after a refusal was used since.
        self._leader_heard = -1e18
        self._early_retry_used = False

    def _election_deadline(self) -> float:
        return float(self._SyncObj__raftElectionDeadline)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if PRE_VOTE:
            self._pre_vote_tick()
        super()._onTick(timeToWait)
        if (self._first_entry and self.raftCommitIndex >= self._first_entry
                and self._SyncObj__raftState == _RAFT_STATE.LEADER):
            self._first_entry = 0
            log.info("raft: leading in term %d: its first entry is committed", self.raftCurrentTerm)

    def _SyncObj__onBecomeLeader(self) -> None:
        super()._SyncObj__onBecomeLeader()
        # SyncObj appended its no-op: nothing of this term commits before it (logged once it has).
        self._first_entry = self._SyncObj__getCurrentLogIndex()
        log.info("raft: elected leader in term %d", self.raftCurrentTerm)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        super()._SyncObj__onNodeDisconnected(node)
        if (LEADER_LOSS_PREVOTE and PRE_VOTE and node == self._SyncObj__raftLeader
                and self._SyncObj__raftState == _RAFT_STATE.FOLLOWER and self.selfNode is not None):
            self._leader_lost(node)

    def _leader_lost(self, node: Any) -> None:
        """Our connection to the leader closed: stop counting it as heard (so we grant the other
        members' pre-votes), fail the proposals forwarded to it (their outcome is unknown; the
        proposer retries them by request id) and ask for pre-votes shortly."""
        self._leader_seen = -1e18
        self._SyncObj__raftLeader = None
        self._SyncObj__onLeaderChanged()
        delay = random.uniform(*LEADER_LOSS_DELAY)
        self._SyncObj__raftElectionDeadline = min(self._election_deadline(), self.clock() + delay)
        log.info("raft: connection to the leader %s closed: asking for pre-votes in %.0f ms unless "
                 "it comes back", node.address, delay * 1e3)

    def _pre_vote_tick(self) -> None:
        """Runs before SyncObj._onTick, which starts an election once the election deadline
        passed. Unless a pre-vote round just won (or the leader asked for the election with
        TimeoutNow), push the deadline out by a fresh election timeout and send a pre-vote round
        instead; a majority of grants sets the deadline to 0 so the next tick runs SyncObj's
        election. Term, vote and state are left untouched here."""
        if (self._SyncObj__raftState == _RAFT_STATE.LEADER or self.selfNode is None
                or not self._SyncObj__transport.ready):
            return
        now = self.clock()
        deadline = self._election_deadline()
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
        self.pre_votes_sent += 1
        log.debug("raft: pre-vote for term %d", term)
        message = {"type": "pre_vote", "term": term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in others:
            self._SyncObj__transport.send(node, message)

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        """Answer a pre-vote without changing our term or vote: grant iff the term is ahead of
        ours, no current leader was heard from within the minimum election timeout (a leader
        never grants), and the candidate's log is at least as up to date as ours."""
        my_term = self.raftCurrentTerm
        last_term, last_idx = self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()
        granted = (
            message["term"] > my_term
            and self._SyncObj__raftState != _RAFT_STATE.LEADER
            and self.clock() - self._leader_seen >= self.conf.raftMinTimeout
            and (message["last_log_term"], message["last_log_index"]) >= (last_term, last_idx)
        )
        if granted and LEADER_LOSS_PREVOTE and self._yields_to(node, message):
            # Leave the election to this candidate: drop a round of our own and wait a full
            # election timeout before asking, or both of us would stand and split the vote.
            self._prevote = None
            self._prevote_won = False
            self._SyncObj__raftElectionDeadline = max(
                self._election_deadline(), self.clock() + self._SyncObj__generateRaftTimeout())
        self._SyncObj__transport.send(node, {"type": "pre_vote_response", "term": message["term"],
                                             "granted": granted, "current_term": my_term})

    def _yields_to(self, node: Any, message: dict[str, Any]) -> bool:
        """Whether to leave the election to a candidate we grant: always, unless we are asking
        for pre-votes ourselves (the two requests crossed). Then exactly one of the two yields:
        the one with the older log, or on equal logs the lower address."""
        if self._prevote is None:
            return True
        mine = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex(),
                self.selfNode.address)
        return (message["last_log_term"], message["last_log_index"], node.address) > mine

    def _on_pre_vote_response(self, node: Any, message: dict[str, Any]) -> None:
        if not message["granted"] and message["current_term"] > self.raftCurrentTerm:
            # Our term is stale (Raft: any higher term makes us a follower of that term).
            self._prevote = None
            self._SyncObj__setCurrentTerm(message["current_term"], None)
            self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
            self._SyncObj__raftLeader = None
            return
        round_ = self._prevote
        if (round_ is None or message["term"] != round_[0] or round_[0] != self.raftCurrentTerm + 1
                or self._SyncObj__raftState == _RAFT_STATE.LEADER):
            return
        if not message["granted"]:
            self._retry_early()
            return
        round_[1].add(node)
        voters = {self.selfNode} | set(self._SyncObj__otherNodes)
        if len(round_[1] & voters) > len(voters) / 2:
            self._prevote = None
            self._prevote_won = True
            self._SyncObj__raftElectionDeadline = 0
            log.info("raft: pre-vote for term %d won: standing for election", round_[0])

    def _retry_early(self) -> None:
        """A member refused our pre-vote, maybe only because it heard the leader a little after
        we did: ask again once its refusal window has closed (once per silence of the leader)."""
        if not EARLY_RETRY or self._early_retry_used:
            return
        heartbeat = self.conf.appendEntriesPeriod
        closes = self._leader_heard + self.conf.raftMinTimeout + EARLY_RETRY_HEARTBEATS * heartbeat
        if self.clock() >= closes:
            return  # the window has closed already: it refused for another reason
        self._early_retry_used = True
        retry_at = closes + random.uniform(0, heartbeat)
        if retry_at < self._election_deadline():
            self._SyncObj__raftElectionDeadline = retry_at
            log.debug("raft: pre-vote refused %.0f ms after the leader was last heard: asking again in %.0f ms",
                      (self.clock() - self._leader_heard) * 1e3, (retry_at - self.clock()) * 1e3)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pre_vote":
            if self.selfNode is not None:
                self._on_pre_vote(node, message)
            return
        if kind == "pre_vote_response":
            self._on_pre_vote_response(node, message)
            return
        if kind == "append_entries" and message["term"] >= self.raftCurrentTerm:
            # A current leader: refuse pre-votes for a minimum election timeout (stickiness),
            # and drop any pre-vote round of ours (a late majority must not start an election).
            self._leader_seen = self._leader_heard = self.clock()
            self._early_retry_used = False
            self._prevote = None
            self._prevote_won = False
        super()._SyncObj__onMessageReceived(node, message)
