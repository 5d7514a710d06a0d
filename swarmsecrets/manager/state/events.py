"""What the store tells its subscribers, and the outcome of a command.

Subscribers run on the raft thread right after each apply (outside the store lock). They
receive the typed command, its typed result and the raft index; they must be quick and must
not block (hand work to an event loop with ``call_soon_threadsafe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from swarmsecrets import errors
from swarmsecrets.manager.state.commands import Command

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Err:
    """A failed command: the name of its errors class and the message (errors.to_wire)."""

    kind: str
    message: str

    @classmethod
    def of(cls, e: errors.SwarmError) -> Err:
        return cls(*errors.to_wire(e))

    def error(self) -> errors.SwarmError:
        return errors.from_wire(self.kind, self.message)


Result = Ok[object] | Err


def unwrap(result: Result) -> Any:
    """The value of an apply result (typed by the command that produced it), or raise its typed error."""
    if isinstance(result, Err):
        raise result.error()
    return result.value


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied command and its outcome."""

    index: int
    command: Command
    result: Result

    @property
    def ok(self) -> bool:
        return isinstance(self.result, Ok)


Subscriber = Callable[[Applied], None]
