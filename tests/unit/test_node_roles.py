"""The node's role state machine: every allowed change, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from swarmsecrets.node.roles import DURABLE_ROLES, TRANSITIONS, Change, IllegalTransition, Role, RoleMachine

ALLOWED = [
    (Role.INACTIVE, Change.INIT, Role.MANAGER),
    (Role.INACTIVE, Change.JOIN_AS_MANAGER, Role.MANAGER),
    (Role.INACTIVE, Change.JOIN_AS_WORKER, Role.WORKER),
    (Role.MANAGER, Change.LOCK, Role.LOCKED),
    (Role.LOCKED, Change.UNLOCK, Role.MANAGER),
    (Role.MANAGER, Change.DEMOTE, Role.WORKER),
    (Role.WORKER, Change.PROMOTE, Role.MANAGER),
    (Role.MANAGER, Change.LEAVE, Role.LEAVING),
    (Role.LOCKED, Change.LEAVE, Role.LEAVING),
    (Role.WORKER, Change.LEAVE, Role.LEAVING),
    (Role.LEAVING, Change.LEFT, Role.INACTIVE),
    (Role.WORKER, Change.REMOVED, Role.INACTIVE),
]
# A manager's own worker agent: a sub-state of the manager role (tested below).
AGENT_CHANGES = [
    (Role.MANAGER, Change.START_AGENT, Role.MANAGER),
    (Role.MANAGER, Change.STOP_AGENT, Role.MANAGER),
]


def machine_in(role: Role) -> RoleMachine:
    """A machine brought to ``role`` through allowed changes only (the only way there is)."""
    path = {
        Role.INACTIVE: [],
        Role.MANAGER: [Change.INIT],
        Role.WORKER: [Change.JOIN_AS_WORKER],
        Role.LOCKED: [Change.INIT, Change.LOCK],
        Role.LEAVING: [Change.JOIN_AS_WORKER, Change.LEAVE],
    }[role]
    m = RoleMachine()
    for change in path:
        m.apply(change)
    assert m.role is role
    return m


def test_the_table_is_exactly_the_allowed_changes() -> None:
    assert TRANSITIONS == {(before, change): after for before, change, after in ALLOWED + AGENT_CHANGES}


@pytest.mark.parametrize(("before", "change", "after"), ALLOWED, ids=lambda v: str(v))
def test_each_allowed_change(before: Role, change: Change, after: Role) -> None:
    m = machine_in(before)
    assert m.can(change)
    assert m.apply(change) is after
    assert m.role is after


@pytest.mark.parametrize(("before", "change"),
                         [(r, c) for r, c in itertools.product(Role, Change) if (r, c) not in TRANSITIONS],
                         ids=lambda v: str(v))
def test_every_other_change_is_refused_and_changes_nothing(before: Role, change: Change) -> None:
    m = machine_in(before)
    assert not m.can(change)
    with pytest.raises(IllegalTransition) as e:
        m.apply(change)
    assert (e.value.role, e.value.change) == (before, change)
    assert str(e.value) == f"a node that is {before} cannot {change}"
    assert m.role is before


def test_a_whole_life() -> None:
    m = RoleMachine()
    for change, role in [(Change.JOIN_AS_WORKER, Role.WORKER), (Change.PROMOTE, Role.MANAGER),
                         (Change.LOCK, Role.LOCKED), (Change.UNLOCK, Role.MANAGER), (Change.DEMOTE, Role.WORKER),
                         (Change.REMOVED, Role.INACTIVE), (Change.INIT, Role.MANAGER), (Change.LEAVE, Role.LEAVING),
                         (Change.LEFT, Role.INACTIVE)]:
        assert m.apply(change) is role


@pytest.mark.parametrize("role", list(Role))
def test_a_node_starts_only_in_a_role_its_data_dir_can_record(role: Role) -> None:
    if role in DURABLE_ROLES:
        assert RoleMachine(role).role is role
    else:
        with pytest.raises(ValueError, match="a node starts as"):
            RoleMachine(role)


def test_on_disk_a_locked_manager_is_a_manager() -> None:
    assert Role.LOCKED.durable is Role.MANAGER
    assert [r.durable for r in (Role.INACTIVE, Role.MANAGER, Role.WORKER)] == [Role.INACTIVE, Role.MANAGER,
                                                                                Role.WORKER]


# --- a manager's own worker agent --------------------------------------------------------------------

@pytest.mark.parametrize("role", list(Role))
def test_only_a_worker_runs_the_agent_until_a_manager_starts_its_own(role: Role) -> None:
    assert machine_in(role).runs_agent is (role is Role.WORKER)


def test_a_manager_starts_and_stops_its_agent() -> None:
    m = machine_in(Role.MANAGER)
    assert m.can(Change.START_AGENT) and not m.can(Change.STOP_AGENT)
    assert m.apply(Change.START_AGENT) is Role.MANAGER
    assert m.runs_agent and m.role is Role.MANAGER
    assert m.can(Change.STOP_AGENT) and not m.can(Change.START_AGENT)
    assert m.apply(Change.STOP_AGENT) is Role.MANAGER
    assert not m.runs_agent and m.role is Role.MANAGER


def test_a_manager_cannot_start_a_second_agent_nor_stop_one_it_does_not_run() -> None:
    m = machine_in(Role.MANAGER)
    with pytest.raises(IllegalTransition, match="a node that is manager without an agent cannot stop agent"):
        m.apply(Change.STOP_AGENT)
    assert not m.runs_agent
    m.apply(Change.START_AGENT)
    with pytest.raises(IllegalTransition, match="a node that is manager running its agent cannot start agent"):
        m.apply(Change.START_AGENT)
    assert m.runs_agent and m.role is Role.MANAGER


@pytest.mark.parametrize(("change", "after", "runs_agent"), [
    (Change.DEMOTE, Role.WORKER, True),     # the demoted manager's agent is a worker's from now on
    (Change.LEAVE, Role.LEAVING, False),
    (Change.LOCK, Role.LOCKED, False),
], ids=lambda v: str(v))
def test_leaving_the_manager_role_ends_the_managers_agent(change: Change, after: Role, runs_agent: bool) -> None:
    m = machine_in(Role.MANAGER)
    m.apply(Change.START_AGENT)
    assert m.apply(change) is after
    assert m.runs_agent is runs_agent
    assert not m.can(Change.STOP_AGENT)


def test_a_manager_back_from_another_role_runs_no_agent_until_it_starts_one() -> None:
    m = machine_in(Role.WORKER)
    assert m.apply(Change.PROMOTE) is Role.MANAGER
    assert not m.runs_agent  # the worker's agent ended with the promotion
    m.apply(Change.START_AGENT)
    m.apply(Change.LOCK)
    assert m.apply(Change.UNLOCK) is Role.MANAGER
    assert not m.runs_agent and m.can(Change.START_AGENT)
