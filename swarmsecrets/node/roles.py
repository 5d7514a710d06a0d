"""The role state machine: what this node is, and the only ways it may change.

    inactive --init / join as manager--> manager <--unlock-- locked
    inactive --join as worker----------> worker      manager --lock (restart, autolock)--> locked
    manager  --demote------------------> worker      worker  --promote------------------> manager
    manager | locked | worker --leave--> leaving --left--> inactive
    worker   --removed (by the managers)--> inactive
    manager  --start agent / stop agent--> manager (with / without its worker agent)

A worker always runs the worker agent. A manager runs it too while tasks may be placed on it, as
in Docker Swarm: while its availability in the store is not ``drain`` (and its secrets root can
hold secrets). That is a sub-state of the manager role, ``runs_agent``: "start agent" and "stop
agent" toggle it, and any change that leaves the manager role ends it (the agent stops with the
manager, or a demoted manager's agent is restarted as a worker's).

A change is recorded here only once it is complete (the manager serves, the agent runs, the
data dir is written); a change that fails part-way is rolled back by the daemon to the role the
node still has, so a failed attempt never shows up as a transition. Anything not in the table is
refused with ``IllegalTransition``.
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
    START_AGENT = "start agent"
    STOP_AGENT = "stop agent"


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
    (Role.MANAGER, Change.START_AGENT): Role.MANAGER,
    (Role.MANAGER, Change.STOP_AGENT): Role.MANAGER,
}


class IllegalTransition(Exception):
    """A role change the table does not allow: a bug in the caller, never a user's mistake."""

    def __init__(self, role: Role, change: Change, detail: str = "") -> None:
        super().__init__(f"a node that is {role}{detail} cannot {change}")
        self.role = role
        self.change = change


class RoleMachine:
    """The node's current role. Not thread-safe: the daemon changes it on its event loop, under
    its lifecycle lock."""

    def __init__(self, role: Role = Role.INACTIVE) -> None:
        if role not in DURABLE_ROLES:
            raise ValueError(f"a node starts as {', '.join(sorted(DURABLE_ROLES))}, not {role}")
        self._role = role
        self._manager_agent = False

    @property
    def role(self) -> Role:
        return self._role

    @property
    def runs_agent(self) -> bool:
        """Whether this node runs the worker agent: a worker always, a manager while it may take tasks."""
        return self._role is Role.WORKER or (self._role is Role.MANAGER and self._manager_agent)

    def can(self, change: Change) -> bool:
        return self._refusal(change) is None

    def _refusal(self, change: Change) -> IllegalTransition | None:
        if (self._role, change) not in TRANSITIONS:
            return IllegalTransition(self._role, change)
        if change is Change.START_AGENT and self._manager_agent:
            return IllegalTransition(self._role, change, " running its agent")
        if change is Change.STOP_AGENT and not self._manager_agent:
            return IllegalTransition(self._role, change, " without an agent")
        return None

    def apply(self, change: Change) -> Role:
        """Make the change and return the new role, or raise IllegalTransition and change nothing."""
        refused = self._refusal(change)
        if refused is not None:
            raise refused
        new = TRANSITIONS[(self._role, change)]
        if change in (Change.START_AGENT, Change.STOP_AGENT):
            self._manager_agent = change is Change.START_AGENT
            log.info("role: %s %s", self._role, "runs the worker agent" if self._manager_agent else "runs no agent")
            return new
        log.info("role: %s -> %s (%s)", self._role, new, change)
        self._role = new
        if new is not Role.MANAGER:
            self._manager_agent = False
        return new
