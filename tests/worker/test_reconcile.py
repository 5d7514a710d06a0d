"""The worker's reconcile logic, driven directly: assignment sets in, task dirs and task processes out.

Real tmpfs (a mount per task when root), real task processes; no dispatcher: the messages the
session would read are built here and handed to ``Assignments`` and ``Reconciler``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import pytest

from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.worker.reconcile import Assignments, Reconciler, Resubscribe
from swarmsecrets.worker.secretsfs import SecretsFS
from tests.worker.conftest import CAN_MOUNT, mounts_below, needs_mount

T = TypeVar("T")

DB = pb.AssignedSecret(id="sec-db", name="db", data=b"db-password\n")
API = pb.AssignedSecret(id="sec-api", name="api", data=b"api-key\n")
TLS = pb.AssignedSecret(id="sec-tls", name="tls", data=b"tls-key\n")


def task(tid: str, files: Iterable[tuple[str, str]] = (), *, service: str = "app", version: int = 1,
         command: Iterable[str] = (), user: str = "") -> pb.AssignedTask:
    """A task whose ``files`` are (secret id, target) pairs, each 0444 root-owned."""
    return pb.AssignedTask(
        id=tid, service_name=service, spec_version=version, command=list(command), user=user,
        secrets=[pb.AssignedSecretFile(secret_id=sid, target=target, uid=0, gid=0, mode=0o444)
                 for sid, target in files])


def update(obj: pb.AssignedTask | pb.AssignedSecret) -> pb.AssignmentChange:
    if isinstance(obj, pb.AssignedTask):
        return pb.AssignmentChange(action=pb.AssignmentChange.UPDATE, task=obj)
    return pb.AssignmentChange(action=pb.AssignmentChange.UPDATE, secret=obj)


def remove(obj: pb.AssignedTask | pb.AssignedSecret) -> pb.AssignmentChange:
    if isinstance(obj, pb.AssignedTask):
        return pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, task=obj)
    return pb.AssignmentChange(action=pb.AssignmentChange.REMOVE, secret=obj)


class Stream:
    """One assignments stream as the dispatcher numbers it: a COMPLETE set, then INCREMENTAL sets in sequence."""

    def __init__(self) -> None:
        self.version = 0

    def _next(self) -> tuple[str, str]:
        before, self.version = f"v{self.version}", self.version + 1
        return before, f"v{self.version}"

    def complete(self, *changes: pb.AssignmentChange) -> pb.AssignmentsMessage:
        _, after = self._next()
        return pb.AssignmentsMessage(type=pb.AssignmentsMessage.COMPLETE, results_in=after, changes=changes)

    def incremental(self, *changes: pb.AssignmentChange) -> pb.AssignmentsMessage:
        before, after = self._next()
        return pb.AssignmentsMessage(type=pb.AssignmentsMessage.INCREMENTAL, applies_to=before, results_in=after,
                                     changes=changes)


class Node:
    """The agent's state without its session: what it knows, and what is on its tmpfs."""

    def __init__(self, fs: SecretsFS) -> None:
        self.fs = fs
        self.assignments = Assignments()
        self.reconciler = Reconciler(fs, asyncio.get_running_loop())

    async def receive(self, msg: pb.AssignmentsMessage) -> None:
        self.assignments.apply(msg)
        await self.reconciler.reconcile(self.assignments.tasks, self.assignments.secrets)

    def file(self, tid: str, target: str) -> bytes:
        with open(os.path.join(self.fs.task_dir(tid), target), "rb") as f:
            return f.read()

    def states(self) -> dict[str, str]:
        return {u.task_id: u.status.state for u in self.reconciler.pending.values()}


def run(test: Callable[[Node], Awaitable[T]], fs: SecretsFS) -> T:
    async def main() -> T:
        node = Node(fs)
        try:
            return await test(node)
        finally:
            await node.reconciler.stop_all(wipe=True)

    return asyncio.run(main())


def snapshot(task_dir: str) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime, ctime) of the task dir and everything in it, and the id of its mount."""
    out = {}
    for d, dirs, files in os.walk(task_dir):
        for name in [".", *dirs, *files]:
            st = os.lstat(os.path.join(d, name))
            out[os.path.relpath(os.path.join(d, name), task_dir)] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    with open("/proc/self/mountinfo") as f:
        ids = [int(line.split()[0]) for line in f if line.split()[4] == task_dir]
    out["mount"] = (ids[-1] if ids else 0, 0, 0)
    return out


def let_the_clock_tick(root: str, after_ns: int) -> None:
    """Return once a file changed now gets a later ctime than ``after_ns``: file times come from a coarse
    clock, and a rewrite within the same tick would not show in a snapshot."""
    while True:
        probe = os.path.join(root, f".probe-{secrets.token_hex(4)}")
        with open(probe, "w"):
            pass
        ctime = os.stat(probe).st_ctime_ns
        os.unlink(probe)
        if ctime > after_ns:
            return


def newest_ctime(snap: dict[str, tuple[int, int, int]]) -> int:
    return max(ctime for _ino, _mtime, ctime in snap.values())


# --- the assignment stream ---------------------------------------------------------------------------

def test_complete_set_replaces_everything_known() -> None:
    a, s = Assignments(), Stream()
    a.apply(s.complete(update(task("t1", [("sec-db", "db")])), update(DB)))
    a.apply(s.complete(update(task("t2", [("sec-api", "api")])), update(API)))
    assert set(a.tasks) == {"t2"}
    assert a.secrets == {"sec-api": b"api-key\n"}


def test_incremental_sets_apply_in_sequence() -> None:
    a, s = Assignments(), Stream()
    a.apply(s.complete(update(task("t1", [("sec-db", "db")])), update(DB)))
    a.apply(s.incremental(update(task("t2", [("sec-api", "api")])), update(API)))
    a.apply(s.incremental(remove(task("t1")), remove(DB)))
    assert set(a.tasks) == {"t2"}
    assert a.secrets == {"sec-api": b"api-key\n"}


def test_a_gap_in_the_sequence_asks_for_a_resubscribe_and_changes_nothing() -> None:
    a, s = Assignments(), Stream()
    a.apply(s.complete(update(task("t1", [("sec-db", "db")])), update(DB)))
    s.incremental(update(task("lost")))  # never delivered
    with pytest.raises(Resubscribe):
        a.apply(s.incremental(update(task("t2"))))
    assert set(a.tasks) == {"t1"}


def test_a_new_stream_must_open_with_a_complete_set() -> None:
    a, s = Assignments(), Stream()
    a.apply(s.complete(update(task("t1", [("sec-db", "db")])), update(DB)))
    a.new_stream()  # the session reconnected
    with pytest.raises(Resubscribe):
        a.apply(s.incremental(update(task("t2"))))
    assert set(a.tasks) == {"t1"}, "what was known stays until the COMPLETE set arrives"
    a.apply(s.complete(update(task("t2"))))
    assert set(a.tasks) == {"t2"}


# --- reconcile: files ----------------------------------------------------------------------------------

def test_tasks_get_their_files_and_are_reported_running(fs: SecretsFS) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db"), ("sec-api", "conf/api")])),
                                      update(DB), update(API)))
        assert node.file("t1", "db") == b"db-password\n"
        assert node.file("t1", "conf/api") == b"api-key\n"
        assert stat.S_IMODE(os.stat(os.path.join(fs.task_dir("t1"), "db")).st_mode) == 0o444
        assert node.states() == {"t1": "running"}
        if CAN_MOUNT:
            assert mounts_below(fs.task_dir("t1")) == [fs.task_dir("t1")]

    run(test, fs)


def test_an_update_of_one_task_leaves_the_others_untouched(fs: SecretsFS, root: str) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db")], service="web")),
                                      update(task("t2", [("sec-db", "db"), ("sec-api", "api")], service="api")),
                                      update(DB), update(API)))
        untouched = snapshot(fs.task_dir("t1"))
        changed_before = snapshot(fs.task_dir("t2"))
        let_the_clock_tick(root, max(newest_ctime(untouched), newest_ctime(changed_before)))
        with open(os.path.join(fs.task_dir("t2"), "api"), "rb") as old_api:
            rotated = pb.AssignedSecret(id="sec-api", name="api", data=b"api-key-v2\n")
            await node.receive(s.incremental(update(rotated), update(task("t2", [("sec-db", "db"), ("sec-api", "api")],
                                                                            service="api", version=2))))
            # the changed file was swapped for a new one: a reader of the old one still sees all of it
            assert old_api.read() == b"api-key\n"
        assert node.file("t2", "api") == b"api-key-v2\n"
        changed_after = snapshot(fs.task_dir("t2"))
        assert changed_after["api"][0] != changed_before["api"][0], "rewritten in place, not swapped"
        assert changed_after["db"] == changed_before["db"], "an identical file in the changed task was rewritten"
        assert snapshot(fs.task_dir("t1")) == untouched, "a task whose secrets did not change was touched"

    run(test, fs)


def test_a_complete_set_equal_to_what_is_known_touches_nothing(fs: SecretsFS, root: str) -> None:
    """After a reconnect the dispatcher resends everything; tasks already as assigned stay as they are."""
    async def test(node: Node) -> None:
        s = Stream()
        t1 = task("t1", [("sec-db", "db"), ("sec-api", "sub/api")])
        await node.receive(s.complete(update(t1), update(DB), update(API)))
        before = snapshot(fs.task_dir("t1"))
        let_the_clock_tick(root, newest_ctime(before))
        node.assignments.new_stream()
        await node.receive(Stream().complete(update(t1), update(DB), update(API)))
        assert snapshot(fs.task_dir("t1")) == before

    run(test, fs)


def test_a_removed_task_loses_its_files_and_mount(fs: SecretsFS) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db")], service="web")),
                                      update(task("t2", [("sec-db", "db")], service="api")), update(DB)))
        await node.receive(s.incremental(remove(task("t1"))))
        assert not os.path.lexists(fs.task_dir("t1"))
        assert not os.path.lexists(os.path.join(fs.services_dir, "web"))
        assert mounts_below(fs.task_dir("t1")) == []
        assert fs.list_tasks() == ["t2"]
        assert node.file("t2", "db") == b"db-password\n"
        assert "t1" not in node.states()

    run(test, fs)


def test_a_secret_leaves_when_no_task_references_it(fs: SecretsFS, root: str) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db"), ("sec-tls", "tls")], service="web")),
                                      update(task("t2", [("sec-tls", "tls")], service="api")),
                                      update(DB), update(TLS)))
        # t1 stops using db: its file goes, t1's other file and t2 stay
        await node.receive(s.incremental(update(task("t1", [("sec-tls", "tls")], service="web", version=2))))
        assert sorted(os.listdir(fs.task_dir("t1"))) == ["tls"]
        # no task references db any more: the dispatcher withdraws it, and no byte of it is left here
        await node.receive(s.incremental(remove(DB)))
        assert "sec-db" not in node.assignments.secrets
        # t2 goes too: tls is referenced by t1 alone, and only t1's dir holds it
        await node.receive(s.incremental(remove(task("t2"))))
        assert fs.list_tasks() == ["t1"]
        assert node.file("t1", "tls") == b"tls-key\n"
        for d, _dirs, files in os.walk(root):
            for name in files:
                with open(os.path.join(d, name), "rb") as f:
                    assert DB.data not in f.read(), f"{os.path.join(d, name)} still holds the removed secret"

    run(test, fs)


def test_a_task_whose_secret_is_missing_is_rejected(fs: SecretsFS) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db")]))))
        update_ = node.reconciler.pending["t1"]
        assert (update_.status.state, update_.status.err) == ("rejected", "secret sec-db is not available")
        assert fs.list_tasks() == []

    run(test, fs)


def test_a_task_with_a_malformed_user_is_rejected_and_the_others_run(fs: SecretsFS) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("bad", [("sec-db", "db")], user="nobody:x")),
                                      update(task("good", [("sec-db", "db")], service="other")), update(DB)))
        assert node.reconciler.pending["bad"].status.state == "rejected"
        assert "invalid user 'nobody:x'" in node.reconciler.pending["bad"].status.err
        assert node.states()["good"] == "running"
        assert fs.list_tasks() == ["good"]

    run(test, fs)


def test_stop_all_with_wipe_leaves_nothing(fs: SecretsFS, root: str) -> None:
    async def test(node: Node) -> None:
        s = Stream()
        await node.receive(s.complete(update(task("t1", [("sec-db", "db")])), update(DB)))
        await node.reconciler.stop_all(wipe=True)
        assert fs.list_tasks() == []
        assert not os.path.lexists(fs.services_dir)
        assert mounts_below(fs.tasks_dir) == []
        # the next reconcile writes the files again rather than trusting what it wrote before the wipe
        await node.receive(s.incremental())
        assert node.file("t1", "db") == b"db-password\n"

    run(test, fs)


# --- reconcile: task processes -------------------------------------------------------------------------

def processes_with(marker: str) -> list[int]:
    """The task processes (not their helpers, whose command lines hold the task's) with ``marker`` in argv."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
                if marker.encode() in argv and argv[0] == b"python3":
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@needs_mount
def test_tasks_start_and_stop_with_their_assignment(fs: SecretsFS) -> None:
    marker = f"swarmsecrets-test-{uuid.uuid4().hex}"
    program = "import sys, time; open('/run/secrets/db').read(); time.sleep(600)"

    async def test(node: Node) -> None:
        s = Stream()
        t1 = task("t1", [("sec-db", "db")], command=["python3", "-c", program, marker])
        await node.receive(s.complete(update(t1), update(DB)))
        await until(lambda: node.states().get("t1") == "running" and len(processes_with(marker)) == 1)
        await node.receive(s.incremental(remove(task("t1"))))
        assert processes_with(marker) == []
        assert fs.list_tasks() == []

    try:
        run(test, fs)
    finally:
        for pid in processes_with(marker):  # only if the test failed half-way
            os.kill(pid, 9)
