"""The swarm's data key ring, and the cluster values the state keeps sealed with it (join tokens,
unlock key). ``DataKey`` implements ``collaborators.Sealer``; ``manager.dekrotation`` rotates it."""

from __future__ import annotations

import hashlib
import hmac

import logging

import nacl.exceptions

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Sealer, StoreReader

log = logging.getLogger(__name__)


class DataKey:
    """The data key ring: the current key, which seals everything new, and while a rotation runs
    the previous key(s), which still open records not yet re-encrypted.

    The ring changes on the raft thread as rotation commands apply (``follow``, ``retire``) and is
    read from any thread: it is one tuple, replaced whole.
    """

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self._ring: tuple[bytes, ...] = ()
        self._install((key, *previous))

    def _install(self, ring: tuple[bytes, ...]) -> None:
        unique = tuple(dict.fromkeys(ring))
        self._ids = {keys.key_id(k): k for k in unique}
        self._digest_key = hmac.digest(unique[0], b"swarmsecrets request binding", hashlib.sha256)
        self._ring = unique

    @property
    def key(self) -> bytes:
        """The current key."""
        return self._ring[0]

    @property
    def previous(self) -> tuple[bytes, ...]:
        """Keys of a rotation in progress, still needed to open records not re-encrypted yet."""
        return self._ring[1:]

    @property
    def key_id(self) -> str:
        return keys.key_id(self._ring[0])

    def holds(self, key_id: str) -> bool:
        return key_id in self._ids

    def seal(self, plaintext: bytes) -> bytes:
        return keys.seal(self._ring[0], plaintext)

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open with the current key, else with a previous one (a record not re-encrypted yet)."""
        ring = self._ring
        for key in ring[:-1]:
            try:
                return keys.open_sealed(key, ciphertext)
            except nacl.exceptions.CryptoError:
                continue
        return keys.open_sealed(ring[-1], ciphertext)

    def unseal_with(self, key_id: str, ciphertext: bytes) -> bytes:
        key = self._ids.get(key_id)
        if key is None:
            raise errors.FailedPrecondition(f"this manager does not hold data key {key_id}")
        return keys.open_sealed(key, ciphertext)

    def digest(self, data: bytes) -> bytes:
        return hmac.digest(self._digest_key, data, hashlib.sha256)

    def follow(self, cluster: state.Cluster | None) -> bool:
        """Make the cluster record's current key this ring's current key, learning it from the
        record (sealed under the previous key) if need be. Returns whether the ring changed."""
        if cluster is None or not cluster.key_id or cluster.key_id == self.key_id:
            return False
        key = self._ids.get(cluster.key_id)
        if key is None:
            if not (cluster.rotation_key and cluster.rotation_from in self._ids):
                log.warning("the swarm's data key %s is not held by this manager", cluster.key_id)
                return False
            key = self.unseal_with(cluster.rotation_from, cluster.rotation_key)
            if keys.key_id(key) != cluster.key_id:
                log.error("the data key sealed in the cluster record does not match its id")
                return False
        self._install((key, *(k for k in self._ring if k != key)))
        return True

    def missing(self, cluster: state.Cluster | None) -> bool:
        """Whether the cluster record names a current key this ring neither holds nor can learn
        from the record (a manager that was away for a whole rotation)."""
        if cluster is None or not cluster.key_id or cluster.key_id in self._ids:
            return False
        return not (cluster.rotation_key and cluster.rotation_from in self._ids)

    def adopt(self, current: bytes, previous: tuple[bytes, ...]) -> None:
        """Take the ring another manager handed over (``GetManagerKeys``); keys held already stay
        until the cluster record says they are retired."""
        self._install((current, *previous, *self._ring))

    def retire(self) -> bool:
        """Forget every key but the current one (the rotation is finished). Returns whether the
        ring changed."""
        if len(self._ring) == 1:
            return False
        self._install(self._ring[:1])
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
