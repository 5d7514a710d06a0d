"""The manager's way into the raft group: proposals and read barriers that ride out a failover,
and membership changes. Implements ``collaborators.Proposer`` and ``collaborators.RaftMembers``."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Clock, GroupStatus, StoreReader

# How long a control request may wait for raft before it reports an unknown outcome.
PROPOSE_TIMEOUT = 5.0
BARRIER_TIMEOUT = 5.0
# How long adding or removing a raft member may take before the call fails.
MEMBERSHIP_TIMEOUT = 15.0
# Commands waiting together go into one raft entry of at most this many commands and about this
# many bytes (codec.plain_size; the raft cap on one entry is 1 MiB); a larger command goes alone.
MAX_BATCH_COMMANDS = 64
MAX_BATCH_BYTES = 256 * 1024
# Batches of this manager in raft at once: later commands wait for one of them to be answered and
# go together in the next. A command proposed while fewer are in flight leaves at once.
MAX_BATCHES_IN_FLIGHT = 2


class RaftHandle(Protocol):
    """The raft member this manager runs (its calls raise swarmsecrets.errors)."""

    def status(self) -> GroupStatus: ...

    @property
    def stopped(self) -> bool: ...

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]: ...

    def read_barrier_async(self, timeout: float) -> Future[None]: ...

    def add_member(self, addr: str, timeout: float) -> None: ...

    def remove_member(self, addr: str, timeout: float) -> None: ...


class LoopReplies:
    """Hands raft outcomes (resolved on the raft thread) to the event loop: every outcome that is
    ready when the loop wakes up is delivered in that one wake-up, instead of one
    ``call_soon_threadsafe`` (a self-pipe write and a loop iteration) per request as
    ``asyncio.wrap_future`` would do."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    def wait(self, inner: Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future with ``inner``'s outcome (call on the loop). Cancelling it cancels
        ``inner``, as ``asyncio.wrap_future`` does."""
        fut = self.loop.create_future()
        fut.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(lambda i: self._deliver(fut, i))
        return fut

    def _deliver(self, fut: asyncio.Future[Any], inner: Future[Any]) -> None:
        with self._lock:
            self._ready.append((fut, inner))
            first = len(self._ready) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits the outcome any more

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for fut, inner in ready:
            if fut.done():
                continue
            if inner.cancelled():
                fut.cancel()
            elif (exc := inner.exception()) is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(inner.result())


@dataclass(slots=True)
class _Waiting:
    """A command waiting for its batch: its log entry, its size and its caller's future."""

    entry: dict[str, Any]
    size: int
    deadline: float  # loop time
    outcome: asyncio.Future[Any]


class RaftProposer:
    def __init__(self, raft: RaftHandle, store: StoreReader, clock: Clock, no_leader_grace: float) -> None:
        self.raft = raft
        self.store = store
        self.clock = clock
        self._replies: LoopReplies | None = None
        self._waiting: deque[_Waiting] = deque()
        self._batches_in_flight = 0
        self._flush_soon = False
        # About one election: how long a request waits for a leader before reporting none.
        self.no_leader_grace = no_leader_grace

    async def propose(self, cmd: state.Command, *, timeout: float = PROPOSE_TIMEOUT,
                      leader_only: int | None = None) -> Any:
        """Replicate a command and return its result (or raise its typed error).

        A command kind that some manager of the swarm could not apply (it runs an older release)
        is refused here, before it reaches the log; so is a replay of another request's id
        (``Store.check_request``).

        Through a failover it retries the same command (same request id, so the state
        machine applies it at most once): after no leader for about one election it
        reports none; after ``timeout`` with the outcome unknown it says so.

        ``leader_only=TERM`` is for the leader's own decisions (scheduling, node liveness,
        worker reports it received): made from this leader's view in that term, they must
        not outlive it. They go in only while this node still leads in TERM, are never
        forwarded to another leader, and are not retried.

        Other commands that wait at the same moment share one raft entry (``_flush``), each
        with its own outcome, once every manager can apply such an entry; an ``ALONE`` command
        always has an entry of its own.
        """
        managers = self.store.managers()
        state.require_supported(cmd, managers)
        self.store.check_request(cmd)
        entry = state.encode_command(cmd if cmd.ts else replace(cmd, ts=self.clock.now_ns()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if leader_only is not None:
            return state.unwrap(await self._propose_as_leader(entry, timeout, leader_only))
        if cmd.ALONE or state.supported_version(managers) < state.BATCH_SINCE:
            result = await self._ride_out_failover(
                lambda: self._on_loop(self.raft.propose_async(entry, max(0.1, deadline - loop.time()))),
                deadline)
        else:
            result = await self._ride_out_failover(lambda: self._in_batch(entry, deadline), deadline)
        return state.unwrap(result)

    # --- batches ------------------------------------------------------------------------------

    def _in_batch(self, entry: dict[str, Any], deadline: float) -> asyncio.Future[Any]:
        """The outcome of ``entry`` proposed in the next batch."""
        outcome = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(entry, state.plain_size(entry), deadline, outcome))
        self._schedule_flush()
        return outcome

    def _schedule_flush(self) -> None:
        """Flush at the loop's next pass, so that the commands proposed in this one go together."""
        if self._waiting and not self._flush_soon and self._batches_in_flight < MAX_BATCHES_IN_FLIGHT:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        # A manager of an earlier release joined since these commands were proposed.
        batches = state.supported_version(self.store.managers()) >= state.BATCH_SINCE
        while self._waiting and self._batches_in_flight < MAX_BATCHES_IN_FLIGHT:
            batch = self._next_batch() if batches else [self._waiting.popleft()]
            batch = [w for w in batch if not w.outcome.done()]  # its caller gave up meanwhile
            if not batch:
                continue
            entry = batch[0].entry if len(batch) == 1 else state.encode_batch([w.entry for w in batch])
            timeout = max(0.1, max(w.deadline for w in batch) - asyncio.get_running_loop().time())
            self._batches_in_flight += 1
            answer = self._on_loop(self.raft.propose_async(entry, timeout))
            answer.add_done_callback(functools.partial(self._answered, batch))

    def _next_batch(self) -> list[_Waiting]:
        batch = [self._waiting.popleft()]
        size = batch[0].size
        while (self._waiting and len(batch) < MAX_BATCH_COMMANDS
               and size + self._waiting[0].size <= MAX_BATCH_BYTES):
            size += self._waiting[0].size
            batch.append(self._waiting.popleft())
        return batch

    def _answered(self, batch: list[_Waiting], answer: asyncio.Future[Any]) -> None:
        """Each command of the batch gets its own outcome, or the batch's raft error (then each
        rides out the failover on its own, and may go in another batch)."""
        self._batches_in_flight -= 1
        exc = errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME) if answer.cancelled() else answer.exception()
        results: list[Any] = []
        if exc is None:
            result = answer.result()
            # A batch refused whole (one error) gives every command that error.
            results = result if len(batch) > 1 and isinstance(result, list) else [result] * len(batch)
        for i, w in enumerate(batch):
            if w.outcome.done():
                continue
            if exc is not None:
                w.outcome.set_exception(exc)
            elif i < len(results):
                w.outcome.set_result(results[i])
            else:  # a batch answered with fewer outcomes than it holds: never from this codec
                w.outcome.set_exception(errors.Internal("a batch entry was answered without this command's outcome"))
        self._schedule_flush()

    async def _propose_as_leader(self, entry: dict[str, Any], timeout: float, term: int) -> Any:
        st = self.raft.status()
        if not st.is_leader or st.term != term:
            raise errors.Unavailable("this manager no longer leads the swarm")
        return await self._on_loop(self.raft.propose_async(entry, timeout))

    def _on_loop(self, inner: Future[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._replies is None or self._replies.loop is not loop:
            self._replies = LoopReplies(loop)
        return self._replies.wait(inner)

    def leader_term(self) -> int | None:
        st = self.raft.status()
        return st.term if st.is_leader else None

    def status(self) -> GroupStatus:
        return self.raft.status()

    @property
    def stopped(self) -> bool:
        return self.raft.stopped

    async def barrier(self) -> None:
        """Linearizable reads: local state reflects every write acknowledged before this call."""
        deadline = asyncio.get_running_loop().time() + BARRIER_TIMEOUT
        await self._ride_out_failover(self._barrier_once, deadline)

    async def _barrier_once(self) -> None:
        try:
            # The raft loop fails a barrier at its deadline; the margin only covers a stuck loop.
            await asyncio.wait_for(self._on_loop(self.raft.read_barrier_async(BARRIER_TIMEOUT)), BARRIER_TIMEOUT + 1.0)
        except TimeoutError:
            raise errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME) from None

    async def _ride_out_failover(self, attempt: Callable[[], Awaitable[Any]], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        no_leader_until = loop.time() + self.no_leader_grace
        while True:
            try:
                self._require_quorum()
                return await attempt()
            except errors.StorageFull:
                raise  # this manager's disk: waiting out a failover does not help
            except errors.Unavailable:
                if loop.time() >= min(no_leader_until, deadline):
                    raise
            except errors.DeadlineExceeded:
                if loop.time() >= deadline:
                    raise
                no_leader_until = loop.time() + self.no_leader_grace
            await asyncio.sleep(0.05)

    def _require_quorum(self) -> None:
        """Refuse before sending when this manager cannot reach a majority (its links to the
        others are down): the request then certainly did not happen, and says so at once."""
        st = self.raft.status()
        if len(st.reachable) * 2 <= len(st.members):
            raise errors.NoLeader()

    # --- membership ---------------------------------------------------------------------------

    async def add_member(self, raft_addr: str) -> None:
        await asyncio.to_thread(self.raft.add_member, raft_addr, MEMBERSHIP_TIMEOUT)

    async def remove_member(self, raft_addr: str) -> None:
        await asyncio.to_thread(self.raft.remove_member, raft_addr, MEMBERSHIP_TIMEOUT)
