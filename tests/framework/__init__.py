"""The one way to start a real swarmsecrets cluster: daemon processes on loopback or in network namespaces.

Integration tests, the benchmarks (scripts/bench), the chaos harness (tests/chaoskit) and ``scripts/run``
all start their clusters through this package; every setting is an argument, nothing is patched.

    from tests.framework import Cluster, FAST_TIMINGS

    with Cluster(root, managers=3, workers=2, timings=FAST_TIMINGS) as c:
        c.start()                               # spawn, init on m1, join the rest, workers Ready
        c.managers[0].ok("secret", "create", "s", "-", input="x")    # through the real CLI
        c.leader().control().ListSecrets(...)                         # or through the local API

A node's processes run in their own session so that they can be signalled as a group; ``Cluster.stop``
(and leaving the ``with`` block) kills them, unmounts what workers left and removes their secrets roots.
``Namespaces(lab)`` places each node on a host of a ``NetnsLab`` instead of 127.0.0.1.
"""

from tests.framework.cluster import Cluster
from tests.framework.netns import NetnsLab
from tests.framework.node import (
    CLI_MODULE,
    DAEMON_MODULE,
    DEFAULT_TIMINGS,
    FAST_TIMINGS,
    Loopback,
    Namespaces,
    Node,
    Placement,
    Timings,
    free_port_pair,
)
from tests.framework.waiting import wait_until

__all__ = ["CLI_MODULE", "DAEMON_MODULE", "DEFAULT_TIMINGS", "FAST_TIMINGS", "Cluster", "Loopback", "Namespaces",
           "NetnsLab", "Node", "Placement", "Timings", "free_port_pair", "wait_until"]
