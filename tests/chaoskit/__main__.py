"""``scripts/chaos run ...`` and ``scripts/chaos lab up|down`` (also ``python -m tests.chaoskit``)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tests.chaoskit.lab import Lab, LabError, teardown
from tests.chaoskit.nemesis import DEFAULT_FAULTS, FAULTS
from tests.chaoskit.runner import RunConfig, prepare_out, run
from tests.chaoskit.swarm import Swarm
from tests.framework import CLI_MODULE

TOOLS = ("ip", "nft", "iptables")
DEFAULT_OUT = "/var/tmp/swarmsecrets-chaos-runs"  # outside the work tree


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, through every ``finally`` that tears the lab down."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _preflight() -> str | None:
    if os.geteuid() != 0:
        return "the chaos lab needs root (network namespaces, nftables, tmpfs mounts)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install -y nftables iptables iproute2"
    return None


def _faults(value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    for k in kinds:
        if k not in FAULTS:
            raise argparse.ArgumentTypeError(f"unknown fault {k!r}; known: {', '.join(FAULTS)}")
    return kinds


def cmd_run(a: argparse.Namespace) -> int:
    out = Path(a.out) if a.out else Path(DEFAULT_OUT) / time.strftime("%Y%m%d-%H%M%S")
    cfg = RunConfig(managers=a.managers, workers=a.workers, duration=a.duration, faults=a.faults, rate=a.rate,
                    seed=a.seed, out=out.resolve(), prefix=a.prefix, log_level=a.log_level,
                    command="scripts/chaos " + shlex.join(sys.argv[1:]))
    print(f"chaos run: {a.managers} managers, {a.workers} workers, {a.duration:g} s, faults "
          f"{','.join(a.faults) or 'none'}, ~{a.rate:g} ops/s -> {cfg.out}", flush=True)
    result = run(cfg)
    print(result.summary())
    print(f"  report: {cfg.out / 'report.md'}, timeline: {cfg.out / 'timeline.png'}, "
          f"history: {cfg.out / 'history.jsonl'}")
    if result.error:
        return 2
    return 0 if result.ok else 1


def cmd_lab_up(a: argparse.Namespace) -> int:
    root = Path(a.dir or f"/var/tmp/swarmsecrets-chaos-{a.prefix}").resolve()
    lab = Lab(a.prefix, a.managers + a.workers, log_dir=root / "logs", ttl=a.ttl)
    try:
        lab.up()
        prepare_out(root)  # after the old lab's daemons are gone: their data dirs would resume the old swarm
        swarm = Swarm(lab, a.managers, a.workers, root)
        swarm.start()
    except BaseException:
        lab.down()
        raise
    if lab.leftovers:
        print(f"cleaned up leftovers of an earlier lab: {', '.join(lab.leftovers)}")
    cli = f"{sys.executable} -m {CLI_MODULE}"
    print(f"lab {a.prefix!r} is up: namespaces {lab.bridge_ns} (the bridge) and "
          f"{lab.ns(1)}..{lab.ns(lab.hosts)}, 10.77.0.0/24, no route out.\n")
    for m in swarm.members:
        print(f"  {m.name:3} {m.role:7} {m.addr:17} netns {lab.ns(m.host):12} pid {m.proc.pid if m.proc else '-':<7} "
              f"socket {m.host_url}")
    first = swarm.members[0]
    shm = swarm.workers[0].secrets_root if swarm.workers else "<secrets root>"
    print(f"\nUse a node (from this namespace; PYTHONPATH={os.environ.get('PYTHONPATH', '')}):\n"
          f"  {cli} -H {first.host_url} node ls\n"
          f"  echo -n s3cret | {cli} -H {first.host_url} secret create mine -\n"
          f"Faults by hand (the receiver drops):\n"
          f"  ip netns exec {lab.ns(1)} nft add element inet chaos drop_from '{{ {lab.ip(2)} }}'\n"
          f"  ip netns exec {lab.ns(1)} nft flush set inet chaos drop_from      # heal\n"
          f"  kill -STOP -<pid> / kill -CONT -<pid> / kill -9 -<pid>   (the daemon's process group)\n"
          f"A worker's secrets: ls -R /proc/<pid>/root{shm}/tasks\n"
          f"Logs and data: {root}\nTear down: scripts/chaos lab down --prefix {a.prefix} "
          f"(the daemons stop by themselves after {a.ttl:g} s)")
    return 0


def cmd_lab_down(a: argparse.Namespace) -> int:
    found = teardown(a.prefix)
    print(f"removed: {', '.join(found)}" if found else f"nothing of lab {a.prefix!r} was left")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/chaos", description="Chaos tests of swarmsecrets in a netns lab.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a workload under faults, check the history, write a report")
    r.add_argument("--managers", type=int, choices=(3, 5), default=3)
    r.add_argument("--workers", type=int, default=2, choices=range(0, 6), metavar="N")
    r.add_argument("--duration", type=float, default=60.0, metavar="S", help="workload seconds (default 60)")
    r.add_argument("--faults", type=_faults, default=DEFAULT_FAULTS, metavar="LIST",
                   help=f"comma-separated, from {','.join(FAULTS)} (default {','.join(DEFAULT_FAULTS)}); "
                        "'' for none")
    r.add_argument("--rate", type=float, default=20.0, metavar="R", help="client ops/s in total (default 20)")
    r.add_argument("--seed", type=int, default=None, metavar="N")
    r.add_argument("--out", metavar="DIR", help=f"default {DEFAULT_OUT}/<timestamp>")
    r.add_argument("--prefix", default="chaos", help="lab namespace prefix (default chaos)")
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    r.set_defaults(fn=cmd_run)
    lab = sub.add_parser("lab", help="a lab with a formed swarm to poke by hand")
    lab_sub = lab.add_subparsers(dest="lab_cmd", required=True)
    up = lab_sub.add_parser("up")
    up.add_argument("--managers", type=int, default=3, choices=range(1, 8), metavar="N")
    up.add_argument("--workers", type=int, default=2, choices=range(0, 6), metavar="N")
    up.add_argument("--prefix", default="lab")
    up.add_argument("--dir", help="data dirs and logs (default /var/tmp/swarmsecrets-chaos-<prefix>)")
    up.add_argument("--ttl", type=float, default=7200.0, metavar="S",
                    help="the daemons are killed after this many seconds even without 'lab down' (default 7200)")
    up.set_defaults(fn=cmd_lab_up)
    down = lab_sub.add_parser("down")
    down.add_argument("--prefix", default="lab")
    down.set_defaults(fn=cmd_lab_down)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    problem = _preflight()
    if problem:
        print(f"scripts/chaos: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return int(a.fn(a))
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({str(e) or 'SIGINT'}); the lab was torn down", file=sys.stderr)
        return 130
    except (LabError, ValueError) as e:
        print(f"scripts/chaos: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
