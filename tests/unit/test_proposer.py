"""The manager's proposer over a raft member that the test scripts: it rides out a failover with
the same request, reports no leader after about one election, keeps leader-only decisions to
their term, refuses at once without a quorum, and stamps commands with its clock."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from swarmsecrets import errors
from swarmsecrets.manager import state
from swarmsecrets.manager.proposer import LoopReplies, RaftProposer
from tests.unit.managerkit import SELF_RAFT, Clock, Status, run


class ScriptedRaft:
    """A raft member whose proposals fail with the scripted errors, then apply to a real store."""

    def __init__(self, failures: list[errors.SwarmError] | None = None) -> None:
        self.store = state.Store()
        self.machine = state.LogStateMachine(self.store)
        self.group = Status()
        self.failures = list(failures or [])
        self.entries: list[dict[str, Any]] = []

    def status(self) -> Status:
        return self.group

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        self.entries.append(command)
        done: Future[Any] = Future()
        if self.failures:
            done.set_exception(self.failures.pop(0))
        else:
            done.set_result(self.machine.apply(command, self.store.applied_index + 1))
        return done

    def read_barrier_async(self, timeout: float) -> Future[None]:
        done: Future[None] = Future()
        if self.failures:
            done.set_exception(self.failures.pop(0))
        else:
            done.set_result(None)
        return done

    def add_member(self, addr: str, timeout: float) -> None:
        self.group.members.append(addr)

    def remove_member(self, addr: str, timeout: float) -> None:
        self.group.members.remove(addr)


def proposer(raft: ScriptedRaft, grace: float = 5.0) -> RaftProposer:
    return RaftProposer(raft, raft.store, Clock(ns=42), no_leader_grace=grace)


SECRET = state.CreateSecret(rid="r1", id="s" * 25, name="db", data=b"sealed", key_id="k")


def test_a_proposal_is_stamped_and_returns_its_result() -> None:
    raft = ScriptedRaft()

    async def test() -> None:
        created = await proposer(raft).propose(SECRET)
        assert created.name == "db" and created.created_at == 42

    run(test)


def test_a_failover_is_ridden_out_with_the_same_request() -> None:
    raft = ScriptedRaft([errors.Unavailable("no leader"), errors.DeadlineExceeded(errors.UNKNOWN_OUTCOME)])

    async def test() -> None:
        created = await proposer(raft).propose(SECRET)
        assert created.id == SECRET.id
        assert len(raft.entries) == 3 and all(e == raft.entries[0] for e in raft.entries)
        assert len(raft.store.secrets()) == 1

    run(test)


def test_no_leader_for_about_an_election_is_reported() -> None:
    raft = ScriptedRaft([errors.Unavailable("no leader")] * 1000)

    async def test() -> None:
        with pytest.raises(errors.Unavailable):
            await proposer(raft, grace=0.2).propose(SECRET)
        assert raft.store.secrets() == []

    run(test)


def test_without_a_quorum_nothing_is_sent() -> None:
    raft = ScriptedRaft()
    raft.group.members = [SELF_RAFT, "b:1", "c:1"]
    raft.group.reachable = {SELF_RAFT}

    async def test() -> None:
        with pytest.raises(errors.NoLeader):
            await proposer(raft, grace=0.1).propose(SECRET)
        with pytest.raises(errors.NoLeader):
            await proposer(raft, grace=0.1).barrier()
        assert raft.entries == []

    run(test)


def test_a_leader_only_decision_goes_in_only_during_its_term() -> None:
    raft = ScriptedRaft()

    async def test() -> None:
        p = proposer(raft)
        term = p.leader_term()
        assert term == raft.group.term
        raft.group.term += 1
        with pytest.raises(errors.Unavailable):
            await p.propose(SECRET, leader_only=term)
        raft.group.is_leader = False
        assert p.leader_term() is None
        assert raft.entries == []

    run(test)


def test_membership_changes_reach_the_raft_member() -> None:
    raft = ScriptedRaft()

    async def test() -> None:
        p = proposer(raft)
        await p.add_member("b:1")
        assert p.status().members == [SELF_RAFT, "b:1"]
        await p.remove_member("b:1")
        assert p.status().members == [SELF_RAFT]

    run(test)


def test_a_manager_out_of_disk_space_refuses_at_once() -> None:
    """Waiting out a failover does not free a disk: the refusal is not retried."""
    full = errors.storage_full("no space left on device (writing /data/raft.journal)", "abc123")
    raft = ScriptedRaft([full, errors.Unavailable("no leader")])

    async def test() -> None:
        with pytest.raises(errors.StorageFull, match="cannot persist: no space left on device .* on manager abc123"):
            await proposer(raft).propose(SECRET)
        assert len(raft.entries) == 1

    run(test)


def test_outcomes_ready_together_reach_the_loop_in_one_wakeup() -> None:
    """Outcomes resolved on another thread (the raft thread) before the loop runs again are
    delivered by one call_soon_threadsafe, each to its own caller, errors included."""

    async def test() -> None:
        loop = asyncio.get_running_loop()
        replies = LoopReplies(loop)
        inner: list[Future[Any]] = [Future() for _ in range(50)]
        waiting = [replies.wait(f) for f in inner]
        hops = 0
        original = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal hops
            hops += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

        def resolve() -> None:
            for i, f in enumerate(inner):
                if i == 7:
                    f.set_exception(errors.NoLeader())
                else:
                    f.set_result(i)

        thread = threading.Thread(target=resolve)
        thread.start()
        thread.join()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert hops == 1
        assert isinstance(outcomes[7], errors.NoLeader)
        assert [o for i, o in enumerate(outcomes) if i != 7] == [i for i in range(50) if i != 7]

    run(test)
