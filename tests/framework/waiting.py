"""Waiting on a state instead of sleeping for a guess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(fn: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.1,
               what: str = "condition") -> T:
    """Call ``fn`` until it returns a truthy value, which is returned; AssertionError after ``timeout`` s.

    An AssertionError raised by ``fn`` counts as "not yet" and is quoted if time runs out, so ``fn`` can
    be a check with a message.
    """
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}" + (f": {last}" if last else ""))
        time.sleep(interval)
