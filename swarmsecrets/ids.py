"""Object IDs as SwarmKit makes them: 25 characters of [0-9a-z] from 136 random bits."""

from __future__ import annotations

import secrets

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
# Two digits per division: an id is made per object created, and each division of a big int costs.
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]


def base36(n: int, width: int) -> str:
    out = []
    while n >= 1296:  # len(_PAIRS)
        out.append(_PAIRS[n % 1296])
        n //= 1296
    if n:
        out.append(_DIGITS[n] if n < 36 else _PAIRS[n])
    out.reverse()
    return "".join(out).rjust(width, "0")


def new_id() -> str:
    # Top bit forced so the base36 form always has 26+ digits; drop the first, keep 25.
    n = int.from_bytes(secrets.token_bytes(17), "big") | (1 << 135)
    return base36(n, 0)[1:26]


def new_request_id() -> str:
    return secrets.token_hex(16)
