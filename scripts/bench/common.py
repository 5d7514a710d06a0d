"""What every benchmark shares: statistics, tables, the processes it starts, CPU/RSS meters, machine info.

Servers are started in sessions of their own (Ctrl-C in the terminal reaches only the benchmark, which
stops them) and registered, so ``terminate_all`` can stop whatever is left on any way out.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

try:
    import psutil
except ImportError:  # the dev extras have it; without it the CPU/RSS columns are empty
    psutil = None  # type: ignore[assignment]

from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.client import LocalClient, LocalError
from tests.framework import Node

# --------------------------------------------------------------------------------------------
# statistics and formatting


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of already sorted values; nan when empty."""
    if not sorted_values:
        return math.nan
    if q <= 0:
        return sorted_values[0]
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def summarize(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean/max in milliseconds of latencies given in seconds."""
    xs = sorted(latencies_s)
    if not xs:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "mean_ms": math.nan, "max_ms": math.nan}
    return {
        "p50_ms": percentile(xs, 50) * 1e3,
        "p99_ms": percentile(xs, 99) * 1e3,
        "mean_ms": sum(xs) / len(xs) * 1e3,
        "max_ms": xs[-1] * 1e3,
    }


def fmt_num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def fmt_size(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


_PROCS: list[subprocess.Popen[bytes]] = []


_PROCS_LOCK = threading.Lock()


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C in the terminal reaches only us; we stop it)."""
    with open(log_path, "ab") as log:
        p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
    with _PROCS_LOCK:
        _PROCS.append(p)
    return p


def terminate(p: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal one process group we started (by its pid), escalate to SIGKILL, reap it."""
    if p is None:
        return
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    else:  # the leader of the group is gone; make sure nothing it spawned is left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    with _PROCS_LOCK:
        if p in _PROCS:
            _PROCS.remove(p)


def terminate_all() -> None:
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            terminate(p, signal.SIGTERM, timeout=10)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def free_port(exclude: set[int] | None = None) -> int:
    exclude = exclude or set()
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last}" if last else ""))


def tail(path: Path, n: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def proc_rss(pid: int | None) -> int | None:
    """RSS of a process and its children, in bytes."""
    if psutil is None or pid is None:
        return None
    try:
        p = psutil.Process(pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += c.memory_info().rss
        return total
    except psutil.Error:
        return None


class CpuMeter:
    """CPU cores used by this process and by a set of server pids over a time window."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self.ok = psutil is not None
        if not self.ok:
            return
        self.me = psutil.Process()
        self.servers = []
        for pid in server_pids:
            with contextlib.suppress(psutil.Error):
                self.servers.append(psutil.Process(pid))

    @staticmethod
    def _cpu(p: Any) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except psutil.Error:
            return 0.0

    def start(self) -> None:
        if not self.ok:
            return
        self.t0 = time.monotonic()
        self.c0 = self._cpu(self.me)
        self.s0 = [self._cpu(p) for p in self.servers]

    def stop(self) -> tuple[float | None, float | None]:
        client, per = self.stop_each()
        return client, (sum(per) if per is not None else None)

    def stop_each(self) -> tuple[float | None, list[float] | None]:
        """Cores used by this process, and by each server in the order given."""
        if not self.ok:
            return None, None
        dt = max(time.monotonic() - self.t0, 1e-9)
        client = (self._cpu(self.me) - self.c0) / dt
        per = [(self._cpu(p) - s) / dt for p, s in zip(self.servers, self.s0, strict=True)]
        return client, per


def describe_error(e: BaseException) -> str:
    if isinstance(e, LocalError):
        return f"{e.code.name}: {e.message}"
    if isinstance(e, grpc.RpcError):
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else ""
        return f"{getattr(code, 'name', code)}: {details}"
    return f"{type(e).__name__}: {e}"


def machine_info(base: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
        "kernel": platform.release(), "loadavg_start": os.getloadavg(), "data_dir": str(base),
    }
    try:
        out = subprocess.run(["df", "-PT", str(base)], capture_output=True, text=True, timeout=10).stdout
        info["fs"] = out.splitlines()[1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        info["fs"] = "?"
    if psutil is not None:
        info["mem_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def json_clean(o: Any) -> Any:
    """NaN (not measured) becomes null, so the file is strict JSON."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [json_clean(v) for v in o]
    return o


def count_secrets(node: Node, timeout: float = 120.0, client: LocalClient | None = None) -> int:
    """Secrets in a linearizable ListSecrets answered by this manager."""
    if client is not None:
        return len(client.control.ListSecrets(control_pb2.ListSecretsRequest(), timeout=timeout).secrets)
    with LocalClient(node.sock) as c:
        return count_secrets(node, timeout, c)
