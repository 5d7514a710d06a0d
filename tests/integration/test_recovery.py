"""Disaster recovery with real processes on one shared cluster (3 managers, 1 worker), in order:

1. quorum loss: two managers die for good; writes fail with Swarm's message; ``swarm init
   --force-new-cluster`` on the third keeps everything; a dead manager's old certificate gets it
   nowhere, and two managers join with the manager token; the worker's task still reads its secret.
2. backup under writes, every manager's data destroyed, ``swarm init --restore`` on a new node at a
   former manager's address: every acknowledged secret is back and the worker's tasks read theirs.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets import errors
from swarmsecrets.crypto import keys
from tests.framework import Cluster, Node, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="workers need root for tmpfs mounts")]

UNLOCK_KEY = re.compile(r"SWMKEY-1-[A-Za-z0-9+/]+")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(Path(tmp_path_factory.mktemp("recovery")), managers=3, workers=1).started() as c:
        yield c


def secret_names(m: Node) -> set[str]:
    return set(m.ok("secret", "ls", "--format", "{{.Name}}").split())


def reader(fleet: Cluster, m: Node, service: str, secret: str) -> Path:
    """A service whose task copies /run/secrets/<secret> to a file of the test's, then sleeps."""
    out = fleet.root / f"{service}.out"
    out.unlink(missing_ok=True)
    program = f"import time; open('{out}', 'w').write(open('/run/secrets/{secret}').read()); time.sleep(600)"
    m.ok("service", "create", "--name", service, "--user", "0", "--secret", secret, "--",
         "python3", "-c", program)
    return out


def worker_ready(m: Node, w: Node) -> bool:
    p = m.cli("node", "ls", "--format", "{{.ID}} {{.Status}}")
    return p.returncode == 0 and f"{w.node_id} Ready" in p.stdout


def new_node(fleet: Cluster, name: str, at: Node | None = None) -> Node:
    """A node that is not part of the swarm yet (at ``at``'s address if given), stopped with the fleet."""
    n = Node(name, fleet.root, role="manager", host=len(fleet.members) + 1)
    if at is not None:
        n.ip, n.port = at.ip, at.port
    fleet.members.append(n)
    n.start()
    return n


def forget(fleet: Cluster, m: Node) -> None:
    """Kill ``m`` and destroy its data for good."""
    m.kill()
    m.cleanup()
    shutil.rmtree(m.data_dir, ignore_errors=True)
    fleet.members.remove(m)


def test_force_new_cluster_recovers_a_lost_quorum(fleet: Cluster) -> None:
    m1, m2, m3 = fleet.managers
    (w1,) = fleet.workers
    for i in range(5):
        m1.ok("secret", "create", f"before{i}", "-", input=f"payload-{i}\n")
    out = reader(fleet, m1, "app", "before0")
    wait_until(lambda: out.exists() and out.read_text() == "payload-0\n", 30, 0.2, "app reading its secret")
    before = secret_names(m1)

    m2.kill()
    m3.kill()
    assert errors.NO_LEADER in m1.fails("secret", "create", "lost", "-", input="x")

    got = m1.ok("swarm", "init", "--force-new-cluster")
    assert f"Swarm initialized: current node ({m1.node_id}) is now a manager." in got
    m1.ok("secret", "create", "after0", "-", input="after\n")
    nodes = m1.ok("node", "ls", "--format", "{{.ID}}").split()
    assert sorted(nodes) == sorted([m1.node_id, w1.node_id])  # the dead managers are removed

    # m2 comes back with its old data and certificate: the swarm no longer knows it. The same
    # probe succeeds once it has left and joined again with the manager token.
    m2.start()
    assert errors.NO_LEADER in m2.fails("secret", "ls")
    assert sorted(m1.ok("node", "ls", "--format", "{{.ID}}").split()) == sorted([m1.node_id, w1.node_id])
    token = m1.ok("swarm", "join-token", "-q", "manager").strip()
    m2.ok("swarm", "leave", "--force")
    join = ("swarm", "join", "--token", token, "--availability", "drain", "--advertise-addr")
    m2.ok(*join, m2.addr, m1.addr)
    m2.ok("secret", "ls")  # the probe that failed above
    m4 = new_node(fleet, "m4")
    m4.ok(*join, m4.addr, m1.addr)
    m2.node_id, m4.node_id = m2.info().node_id, m4.info().node_id
    forget(fleet, m3)  # gone for good

    m4.ok("secret", "create", "after1", "-", input="after\n")  # written through the new group
    for m in (m1, m2, m4):
        wait_until(lambda m=m: secret_names(m) == before | {"after0", "after1"}, 20, 0.2, f"{m.name}'s secrets")
    assert m4.ok("node", "ls").count("Reachable") + m4.ok("node", "ls").count("Leader") == 3

    # Nothing acknowledged is lost: a payload written before the loss reaches a new task.
    out2 = reader(fleet, m2, "app2", "before3")
    wait_until(lambda: out2.exists() and out2.read_text() == "payload-3\n", 30, 0.2, "app2 reading before3")
    assert (w1.secrets_root / "services" / "app2" / "before3").exists()  # on the worker (managers drained)
    assert out.read_text() == "payload-0\n"
    wait_until(lambda: worker_ready(m1, w1), 30, 0.2, "w1 Ready")


def test_backup_under_writes_then_restore_after_losing_every_manager(fleet: Cluster) -> None:
    (w1,) = fleet.workers
    m1 = fleet.managers[0]
    writer_m = fleet.managers[1]
    acked: list[tuple[str, int]] = []  # (name, how many backups had started before the write was acked)
    started = [0]
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            name = f"w{i}"
            if writer_m.cli("secret", "create", name, "-", input=f"value-{i}\n").returncode == 0:
                acked.append((name, started[0]))
            i += 1

    t = threading.Thread(target=write, daemon=True)
    t.start()
    wait_until(lambda: len(acked) >= 2, 30, 0.1, "the writer's first writes")
    path = fleet.root / "swarm.backup"
    started[0] = 1
    got = m1.ok("swarm", "backup", str(path))
    wait_until(lambda: len([a for a in acked if a[1]]) >= 1, 30, 0.1, "a write after the backup")
    stop.set()
    t.join(30)
    keys_shown = UNLOCK_KEY.findall(got)
    assert len(keys_shown) == 1 and "store this key" in got
    backup_key = keys_shown[0]
    assert (path.stat().st_mode & 0o777) == 0o600
    data = path.read_bytes()
    assert b"value-0" not in data and b"BEGIN" not in data and b"payload-" not in data
    must_have = {name for name, after in acked if after == 0}
    current = secret_names(m1)

    # Every manager's data is destroyed.
    for m in list(fleet.managers):
        forget(fleet, m)
    r1 = new_node(fleet, "r1", at=m1)

    # Bad input: one clear line, non-zero exit, nothing created.
    # The CLI socket is there from the daemon's start.
    socket_files = {"swarmsecrets.sock"}

    def nothing_created() -> bool:
        return sorted(p.name for p in r1.data_dir.iterdir() if p.name not in socket_files) == []

    wrong = keys.format_unlock_key(keys.new_key())
    args = ("swarm", "init", "--advertise-addr", r1.addr, "--availability", "drain", "--restore")
    assert "invalid key for" in r1.fails(*args, str(path), input=wrong + "\n")
    truncated = fleet.root / "truncated.backup"
    truncated.write_bytes(data[: len(data) // 2])
    assert "is truncated" in r1.fails(*args, str(truncated), input=backup_key + "\n")
    foreign = fleet.root / "foreign.tar"
    foreign.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    assert "is not a swarmsecrets backup file" in r1.fails(*args, str(foreign), input=backup_key + "\n")
    assert "invalid key string" in r1.fails(*args, str(path), input="not-a-key\n")
    assert nothing_created()

    got = r1.ok(*args, str(path), input=backup_key + "\n", timeout=60)
    r1.node_id = r1.info().node_id
    assert f"Swarm initialized: current node ({r1.node_id}) is now a manager." in got
    restored = secret_names(r1)
    assert must_have <= restored and restored <= current
    assert {f"before{i}" for i in range(5)} <= restored
    assert "already part of a swarm" in r1.fails(*args, str(path), input=backup_key + "\n")
    nodes = r1.ok("node", "ls", "--format", "{{.ID}}").split()
    assert sorted(nodes) == sorted([r1.node_id, w1.node_id])

    # The worker resumes against the manager at the address it knows; its tasks read their secrets.
    wait_until(lambda: worker_ready(r1, w1), 60, 0.2, "w1 Ready under the restored manager")
    name = sorted(must_have)[0]
    out = reader(fleet, r1, "app3", name)
    wait_until(lambda: out.exists() and out.read_text() == f"value-{name[1:]}\n", 30, 0.2, "app3 reading its secret")
    assert (w1.secrets_root / "services" / "app3" / name).exists()  # on the worker (r1 is drained)
    assert (fleet.root / "app.out").read_text() == "payload-0\n"
