"""A flood of unauthenticated connections to the raft ports does not keep managers apart.

The attacker holds no certificate, only a network address of its own (127.0.0.9 on loopback): it opens
hundreds of idle TCP connections, garbage, stalled TLS handshakes and handshakes without a client
certificate to every manager's raft port, and keeps them coming while the leader is killed and restarted.
Raft must go on as if the flood were not there: within ten election timeouts a new leader acknowledges a
write, and the restarted manager is linked with both others again and has caught up.
"""

from __future__ import annotations

import subprocess
import time
import uuid


from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.client import LocalError
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import FLOOD_SOURCE, RaftFlood


def raft_target(n: Node) -> tuple[str, int]:
    host, port = n.raft_addr.rsplit(":", 1)
    return host, int(port)


def names(n: Node, timeout: float) -> set[str]:
    try:
        p = n.cli("secret", "ls", "--format", "{{.Name}}", timeout=timeout)
    except subprocess.TimeoutExpired:
        return set()
    return set(p.stdout.split()) if p.returncode == 0 else set()


def linked(cluster: Cluster) -> bool:
    """Every manager reaches every other over raft, as each of them sees it."""
    for n in cluster.managers:
        try:
            nodes = n.control().ListNodes(control_pb2.ListNodesRequest(), timeout=1.0).nodes
        except LocalError:
            return False
        if sum(m.manager_status.reachability == "reachable" for m in nodes) != len(cluster.managers):
            return False
    return True


def test_flood_of_unauthenticated_connections_does_not_keep_managers_apart(cluster: Cluster) -> None:
    timings = cluster.managers[0].timings
    assert timings.election_max is not None
    bound = 10 * timings.election_max  # ten election timeouts of the daemons' configuration
    per_target = dict(half_open=150, garbage=50, slow_tls=50, no_cert=20)
    with RaftFlood([raft_target(n) for n in cluster.managers], FLOOD_SOURCE, **per_target) as flood:
        # The flood is real: more connections than every manager's full quota have been opened, and the
        # managers drop what they do not want (so the attacker keeps opening more).
        quota = 3 * sum(per_target.values())
        wait_until(lambda: flood.opened >= quota and flood.closed_by_target >= 100, 15, 0.05,
                   "the flood to reach every manager")
        # Two rounds: every restart needs links made under the flood, and in the second the member
        # restarted in the first is one of the two survivors that must elect a leader.
        for _ in range(2):
            kill_leader_and_restart(cluster, bound)
        assert flood.opened > quota, "the flood never went beyond its first round: the test would prove little"


def kill_leader_and_restart(cluster: Cluster, bound: float) -> None:
    """kill -9 the leader: within ``bound`` s a new leader acknowledges a write; restarted, the killed
    member is linked with both others and has that write within ``bound`` s."""
    leader = cluster.leader()
    leader.kill()
    killed_at = time.monotonic()

    def left() -> float:
        return max(0.1, bound - (time.monotonic() - killed_at))

    new = wait_until(cluster.current_leader, left(), 0.05, "a new leader under the flood")
    assert new is not leader
    name = f"flood-{uuid.uuid4().hex[:8]}"

    def write() -> bool:
        try:
            return new.cli("secret", "create", name, "-", input=b"v", timeout=left()).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    wait_until(write, left(), 0.05, f"a write acknowledged within {bound:g} s of the kill")

    leader.start()
    restarted_at = time.monotonic()

    def rest() -> float:
        return max(0.1, bound - (time.monotonic() - restarted_at))

    # Rejoined: linked with both survivors (each link made under the flood), and caught up.
    wait_until(lambda: linked(cluster) and name in names(leader, rest()), rest(), 0.1,
               f"the restarted {leader.name} to rejoin within {bound:g} s")
