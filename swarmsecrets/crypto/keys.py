"""Data key, key-encryption key and unlock keys.

- The cluster data key (DEK, 32 bytes) encrypts every secret payload with NaCl
  SecretBox before it enters the raft log, so the journal and snapshots hold
  only ciphertext.
- On disk a manager keeps the DEK and the CA key only wrapped (SecretBox) by its
  key-encryption key (KEK): a random per-node key file (0600) by default, or the
  operator's unlock key ``SWMKEY-1-…`` with autolock, which is never stored. With
  autolock the node's TLS key is wrapped beside them, so that a locked manager's disk
  holds no private key in clear (see ``WrappedKeys``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.utils

from swarmsecrets import errors
from swarmsecrets.fsutil import write_all, write_private

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
UNLOCK_PREFIX = "SWMKEY-1-"


def new_key() -> bytes:
    return nacl.utils.random(KEY_SIZE)


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, stored beside ciphertext to name the key used."""
    return hashlib.sha256(b"swarmsecrets-key-id" + key).hexdigest()[:16]


def seal(key: bytes, plaintext: bytes) -> bytes:
    """SecretBox's sealed form (a random nonce, then the ciphertext with its tag), made by the
    binding directly: a box object and its result wrapper cost more than the encryption itself."""
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    return nonce + nacl.bindings.crypto_secretbox_easy(plaintext, nonce, key)


@dataclass(frozen=True, slots=True)
class SealingKey:
    """A key to seal with, and its id: what a request seals goes under one such key, and the id it
    records beside the sealed values is that key's."""

    key_id: str
    key: bytes = field(repr=False)

    @classmethod
    def of(cls, key: bytes) -> SealingKey:
        return cls(key_id(key), key)

    def seal(self, plaintext: bytes) -> bytes:
        return seal(self.key, plaintext)


def open_sealed(key: bytes, ciphertext: bytes) -> bytes:
    return bytes(nacl.secret.SecretBox(key).decrypt(ciphertext))


def format_unlock_key(key: bytes) -> str:
    return UNLOCK_PREFIX + base64.b64encode(key).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(UNLOCK_PREFIX):
        raise errors.InvalidArgument("invalid key string")
    body = text[len(UNLOCK_PREFIX):]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidArgument("invalid key string") from None
    if len(key) != KEY_SIZE:
        raise errors.InvalidArgument("invalid key string")
    return key


def same_key(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- the node's key file ------------------------------------------------------

class ManagerKeys(NamedTuple):
    dek: bytes
    ca_key: bytes
    # The node's TLS key when it is wrapped here (autolock); None when it lives in clear beside its
    # certificate (no autolock, or a key file written before the node key was wrapped).
    node_key: bytes | None
    # While the data key rotates: the previous data key(s), which open records not re-encrypted yet.
    previous: tuple[bytes, ...] = ()


class WrappedKeys:
    """The manager's wrapped key file: ``{"autolock": bool, "dek": ..., "ca_key": ..., "node_key": ...,
    "previous_deks": [...]}`` (the last only while the data key rotates).

    Values are SecretBox(KEK) ciphertext, base64. Without autolock the KEK lives in ``kek`` beside
    it (0600) and the node's TLS key stays in clear beside its certificate: sealing it under a key
    on the same disk would protect nothing (Docker Swarm does the same). With autolock the KEK is
    the unlock key, which is never stored, and ``node_key`` holds the node's TLS key: a locked
    manager's disk then holds no private key that opens without the unlock key.
    """

    def __init__(self, keys_dir: str) -> None:
        self.dir = keys_dir
        self.path = os.path.join(keys_dir, "manager-keys.json")
        self.kek_path = os.path.join(keys_dir, "kek")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def _doc(self) -> dict[str, object]:
        with open(self.path) as f:
            doc: dict[str, object] = json.load(f)
        return doc

    def autolocked(self) -> bool:
        return bool(self._doc().get("autolock"))

    def holds_node_key(self) -> bool:
        return "node_key" in self._doc()

    def as_of(self) -> int:
        """The raft index of the unlock-key change this wrapping follows (0: none). A manager that
        replays older changes after a restart must not wrap its keys under a retired unlock key."""
        value = self._doc().get("as_of", 0)
        return value if isinstance(value, int) else 0

    def store(self, dek: bytes, ca_key_pem: bytes, unlock_key: bytes | None,
              node_key_pem: bytes | None = None, as_of: int = 0, previous: tuple[bytes, ...] = ()) -> None:
        """Replace the file atomically. With ``unlock_key`` (autolock) the node's TLS key is
        required: it is sealed here and the caller then removes its clear copy. Without, the
        caller keeps the node's key in clear and the KEK file is created if missing."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        doc: dict[str, object] = {"autolock": unlock_key is not None, "as_of": as_of}
        if unlock_key is None:
            if os.path.exists(self.kek_path):
                with open(self.kek_path, "rb") as f:
                    kek = f.read()
            else:
                kek = new_key()
                write_private(self.kek_path, kek)
        else:
            if node_key_pem is None:
                raise ValueError("with autolock the node's TLS key is wrapped too")
            kek = unlock_key
            doc["node_key"] = base64.b64encode(seal(kek, node_key_pem)).decode()
        doc["dek"] = base64.b64encode(seal(kek, dek)).decode()
        doc["ca_key"] = base64.b64encode(seal(kek, ca_key_pem)).decode()
        if previous:
            doc["previous_deks"] = [base64.b64encode(seal(kek, k)).decode() for k in previous]
        # The replaced file is erased: it may hold a retired data key or a retired unlock key's wrapping.
        write_private(self.path, json.dumps(doc).encode(), erase_old=True)
        if unlock_key is not None and os.path.exists(self.kek_path):
            # Only once the file no longer needs it: the old KEK opens nothing any more.
            os.unlink(self.kek_path)

    def load(self, unlock_key: bytes | None = None) -> ManagerKeys:
        """The keys; with autolock the unlock key is required."""
        doc = self._doc()
        if doc.get("autolock"):
            if unlock_key is None:
                raise errors.SwarmLocked()
            kek = unlock_key
        else:
            with open(self.kek_path, "rb") as f:
                kek = f.read()
        try:
            opened = {name: open_sealed(kek, base64.b64decode(str(doc[name])))
                      for name in ("dek", "ca_key", "node_key") if name in doc}
            listed = doc.get("previous_deks", [])
            previous = tuple(open_sealed(kek, base64.b64decode(str(v)))
                             for v in (listed if isinstance(listed, list) else []))
        except nacl.exceptions.CryptoError:
            raise errors.InvalidArgument(errors.INVALID_UNLOCK_KEY) from None
        return ManagerKeys(opened["dek"], opened["ca_key"], opened.get("node_key"), previous)


@contextmanager
def memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that lives only in memory (an anonymous memfd, never on a disk), valid
    inside the ``with``: for APIs that load a key only from a path (``ssl.SSLContext.load_cert_chain``)."""
    fd = os.memfd_create("swarmsecrets-key", os.MFD_CLOEXEC)
    try:
        write_all(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
