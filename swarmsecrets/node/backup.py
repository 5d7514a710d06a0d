"""The backup file: a manager's whole state at one applied raft index, with what a new manager
needs to run it (cluster id, root CA certificate and key, data key, unlock key), encrypted.

Layout (version 1)::

    MAGIC (20 bytes)  "SWARMSECRETS-BACKUP\\n"
    u16 version       1
    u8  key kind      1: the swarm's unlock key (autolock), 2: a backup key printed once
    u64 length        of the ciphertext that follows
    ciphertext        SecretBox under BLAKE2b(key, person="swsbackup-v1"): zlib(plain-data pickle
                      of the contents, the header above included so it cannot be altered)

Nothing in it is in clear but the header. The key is ``SWMKEY-1-…`` (an unlock key's format).
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

import nacl.exceptions

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from swarmsecrets.manager.datakey import unlock_key
from swarmsecrets.manager.manager import Manager
from swarmsecrets.raft import wire

MAGIC = b"SWARMSECRETS-BACKUP\n"
VERSION = 1
KEY_UNLOCK = 1
KEY_BACKUP = 2
_HEADER = struct.Struct("!HBQ")
HEADER_SIZE = len(MAGIC) + _HEADER.size


@dataclass(frozen=True)
class ClusterKeys:
    """The keys a backup carries. ``data_keys``: the current data key first."""

    data_keys: tuple[bytes, ...]
    ca_key: bytes
    unlock_key: bytes | None  # the swarm's unlock key under autolock, else None


def manager_keys(m: Manager) -> ClusterKeys:
    """The one place a backup reads the running manager's keys: the data key ring (current first;
    a backup taken during a data-key rotation needs the previous key for records not re-encrypted
    yet), the current root's CA key, the unlock key."""
    ca_key = m.ca.current.key_pem
    assert ca_key is not None
    return ClusterKeys(data_keys=m.data_key.ring, ca_key=ca_key,
                       unlock_key=unlock_key(m.store, m.data_key))


@dataclass(frozen=True)
class Contents:
    cluster_id: str
    ca_cert: bytes
    keys: ClusterKeys
    snapshot: dict[str, Any]  # the store's snapshot (manager/state/codec.py) at ``applied_index``
    applied_index: int
    created_at: int = 0  # unix seconds


def _box_key(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=keys.KEY_SIZE, person=b"swsbackup-v1").digest()


def _bound(kind: int) -> bytes:
    """The part of the header sealed in with the contents (the length is known only after)."""
    return MAGIC + struct.pack("!HB", VERSION, kind)


def encode(contents: Contents, key: bytes, key_kind: int) -> bytes:
    body = {
        "cluster_id": contents.cluster_id, "ca_cert": contents.ca_cert, "ca_key": contents.keys.ca_key,
        "data_keys": list(contents.keys.data_keys), "unlock_key": contents.keys.unlock_key,
        "snapshot": contents.snapshot, "applied_index": contents.applied_index,
        "created_at": contents.created_at or int(time.time()),
    }
    sealed = keys.seal(_box_key(key), zlib.compress(wire.dumps({"header": _bound(key_kind), "body": body}), 1))
    return MAGIC + _HEADER.pack(VERSION, key_kind, len(sealed)) + sealed


def key_kind(data: bytes, name: str) -> int:
    """Check the header of ``data`` (the file ``name``); return which key opens it."""
    if not data.startswith(MAGIC):
        raise errors.InvalidArgument(f"{name} is not a swarmsecrets backup file")
    if len(data) < HEADER_SIZE:
        raise errors.InvalidArgument(f"{name} is truncated")
    version, kind, length = _HEADER.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise errors.InvalidArgument(f"{name} is a backup of format version {version}; this release reads {VERSION}")
    if kind not in (KEY_UNLOCK, KEY_BACKUP):
        raise errors.InvalidArgument(f"{name} is damaged: unknown key kind {kind}")
    if len(data) - HEADER_SIZE < length:
        raise errors.InvalidArgument(f"{name} is truncated: {len(data) - HEADER_SIZE} of {length} bytes")
    if len(data) - HEADER_SIZE > length:
        raise errors.InvalidArgument(f"{name} is damaged: {len(data) - HEADER_SIZE - length} bytes after its end")
    return int(kind)


def decode(data: bytes, key: bytes, name: str) -> Contents:
    kind = key_kind(data, name)
    try:
        plain = keys.open_sealed(_box_key(key), data[HEADER_SIZE:])
    except nacl.exceptions.CryptoError:
        which = "the swarm's unlock key" if kind == KEY_UNLOCK else "the backup key printed by 'swarm backup'"
        raise errors.InvalidArgument(f"invalid key for {name}: it opens with {which}") from None
    try:
        doc = wire.loads(zlib.decompress(plain))
        if doc["header"] != _bound(kind):
            raise ValueError("header mismatch")
        b = doc["body"]
        got = Contents(
            cluster_id=str(b["cluster_id"]), ca_cert=bytes(b["ca_cert"]),
            keys=ClusterKeys(data_keys=tuple(bytes(k) for k in b["data_keys"]), ca_key=bytes(b["ca_key"]),
                             unlock_key=bytes(b["unlock_key"]) if b["unlock_key"] else None),
            snapshot=dict(b["snapshot"]), applied_index=int(b["applied_index"]), created_at=int(b["created_at"]))
        if not got.keys.data_keys or not got.cluster_id:
            raise ValueError("no data key or cluster id")
    except Exception as e:
        raise errors.InvalidArgument(f"{name} is damaged: {type(e).__name__}") from None
    return got
