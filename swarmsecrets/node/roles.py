"""The role state machine: what this node is, and the only ways it may change.

    inactive --init / join as manager--> manager <--unlock-- locked
    inactive --join as worker----------> worker      manager --lock (restart, autolock)--> locked
    manager  --demote------------------> worker      worker  --promote------------------> manager
    manager | locked | worker --leave--> leaving --left--> inactive
    worker   --removed (by the managers)--> inactive

A change is recorded here only once it is complete (the manager serves, the agent runs, the
data dir is written); a change that fails part-way is rolled back by the daemon to the role the
node still has, so a failed attempt never shows up as a transition. Anything not in the table is
refused with ``IllegalTransition``.

Managers never run tasks here: the scheduler places tasks on workers only, so a manager does not
run the worker agent.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    INACTIVE = "inactive"
    MANAGER = "manager"
    WORKER = "worker"
    LOCKED = "locked"    # a manager whose keys stay sealed until 'swarm unlock' (autolock, after a restart)
    LEAVING = "leaving"  # tearing down after 'swarm leave'; inactive next

    @property
    def durable(self) -> Role:
        """The role as the data dir records it: a locked node is a manager on disk."""
        return Role.MANAGER if self is Role.LOCKED else self


# The roles node.json may hold.
DURABLE_ROLES = frozenset({Role.INACTIVE, Role.MANAGER, Role.WORKER})


class Change(enum.StrEnum):
    INIT = "init"
    JOIN_AS_MANAGER = "join as manager"
    JOIN_AS_WORKER = "join as worker"
    LOCK = "lock"
    UNLOCK = "unlock"
    PROMOTE = "promote"
    DEMOTE = "demote"
    LEAVE = "leave"
    LEFT = "left"
    REMOVED = "removed"


TRANSITIONS: dict[tuple[Role, Change], Role] = {
    (Role.INACTIVE, Change.INIT): Role.MANAGER,
    (Role.INACTIVE, Change.JOIN_AS_MANAGER): Role.MANAGER,
    (Role.INACTIVE, Change.JOIN_AS_WORKER): Role.WORKER,
    (Role.MANAGER, Change.LOCK): Role.LOCKED,
    (Role.LOCKED, Change.UNLOCK): Role.MANAGER,
    (Role.MANAGER, Change.DEMOTE): Role.WORKER,
    (Role.WORKER, Change.PROMOTE): Role.MANAGER,
    (Role.MANAGER, Change.LEAVE): Role.LEAVING,
    (Role.LOCKED, Change.LEAVE): Role.LEAVING,
    (Role.WORKER, Change.LEAVE): Role.LEAVING,
    (Role.LEAVING, Change.LEFT): Role.INACTIVE,
    (Role.WORKER, Change.REMOVED): Role.INACTIVE,
}


class IllegalTransition(Exception):
    """A role change the table does not allow: a bug in the caller, never a user's mistake."""

    def __init__(self, role: Role, change: Change) -> None:
        super().__init__(f"a node that is {role} cannot {change}")
        self.role = role
        self.change = change


class RoleMachine:
    """The node's current role. Not thread-safe: the daemon changes it on its event loop, under
    its lifecycle lock."""

    def __init__(self, role: Role = Role.INACTIVE) -> None:
        if role not in DURABLE_ROLES:
            raise ValueError(f"a node starts as {', '.join(sorted(DURABLE_ROLES))}, not {role}")
        self._role = role

    @property
    def role(self) -> Role:
        return self._role

    def can(self, change: Change) -> bool:
        return (self._role, change) in TRANSITIONS

    def apply(self, change: Change) -> Role:
        """Make the change and return the new role, or raise IllegalTransition and change nothing."""
        new = TRANSITIONS.get((self._role, change))
        if new is None:
            raise IllegalTransition(self._role, change)
        log.info("role: %s -> %s (%s)", self._role, new, change)
        self._role = new
        return new
