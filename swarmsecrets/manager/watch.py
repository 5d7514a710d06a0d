"""The manager's events an operator acts on, as ``logfmt.event`` lines, and the feed of raft status
they (and the health service) follow.

``StatusFeed`` reads the raft status once for all its followers: at each apply and every
FEED_PERIOD besides. ``RaftWatch`` follows it: a leader elected or lost, quorum lost or regained (a loss
only once it lasted ``grace``, so an election or a member's restart is not reported as one).
``NodeEvents`` follows the store: a node joined, Ready, Down or removed, said by the leader only,
so that one line stands for each change in the swarm.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence

from swarmsecrets.logfmt import event
from swarmsecrets.manager import state
from swarmsecrets.raft import RaftStatus

log = logging.getLogger("swarmsecrets.events")

# Leadership and reachability change without an apply (a leader lost, a link down), and the raft
# library tells of neither: the status is read this often too. Applies are heard at once.
FEED_PERIOD = 0.25

StatusFollower = Callable[[RaftStatus], Awaitable[None] | None]


class StatusFeed:
    """One reader of the raft status for every part of the manager that follows it."""

    def __init__(self, status: Callable[[], RaftStatus], followers: Sequence[StatusFollower]) -> None:
        self.status = status
        self.followers = list(followers)
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Read it again now (on the event loop): something was applied."""
        self._poke.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            st = self.status()
            for follow in self.followers:
                outcome = follow(st)
                if inspect.isawaitable(outcome):
                    await outcome
            timer = loop.call_later(FEED_PERIOD, self._poke.set)
            await self._poke.wait()
            timer.cancel()
            self._poke.clear()


class RaftWatch:
    def __init__(self, status: Callable[[], RaftStatus], grace: float, clock: Callable[[], float]) -> None:
        self.status = status
        self.grace = grace
        self.clock = clock
        self.leader: str | None = None
        self.term = 0
        self.quorum = True
        self._short_since: float | None = None

    def sample(self, st: RaftStatus | None = None) -> None:
        """Note what changed since the last sample (``st``: the status now, read here if not given)."""
        st = st if st is not None else self.status()
        if st.leader != self.leader:
            if st.leader is not None:
                who = "this manager" if st.is_leader else st.leader
                event(log, logging.INFO, "leader_elected", f"{who} leads the swarm (term {st.term})",
                      term=st.term, leader=st.leader, is_leader=st.is_leader)
            elif self.leader is not None:
                event(log, logging.INFO, "leader_lost", f"no leader since term {self.term}: electing one",
                      term=self.term, previous=self.leader)
            self.leader = st.leader
        self.term = st.term
        now = self.clock()
        if st.has_quorum:
            self._short_since = None
            if not self.quorum:
                self.quorum = True
                event(log, logging.INFO, "quorum_regained", "raft quorum regained: the swarm accepts writes again",
                      term=st.term, members=len(st.members), reachable=len(set(st.members) & st.reachable))
            return
        if self._short_since is None:
            self._short_since = now
        if self.quorum and now - self._short_since >= self.grace:
            self.quorum = False
            event(log, logging.WARNING, "quorum_lost",
                  "raft quorum lost: this manager reaches too few managers; the swarm refuses writes",
                  term=st.term, members=len(st.members), reachable=len(set(st.members) & st.reachable))


class NodeEvents:
    """A store subscriber (it runs on the raft thread: it only logs)."""

    def __init__(self, is_leader: Callable[[], bool], store: state.Store) -> None:
        self.is_leader = is_leader
        self.store = store
        self._status = {n.id: n.status for n in store.nodes()}

    def on_apply(self, applied: state.Applied) -> None:
        cmd = applied.command
        if not applied.ok:
            return
        if isinstance(cmd, state.UpdateNode) and cmd.status is not None:
            before = self._status.get(cmd.id)
            self._status[cmd.id] = cmd.status
            if before == cmd.status or not self.is_leader():
                return
            node = self.store.node(cmd.id)
            host = node.hostname if node is not None else ""
            if cmd.status == "ready":
                event(log, logging.INFO, "node_ready", f"node {cmd.id} ({host}) is Ready", node=cmd.id, hostname=host)
            elif cmd.status == "down":
                event(log, logging.WARNING, "node_down", f"node {cmd.id} ({host}) is Down: {cmd.status_message}",
                      node=cmd.id, hostname=host, reason=cmd.status_message or "")
        elif isinstance(cmd, state.AddNode):
            self._status[cmd.node.id] = cmd.node.status
            if self.is_leader():
                event(log, logging.INFO, "node_joined", f"node {cmd.node.id} joined as a {cmd.node.role}",
                      node=cmd.node.id, role=cmd.node.role)
        elif isinstance(cmd, state.RemoveNode):
            self._status.pop(cmd.node_id, None)
            if self.is_leader():
                event(log, logging.INFO, "node_removed", f"node {cmd.node_id} was removed from the swarm",
                      node=cmd.node_id)
