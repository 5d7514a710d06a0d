"""A manager records in its Node the state version it can apply, once its record exists."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.manager import advertise_state_version
from swarmsecrets.manager.state.store import Store


def test_an_upgraded_manager_advertises_its_state_version_through_a_failover() -> None:
    store = Store()
    proposed: list[state.Command] = []

    async def propose(cmd: state.Command) -> object:
        proposed.append(cmd)
        if len(proposed) == 1:
            raise errors.Unavailable(errors.NO_LEADER)
        return state.unwrap(store.apply(replace(cmd, ts=2), store.applied_index + 1))

    async def run() -> None:
        applied = asyncio.Event()
        loop = asyncio.get_running_loop()
        store.subscribe(lambda ev: loop.call_soon_threadsafe(applied.set))
        task = asyncio.create_task(advertise_state_version(store, "m1", propose, applied, retry=0.01))
        await asyncio.sleep(0)
        assert not proposed  # no record yet: nothing to update
        # The record as a manager of the previous release wrote it (no version).
        store.apply(state.AddNode(rid="a", ts=1, node=state.Node(id="m1", role="manager")), 1)
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    node = store.node("m1")
    assert node is not None and node.state_version == state.STATE_VERSION
    assert len(proposed) == 2 and all(isinstance(c, state.UpdateNode) for c in proposed)


def test_a_manager_already_advertising_its_version_proposes_nothing() -> None:
    store = Store()
    store.apply(state.AddNode(rid="a", ts=1, node=state.Node(id="m1", role="manager",
                                                             state_version=state.STATE_VERSION)), 1)

    async def propose(cmd: state.Command) -> object:
        raise AssertionError("nothing to propose")

    asyncio.run(asyncio.wait_for(advertise_state_version(store, "m1", propose, asyncio.Event()), 10))
