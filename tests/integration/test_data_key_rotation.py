"""Data-key rotation on a live swarm: 3 managers, a worker whose task reads its secret, writes going
on. After a rotation no byte on any manager's disk opens under the old key (the same scan finds
plenty before), every secret reads the same, and the rotation also runs on the schedule and with
the unlock key."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalError
from swarmsecrets.crypto import keys
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import opened_under, sealed_candidates

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="workers need root for tmpfs mounts")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(Path(tmp_path_factory.mktemp("dek")), managers=3, workers=1).started() as c:
        yield c


def key_ring(m: Node, unlock: bytes | None = None) -> tuple[bytes, ...]:
    """The data keys a manager's key file holds (current first), opened as the node itself opens
    them: with its key-encryption key beside the file, or the unlock key."""
    got = keys.WrappedKeys(str(m.data_dir / "keys")).load(unlock)
    return (got.dek, *got.previous)


def data_key(m: Node) -> control_pb2.DataKeyInfo:
    info: control_pb2.DataKeyInfo = m.control().GetDataKey(control_pb2.GetDataKeyRequest(), timeout=10)
    return info


def data_key_id(m: Node) -> str:
    return data_key(m).key_id


class Writer:
    """Creates secrets through a manager's control socket until stopped, counting failures."""

    def __init__(self, m: Node, prefix: str) -> None:
        self.m, self.prefix = m, prefix
        self.created: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        control = self.m.control()
        i = 0
        while not self._stop.is_set():
            name = f"{self.prefix}{i}"
            spec = objects_pb2.SecretSpec(name=name, data=f"value-{name}".encode())
            try:
                control.CreateSecret(control_pb2.CreateSecretRequest(spec=spec, request_id=f"w-{name}"), timeout=20)
                self.created.append(name)
            except LocalError as e:
                self.failed.append(f"{name}: {e.code.name} {e.message}")
            i += 1


def task_file(w: Node, service: str, target: str) -> Path:
    return w.secrets_root / "services" / service / target


def test_rotation_leaves_nothing_under_the_old_key(fleet: Cluster) -> None:
    # m1 leads (writes go to it), m2 runs the command, m3 is away during the rotation.
    m1 = fleet.leader()
    m2, m3 = [m for m in fleet.managers if m is not m1]
    (w1,) = fleet.workers
    m1.ok("secret", "create", "db_pass", "-", input="database_password\n")
    for i in range(20):
        m1.control().CreateSecret(control_pb2.CreateSecretRequest(
            spec=objects_pb2.SecretSpec(name=f"s{i}", data=f"value-s{i}".encode())), timeout=20)
    out_file = fleet.root / "app-read.txt"
    program = f"import time; open('{out_file}', 'w').write(open('/run/secrets/password').read()); time.sleep(600)"
    m1.ok("service", "create", "--name", "app", "--user", "0", "--secret", "source=db_pass,target=password",
          "--", "python3", "-c", program)
    wait_until(lambda: out_file.exists() and out_file.read_text() == "database_password\n", 30, 0.1,
               "the task reading its secret")

    old = {m.name: key_ring(m) for m in fleet.managers}
    assert len({ring for ring in old.values()}) == 1 and len(old[m1.name]) == 1
    old_key = old[m1.name][0]
    old_id = data_key_id(m1)
    # The probe works: before the rotation, every manager's disk holds data the old key opens.
    before = {m.name: opened_under(old_key, sealed_candidates(m.data_dir)) for m in fleet.managers}
    for name, found in before.items():
        assert any(b"database_password" in plain for _, plain in found), (name, len(found))

    # m3 is away for the whole rotation: when it is back, the others have compacted it away and it
    # gets a snapshot taken after it, from which it cannot learn the key; it asks a manager for it.
    m3.stop()
    with Writer(m1, "during-") as writer:
        out = m2.ok("swarm", "data-key", "--rotate", timeout=120)
        assert "Successfully rotated the swarm data key." in out
        # Each manager erases the old key once its journal is compacted past the rotation.
        wait_until(lambda: all(len(key_ring(m)) == 1 and key_ring(m) != old[m.name] for m in (m1, m2)),
                   60, 0.1, "the other managers' key files without the old key")
        m3.start()
        wait_until(lambda: len(key_ring(m3)) == 1 and key_ring(m3) != old[m3.name], 60, 0.1,
                   "the key file of the manager that was away, with the new key only")
        wait_until(lambda: len(writer.created) > 5, 30, 0.1, "writes during the rotation")
    assert not writer.failed, writer.failed
    new_id = data_key_id(m1)
    assert new_id != old_id and all(data_key_id(m) == new_id for m in (m2, m3))
    assert m3.ok("swarm", "data-key", "-q").strip() == new_id
    new_key = key_ring(m1)[0]
    assert keys.key_id(new_key) == new_id and key_ring(m2) == key_ring(m3) == (new_key,)

    for m in fleet.managers:
        candidates = sealed_candidates(m.data_dir)
        leftover = opened_under(old_key, candidates)
        assert not leftover, (m.name, [str(f) for f, _ in leftover])
        # ...and the same scan, with the new key, finds the current records.
        assert any(b"database_password" in plain for _, plain in opened_under(new_key, candidates)), m.name

    # Every secret reads the same: the running task's file, and a new task of a new service.
    assert task_file(w1, "app", "password").read_bytes() == b"database_password\n"
    m2.ok("service", "create", "--name", "app2", "--secret", "source=db_pass,target=pw", "--secret",
          f"source={writer.created[-1]},target=last", "--", "sleep", "600")
    wait_until(lambda: task_file(w1, "app2", "pw").exists() and task_file(w1, "app2", "last").exists(), 30, 0.1,
               "app2's secrets on the worker")
    assert task_file(w1, "app2", "pw").read_bytes() == b"database_password\n"
    assert task_file(w1, "app2", "last").read_bytes() == f"value-{writer.created[-1]}".encode()
    # The manager that was away, back with the new key, serves: a write through it, read back
    # through the worker.
    m3.ok("secret", "create", "via_m3", "-", input="from m3")
    m3.ok("service", "update", "--secret-add", "via_m3", "app2")
    wait_until(lambda: task_file(w1, "app2", "via_m3").exists(), 30, 0.1, "via_m3 on the worker")
    assert task_file(w1, "app2", "via_m3").read_bytes() == b"from m3"


def test_scheduled_rotation(fleet: Cluster) -> None:
    m1, m2, _ = fleet.managers
    before = data_key_id(m1)
    assert "Rotation interval:  none (on demand)" in m1.ok("swarm", "data-key")
    m1.ok("swarm", "update", "--data-key-rotation-interval", "1s")
    try:
        assert "Rotation interval:  1s" in m2.ok("swarm", "data-key")
        wait_until(lambda: data_key_id(m2) != before, 30, 0.1, "a scheduled rotation")
    finally:
        m1.ok("swarm", "update", "--data-key-rotation-interval", "0")
    assert "invalid duration" in m1.fails("swarm", "update", "--data-key-rotation-interval", "soon")


def test_unlock_key_rotation_rotates_the_data_key(fleet: Cluster) -> None:
    m1, m2, m3 = fleet.managers
    out = m1.ok("swarm", "update", "--autolock=true")
    unlock = keys.parse_unlock_key(next(w for w in out.split() if w.startswith("SWMKEY-1-")))
    wait_until(lambda: all(keys.WrappedKeys(str(m.data_dir / "keys")).autolocked() for m in fleet.managers),
               20, 0.1, "every manager's keys wrapped under the unlock key")
    before = data_key_id(m1)
    new_unlock = keys.parse_unlock_key(m2.ok("swarm", "unlock-key", "-q", "--rotate").strip())
    wait_until(lambda: data_key_id(m3) != before and not data_key(m3).rotating_from, 30, 0.1,
               "the data key rotated with the unlock key")
    assert unlock != new_unlock
    # Each manager's key file: the new data key alone, under the new unlock key.
    wait_until(lambda: all(_opens(m, new_unlock) == (data_key_id(m1),) for m in fleet.managers), 30, 0.2,
               "every key file holding only the new data key, under the new unlock key")


def _opens(m: Node, unlock: bytes) -> tuple[str, ...]:
    try:
        return tuple(keys.key_id(k) for k in key_ring(m, unlock))
    except Exception:
        return ()
