"""The swarm's data key ring, and the cluster values the state keeps sealed with it (join tokens,
unlock key). ``DataKey`` implements ``collaborators.Sealer``; ``manager.dekrotation`` rotates it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import nacl.exceptions

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Sealer, StoreReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Ring:
    members: tuple[bytes, ...]  # the current key first
    ids: dict[str, bytes]
    current: keys.SealingKey
    digest_key: bytes

    @classmethod
    def of(cls, members: tuple[bytes, ...]) -> _Ring:
        unique = tuple(dict.fromkeys(members))
        return cls(members=unique, ids={keys.key_id(k): k for k in unique}, current=keys.SealingKey.of(unique[0]),
                   digest_key=hmac.digest(unique[0], b"swarmsecrets request binding", hashlib.sha256))


class DataKey:
    """The data key ring: the current key, which seals everything new, and while a rotation runs
    the previous key(s), which still open records not yet re-encrypted.

    The ring changes on the raft thread as rotation commands apply (``follow``, ``retire``) and on
    the event loop when another manager hands it over (``adopt``, ``settle``); it is read from any
    thread. Readers take ``self._ring`` once (one immutable object, replaced whole); changes are
    serialized by a lock, so none is lost to another made at the same time.
    """

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self._lock = threading.RLock()
        self._ring = _Ring.of((key, *previous))

    @property
    def key(self) -> bytes:
        """The current key."""
        return self._ring.members[0]

    @property
    def ring(self) -> tuple[bytes, ...]:
        """The whole ring at one moment, the current key first: the others are the keys of a
        rotation in progress, still needed to open records not re-encrypted yet."""
        return self._ring.members

    @property
    def key_id(self) -> str:
        return self._ring.current.key_id

    def current(self) -> keys.SealingKey:
        """The current key, to seal with: a request that seals several values, or records the
        key's id beside what it sealed, takes it once."""
        return self._ring.current

    def holds(self, key_id: str) -> bool:
        return key_id in self._ring.ids

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open with the current key, else with a previous one (a record not re-encrypted yet)."""
        ring = self._ring.members
        for key in ring[:-1]:
            try:
                return keys.open_sealed(key, ciphertext)
            except nacl.exceptions.CryptoError:
                continue
        return keys.open_sealed(ring[-1], ciphertext)

    def unseal_with(self, key_id: str, ciphertext: bytes) -> bytes:
        key = self._ring.ids.get(key_id)
        if key is None:
            raise errors.FailedPrecondition(f"this manager does not hold data key {key_id}")
        return keys.open_sealed(key, ciphertext)

    def digest(self, data: bytes) -> bytes:
        return hmac.digest(self._ring.digest_key, data, hashlib.sha256)

    def follow(self, cluster: state.Cluster | None) -> bool:
        """Make the cluster record's current key this ring's current key, learning it from the
        record (sealed under the previous key) if need be. Returns whether the ring changed."""
        with self._lock:
            ring = self._ring
            if cluster is None or not cluster.key_id or cluster.key_id == ring.current.key_id:
                return False
            key = ring.ids.get(cluster.key_id)
            if key is None:
                if not (cluster.rotation_key and cluster.rotation_from in ring.ids):
                    log.warning("the swarm's data key %s is not held by this manager", cluster.key_id)
                    return False
                key = self.unseal_with(cluster.rotation_from, cluster.rotation_key)
                if keys.key_id(key) != cluster.key_id:
                    log.error("the data key sealed in the cluster record does not match its id")
                    return False
            self._ring = _Ring.of((key, *ring.members))
            return True

    def missing(self, cluster: state.Cluster | None) -> bool:
        """Whether the cluster record names a current key this ring neither holds nor can learn
        from the record (a manager that was away for a whole rotation)."""
        ids = self._ring.ids
        if cluster is None or not cluster.key_id or cluster.key_id in ids:
            return False
        return not (cluster.rotation_key and cluster.rotation_from in ids)

    def adopt(self, handed: tuple[bytes, ...]) -> None:
        """Add the keys another manager handed over (``GetManagerKeys``). The current key stays:
        which key is current is the cluster record's word (``follow``, ``settle``), and the
        handed ring may be older than this one by now."""
        with self._lock:
            self._ring = _Ring.of((*self._ring.members, *handed))

    def settle(self, cluster_now: Callable[[], state.Cluster | None]) -> state.Cluster | None:
        """Follow the cluster record, and forget the previous keys when no rotation runs. The
        record is read under the lock: a rotation that begins meanwhile (its ``follow`` waits on
        the lock) is either seen here, or follows a ring that still holds the key it needs.
        Returns the record it read."""
        with self._lock:
            cluster = cluster_now()
            self.follow(cluster)
            if cluster is not None and not cluster.rotation_from and not self.missing(cluster):
                self.retire()
            return cluster

    def retire(self) -> bool:
        """Forget every key but the current one (the rotation is finished). Returns whether the
        ring changed."""
        with self._lock:
            if len(self._ring.members) == 1:
                return False
            self._ring = _Ring.of(self._ring.members[:1])
            return True


def join_tokens(store: StoreReader, sealer: Sealer) -> dict[str, str]:
    """The current join tokens by role ("worker", "manager")."""
    cluster = store.cluster
    if cluster is None:
        raise errors.Unavailable("the cluster state is not available yet")
    sealed = cluster.join_tokens
    return {"worker": sealer.unseal(sealed.worker).decode(), "manager": sealer.unseal(sealed.manager).decode()}


def unlock_key(store: StoreReader, sealer: Sealer) -> bytes | None:
    """The swarm's unlock key, None when autolock was never turned on."""
    cluster = store.cluster
    sealed = cluster.unlock_key if cluster else None
    return sealer.unseal(sealed) if sealed else None
