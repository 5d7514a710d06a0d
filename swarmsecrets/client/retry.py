"""The retry policy of writes to a daemon: which failures are transient, the backoff and the budget.

A write carries a request_id that the manager remembers with the outcome, so a write retried with the
same id is applied at most once and a retried create reports the first outcome instead of a false
"already exists". Only UNAVAILABLE is retried (daemon restarting, manager starting, leader changing),
for about one daemon restart or leader election (a connection the daemon closes mid-call is UNAVAILABLE
too), and CANCELLED, which this client never causes itself: a daemon that stops ends the calls it
is still serving with CANCELLED. States that waiting cannot fix (a lost quorum, a
locked or inactive node, a worker asked for manager work, a manager out of disk space) are reported
at once: the daemon has already waited out an ordinary election before it says there is no leader.
DEADLINE_EXCEEDED is never retried: the write may or may not have happened, and only the caller can
say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from swarmsecrets import errors
from swarmsecrets.client.local import LocalError
from swarmsecrets.localhttp import Status

# Errors that describe a state, not a moment: retrying them only delays the answer.
NOT_TRANSIENT: tuple[type[errors.SwarmError], ...] = (
    errors.NoLeader, errors.SwarmLocked, errors.NotInSwarm, errors.NotAManager, errors.StorageFull)

T = TypeVar("T")


def new_request_id() -> str:
    return os.urandom(16).hex()  # as random as uuid4's hex, without importing uuid


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``budget`` seconds of retries after the first attempt, sleeping ``backoff_first`` s and doubling
    up to ``backoff_max`` s between attempts; no attempt starts after the budget is spent."""

    budget: float = 10.0
    backoff_first: float = 0.1
    backoff_max: float = 1.0

    @staticmethod
    def is_transient(e: LocalError) -> bool:
        """Whether a failed attempt is worth repeating with the same request_id."""
        if e.code is Status.CANCELLED:
            return True
        return e.code is Status.UNAVAILABLE and not isinstance(e.error(), NOT_TRANSIENT)

    def delays(self, stop_by: float | None = None) -> Iterator[float]:
        """The sleeps between attempts, started now: it ends when the next sleep would pass the budget
        (or ``stop_by``, a time.monotonic() value, whichever comes first)."""
        deadline = time.monotonic() + self.budget  # now, not at the first next()
        if stop_by is not None:
            deadline = min(deadline, stop_by)
        return self._delays(deadline)

    def _delays(self, deadline: float) -> Iterator[float]:
        delay = self.backoff_first
        while time.monotonic() + delay <= deadline:
            yield delay
            delay = min(delay * 2, self.backoff_max)

    def write(self, method: Callable[..., T], request: Any, timeout: float) -> T:
        """Call ``method(request, timeout=...)``, a Control write, with a fresh request_id, repeating
        transient failures with the same id; the last failure is raised as the LocalError it was."""
        request.request_id = new_request_id()
        delays = self.delays()
        while True:
            try:
                return method(request, timeout=timeout)
            except LocalError as e:
                if not self.is_transient(e):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
            time.sleep(delay)


DEFAULT_RETRY = RetryPolicy()
