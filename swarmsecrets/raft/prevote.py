"""Pre-vote with leader stickiness, grafted onto pysyncobj's elections.

Stock pysyncobj starts an election (term+1, persisted, RequestVote) as soon as a member's
election timer fires. A member that comes back from a partition or a restart, and whose timer
fires before the leader reaches it, then raises every member's term and deposes a healthy
leader. With pre-vote, such a member first asks whether it could win: a member grants only if
it has not heard from a current leader within the minimum election timeout, and only if the
candidate's log is at least as up to date as its own. Only a majority of grants lets the real
election start. Asking and answering change no term and no vote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.syncobj import _RAFT_STATE

# False restores stock elections (term+1 and RequestVote as soon as the election timer fires),
# so a rejoining or restarted member deposes the leader. Tests switch it to show the defect.
PRE_VOTE = True


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

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if PRE_VOTE:
            self._pre_vote_tick()
        super()._onTick(timeToWait)

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
        # mypy cannot see the type of a name SyncObj assigns in a method of its own
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
        self.pre_votes_sent += 1
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
            self._leader_seen = self.clock()
            self._prevote = None
            self._prevote_won = False
        super()._SyncObj__onMessageReceived(node, message)
