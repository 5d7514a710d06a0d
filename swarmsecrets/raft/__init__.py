"""A raft library: a hardened pysyncobj 0.3.17 with durable storage, a mutual-TLS transport,
pre-vote, read indexes and safe membership changes. It knows nothing of its host: the state machine, the TLS
contexts with the peer verifier, and the clock are handed in (see ``RaftNode``).

The public surface is what this module exports; the other modules are its parts.
"""

from swarmsecrets.raft.errors import (
    ApplyFailed,
    InvalidCommand,
    NoLeader,
    PeerRefused,
    RaftError,
    Refused,
    StorageFailed,
    StorageFull,
    Unavailable,
    UnknownOutcome,
)
from swarmsecrets.raft.node import RaftNode, RaftObserver, RaftStatus, RaftTiming, RaftTLS, RaftTuning, StateMachine
from swarmsecrets.raft.recovery import force_new_cluster, seed
from swarmsecrets.raft.transport import Admission, Peer, PeerVerifier, TLSConfig

__all__ = [
    "Admission",
    "ApplyFailed",
    "InvalidCommand",
    "NoLeader",
    "Peer",
    "PeerRefused",
    "PeerVerifier",
    "RaftError",
    "RaftNode",
    "RaftObserver",
    "RaftStatus",
    "RaftTLS",
    "RaftTiming",
    "RaftTuning",
    "Refused",
    "StateMachine",
    "StorageFailed",
    "StorageFull",
    "TLSConfig",
    "Unavailable",
    "UnknownOutcome",
    "force_new_cluster",
    "seed",
]
