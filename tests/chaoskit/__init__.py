"""Jepsen-style chaos testing of swarmsecrets on one Linux machine.

``lab``: hosts in network namespaces (tests/framework/netns.py) and the faults between them.
``swarm``: real daemons on those hosts, started by the cluster framework, with their tmpfs readable
from outside. ``workload``: concurrent clients that record a history; ``nemesis``: the fault schedule.
``checker``: pure functions from a history to anomalies; ``report``: report.md and timeline.png.
``runner``: one run end to end. ``python -m tests.chaoskit`` (or ``scripts/chaos``) is the CLI.

It lives under tests/ rather than in the swarmsecrets package: it is test tooling, built on the cluster
framework of tests/framework and driven by tests/chaos, and a daemon install must not carry it (nor its
matplotlib dependency). Under tests/ it is importable from the repository root without path tricks, and
CI lints and type-checks it with the tests.
"""
