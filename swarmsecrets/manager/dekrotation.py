"""Data-key rotation: a new key for everything the state keeps sealed, with writes going on.

1. Any manager begins a rotation (``begin``: the explicit command, an unlock-key rotation, or the
   leader's schedule): it makes a new key and proposes it sealed under the current one
   (``BeginDataKeyRotation``). Every manager, even one that was behind, learns it from the log or
   from a snapshot as it applies it (``DataKey.follow``) and seals new values with it from then on;
   the previous key still opens what is not re-encrypted yet.
2. The leader (``DataKeyRotator.run``; a new leader picks up a rotation in progress) re-encrypts
   every secret through the log in bounded batches (``ReencryptSecrets``: ciphertext only; apply
   skips a record no longer under the key it was read under), then ends the rotation with the
   cluster's sealed values sealed again (``FinishDataKeyRotation``), which forgets the previous key.
3. Every manager then takes a raft snapshot; once its journal no longer holds any entry from
   before the end of the rotation it rewrites its key file without the previous key
   (``RetiredKeyScrub``). Compaction and snapshot replacement erase the files they replace, so no
   byte on a manager's disk is left that the previous key opens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Clock, Proposer, StoreReader
from swarmsecrets.manager.datakey import DataKey
from swarmsecrets.manager.state import LogStateMachine, Store

log = logging.getLogger(__name__)

# Secrets re-encrypted per log entry: bounded entries, and writes interleave with the rotation.
BATCH = 256
# How long an explicit rotation waits for the leader to finish it before answering.
FINISH_TIMEOUT = 600.0
# How often the leader's loop looks at the schedule and at a rotation left unfinished.
CHECK_PERIOD = 1.0
POLL = 0.05
COMPACT_RETRY = 5.0


async def begin(store: StoreReader, proposer: Proposer, data_key: DataKey, rid: str | None = None) -> str:
    """Propose a new data key, sealed under the current one; returns its id. Refused while
    another rotation is in progress (unless ``rid`` began it: a retry gets its first outcome)."""
    await proposer.barrier()
    cluster = store.cluster
    if cluster is None:
        raise errors.Unavailable("the cluster state is not available yet")
    retried = rid is not None and store.has_request(rid)
    if cluster.rotation_from and not retried:
        raise errors.FailedPrecondition("a data key rotation is already in progress")
    sealing = data_key.current()
    if cluster.key_id != sealing.key_id:
        raise errors.Unavailable("this manager has not caught up with the current data key yet")
    new = keys.new_key()
    cmd = state.BeginDataKeyRotation(key_id=keys.key_id(new), sealed_key=sealing.seal(new), under=sealing.key_id)
    began: str = await proposer.propose(cmd if rid is None else replace(cmd, rid=rid))
    log.info("data key rotation to %s begun", began)
    return began


async def wait_finished(store: StoreReader, proposer: Proposer, key_id: str,
                        timeout: float = FINISH_TIMEOUT) -> None:
    """Return once the rotation to ``key_id`` is finished (or superseded by a later one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        cluster = store.cluster
        if cluster is not None and (cluster.key_id != key_id or not cluster.rotation_from):
            return
        if proposer.stopped:  # e.g. restarted for --force-new-cluster: this store hears no more
            raise errors.Unavailable(f"this manager stopped while the data key rotation to {key_id} ran; "
                                     "see 'swarmsecrets swarm data-key'")
        if loop.time() > deadline:
            raise errors.Unavailable(f"the data key rotation to {key_id} is still in progress; "
                                     "the leader finishes it (see 'swarmsecrets swarm data-key')")
        await asyncio.sleep(POLL)


def due(cluster: state.Cluster, now_ns: int) -> bool:
    """Whether a rotation should begin now: the unlock key rotated, or the schedule says so; never
    while a root CA rotation runs (its new CA key is sealed under the current data key)."""
    if cluster.root_rotation is not None or cluster.rotation_from:
        return False
    scheduled = bool(cluster.key_rotation_interval) and now_ns >= cluster.key_rotated_at + cluster.key_rotation_interval
    return scheduled or cluster.data_key_rotation_requested


class DataKeyRotator:
    """The leader's part: finish a rotation in progress; begin one when the schedule says so."""

    def __init__(self, store: StoreReader, proposer: Proposer, data_key: DataKey, clock: Clock,
                 batch: int = BATCH) -> None:
        self.store = store
        self.proposer = proposer
        self.data_key = data_key
        self.clock = clock
        self.batch = batch
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Look again now (on the event loop's thread)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), CHECK_PERIOD)
            except TimeoutError:
                pass
            self._wake.clear()
            term = self.proposer.leader_term()
            cluster = self.store.cluster
            if term is None or cluster is None:
                continue
            try:
                if cluster.rotation_from:
                    await self.finish(term)
                elif due(cluster, self.clock.now_ns()):
                    log.info("data key rotation is due (%s)", "the unlock key rotated" if
                             cluster.data_key_rotation_requested else
                             f"every {cluster.key_rotation_interval // 10**9}s")
                    await begin(self.store, self.proposer, self.data_key)
                    self._wake.set()
            except errors.SwarmError as e:
                log.warning("data key rotation: %s (retrying)", e)

    async def finish(self, term: int) -> None:
        """Re-encrypt every secret not under the current key, then end the rotation."""
        await self.proposer.barrier()
        cluster = self.store.cluster
        if cluster is None or not cluster.rotation_from:
            return
        current = cluster.key_id
        sealing = self.data_key.current()
        if sealing.key_id != current:
            raise errors.Unavailable(f"this manager does not hold the data key {current} yet")
        while True:
            stale = [s for s in self.store.secrets() if s.key_id != current]
            if not stale:
                break
            for start in range(0, len(stale), self.batch):
                items = tuple(state.Reencrypted(id=s.id, from_key_id=s.key_id, key_id=current,
                                                data=sealing.seal(self.data_key.unseal_with(s.key_id, s.data)))
                              for s in stale[start:start + self.batch])
                await self.proposer.propose(state.ReencryptSecrets(secrets=items), leader_only=term)
        cluster = self.store.cluster
        if cluster is None or cluster.key_id != current or not cluster.rotation_from:
            return
        reseal: Callable[[bytes], bytes] = lambda v: sealing.seal(self.data_key.unseal(v))  # noqa: E731
        finish = state.FinishDataKeyRotation(
            key_id=current, cluster_version=cluster.version,
            join_tokens=state.JoinTokens(worker=reseal(cluster.join_tokens.worker),
                                         manager=reseal(cluster.join_tokens.manager)),
            unlock_key=reseal(cluster.unlock_key) if cluster.unlock_key is not None else None)
        await self.proposer.propose(finish, leader_only=term)
        # The same request again (its first outcome answers): one more entry after the end, so that
        # a snapshot taken once it applies leaves no entry of the rotation in any journal.
        await self.proposer.propose(finish, leader_only=term)
        log.info("data key rotation to %s finished", current)


class RetiredKeyScrub:
    """A manager's last step of a rotation: once its journal holds nothing from before the end of
    the rotation (a snapshot was taken and compaction erased the old files), rewrite the key file
    without the previous key (``rewrite``)."""

    def __init__(self, compact: Callable[[], None], compacted_to: Callable[[], int],
                 applied_index: Callable[[], int], rewrite: Callable[[], None]) -> None:
        self.compact = compact
        self.compacted_to = compacted_to
        self.applied_index = applied_index
        self.rewrite = rewrite

    async def run(self, finished_at: int) -> None:
        # The journal keeps the snapshot's last two entries: the snapshot must be taken after at
        # least one entry past the end of the rotation applied.
        while self.applied_index() <= finished_at:
            await asyncio.sleep(POLL)
        loop = asyncio.get_running_loop()
        asked: float | None = None
        while self.compacted_to() < finished_at:
            if asked is None or loop.time() - asked > COMPACT_RETRY:  # the snapshot may have failed: ask again
                self.compact()
                asked = loop.time()
            await asyncio.sleep(POLL)
        await asyncio.to_thread(self.rewrite)
        log.info("previous data key erased from this manager (journal compacted to %d)", self.compacted_to())


class KeyedStateMachine(LogStateMachine):
    """The store's state machine, with the data key ring following the cluster record whenever a
    snapshot replaces the state (one taken during a rotation carries the new key sealed; one taken
    after holds nothing a manager away for the whole rotation could learn it from)."""

    def __init__(self, store: Store, data_key: DataKey, missing: Callable[[], None]) -> None:
        """``missing``: called (on the raft thread) when the restored state is under a key this
        ring cannot learn from it: the manager then asks another for the ring."""
        super().__init__(store)
        self.data_key = data_key
        self.missing = missing

    def restore(self, data: Any) -> None:
        super().restore(data)
        self.data_key.follow(self.store.cluster)
        if self.data_key.missing(self.store.cluster):
            self.missing()
