"""Jepsen-style chaos testing of swarmsecrets on one Linux machine (see /work/shared/reference/chaos-lab.md).

``lab``: hosts in network namespaces behind a bridge in its own namespace (no route out), faults.
``swarm``: real daemons on those hosts, formed into a swarm, with their tmpfs readable from outside.
``workload``: concurrent clients that record a history; ``nemesis``: the fault schedule.
``checker``: pure functions from a history to anomalies; ``report``: report.md and timeline.png.
``runner``: one run end to end. ``python -m swarmsecrets.chaos`` (or ``scripts/chaos``) is the CLI.

It lives in the package rather than under scripts/ so tests and ``python -m`` import it without path
tricks and CI lints it with the rest; nothing in the daemon or the CLI imports it.
"""
