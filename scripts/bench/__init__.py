"""The benchmarks: one module per benchmark, run from the repository root with the project's Python.

    python -m scripts.bench.write      # secret create latency/throughput, against etcd if installed
    python -m scripts.bench.delivery   # secret update -> file on tmpfs on N (simulated) workers
    python -m scripts.bench.failover   # kill -9 of the leader under write load
    python -m scripts.bench.lifecycle  # renewal, CA and data-key rotation, backup, recovery, restore

``common`` holds the statistics, tables, process handling and meters they share, ``etcd`` the 3-member
etcd they compare against; their swarmsecrets clusters come from tests/framework. There are no
``scripts/bench_*.py`` wrappers: ``--help`` of each module documents its flags, and ``python -m`` from
the repository root needs no path set-up.
"""
