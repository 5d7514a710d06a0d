"""The C heap (glibc's malloc) under a large state: when freed memory goes back to the system.

Secret payloads (over 512 bytes) and the large buffers of a full list or a snapshot live in the C
heap, not in Python's small-object arenas. glibc keeps freed pages for reuse unless told: both
helpers are no-ops on another C library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable

# glibc's mallopt parameter, and the size from which a buffer gets pages of its own.
_M_MMAP_THRESHOLD = -3
LARGE_BUFFER = 1024 * 1024


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    return fn


_MALLOC_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def return_large_buffers() -> None:
    """Have glibc map every buffer of a megabyte or more on its own, so that its pages go back to
    the system when it is freed. By default glibc raises that threshold (up to 32 MiB) the first
    time such a buffer is freed, and the next ones stay in the heap once freed: a full list of a
    hundred thousand secrets (a dozen megabytes, built, parsed and serialized per call) left ~30 MiB
    more resident after the second call. Call it before threads start."""
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, LARGE_BUFFER)


def return_freed_memory() -> None:
    """Give the free pages of the heap back to the system (after a whole state was replaced: a
    follower that installed a snapshot over a smaller state would otherwise keep both sizes
    resident). A few milliseconds."""
    if _MALLOC_TRIM is not None:
        with contextlib.suppress(OSError):
            _MALLOC_TRIM(0)
