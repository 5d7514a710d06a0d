"""Join tokens: ``SWMTKN-1-<50-char base36 CA digest>-<25-char base36 secret>``.

The digest pins the root CA for a joiner; the secret part says which role the
holder may join as. The replicated state keeps the tokens sealed with the data key.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from swarmsecrets import errors
from swarmsecrets.ca.certs import ca_digest
from swarmsecrets.ids import base36

_TOKEN = re.compile(r"^SWMTKN-1-([0-9a-z]{50})-([0-9a-z]{25})$")


@dataclass(frozen=True)
class JoinToken:
    ca_digest: str
    secret: str

    def __str__(self) -> str:
        return f"SWMTKN-1-{self.ca_digest}-{self.secret}"


def new_token(ca_pem: bytes) -> JoinToken:
    return JoinToken(ca_digest(ca_pem), base36(int.from_bytes(secrets.token_bytes(16), "big"), 25))


def parse_token(text: str) -> JoinToken:
    m = _TOKEN.match(text.strip())
    if not m:
        raise errors.InvalidArgument("invalid join token")
    return JoinToken(m.group(1), m.group(2))


def same_token(presented: str, current: str) -> bool:
    return hmac.compare_digest(presented.strip().encode(), current.encode())
