"""The node: swarmsecretsd, what a machine is in the swarm and every change of it.

    config.py    the daemon's settings: one typed schema for the TOML file and the flags
    roles.py     the role state machine (inactive, manager, worker, locked, leaving)
    daemon.py    the node: init, join, leave, unlock, promotion, demotion, removal, one rollback
    localapi.py  the CLI <-> daemon API on the unix socket, behind the NodeOperations interface
    nodedir.py   what a node remembers on disk (its data dir)
    main.py      the process: settings, logging, local API, signals
"""

import os

# The raft snapshot is written by a forked child that never touches gRPC. gRPC's own fork handlers
# (on by default) would make that fork wait for gRPC's threads to go quiet, and those threads can be
# waiting for the GIL the forking thread holds: the raft loop then stalls for about a minute (or the
# process aborts). Set before anything of this package imports grpc, for both entry points.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
