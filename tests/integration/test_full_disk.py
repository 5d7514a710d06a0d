"""A manager whose data disk fills loses nothing: it refuses writes with one clear line, says so
once in its log, keeps serving reads, and takes writes again by itself once space returns; the
other managers go on writing meanwhile. Every acknowledged write is then on every manager, and
survives a restart of the manager that was full.

Each manager's data directory is a small tmpfs this module mounts (tests/framework/smallfs.py); a ballast
file fills it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalError, Status
from tests.framework import Cluster, Node, wait_until
from tests.framework.smallfs import SmallFs

REFUSED = "raft: cannot persist: no space left on device"
LOGGED = "raft: cannot persist:"
_names = itertools.count()


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, SmallFs]]]:
    c = Cluster(Path(tmp_path_factory.mktemp("fulldisk")))
    with ExitStack() as stack:
        disks = {m.name: stack.enter_context(SmallFs(m.data_dir, 16)) for m in c.managers}
        yield stack.enter_context(c.started()), disks


def create(node: Node) -> tuple[str, str | None]:
    """Create a secret through ``node``: (its name, None if acknowledged or the error's message)."""
    name = f"s{next(_names)}"
    spec = objects_pb2.SecretSpec(name=name, data=b"v" * 200)
    try:
        node.control().CreateSecret(control_pb2.CreateSecretRequest(spec=spec, request_id=f"rid-{name}"),
                                    timeout=10)
    except LocalError as e:
        return name, e.message
    return name, None


def write(node: Node, acked: list[str]) -> str | None:
    name, err = create(node)
    if err is None:
        acked.append(name)
    return err


def names(node: Node) -> set[str]:
    """The secrets a manager lists; a manager still starting counts as "not yet" in a wait."""
    try:
        listed = node.control().ListSecrets(control_pb2.ListSecretsRequest(), timeout=10).secrets
    except LocalError as e:
        if e.code is not Status.UNAVAILABLE:
            raise
        raise AssertionError(f"{node.name}: {e.message}") from None
    return {s.spec.name for s in listed}


def fill_until_refused(full: Node, disk: SmallFs, acked: list[str]) -> None:
    """Fill ``full``'s disk, then write through it until it refuses (its journal's last page may
    still take a few entries)."""
    disk.fill()
    wait_until(lambda: REFUSED in (write(full, acked) or ""), timeout=30, interval=0.05,
               what=f"{full.name} to refuse writes")


def log_count(node: Node) -> int:
    return node.log_path.read_text(errors="replace").count(LOGGED)


def check_refusal_and_reads(full: Node, writer: Node, acked: list[str]) -> None:
    err = full.fails("secret", "create", "refused", "-", input="v")
    assert REFUSED in err and f"on manager {full.node_id}" in err and len(err.strip().splitlines()) == 1, err
    for _ in range(3):  # the others go on
        wait_until(lambda: write(writer, acked) is None, what=f"a write through {writer.name}")
    assert acked[-1] in full.ok("secret", "ls", "--format", "{{.Name}}").split()  # reads go on
    assert "refused" not in names(writer)


def recover_and_check(c: Cluster, full: Node, disk: SmallFs, acked: list[str], logged: int) -> None:
    assert log_count(full) == logged + 1, "not one log line for the episode"
    disk.free()
    wait_until(lambda: write(full, acked) is None, timeout=20, what=f"{full.name} to take writes again")
    for m in c.managers:
        wait_until(lambda m=m: set(acked) <= names(m), what=f"every acknowledged write on {m.name}")
    full.stop()
    full.start()
    wait_until(lambda: set(acked) <= names(full), timeout=30, what=f"every write on {full.name} after a restart")
    c.leader()


def test_a_full_follower_refuses_writes_while_the_others_go_on(swarm: tuple[Cluster, dict[str, SmallFs]]) -> None:
    c, disks = swarm
    leader = c.leader()
    full = next(m for m in c.managers if m is not leader)
    acked: list[str] = []
    logged = log_count(full)
    fill_until_refused(full, disks[full.name], acked)
    check_refusal_and_reads(full, leader, acked)
    recover_and_check(c, full, disks[full.name], acked, logged)


def test_a_full_leader_hands_over_and_refuses_writes(swarm: tuple[Cluster, dict[str, SmallFs]]) -> None:
    c, disks = swarm
    full = c.leader()
    acked: list[str] = []
    logged = log_count(full)
    fill_until_refused(full, disks[full.name], acked)
    leader = c.leader()
    assert leader is not full, "the full manager still leads"
    check_refusal_and_reads(full, leader, acked)
    recover_and_check(c, full, disks[full.name], acked, logged)
