"""The seed end to end: 3 managers, 2 workers, a service with a secret in tmpfs, rotation, cleanup."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets.ca import certs
from tests.integration.cluster import Cluster, Node, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="workers need root for tmpfs mounts")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("fleet"))
    c = Cluster(root)
    c.workers = [Node(f"w{i}", root) for i in (1, 2)]  # type: ignore[attr-defined]
    try:
        c.start()
        token = c.nodes[0].ok("swarm", "join-token", "-q", "worker").strip()
        for w in c.workers:  # type: ignore[attr-defined]
            w.start()
            assert "This node joined a swarm as a worker." in w.ok("swarm", "join", "--token", token, c.nodes[1].addr)
        m1 = c.nodes[0]
        wait_until(lambda: m1.ok("node", "ls", "--format", "{{.Status}}").split().count("Ready") == 5, 20, 0.3,
                   "workers Ready")
        yield c
    except BaseException:
        print(c.logs())
        for w in getattr(c, "workers", []):
            if w.log_path.exists():
                print(f"--- {w.name}\n{w.log_path.read_text()[-4000:]}")
        raise
    finally:
        for w in getattr(c, "workers", []):
            w.kill(15)
            w.cleanup()
        c.stop()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def task_file(w: Node, service: str, target: str) -> Path:
    return w.secrets_root / "services" / service / target  # type: ignore[operator]


def test_seed_walkthrough(fleet: Cluster) -> None:
    m1, m2, _ = fleet.nodes
    w1, w2 = fleet.workers  # type: ignore[attr-defined]
    m1.ok("secret", "create", "db_pass", "-", input="database_password\n")
    out_file = fleet.root / "app-read.txt"
    program = f"import time; open('{out_file}', 'w').write(open('/run/secrets/password').read()); time.sleep(600)"
    m2.ok("service", "create", "--name", "app", "--secret",
          "source=db_pass,target=password,uid=2000,gid=3000,mode=0400", "--", "python3", "-c", program)

    def placed() -> Node | None:
        for w in (w1, w2):
            if task_file(w, "app", "password").exists():
                return w
        return None

    runner = wait_until(placed, 30, 0.2, "the secret on the worker that runs app")
    idle = w2 if runner is w1 else w1
    f = task_file(runner, "app", "password")
    st = f.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (2000, 3000)
    assert f.read_bytes() == b"database_password\n"
    # The task's own command read it from /run/secrets/password.
    wait_until(lambda: out_file.exists() and out_file.read_text() == "database_password\n", 30, 0.2, "the task")
    assert files_under(idle.secrets_root) == []
    ps = m1.ok("service", "ps", "app")
    assert "app.1" in ps and "Running" in ps
    assert "secret 'db_pass' is in use by the following service: app" in m1.fails("secret", "rm", "db_pass")

    # Rotation in one command; the file never goes missing.
    m1.ok("secret", "create", "db_pass_1", "-", input="new_password\n")
    seen: list[bytes] = []
    m1.ok("service", "update", "--secret-rm", "db_pass", "--secret-add", "source=db_pass_1,target=password", "app")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = f.read_bytes()  # raises if the file is ever missing
        seen.append(data)
        if data == b"new_password\n":
            break
        time.sleep(0.01)
    assert seen[-1] == b"new_password\n"
    assert set(seen) <= {b"database_password\n", b"new_password\n"}
    wait_until(lambda: out_file.read_text() == "new_password\n", 30, 0.2, "the restarted task to read the new secret")
    m1.ok("secret", "rm", "db_pass")
    for w in (w1, w2):
        assert all(p.read_bytes() != b"database_password\n" for p in files_under(w.secrets_root))

    m1.ok("service", "rm", "app")
    wait_until(lambda: files_under(runner.secrets_root) == [], 20, 0.2, "the task's secrets to be removed")


def test_inspect_and_ls(fleet: Cluster) -> None:
    m1 = fleet.nodes[0]
    m1.ok("secret", "create", "cfg", "-", input="x")
    m1.ok("service", "create", "--name", "files-only", "--mode", "global", "--secret", "cfg")
    doc = json.loads(m1.ok("service", "inspect", "files-only"))[0]
    assert doc["Spec"]["Name"] == "files-only"
    wait_until(lambda: "2/2" in m1.ok("service", "ls"), 30, 0.3, "a global service on both workers")
    for w in fleet.workers:  # type: ignore[attr-defined]
        p = task_file(w, "files-only", "cfg")
        assert p.read_bytes() == b"x" and stat.S_IMODE(p.stat().st_mode) == 0o444
    m1.ok("service", "rm", "files-only")
    for w in fleet.workers:  # type: ignore[attr-defined]
        wait_until(lambda w=w: files_under(w.secrets_root) == [], 20, 0.2, "cleanup")


def node_id(n: Node) -> str:
    return certs.identity_from_pem((n.data_dir / "certificates" / "swarm-node.crt").read_bytes()).node_id


def test_drain_moves_tasks_and_wipes_secrets(fleet: Cluster) -> None:
    m1 = fleet.nodes[0]
    w1, w2 = fleet.workers  # type: ignore[attr-defined]
    m1.ok("secret", "create", "drained", "-", input="d")
    m1.ok("service", "create", "--name", "mover", "--replicas", "2", "--secret", "drained")
    wait_until(lambda: all(task_file(w, "mover", "drained").exists() for w in (w1, w2)), 30, 0.2, "both replicas")
    assert m1.ok("node", "update", "--availability", "drain", node_id(w1)).strip() == node_id(w1)
    wait_until(lambda: files_under(w1.secrets_root) == [], 30, 0.3, "the drained node to hold no secret")
    wait_until(lambda: m1.ok("service", "ls", "--format", "{{.Replicas}}", ).split() == ["2/2"], 30, 0.3,
               "both replicas running on the other worker")
    m1.ok("node", "update", "--availability", "active", node_id(w1))
    m1.ok("service", "rm", "mover")
    for w in (w1, w2):
        wait_until(lambda w=w: files_under(w.secrets_root) == [], 20, 0.2, "cleanup")


def test_removed_worker_is_refused_and_wipes_its_secrets(fleet: Cluster) -> None:
    """Last: it removes w2 from the fleet."""
    m1 = fleet.nodes[0]
    w1, w2 = fleet.workers  # type: ignore[attr-defined]
    m1.ok("secret", "create", "gone", "-", input="g")
    m1.ok("service", "create", "--name", "everywhere", "--mode", "global", "--secret", "gone")
    wait_until(lambda: task_file(w2, "everywhere", "gone").exists(), 30, 0.2, "the secret on w2")
    assert "is not down and can't be removed" in m1.fails("node", "rm", node_id(w2))
    t0 = time.monotonic()
    m1.ok("node", "rm", "--force", node_id(w2))
    wait_until(lambda: files_under(w2.secrets_root) == [], 10, 0.05, "the removed worker to wipe its secrets")
    print(f"removed worker wiped its secrets {time.monotonic() - t0:.2f}s after node rm")
    assert "This node is not part of a swarm" in w2.fails("secret", "ls")
    assert task_file(w1, "everywhere", "gone").exists()
    m1.ok("service", "rm", "everywhere")
