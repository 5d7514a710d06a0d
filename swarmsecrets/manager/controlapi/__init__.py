"""The Control service: validation → proposal → result, one module per object kind.

Served on the unix socket (the local operator) and on the TLS port (managers only). Writes go
through the raft log; reads are linearizable: a read barrier, then the local state.

    secrets.py    secrets
    services.py   services and their tasks
    nodes.py      nodes (promotion, demotion, removal)
    cluster.py    the swarm: join tokens, unlock key
    common.py     request ids, idempotent removal
    servicer.py   the one gRPC servicer that routes to them, and ``ControlAPI`` that bundles them
"""

from swarmsecrets.manager.controlapi.servicer import ControlAPI, ControlServicer, Provide

__all__ = ["ControlAPI", "ControlServicer", "Provide"]
