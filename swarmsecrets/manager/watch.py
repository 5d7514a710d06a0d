"""The manager's events an operator acts on, as ``logfmt.event`` lines.

``RaftWatch`` samples the raft status: a leader elected or lost, quorum lost or regained (a loss
only once it lasted ``grace``, so an election or a member's restart is not reported as one).
``NodeEvents`` follows the store: a node joined, Ready, Down or removed, said by the leader only,
so that one line stands for each change in the swarm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from swarmsecrets.logfmt import event
from swarmsecrets.manager import state
from swarmsecrets.raft import RaftStatus

log = logging.getLogger("swarmsecrets.events")

SAMPLE_PERIOD = 0.2


def has_quorum(st: RaftStatus) -> bool:
    members = set(st.members)
    return len(members & st.reachable) * 2 > len(members)


class RaftWatch:
    def __init__(self, status: Callable[[], RaftStatus], grace: float, clock: Callable[[], float]) -> None:
        self.status = status
        self.grace = grace
        self.clock = clock
        self.leader: str | None = None
        self.term = 0
        self.quorum = True
        self._short_since: float | None = None

    def sample(self) -> None:
        st = self.status()
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
        if has_quorum(st):
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

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_PERIOD)


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
