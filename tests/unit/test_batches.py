"""Batch entries: several commands in one raft entry, each with its own outcome, version and
request id; objects versioned by the store's counter, the same on every member and across a
snapshot; a batch written only once every manager can apply it."""

from __future__ import annotations

import asyncio
import io
import pickle
from concurrent.futures import Future
from typing import Any

import pytest

from swarmsecrets import errors
from swarmsecrets.manager import proposer as proposer_mod
from swarmsecrets.manager import state
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import Store
from tests.unit.managerkit import Clock, run
from tests.unit.test_proposer import ScriptedRaft

TS = 1_700_000_000_000_000_000


def _secret(n: int, name: str | None = None, rid: str | None = None) -> state.CreateSecret:
    return state.CreateSecret(rid=rid or f"r{n}", ts=TS + n, id=f"{n:025d}", name=name or f"s{n}",
                              data=b"sealed", key_id="k")


def _plain(obj: Any) -> Any:
    """What a member reads back from the log: pickled and unpickled as plain data only."""

    class Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(name)

    return Plain(io.BytesIO(pickle.dumps(obj, protocol=4))).load()


def _batch(*cmds: state.Command) -> dict[str, Any]:
    return _plain(state.encode_batch([state.encode_command(cmd) for cmd in cmds]))


def test_a_batch_applies_in_order_with_an_outcome_and_a_version_per_command() -> None:
    replicas = [Store(), Store()]
    for s in replicas:
        machine = state.LogStateMachine(s)
        state.unwrap(machine.apply(_plain(state.encode_command(_secret(1))), 5))  # before any batch
        out = machine.apply(_batch(_secret(2), _secret(3, name="s2"), _secret(4), _secret(1)), 6)
        assert isinstance(out, list) and len(out) == 4
        assert isinstance(out[1], state.Err) and "AlreadyExists" in out[1].kind  # fails alone
        assert out[3] == s.tables().requests["r1"].result  # a retry inside a batch: its first outcome
        assert [state.unwrap(r).version for r in (out[0], out[2])] == [6, 8]  # one per command run
        # After the batch the counter leads the raft index; a single entry goes on from it.
        assert state.unwrap(machine.apply(_plain(state.encode_command(_secret(5))), 7)).version == 9
        assert s.applied_index == 7 and s.tables().last_version == 9
    assert replicas[0].tables() == replicas[1].tables()


def test_single_entries_keep_the_raft_index_as_version_until_a_batch() -> None:
    """What members of version 5 stamp, so that a mixed swarm agrees on every version."""
    s = Store()
    for index in (3, 4, 9):
        assert state.unwrap(s.apply(_secret(index), index)).version == index


def test_a_batch_that_is_not_well_formed_is_refused_whole() -> None:
    s = Store()
    machine = state.LogStateMachine(s)
    for entry in ({"op": "batch", "v": 6, "cmds": "x"}, {"op": "batch", "v": state.STATE_VERSION + 1, "cmds": []}):
        out = machine.apply(entry, 2)
        assert isinstance(out, state.Err) and s.secrets() == []
    out = machine.apply({"op": "batch", "v": 6, "cmds": [{"op": "batch", "v": 6, "cmds": []},
                                                          state.encode_command(_secret(1))]}, 3)
    assert isinstance(out, list) and isinstance(out[0], state.Err) and state.unwrap(out[1]).version == 3


@pytest.mark.parametrize("form", ["frames", "whole"])
def test_the_version_counter_survives_a_snapshot(form: str) -> None:
    s = Store()
    state.LogStateMachine(s).apply(_batch(_secret(1), _secret(2), _secret(3)), 10)
    assert s.tables().last_version == 12 and s.applied_index == 10
    if form == "frames":
        frames = [_plain(f) for f in codec.snapshot_frames(s.tables(), s.applied_index)]
        assert frames[0]["state_version"] == codec.BATCH_SINCE  # a member of version 5 could not go on from it
        tables, index = codec.restore_frames(iter(frames))
    else:
        snap = _plain(codec.encode_snapshot(s.tables(), s.applied_index))
        assert snap["state_version"] == codec.BATCH_SINCE
        tables, index = codec.decode_snapshot(snap)
    again = Store()
    again.load(tables, index)
    assert again.tables() == s.tables()
    assert state.unwrap(again.apply(_secret(4), 11)).version == 13


def test_a_snapshot_written_before_the_counter_starts_it_at_its_applied_index() -> None:
    s = Store()
    s.apply(_secret(1), 7)
    snap = codec.encode_snapshot(s.tables(), 9)
    assert snap["state_version"] == codec.FRAMED_SINCE and "last_version" not in snap  # as version 5 wrote it
    tables, index = codec.decode_snapshot(_plain(snap))
    assert tables.last_version == index == 9


class _HeldRaft(ScriptedRaft):
    """Proposals are answered only when the test says: commands pile up behind those in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[dict[str, Any], Future[Any]]] = []

    def propose_async(self, command: dict[str, Any], timeout: float) -> Future[Any]:
        self.entries.append(command)
        fut: Future[Any] = Future()
        self.held.append((command, fut))
        return fut

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for command, fut in held:
            fut.set_result(self.machine.apply(command, self.store.applied_index + 1))


def _proposer(raft: ScriptedRaft) -> proposer_mod.RaftProposer:
    return proposer_mod.RaftProposer(raft, raft.store, Clock(ns=42), no_leader_grace=5.0)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_commands_proposed_together_share_entries_each_with_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proposer_mod, "MAX_BATCHES_IN_FLIGHT", 1)
    monkeypatch.setattr(proposer_mod, "MAX_BATCH_COMMANDS", 3)
    raft = _HeldRaft()

    async def test() -> None:
        p = _proposer(raft)
        first = asyncio.ensure_future(p.propose(_secret(0)))
        await _settle()
        assert raft.entries[0]["op"] == "create_secret"  # nothing in flight: it leaves alone, at once
        rest = [asyncio.ensure_future(p.propose(_secret(n, name="dup" if n == 2 else None)))
                for n in range(1, 6)]
        rest.append(asyncio.ensure_future(p.propose(_secret(6, name="dup"))))
        await _settle()
        assert len(raft.entries) == 1  # the others wait for the entry in flight
        raft.answer_all()
        await _settle()
        assert [len(e["cmds"]) for e in raft.entries[1:]] == [3]  # at most MAX_BATCH_COMMANDS
        raft.answer_all()
        await _settle()
        assert [len(e["cmds"]) for e in raft.entries[2:]] == [3]
        raft.answer_all()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert isinstance(outcomes[-1], errors.AlreadyExists)  # its own typed error, the others unharmed
        created = outcomes[:-1]
        assert [c.id for c in created] == [f"{n:025d}" for n in range(6)]  # each its own outcome
        assert [c.version for c in created] == sorted({c.version for c in created})

    run(test)


def test_a_swarm_with_a_manager_of_an_earlier_version_gets_one_entry_per_command() -> None:
    raft = _HeldRaft()
    for i, version in enumerate((state.STATE_VERSION, codec.BATCH_SINCE - 1)):
        raft.store.apply(state.AddNode(rid=f"m{i}", ts=TS, node=state.Node(
            id=f"m{i}", role="manager", raft_addr=f"m{i}:1", state_version=version)), i + 1)

    async def test() -> None:
        p = _proposer(raft)
        calls = [asyncio.ensure_future(p.propose(_secret(n))) for n in range(5)]
        await _settle()
        # All sent at once, as before batches: none waits for another's answer.
        assert len(raft.entries) == 5 and all(e["op"] == "create_secret" for e in raft.entries)
        raft.answer_all()
        await asyncio.gather(*calls)

    run(test)


def test_a_command_that_acts_by_raft_index_never_shares_an_entry() -> None:
    raft = _HeldRaft()

    async def test() -> None:
        p = _proposer(raft)
        for cmd in (_secret(1), state.SetAutolock(rid="a", autolock=False)):
            asyncio.ensure_future(p.propose(cmd))
        asyncio.ensure_future(p.propose(_secret(2)))
        await _settle()
        assert sorted(e["op"] for e in raft.entries) == ["batch", "set_autolock"]
        assert [len(e["cmds"]) for e in raft.entries if e["op"] == "batch"] == [2]

    run(test)
