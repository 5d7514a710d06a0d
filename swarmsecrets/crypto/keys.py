"""Data key, key-encryption key and unlock keys.

- The cluster data key (DEK, 32 bytes) encrypts every secret payload with NaCl
  SecretBox before it enters the raft log, so the journal and snapshots hold
  only ciphertext.
- On disk a manager keeps the DEK and the CA key only wrapped (SecretBox) by its
  key-encryption key (KEK): a random per-node key file (0600) by default, or the
  operator's unlock key ``SWMKEY-1-…`` with autolock, which is never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os

import nacl.exceptions
import nacl.secret
import nacl.utils

from swarmsecrets import errors
from swarmsecrets.fsutil import write_private

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
UNLOCK_PREFIX = "SWMKEY-1-"


def new_key() -> bytes:
    return nacl.utils.random(KEY_SIZE)


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, stored beside ciphertext to name the key used."""
    return hashlib.sha256(b"swarmsecrets-key-id" + key).hexdigest()[:16]


def seal(key: bytes, plaintext: bytes) -> bytes:
    return bytes(nacl.secret.SecretBox(key).encrypt(plaintext))


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

class WrappedKeys:
    """The manager's wrapped key file: ``{"dek": ..., "ca_key": ..., "autolock": bool}``.

    Values are SecretBox(KEK) ciphertext, base64. Without autolock the KEK lives in
    ``kek`` beside it (0600); with autolock the KEK is the unlock key.
    """

    def __init__(self, keys_dir: str) -> None:
        self.dir = keys_dir
        self.path = os.path.join(keys_dir, "manager-keys.json")
        self.kek_path = os.path.join(keys_dir, "kek")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def autolocked(self) -> bool:
        with open(self.path) as f:
            return bool(json.load(f).get("autolock"))

    def store(self, dek: bytes, ca_key_pem: bytes, unlock_key: bytes | None) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if unlock_key is None:
            if os.path.exists(self.kek_path):
                with open(self.kek_path, "rb") as f:
                    kek = f.read()
            else:
                kek = new_key()
                write_private(self.kek_path, kek)
        else:
            kek = unlock_key
            if os.path.exists(self.kek_path):
                os.unlink(self.kek_path)
        doc = {
            "autolock": unlock_key is not None,
            "dek": base64.b64encode(seal(kek, dek)).decode(),
            "ca_key": base64.b64encode(seal(kek, ca_key_pem)).decode(),
        }
        write_private(self.path, json.dumps(doc).encode())

    def load(self, unlock_key: bytes | None = None) -> tuple[bytes, bytes]:
        """(dek, ca_key_pem). With autolock, the unlock key is required."""
        with open(self.path) as f:
            doc = json.load(f)
        if doc.get("autolock"):
            if unlock_key is None:
                raise errors.SwarmLocked()
            kek = unlock_key
        else:
            with open(self.kek_path, "rb") as f:
                kek = f.read()
        try:
            dek = open_sealed(kek, base64.b64decode(doc["dek"]))
            ca_key = open_sealed(kek, base64.b64decode(doc["ca_key"]))
        except nacl.exceptions.CryptoError:
            raise errors.InvalidArgument(errors.INVALID_UNLOCK_KEY) from None
        return dek, ca_key
