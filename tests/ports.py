"""Free loopback ports for the daemons and raft members tests start, chosen outside the ephemeral
range: a member restarted at the address of one that stopped must find its ports free, and a port
of that range may meanwhile have become any outgoing connection's source port."""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack


def _ephemeral_ports() -> range:
    """The ports the kernel picks for outgoing connections (their source ports)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _free_run(n: int) -> int:
    """A port P such that P, P+1, ..., P+n-1 are free on 127.0.0.1, outside the ephemeral range."""
    ephemeral = _ephemeral_ports()
    low, high = (10000, ephemeral.start - n) if ephemeral.start > 12000 else (ephemeral.stop, 65536 - n)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(low, high)
        try:
            with ExitStack() as held:
                for p in range(port, port + n):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no {n} free consecutive ports on 127.0.0.1")


def free_port_pair() -> int:
    """A port P such that P and P+1 are free (a daemon's gRPC port and its raft port)."""
    return _free_run(2)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports."""
    start = _free_run(n)
    return list(range(start, start + n))
