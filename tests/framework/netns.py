"""Hosts in network namespaces on this machine, joined by a bridge that has no route out.

Namespaces are ``<prefix>-br`` (the bridge, in a namespace of its own) and ``<prefix>-n1..nN`` (hosts
10.77.0.11+ with only ``10.77.0.0/24 dev eth0``: no default route, nothing leaves the lab).

Everything a lab makes is named after its prefix, so ``teardown(prefix)`` finds it again after a crash:
the namespaces (and every process inside them), the secrets roots under /dev/shm and the run dir under
/run. ``NetnsLab.up`` runs it first and ``NetnsLab.down`` last. Network faults between the hosts are the
chaos harness's business (tests/chaoskit/lab.py builds on this class).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.framework.node import DAEMON_MODULE, child_env, mounts_under, signal_group

SUBNET = "10.77.0"
RUN_ROOT = Path("/run/swarmsecrets-chaos")
SHM_ROOT = Path("/dev/shm")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
# Prefixes of the labs this process built: a test session checks that none of them is left.
CREATED_PREFIXES: set[str] = set()


class LabError(RuntimeError):
    """A lab command failed; the message has the command and its output."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """A bounded command; a failure raises LabError with its stderr."""
    try:
        p = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g}s") from e
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"lab prefix {prefix!r}: 1-12 characters of [a-z0-9], starting with a letter")
    return prefix


def namespaces(prefix: str) -> list[str]:
    """The lab's network namespaces that exist now (``ip netns list`` is /run/netns)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(br|n\d+)$")
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if pattern.match(n))


def shm_dirs(prefix: str) -> list[Path]:
    return sorted(SHM_ROOT.glob(f"swarmsecrets-chaos-{prefix}-*"))


def _netns_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _wait_gone(pids: Iterable[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if os.path.exists(f"/proc/{p}")
                   and not _is_zombie(p)}
        if pending:
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stray_pids(prefix: str) -> list[int]:
    """Daemons still running outside the lab's namespaces: their command line names the run dir (for the
    socket). Only daemon processes count, never a CLI someone pointed at the lab."""
    marker = os.fsencode(str(RUN_ROOT / prefix) + "/")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
                if marker in cmdline and DAEMON_MODULE.encode() in cmdline:
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def teardown(prefix: str) -> list[str]:
    """Remove everything a lab with this prefix made; return what was found. Safe to repeat.

    Processes die first (SIGKILL also ends stopped ones), then their namespaces; a secrets root is
    deleted only after the workers that mounted tmpfs below it (in their private mount namespaces) are
    gone, and anything mounted there in ours is lazily unmounted first.
    """
    check_prefix(prefix)
    found: list[str] = []
    for ns in namespaces(prefix):
        pids = _netns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(pids, 10.0)
        run(["ip", "netns", "del", ns], check=False)
        found.append(f"netns {ns}" + (f" ({len(pids)} processes)" if pids else ""))
    strays = [p for p in stray_pids(prefix) if not _is_zombie(p)]
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(strays, 10.0)
    found += [f"process {pid}" for pid in strays]
    for d in shm_dirs(prefix):
        for point in sorted(mounts_under(d), key=len, reverse=True):
            run(["umount", "-l", point], check=False)
        shutil.rmtree(d, ignore_errors=True)
        found.append(str(d))
    run_dir = RUN_ROOT / prefix
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        found.append(str(run_dir))
    return found


class NetnsLab:
    """``hosts`` namespaces on one bridge. Hosts are numbered from 1; see the module docstring."""

    def __init__(self, prefix: str, hosts: int, log_dir: Path | None = None, ttl: float = 3600.0) -> None:
        """``ttl``: seconds after which every process the lab starts is killed, whatever happens."""
        if not 1 <= hosts <= 50:
            raise ValueError("a lab has 1 to 50 hosts")
        self.prefix = check_prefix(prefix)
        self.hosts = hosts
        self.log_dir = log_dir
        self.ttl = ttl
        self.procs: list[subprocess.Popen[bytes]] = []
        self.leftovers: list[str] = []

    # --- names ------------------------------------------------------------------------------------

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def ns(self, host: int) -> str:
        return f"{self.prefix}-n{host}"

    @staticmethod
    def ip(host: int) -> str:
        return f"{SUBNET}.{10 + host}"

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.prefix

    def shm_dir(self, name: str) -> Path:
        return SHM_ROOT / f"swarmsecrets-chaos-{self.prefix}-{name}"

    def all_hosts(self) -> range:
        return range(1, self.hosts + 1)

    # --- lifecycle --------------------------------------------------------------------------------

    def up(self) -> NetnsLab:
        """Clear leftovers of an earlier run with this prefix, then build; a half-built lab is torn down."""
        self.leftovers = teardown(self.prefix)
        CREATED_PREFIXES.add(self.prefix)
        try:
            self.run_dir.mkdir(parents=True, mode=0o700)
            br = self.bridge_ns
            run(["ip", "netns", "add", br])
            run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", br, "link", "set", "br0", "up"])
            run(["ip", "-n", br, "link", "set", "lo", "up"])
            for h in self.all_hosts():
                ns = self.ns(h)
                run(["ip", "netns", "add", ns])
                run(["ip", "-n", br, "link", "add", f"v{h}", "type", "veth", "peer", "name", "eth0", "netns", ns])
                run(["ip", "-n", br, "link", "set", f"v{h}", "master", "br0", "up"])
                run(["ip", "-n", ns, "addr", "add", f"{self.ip(h)}/24", "dev", "eth0"])
                run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
                self.setup_host(h)
        except BaseException:
            self.down()
            raise
        return self

    def setup_host(self, host: int) -> None:
        """Called once per host while the lab is built, after its link is up; nothing by default."""

    def down(self) -> None:
        """Kill every process group spawned, then tear the namespaces down."""
        for p in self.procs:
            signal_group(p, signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        teardown(self.prefix)

    # --- processes --------------------------------------------------------------------------------

    def exec(self, host: int, argv: Sequence[str], *, input: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.ns(host), *argv], input=input, check=check)

    def spawn(self, host: int, argv: Sequence[str], log: Path | None = None,
              pipe_stdout: bool = False) -> subprocess.Popen[bytes]:
        """Start argv in the host's namespace in a new session, under ``timeout -s KILL <ttl>`` so that it
        ends by itself even if the harness dies without tearing down. ``ip netns exec`` execs, so the pid
        is timeout's, the process group (timeout and argv) is ours to signal, and /proc/<pid>/root shows
        the private mount namespace both share."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), "timeout", "-s", "KILL", f"{self.ttl:.0f}",
                                  *argv], env=child_env(),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if pipe_stdout else out,
                                 stderr=out, start_new_session=True)
        finally:
            if not isinstance(out, int):
                out.close()
        self.procs.append(p)
        return p

    def forget(self, p: subprocess.Popen[bytes]) -> None:
        """A process that exited (and was waited for) needs no more cleaning up."""
        if p in self.procs and p.poll() is not None:
            self.procs.remove(p)
