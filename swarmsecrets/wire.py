"""The constants both ends of a gRPC connection must agree on, in one place.

Message size caps, channel and server options, the TLS name managers present, the metadata
keys that carry machine-readable facts next to a status, and how messages write timestamps.
Plain data only (no grpc import), so any module may read them. The local API's wire format
is swarmsecrets/localhttp.py.
"""

from __future__ import annotations

import datetime
import functools
from typing import Final

# --- message sizes ---------------------------------------------------------------------------

# The TLS port (manager <-> manager, worker <-> manager): the largest message is a secret of
# 500 KiB plus its envelope, or a worker's full assignment set; 4 MiB leaves room for both.
MAX_MESSAGE: Final = 4 * 1024 * 1024

# --- names -----------------------------------------------------------------------------------

# The DNS name in every manager certificate (ca/certs.py puts the manager OU there as a SAN):
# clients verify the server against it instead of the address they dialled, since the
# certificate names the node, not every address it may be reached at.
MANAGER_SERVER_NAME: Final = "swarm-manager"

# --- trailing metadata keys ------------------------------------------------------------------

# A follower answering a worker names the leader's control address here; the worker reconnects there.
LEADER_METADATA: Final = "swarmsecrets-leader"
# The kind of a typed error (errors.SwarmError subclass name), so the receiver can rebuild the
# same type and act on it without reading the human-readable message.
ERROR_KIND_METADATA: Final = "swarmsecrets-error"

# --- channel and server options --------------------------------------------------------------

Options = tuple[tuple[str, str | int], ...]

# No bandwidth-delay probing on either side: it answers every small message (a heartbeat, an
# assignment) with an HTTP/2 PING and its ack, a third of the leader's CPU per heartbeat of 1,000
# idle sessions. A node reads large answers (a full secret list) through a fixed 1 MiB window instead.
NO_BDP_PROBE: Final[Options] = (("grpc.http2.bdp_probe", 0),)

# A node dialling a manager's TLS port.
TLS_CHANNEL_OPTIONS: Final[Options] = (
    ("grpc.ssl_target_name_override", MANAGER_SERVER_NAME),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.http2.lookahead_bytes", 1024 * 1024),
    *NO_BDP_PROBE,
)
# A manager serving its TLS port.
TLS_SERVER_OPTIONS: Final[Options] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    *NO_BDP_PROBE,
)

# --- timestamps --------------------------------------------------------------------------------


def format_ts(ns: int) -> str:
    """A timestamp as messages carry it: RFC 3339 in UTC with nanoseconds, as Docker shows timestamps."""
    secs, frac = divmod(int(ns), 10**9)
    return f"{utc_second(secs)}.{frac:09d}Z"


@functools.lru_cache(maxsize=4096)
def utc_second(secs: int) -> str:
    """``secs`` (unix seconds) as ``YYYY-MM-DDTHH:MM:SS`` in UTC."""
    # Cached: objects written together share their second, and formatting one costs microseconds
    # (a full list formats two timestamps per object, a log line one).
    return datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
