"""Service logs on the leader: who asked for which service's output, and what the nodes sent.

Nodes have no server port, so the leader asks them over their sessions: ``subscribe`` queues a
``LogSubscription`` for each node that runs tasks of the service and has a session; the dispatcher
sends it on that node's session stream; the node answers with a ``PublishLogs`` call carrying the
lines of its own tasks (the dispatcher checks each task is the node's and the service's), and
``close`` when it has sent all it had. Without ``follow`` the subscription ends once every node
asked has closed or lost its session; with ``follow`` it lasts until the asker goes away, and the
nodes are told to stop.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import objects_pb2


@dataclass
class Subscription:
    id: str
    service_id: str
    follow: bool
    nodes: frozenset[str]  # the nodes asked
    pending: set[str]      # without follow: the nodes that have not closed yet
    # Unbounded: a node sends at most its files' worth (2 MiB a task) at once, then what its tasks write.
    queue: asyncio.Queue[list[objects_pb2.LogMessage] | None] = field(default_factory=asyncio.Queue)


class LogBroker:
    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self._outbox: dict[str, list[pb.LogSubscription]] = {}
        # Set by the dispatcher: wake the session streams of these nodes; the nodes with a live session.
        self.wake: Callable[[Iterable[str]], None] = lambda nodes: None
        self.live_nodes: Callable[[], set[str]] = set

    def subscribe(self, service_id: str, follow: bool, tail: int, task_nodes: set[str]) -> Subscription:
        """Ask the nodes among ``task_nodes`` that have a session for the service's output."""
        nodes = frozenset(task_nodes & self.live_nodes())
        sub = Subscription(id=secrets.token_hex(16), service_id=service_id, follow=follow, nodes=nodes,
                           pending=set(nodes))
        self.subscriptions[sub.id] = sub
        for node in nodes:
            self._outbox.setdefault(node, []).append(
                pb.LogSubscription(id=sub.id, service_id=service_id, follow=follow, tail=tail))
        if not nodes and not follow:
            sub.queue.put_nowait(None)
        self.wake(nodes)
        return sub

    def close(self, sub: Subscription) -> None:
        """The asker is gone (or has everything): nodes still publishing are told to stop."""
        if self.subscriptions.pop(sub.id, None) is None:
            return
        told = sub.nodes if sub.follow else frozenset(sub.pending)
        for node in told:
            self._outbox.setdefault(node, []).append(pb.LogSubscription(id=sub.id, close=True))
        self.wake(told)

    def take(self, node_id: str) -> list[pb.LogSubscription]:
        """What the node's session is to carry next."""
        return self._outbox.pop(node_id, [])

    def publish(self, node_id: str, sub: Subscription, messages: list[objects_pb2.LogMessage], close: bool) -> None:
        if messages:
            sub.queue.put_nowait(messages)
        if close:
            self._done(sub, node_id)

    def node_gone(self, node_id: str) -> None:
        """The node's session ended: it will send nothing more."""
        self._outbox.pop(node_id, None)
        for sub in list(self.subscriptions.values()):
            if node_id in sub.pending:
                self._done(sub, node_id)

    def _done(self, sub: Subscription, node_id: str) -> None:
        was = node_id in sub.pending
        sub.pending.discard(node_id)
        if was and not sub.pending and not sub.follow:
            sub.queue.put_nowait(None)
