"""Placement constraints, as Swarm writes them: ``node.labels.zone == east``, ``node.role != manager``.

A constraint is ``KEY OP VALUE`` with ``OP`` one of ``==`` and ``!=``; the first operator found in the
text splits it. Keys ``node.id``, ``node.hostname``, ``node.role`` and ``node.labels.<label>`` name a
node's attributes; a key of another form parses but no node satisfies it (Swarm's rule). Values compare
without regard to case; a label's name is case-sensitive; a node without the label has the value "".
The parse errors are Swarm's texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from swarmsecrets import errors
from swarmsecrets.manager.state import Node

OPERATORS = ("==", "!=")
NODE_LABEL_PREFIX = "node.labels."
# Constraints of one service: at most this many, each at most this long.
MAX_CONSTRAINTS = 64
MAX_CONSTRAINT_BYTES = 1024

_KEY = re.compile(r"[a-z_][a-z0-9\-_.]+", re.IGNORECASE)
# A value never holds an operator of today or tomorrow ("<", ">", "~", "=", "!").
_VALUE = re.compile(r"[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    equal: bool  # "==" (True) or "!=" (False)
    value: str

    def match(self, *whats: str) -> bool:
        found = any(self.value.casefold() == w.casefold() for w in whats)
        return found if self.equal else not found


def parse(texts: Iterable[str]) -> list[Constraint]:
    """Every constraint of ``texts``; raises InvalidArgument with Swarm's text for the first bad one."""
    out = []
    for text in texts:
        if len(text.encode()) > MAX_CONSTRAINT_BYTES:
            raise errors.InvalidArgument(f"constraint longer than {MAX_CONSTRAINT_BYTES} bytes")
        for op in OPERATORS:
            if op not in text:
                continue
            key, value = (part.strip() for part in text.split(op, 1))
            if not _KEY.fullmatch(key):
                raise errors.InvalidArgument(f"key '{key}' is invalid")
            if not _VALUE.fullmatch(value):
                raise errors.InvalidArgument(f"value '{value}' is invalid")
            out.append(Constraint(key, op == "==", value))
            break
        else:
            raise errors.InvalidArgument(f"constraint expected one operator from {', '.join(OPERATORS)}")
    return out


def validate(texts: Sequence[str]) -> None:
    """A service's constraints: at most MAX_CONSTRAINTS, each one that parses."""
    if len(texts) > MAX_CONSTRAINTS:
        raise errors.InvalidArgument(f"too many constraints: {len(texts)} (at most {MAX_CONSTRAINTS})")
    parse(texts)


def node_matches(constraints: Iterable[Constraint], node: Node) -> bool:
    """Whether ``node`` satisfies every constraint."""
    for c in constraints:
        key = c.key.lower()
        if key == "node.id":
            ok = c.match(node.id)
        elif key == "node.hostname":
            ok = c.match(node.hostname)
        elif key == "node.role":
            ok = c.match(node.role)
        elif len(key) > len(NODE_LABEL_PREFIX) and key.startswith(NODE_LABEL_PREFIX):
            ok = c.match(node.labels.get(c.key[len(NODE_LABEL_PREFIX):], ""))
        else:
            ok = False
        if not ok:
            return False
    return True
