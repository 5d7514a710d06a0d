"""A manager runs the worker agent while tasks may be placed on it (availability not ``drain``), as
in Docker Swarm: it becomes Ready through its own agent's session, runs tasks with their secrets in
tmpfs, and on drain stops the agent, wipes its secrets and lets the task move to a worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets.ca import certs
from swarmsecrets.worker.secretsfs import TMPFS_MAGIC, fs_type, mounts_under
from tests.framework import Cluster, Node, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="agents need root for tmpfs mounts")]


def node_id(n: Node) -> str:
    return certs.identity_from_pem((n.data_dir / "certificates" / "swarm-node.crt").read_bytes()).node_id


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def task_file(n: Node, service: str, target: str) -> Path:
    return n.secrets_root / "services" / service / target


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, managers=1, workers=1, manager_availability="active").started() as c:
        yield c


def test_an_active_manager_runs_tasks_and_drain_moves_them_to_a_worker(swarm: Cluster) -> None:
    (m1,), (w1,) = swarm.managers, swarm.workers
    mid, wid = node_id(m1), node_id(w1)
    try:
        # Only the manager may take the task: it runs it with its secret in its own tmpfs.
        m1.ok("node", "update", "--availability", "drain", wid)
        m1.ok("secret", "create", "db_pass", "-", input="on the manager\n")
        out = swarm.root / "read.txt"
        program = (f"import time; open('{out}', 'w').write(open('/run/secrets/password').read()); "
                   "print('read it', flush=True); time.sleep(600)")
        m1.ok("service", "create", "--name", "app", "--user", "0", "--secret", "source=db_pass,target=password", "--",
              "python3", "-c", program)
        wait_until(lambda: task_file(m1, "app", "password").exists(), 30, 0.2, "the task's secret on the manager")
        assert task_file(m1, "app", "password").read_bytes() == b"on the manager\n"
        assert mounts_under(str(m1.secrets_root)), "the task's secrets are on a tmpfs of their own"
        wait_until(lambda: out.exists() and out.read_text() == "on the manager\n", 30, 0.2,
                   "the task on the manager to read /run/secrets/password")
        assert files_under(w1.secrets_root) == []
        # service logs reaches a manager's own tasks as it reaches a worker's.
        assert wait_until(lambda: m1.ok("service", "logs", "app").endswith("    | read it\n"), 30, 0.2,
                          "the task's output on the manager")

        # Drain the manager: its agent stops and wipes its tmpfs; the task moves to the worker.
        m1.ok("node", "update", "--availability", "active", wid)
        out.unlink()
        m1.ok("node", "update", "--availability", "drain", mid)
        wait_until(lambda: files_under(m1.secrets_root) == [] and mounts_under(str(m1.secrets_root)) == [], 30, 0.2,
                   "the drained manager to hold no secret and no mount")
        wait_until(lambda: task_file(w1, "app", "password").exists(), 30, 0.2, "the task's secret on the worker")
        wait_until(lambda: out.exists() and out.read_text() == "on the manager\n", 30, 0.2,
                   "the task on the worker to read its secret")
        assert "worker agent stopped: this manager may not take tasks" in m1.log_path.read_text()

        # Active again, the manager starts its agent anew and takes the task back once the worker drains.
        m1.ok("node", "update", "--availability", "active", mid)
        m1.ok("node", "update", "--availability", "drain", wid)
        wait_until(lambda: task_file(m1, "app", "password").exists(), 30, 0.2, "the task back on the manager")
        wait_until(lambda: files_under(w1.secrets_root) == [], 30, 0.2, "the drained worker to hold no secret")

        # Restarted, the manager resumes its agent with its role: the task's secret is delivered again.
        m1.stop()
        assert files_under(m1.secrets_root) == []  # a stopping agent leaves nothing behind
        out.unlink()
        m1.start()
        wait_until(lambda: task_file(m1, "app", "password").exists(), 30, 0.2, "the task on the restarted manager")
        wait_until(lambda: out.exists() and out.read_text() == "on the manager\n", 30, 0.2,
                   "the task on the restarted manager to read its secret")
        m1.ok("service", "rm", "app")
        wait_until(lambda: files_under(m1.secrets_root) == [], 20, 0.2, "cleanup")
    except BaseException:
        print(swarm.logs(12000))
        raise


def test_a_manager_whose_secrets_root_is_not_tmpfs_runs_no_agent_and_still_manages(tmp_path: Path) -> None:
    on_disk = tmp_path / "secrets-on-disk"
    on_disk.mkdir()
    if fs_type(str(on_disk)) == TMPFS_MAGIC:
        pytest.skip("the test's directory is on tmpfs")
    m = Node("m1", tmp_path, extra_args=("--secrets-root", str(on_disk)))
    try:
        m.start()
        m.ok("swarm", "init", "--advertise-addr", m.addr)  # availability active by default
        wait_until(lambda: "this manager runs no tasks: its worker agent cannot start" in m.log_path.read_text(),
                   30, 0.2, "the manager to say why it runs no agent")
        m.ok("secret", "create", "still-managing", "-", input="x")
        assert "still-managing" in m.ok("secret", "ls")
        assert m.log_path.read_text().count("this manager runs no tasks") == 1
        assert "worker agent started" not in m.log_path.read_text()
    except BaseException:
        print(m.log_path.read_text()[-5000:] if m.log_path.exists() else "")
        raise
    finally:
        m.kill()
        m.cleanup()
