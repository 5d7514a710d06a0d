"""The chaos lab: namespace hosts (tests/framework/netns.py) plus the network faults between them.

Every host gets an ``inet chaos`` nftables table: a ``drop_from`` set on input (partitions) and a
``loss`` chain on output. Delay is an NFQUEUE rule plus the userspace delayer of ``delayer.py`` in the
host's namespace, because this kernel has no netem.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.framework.netns import RUN_ROOT, LabError, NetnsLab, namespaces, shm_dirs, stray_pids, teardown
from tests.framework.node import signal_group

__all__ = ["RUN_ROOT", "Lab", "LabError", "namespaces", "shm_dirs", "stray_pids", "teardown"]

NFQUEUE_NUM = 0
CHAOS_TABLE = """table inet chaos {
  set drop_from { type ipv4_addr; }
  chain input { type filter hook input priority -10; policy accept; ip saddr @drop_from drop; }
  chain loss { type filter hook output priority -5; policy accept; }
}
"""


class Lab(NetnsLab):
    """A NetnsLab whose hosts can be partitioned, made lossy or slow."""

    def __init__(self, prefix: str, hosts: int, log_dir: Path | None = None, ttl: float = 3600.0) -> None:
        super().__init__(prefix, hosts, log_dir, ttl)
        self.delayers: dict[int, subprocess.Popen[bytes]] = {}

    def setup_host(self, host: int) -> None:
        self.exec(host, ["nft", "-f", "-"], input=CHAOS_TABLE)

    def down(self) -> None:
        """Stop delayers gracefully (they release what they hold), then everything else."""
        try:
            self.clear_delays()
        except LabError:
            pass
        super().down()

    # --- network faults -----------------------------------------------------------------------------

    def _nft(self, host: int, *args: str) -> None:
        self.exec(host, ["nft", *args])

    def drop_from(self, host: int, sources: Iterable[int]) -> None:
        """``host`` drops whatever arrives from ``sources`` (one direction, the receiver drops)."""
        ips = sorted({self.ip(s) for s in sources if s != host})
        if ips:
            self._nft(host, "add", "element", "inet", "chaos", "drop_from", "{ " + ", ".join(ips) + " }")

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Hosts in different groups cannot talk; links of hosts in no group are untouched."""
        for i, group in enumerate(groups):
            others = [h for j, g in enumerate(groups) if j != i for h in g]
            for h in group:
                self.drop_from(h, others)

    def isolate(self, host: int, others: Iterable[int]) -> None:
        self.partition([[host], [o for o in others if o != host]])

    def heal(self, hosts: Iterable[int] | None = None) -> None:
        """Drop sets and loss rules emptied on these hosts, or everywhere (delays are separate)."""
        for h in self.all_hosts() if hosts is None else hosts:
            self._nft(h, "flush", "set", "inet", "chaos", "drop_from")
            self._nft(h, "flush", "chain", "inet", "chaos", "loss")

    def loss(self, host: int, percent: float) -> None:
        """``percent`` of what ``host`` sends is dropped (nft numgen)."""
        self._nft(host, "add", "rule", "inet", "chaos", "loss", "oifname", "eth0", "numgen", "random", "mod",
                  "10000", "<", str(round(percent * 100)), "drop")

    def _queue_rule(self, op: str) -> list[str]:
        return ["iptables", "-w", op, "INPUT", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_NUM),
                "--queue-bypass"]

    def delay(self, host: int, ms: float, jitter_ms: float = 0.0, loss: float = 0.0) -> None:
        """Delay (and optionally drop a fraction of) what ``host`` receives, via NFQUEUE and the delayer."""
        self.clear_delay(host)
        p = self.spawn(host, [sys.executable, "-m", "tests.chaoskit.delayer", "--queue", str(NFQUEUE_NUM),
                              "--delay-ms", str(ms), "--jitter-ms", str(jitter_ms), "--loss", str(loss)],
                       log=self.log_dir / f"delayer-n{host}.log" if self.log_dir else None, pipe_stdout=True)
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 10.0)
        line = p.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            signal_group(p, signal.SIGKILL)
            p.wait(5)
            raise LabError(f"the delayer in {self.ns(host)} did not start: {line.decode(errors='replace')!r}")
        self.delayers[host] = p
        self.exec(host, self._queue_rule("-A"))

    def clear_delay(self, host: int) -> None:
        """Stop queueing first, then let the delayer release what it holds."""
        p = self.delayers.pop(host, None)
        if p is None:
            return
        self.exec(host, self._queue_rule("-D"), check=False)
        signal_group(p, signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            signal_group(p, signal.SIGKILL)
            p.wait(timeout=5)
        if p.stdout is not None:
            p.stdout.close()
        self.forget(p)

    def clear_delays(self) -> None:
        for host in list(self.delayers):
            self.clear_delay(host)
