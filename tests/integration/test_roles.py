"""node promote / demote: the certificate and the raft membership follow the role."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmsecrets.ca import certs
from tests.framework import Cluster, Node, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="workers need root for tmpfs mounts")]


def node_id(n: Node) -> str:
    return certs.identity_from_pem((n.data_dir / "certificates" / "swarm-node.crt").read_bytes()).node_id


def role_in_cert(n: Node) -> str:
    return certs.identity_from_pem((n.data_dir / "certificates" / "swarm-node.crt").read_bytes()).role


def test_promote_then_demote(tmp_path: Path) -> None:
    c = Cluster(tmp_path, managers=1)
    w = Node("w1", tmp_path)
    try:
        c.start()
        m1 = c.managers[0]
        w.start()
        token = m1.ok("swarm", "join-token", "-q", "worker").strip()
        w.ok("swarm", "join", "--token", token, "--advertise-addr", w.addr, m1.addr)
        wid = node_id(w)
        assert "This node is not a swarm manager." in w.fails("secret", "ls")
        assert "attempting to demote the last manager of the swarm" in m1.fails("node", "demote", node_id(m1))

        # A global service: one task on every node that may take tasks (m1 is drained, the
        # framework's default for managers; w joined active).
        m1.ok("secret", "create", "everywhere", "-", input="e")
        m1.ok("service", "create", "--name", "g", "--mode", "global", "--secret", "everywhere", "--", "sleep", "600")
        task_file = w.secrets_root / "services" / "g" / "everywhere"
        wait_until(task_file.exists, 30, 0.2, "the global task on the worker")

        assert f"Node {wid} promoted to a manager in the swarm." in m1.ok("node", "promote", wid)
        wait_until(lambda: w.cli("secret", "ls").returncode == 0, 40, 0.3, "the promoted node to serve the control API")
        assert role_in_cert(w) == "manager"
        # The worker's agent ended (and wiped) with the promotion; the manager, active, runs its own.
        wait_until(task_file.exists, 30, 0.2, "the global task on the promoted manager, through its own agent")
        assert "role: manager runs the worker agent" in w.log_path.read_text()
        w.ok("secret", "create", "from-promoted", "-", input="p")
        assert "from-promoted" in m1.ok("secret", "ls")
        rows = m1.ok("node", "ls", "--format", "{{.ManagerStatus}}").split()
        assert sorted(rows) == ["Leader", "Reachable"], rows

        assert f"Manager {wid} demoted in the swarm." in m1.ok("node", "demote", wid)
        wait_until(lambda: "This node is not a swarm manager." in w.cli("secret", "ls").stderr, 40, 0.3,
                   "the demoted node to be a worker")
        assert role_in_cert(w) == "worker"
        assert not (w.data_dir / "keys").exists()
        wait_until(task_file.exists, 30, 0.2, "the global task on the demoted node, through a worker's agent")
        m1.ok("secret", "create", "after-demote", "-", input="d")
        wait_until(lambda: m1.ok("node", "ls", "--format", "{{.ManagerStatus}}").split() == ["Leader"], 20, 0.3,
                   "a single manager again")

        # Promoted again, the node replays the log from the start, its first demotion included:
        # that old entry must not demote it a second time.
        assert f"Node {wid} promoted to a manager in the swarm." in m1.ok("node", "promote", wid)
        wait_until(lambda: "ignoring a demotion that a later promotion superseded" in w.log_path.read_text(), 40, 0.3,
                   "the promoted node to pass the replayed demotion")
        assert role_in_cert(w) == "manager"
        w.ok("secret", "create", "from-promoted-again", "-", input="q")
        assert sorted(m1.ok("node", "ls", "--format", "{{.ManagerStatus}}").split()) == ["Leader", "Reachable"]
    except BaseException:
        print(c.logs())
        if w.log_path.exists():
            print(w.log_path.read_text()[-5000:])
        raise
    finally:
        w.kill()
        w.cleanup()
        c.stop()
