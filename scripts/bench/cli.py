#!/usr/bin/env python3
"""CLI benchmark: a ``swarmsecrets`` command, process start to exit, beside ``etcdctl get`` in the same run.

Usage (from the repository root)::

    .venv/bin/python -m scripts.bench.cli                    # 50 runs of each command
    .venv/bin/python -m scripts.bench.cli --runs 200 --json out.json

What it measures: one manager (its daemon started by tests/framework, default timings) holding
``--secrets`` secrets, and a 3-member etcd on 127.0.0.1 (scripts/bench/etcd.py) holding one key. Each
round runs, one after the other, ``swarmsecrets secret ls``, ``swarmsecrets secret inspect <name>``,
``swarmsecrets info`` and ``etcdctl get <key>`` (ETCDCTL_API=3, the member's client URL), each from
fork to exit with its output read, so that the machine's noise falls on all of them alike. The CLI runs
as the tests run it: this interpreter, ``-m swarmsecrets.cli.main``, this tree first on PYTHONPATH,
with bytecode caches as an installed package has them (PYTHONDONTWRITEBYTECODE is dropped, so the
warm-up round writes any that are missing).
``python -c pass`` (the interpreter's own start, the floor of any Python CLI) is timed in the same
rounds for reference.

Prints p50/p99 per command and each p50's ratio to etcdctl's, against the goal (<= 90 ms, <= 5x
etcdctl). etcd and etcdctl are never installed here (``apt-get install etcd-server etcd-client``): without
them the benchmark stops with that reason. A command that fails stops it too. Exit status 0 when every
figure was measured (a MISS against the goal is not a failure), 2 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.bench.common import fmt_num, json_clean, summarize, table, terminate_all
from scripts.bench.etcd import ETCD_INSTALL_HINT, EtcdCluster, etcd_call
from tests.framework import Cluster, Node
from tests.framework.node import CLI_MODULE, child_env

GOAL_MS = 90.0
GOAL_RATIO = 5.0
KEY = "bench-cli-key"


class Stop(Exception):
    """A figure that cannot be measured: the reason."""


def timed(argv: Sequence[str], env: dict[str, str]) -> float:
    """Seconds from fork to exit of one command, its output read; Stop if it fails."""
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise Stop(f"`{' '.join(argv)}` exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return elapsed


def commands(m: Node, secret: str, etcdctl: str, endpoint: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    # As an installed package runs: with bytecode caches (the warm-up round writes any that are missing).
    env = {k: v for k, v in child_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    cli = [sys.executable, "-m", CLI_MODULE, "-H", m.host_url]
    etcd_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")} | {"ETCDCTL_API": "3"}
    return {
        "swarmsecrets secret ls": ([*cli, "secret", "ls"], env),
        "swarmsecrets secret inspect": ([*cli, "secret", "inspect", secret], env),
        "swarmsecrets info": ([*cli, "info"], env),
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "etcdctl get": ([etcdctl, "--endpoints", endpoint, "get", KEY], etcd_env),
    }


def measure(cmds: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, list[float]]:
    """``runs`` rounds, every command once per round (one warm-up round first, not counted)."""
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for r in range(runs + 1):
        for name, (argv, env) in cmds.items():
            t = timed(argv, env)
            if r:
                samples[name].append(t)
    return samples


def report(samples: dict[str, list[float]]) -> tuple[str, dict[str, Any]]:
    etcd = summarize(samples["etcdctl get"])
    rows, record = [], {}
    for name, xs in samples.items():
        s = summarize(xs)
        ratio = s["p50_ms"] / etcd["p50_ms"]
        cli = name.startswith("swarmsecrets")
        verdict = ("ok" if s["p50_ms"] <= GOAL_MS and ratio <= GOAL_RATIO else "MISS") if cli else ""
        rows.append([name, str(len(xs)), fmt_num(s["p50_ms"], 1), fmt_num(s["p99_ms"], 1),
                     fmt_num(etcd["p50_ms"], 1), f"{ratio:.2f}x", verdict])
        record[name] = {**s, "n": len(xs), "ratio_p50_to_etcdctl": ratio}
    text = table(["command", "n", "p50 ms", "p99 ms", "etcdctl p50 ms", "p50 ratio", f"goal <= {GOAL_MS:g} ms, "
                  f"<= {GOAL_RATIO:g}x"], rows, right={1, 2, 3, 4, 5})
    return text, record


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.cli", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="rounds; each runs every command once (default 50)")
    p.add_argument("--secrets", type=int, default=20, help="secrets the manager holds (default 20)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument("--dir", help="parent of the temporary data dirs (default: the system temp dir)")
    a = p.parse_args(argv)
    if a.runs <= 0 or a.secrets <= 0:
        p.error("--runs and --secrets must be positive")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    if etcd is None or etcdctl is None:
        print(f"cannot measure etcdctl's figure: etcd/etcdctl not found on PATH (install them with "
              f"`{ETCD_INSTALL_HINT}`)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench_cli-", dir=args.dir))
    cluster = Cluster(root / "swarm", managers=1, log_level="info")
    try:
        cluster.start()
        m = cluster.managers[0]
        for i in range(args.secrets):
            m.ok("secret", "create", f"bench_cli_{i:03d}", "-", input=f"value {i}")
        (root / "etcd").mkdir()
        ecluster = EtcdCluster(root / "etcd", etcd).start()
        member = ecluster.leader()
        etcd_call(member.client_port, "/v3/kv/put", {"key": "YmVuY2gtY2xpLWtleQ==", "value": "dmFsdWU="})
        cmds = commands(m, "bench_cli_000", etcdctl, f"127.0.0.1:{member.client_port}")
        print(f"bench_cli: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"etcd {EtcdCluster.version(etcd)}, load average {os.getloadavg()[0]:.2f}; {args.runs} rounds, "
              f"{args.secrets} secrets on one manager, etcd 3 members", flush=True)
        samples = measure(cmds, args.runs)
        text, record = report(samples)
        print(text)
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(json_clean(
                {"runs": args.runs, "secrets": args.secrets, "figures": record}), indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    except Stop as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 2
    finally:
        cluster.stop()
        with contextlib.suppress(Exception):
            terminate_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
