"""The raft package is a library: it knows nothing of its host, and the manager maps its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from swarmsecrets import errors
from swarmsecrets.manager.raftedge import swarm_error
from swarmsecrets.raft import (
    ApplyFailed,
    InvalidCommand,
    NoLeader,
    RaftError,
    Refused,
    StorageFailed,
    StorageFull,
    Unavailable,
    UnknownOutcome,
)
from tests.raft.raft_harness import ROOT

HOST_MODULES = ("grpc", "swarmsecrets.manager", "swarmsecrets.ca", "swarmsecrets.cli", "swarmsecrets.errors")


def test_the_raft_package_imports_nothing_of_its_host() -> None:
    probe = (
        "import sys, swarmsecrets.raft, swarmsecrets.raft.node, swarmsecrets.raft.snapshots\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({HOST_MODULES!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the raft package pulls in {out.stdout.strip()}"


@pytest.mark.parametrize(("raised", "kind", "code"), [
    (NoLeader(), errors.NoLeader, errors.Code.UNAVAILABLE),
    (StorageFailed("disk gone"), errors.Unavailable, errors.Code.UNAVAILABLE),
    (StorageFull("no space left on device (writing raft.journal)"), errors.StorageFull, errors.Code.UNAVAILABLE),
    (Unavailable("queue full"), errors.Unavailable, errors.Code.UNAVAILABLE),
    (UnknownOutcome(), errors.DeadlineExceeded, errors.Code.DEADLINE_EXCEEDED),
    (Refused("one change at a time"), errors.FailedPrecondition, errors.Code.FAILED_PRECONDITION),
    (InvalidCommand("too big"), errors.InvalidArgument, errors.Code.INVALID_ARGUMENT),
    (ApplyFailed("boom"), errors.Internal, errors.Code.INTERNAL),
    (RaftError("anything else"), errors.Internal, errors.Code.INTERNAL),
], ids=lambda v: type(v).__name__ if isinstance(v, RaftError) else None)
def test_the_manager_maps_every_raft_error(raised: RaftError, kind: type[errors.SwarmError],
                                           code: errors.Code) -> None:
    mapped = swarm_error(raised)
    assert isinstance(mapped, kind) and mapped.code == code


def test_a_full_disk_names_the_manager_and_what_to_do() -> None:
    mapped = swarm_error(StorageFull("no space left on device (writing /d/raft.journal)"), "n0de")
    assert str(mapped) == ("raft: cannot persist: no space left on device (writing /d/raft.journal) on manager "
                           "n0de: free space on its data disk (writes resume by themselves) or send writes to "
                           "another manager")


def test_the_mapped_errors_keep_the_user_facing_wording() -> None:
    assert swarm_error(NoLeader()).message == errors.NO_LEADER
    assert swarm_error(UnknownOutcome()).message == errors.UNKNOWN_OUTCOME
