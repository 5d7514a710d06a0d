"""Encodings of the raft channel and log: pickle protocol 4 out, plain data only in.

pysyncobj frames every message as a pickle and keeps commands as pickles in its log. We keep
pickle (it is fast and handles bytes without copies) but never let it build objects: the
unpickler below refuses every global, so a frame can only produce None, bool, int, float,
str, bytes, bytearray, list, tuple, dict, set and frozenset. Nothing in the protocol needs
more: membership commands carry addresses as strings (not TCPNode instances), entries are
``(bytes, int, int)`` tuples and snapshots are plain data.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

# pysyncobj pickles with protocol 2, which stores bytes as latin-1 text behind a
# ``_codecs.encode`` global: 1.5x the size, and a global our unpickler refuses. Protocol 4
# stores bytes as-is. Every node runs this code, so sender and receiver agree.
PICKLE_PROTOCOL = 4

# The longest frame a peer may send (stock accepts any 32-bit length and buffers it all before
# decoding, so one header could make a member allocate 4 GiB). The leader's AppendEntries batches stop at 4 MiB
# plus one entry (commands are capped at MAX_COMMAND_BYTES) and snapshot chunks are 1 MiB.
MAX_FRAME = 8 * 1024 * 1024
MAX_COMMAND_BYTES = 1024 * 1024
FRAME_HEADER = struct.Struct("!I")

_INT = int
_OPT_INT = (int, type(None))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild plain data: every global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode a pickle that came from a peer or from disk; raises on anything but plain data."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def encode_frame(message: Any) -> tuple[bytes, bytes]:
    """The header and body of one frame; raises ValueError if the body exceeds MAX_FRAME."""
    body = dumps(message)
    if len(body) > MAX_FRAME:
        raise ValueError(f"raft frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return FRAME_HEADER.pack(len(body)), body


def _is_entry(e: Any) -> bool:
    return (isinstance(e, tuple) and len(e) == 3 and isinstance(e[0], bytes)
            and isinstance(e[1], int) and isinstance(e[2], int))


# Field -> accepted types, per message type pysyncobj exchanges between members. Anything else
# (utility commands, 'readonly', chunked 'transmission' entries) never reaches SyncObj.
_REQUIRED: dict[str, dict[str, Any]] = {
    "append_entries": {"term": _INT, "commit_index": _INT},
    "request_vote": {"term": _INT, "last_log_index": _INT, "last_log_term": _INT},
    "response_vote": {"term": _INT},
    "next_node_idx": {"next_node_idx": _INT, "reset": bool, "success": bool},
    "apply_command": {"command": bytes},
    "apply_command_response": {"request_id": _INT},
    "timeout_now": {"term": _INT},
    # Pre-vote (prevote.py): never changes the receiver's term or vote.
    "pre_vote": {"term": _INT, "last_log_index": _INT, "last_log_term": _INT},
    "pre_vote_response": {"term": _INT, "granted": bool, "current_term": _INT},
}
_OPTIONAL: dict[str, dict[str, Any]] = {
    "append_entries": {"prevLogIdx": _OPT_INT, "prevLogTerm": _OPT_INT, "entries": list,
                       "serialized": (tuple, type(None)), "rs": _INT},
    "next_node_idx": {"rs": _INT, "rt": _INT},  # read-index echoes (readindex.py)
    "apply_command": {"request_id": _INT},
    "apply_command_response": {"error": _INT, "log_idx": _INT, "log_term": _INT},
}


def valid_message(message: Any) -> bool:
    """True if ``message`` has the shape SyncObj's handler expects for its type."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return False
    kind = message["type"]
    required = _REQUIRED.get(kind)
    if required is None:
        return False
    optional = _OPTIONAL.get(kind, {})
    for key, value in message.items():
        if key == "type":
            continue
        want = required.get(key, optional.get(key))
        if want is None or not isinstance(value, want):
            return False
    if any(key not in message for key in required):
        return False
    if kind == "append_entries" and "entries" in message:
        return "prevLogIdx" in message and all(_is_entry(e) for e in message["entries"])
    return True
