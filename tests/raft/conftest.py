"""Fixtures for the raft tests: a throwaway CA, manager certificates, in-process clusters.

``RAFT_STOCK=name[,name...]`` puts back pysyncobj's stock behaviour for the named fixes, to show
that the test of each fix fails without it, e.g.
``RAFT_STOCK=next_index pytest tests/raft/test_defects.py``. Names: see ``STOCK``.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from swarmsecrets.raft import journal, membership, node, prevote, readindex, snapshots, transport, wire
from swarmsecrets.raft.node import RaftNode, RaftTiming, RaftTuning
from tests.raft.raft_harness import DictMachine, Pki, free_ports

_REAL_LAUNCH = snapshots.SnapshotStore._launch


def _stock_launch(self: snapshots.SnapshotStore, job: Callable[[], None]) -> None:
    self._snapshot()  # stock builds the snapshot data on the raft thread before it forks
    _REAL_LAUNCH(self, job)


def _restore_stock(mp: pytest.MonkeyPatch, name: str) -> None:
    S = node._RaftSyncObj
    M = membership.MembershipMixin
    if name == "prevote":
        mp.setattr(prevote, "PRE_VOTE", False)
    elif name == "read_index":
        mp.setattr(readindex, "READ_INDEX", False)
    elif name == "early_retry":
        mp.setattr(prevote, "EARLY_RETRY", False)
    elif name == "leader_loss":
        mp.setattr(prevote, "LEADER_LOSS_PREVOTE", False)
    elif name == "sync_ack":
        mp.delattr(S, "_SyncObj__sendNextNodeIdx")
    elif name == "protocol":
        mp.setattr(wire, "PICKLE_PROTOCOL", 2)
    elif name == "batch":
        mp.setattr(node, "APPEND_ENTRIES_BATCH_BYTES", 2 ** 16)
        mp.setattr(node, "SOCKET_BUFFER_BYTES", 2 ** 16)
    elif name == "rearm":
        mp.setattr(transport.TlsConnection, "_rearm_after_send", lambda self: None)
    elif name == "commit_ack":
        mp.setattr(S, "_only_commits", lambda self, node, message: False)
    elif name == "next_index":
        mp.setattr(S, "_keep_next_index", lambda self, node, message, before: None)
    elif name == "trim":
        mp.setattr(S, "_trim_append_entries", lambda self, message: (message, None))
    elif name == "compaction":
        mp.delattr(S, "_SyncObj__deleteEntriesTo")
    elif name == "entry_budget":  # past the entry threshold a member still waits for its turn
        mp.setattr(S, "_over_entry_budget", lambda self: False)
    elif name == "apply":
        mp.setattr(S, "_guarded_apply", lambda self, c, i: self._owner.state_machine.apply(c, i))
    elif name == "idle":
        mp.setattr(node, "CONNECTION_IDLE_TIMEOUT", 3.5)
    elif name == "membership":
        mp.delattr(M, "_SyncObj__changeCluster")
    elif name == "wait_leader":
        mp.setattr(node, "COMMANDS_WAIT_LEADER", True)
    elif name == "fork":
        mp.setattr(snapshots.SnapshotStore, "_launch", _stock_launch)
    elif name == "frame_cap":
        mp.setattr(wire, "MAX_FRAME", 2 ** 31 - 1)
    elif name == "restricted":
        mp.setattr(wire, "loads", lambda data: pickle.loads(bytes(data)))
    elif name == "no_dump":  # journalFile without fullDumpFile: the snapshot lives in memory only
        mp.setattr(snapshots.SnapshotStore, "_write", lambda self, head, parent=None: None)
    elif name == "align":
        mp.setattr(node, "_align_journal", lambda journal, snapshots: None)
    elif name == "release_sockets":
        mp.setattr(snapshots, "_release_inherited_sockets", lambda: None)
    elif name == "orphan":
        mp.setattr(snapshots.SnapshotStore, "_orphaned", staticmethod(lambda parent: False))
    elif name == "install_race":
        mp.setattr(snapshots.SnapshotStore, "_kill_child", lambda self: None)
    elif name == "backlog":
        mp.setattr(snapshots, "TRANSFER_BACKLOG", 1 << 62)
    elif name == "child_timeout":
        mp.setattr(snapshots, "SNAPSHOT_CHILD_TIMEOUT", 1e9)
    elif name == "validate":
        mp.setattr(wire, "valid_message", lambda message: isinstance(message, dict))
    elif name == "handshake_timeout":
        mp.setattr(transport, "HANDSHAKE_TIMEOUT", 1e9)
    elif name == "pending_cap":
        mp.setattr(transport, "MAX_PENDING_INCOMING", 1 << 30)
    elif name == "dial_direction":
        mp.setattr(transport.TlsTransport, "_dials", lambda self, node: False)
    elif name == "retire":
        mp.setattr(transport.TlsTransport, "_retire_previous", lambda self, node, conn: None)
    elif name == "max_backlog":
        mp.setattr(transport, "MAX_BACKLOG", 1 << 62)
    elif name == "persist_members":
        mp.delattr(M, "_SyncObj__doChangeCluster")
    elif name == "leave_after_commit":
        mp.setattr(S, "_leave_after_commit", lambda self, request, reverse: False)
        mp.setattr(S, "_SyncObj__changeCluster", lambda self, request:
                   SyncObj._SyncObj__changeCluster(self, request))
    elif name == "leader_noop_sync":
        mp.delattr(S, "_SyncObj__onBecomeLeader")
    elif name == "entry_pickles":  # stock: any command kind is queued, and entries are unpickled freely
        mp.delattr(M, "_SyncObj__parseChangeClusterRequest")
        mp.setattr(S, "_applyCommand", lambda self, command, callback, commandType=None:
                   SyncObj._applyCommand(self, command, callback, commandType))
        mp.setattr(S, "_SyncObj__doApplyCommand", lambda self, command:
                   self._apply_regular(command[1:]) if command[:1] == b"\0"
                   else SyncObj._SyncObj__doApplyCommand(self, command))
    elif name == "disk_full":  # no room is fatal again: the member stops for good
        mp.setattr(journal, "DISK_FULL_ERRNOS", frozenset())
    elif name == "hand_over":  # a leader that cannot persist keeps leading (and counting itself)
        mp.setattr(S, "_hand_over", lambda self: None)
    elif name == "full_vote":  # a member that cannot persist stands for election and votes
        mp.delattr(S, "_onTick")
        mp.setattr(S, "_refuses_vote", lambda self, message: False)
    elif name not in ("fallback", "journal"):  # these two are read by the tests themselves
        raise ValueError(f"unknown RAFT_STOCK name {name!r}")


STOCK = {n for n in os.environ.get("RAFT_STOCK", "").split(",") if n}


@pytest.fixture(autouse=True)
def _stock_mode() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    for name in sorted(STOCK):
        _restore_stock(mp, name)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# Three members share one Python process (and its GIL) with the test's own threads: on a loaded
# CI box a heartbeat can be late by more than the daemon default's 400 ms election minimum.
IN_PROCESS_TIMING = RaftTiming(heartbeat=0.05, election_min=0.6, election_max=1.2, leader_fallback=1.2)


class Cluster:
    def __init__(self, pki: Pki, root: Path, n: int = 3, *, timing: RaftTiming | None = None,
                 tuning: RaftTuning | None = None, machine: Callable[[], DictMachine] = DictMachine,
                 read_index_ready: Callable[[], bool] = lambda: True) -> None:
        self.pki = pki
        self.read_index_ready = read_index_ready
        self.root = root
        self.timing = timing or IN_PROCESS_TIMING
        self.tuning = tuning or RaftTuning()
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
        self.make_machine = machine
        self.tls = {a: pki.tls(a) for a in self.addrs}
        self.machines: dict[str, DictMachine] = {}
        self.nodes: dict[str, RaftNode] = {}

    def node(self, addr: str, members: list[str] | None = None) -> RaftNode:
        self.machines[addr] = self.make_machine()
        n = RaftNode(self_addr=addr, members=members or self.addrs,
                     data_dir=str(self.root / addr.replace(":", "_")), tls=self.tls[addr],
                     state_machine=self.machines[addr], timing=self.timing, tuning=self.tuning,
                     read_index_ready=self.read_index_ready)
        self.nodes[addr] = n
        return n

    def start(self, *addrs: str) -> None:
        for a in addrs or self.addrs:
            self.node(a).start()

    def stop(self, *addrs: str) -> None:
        for a in addrs or list(self.nodes):
            n = self.nodes.pop(a, None)
            if n is not None:
                n.stop()

    def leader(self, timeout: float = 20.0, among: list[str] | None = None) -> RaftNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a, n in self.nodes.items():
                if (among is None or a in among) and n.status().is_leader:
                    return n
            time.sleep(0.02)
        raise AssertionError("no leader elected")

    def followers(self) -> list[RaftNode]:
        return [n for n in self.nodes.values() if not n.status().is_leader]

    def converge(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every running node has applied every entry it knows to be committed and all
        have applied the same state; return it. Equal states alone do not do: a node just started
        has replayed nothing of its journal yet, and a lone one is then equal to itself."""
        deadline = time.monotonic() + timeout
        while True:
            # Read before the states: a node caught up here holds at least this in its state.
            behind = {a: (st.last_applied, st.commit_index) for a, n in self.nodes.items()
                      if (st := n.status()).last_applied < st.commit_index}
            states = [m.copy() for a, m in self.machines.items() if a in self.nodes]
            applied = {n.status().last_applied for n in self.nodes.values()}
            if not behind and all(s == states[0] for s in states) and len(applied) == 1:
                return states[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"states did not converge: applied={applied}, behind (applied, "
                                     f"committed)={behind}, sizes={[len(s) for s in states]}")
            time.sleep(0.05)


@pytest.fixture
def cluster_factory(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int = 3, **kw: Any) -> Cluster:
        c = Cluster(pki, tmp_path / f"c{len(made)}", n, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
