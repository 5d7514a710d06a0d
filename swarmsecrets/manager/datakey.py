"""The swarm's data key, and the cluster values the state keeps sealed with it (join tokens,
unlock key). ``DataKey`` implements ``collaborators.Sealer``."""

from __future__ import annotations

import hashlib
import hmac

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.manager.collaborators import Sealer, StoreReader


class DataKey:
    def __init__(self, key: bytes) -> None:
        self.key = key
        self._key_id = keys.key_id(key)
        self._digest_key = hmac.digest(key, b"swarmsecrets request binding", hashlib.sha256)

    @property
    def key_id(self) -> str:
        return self._key_id

    def seal(self, plaintext: bytes) -> bytes:
        return keys.seal(self.key, plaintext)

    def unseal(self, ciphertext: bytes) -> bytes:
        return keys.open_sealed(self.key, ciphertext)

    def digest(self, data: bytes) -> bytes:
        return hmac.digest(self._digest_key, data, hashlib.sha256)


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
