"""Profiles of a server process during a benchmark row: py-spy flame graphs, folded stacks, the CPU
each thread used, and the samples sorted into the layers a request crosses.

``sampling(...)`` is entered around the measured row; it writes into its directory

* ``LABEL.svg``: the flame graph, threads apart (open it in a browser);
* ``LABEL.txt``: py-spy's folded stacks with their sample counts (``;``-joined frames, count last);
* ``LABEL.layers.txt``: the table ``layer_table`` prints: per thread, its CPU (from /proc, so waits
  are not counted) and the share of its on-CPU samples in each layer.

Samples whose innermost frame waits (poll, select, fdatasync, a lock) are counted apart as waits:
py-spy cannot always tell a thread blocked in a system call from a running one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

# A sample whose innermost frame is one of these waits (off CPU, or py-spy could not tell).
WAITS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wait: fdatasync", ("DurableJournal.sync (",)),
    ("wait: poll/select", ("PollPoller.poll (pysyncobj/poller.py:88)", "EpollSelector.select",
                           "Condition.wait", "Event.wait")),
)
# (layer, substrings of a frame): the first layer with a frame anywhere in the stack wins, so a
# layer is listed before the layers that call it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encryption (SecretBox)", ("nacl/", "crypto/keys.py")),
    ("request id binding (HMAC)", ("manager/binding.py",)),
    ("audit + logging", ("swarmsecrets/audit.py", "logging/", "logfmt.py")),
    ("metrics", ("prometheus_client/",)),
    ("validation", ("swarmsecrets/validation.py",)),
    ("store apply", ("manager/state/", "on_apply")),
    ("raft transport (TLS, pickling)", ("raft/transport.py", "raft/wire.py", "ssl.py", "pysyncobj/transport.py")),
    ("raft core (pysyncobj, journal)", ("pysyncobj/", "swarmsecrets/raft/")),
    ("proposer + thread hops", ("manager/proposer.py", "manager/raftedge.py", "concurrent/futures",
                                "call_soon_threadsafe", "_write_to_self", "_read_from_self")),
    ("control API + protobuf", ("manager/controlapi/",)),
    ("local API server (HTTP, streams)", ("node/localapi.py", "asyncio/streams.py")),
    ("local socket relay", ("node/peercred.py",)),
    ("gRPC server + asyncio", ("grpc", "asyncio/", "rpcutil.py", "_poll_wrapper")),
)


def find_py_spy() -> str:
    """py-spy on PATH or next to this Python; ValueError with the reason when it is missing."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise ValueError("--profile needs py-spy (neither on PATH nor next to this Python): "
                         "`pip install py-spy` into any venv and put its bin directory on PATH")
    return found


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds each thread of ``pid`` used so far, by thread id."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def layer_of(frames: list[str]) -> str:
    innermost = frames[-1] if frames else ""
    for layer, marks in WAITS:
        if any(m in innermost for m in marks):
            return layer
    for layer, marks in LAYERS:
        if any(m in frame for frame in frames for m in marks):
            return layer
    return "other (no Python frame: gRPC's poller thread)"


def layer_counts(folded: Path) -> dict[tuple[int, str], Counter[str]]:
    """Samples per thread (id, name) per layer, from py-spy's folded stacks."""
    per: dict[tuple[int, str], Counter[str]] = {}
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        head, _, name = thread.partition(": ")  # "thread (TID): NAME"
        tid = int(head[head.index("(") + 1:head.index(")")], 0) if "(" in head else 0
        per.setdefault((tid, name.strip()), Counter())[layer_of(frames)] += int(count)
    return per


def layer_table(per: dict[tuple[int, str], Counter[str]], cpu: dict[int, float], seconds: float, ops: int) -> str:
    """Per thread: cores used, then each layer's share of the on-CPU samples and its CPU per op."""
    total = sum(cpu.values())
    lines = [f"{seconds:.1f} s profiled, {ops} ops: the process used {total / seconds:.2f} cores, "
             f"{total / max(ops, 1) * 1e6:.0f} us CPU per op; by thread and layer (share of on-CPU samples):"]
    merged: dict[tuple[int, str], Counter[str]] = {}
    for (tid, name), counts in per.items():  # py-spy may label one thread twice (e.g. a renamed one)
        merged.setdefault((tid, name.split(" ")[0]), Counter()).update(counts)
    for (tid, name), counts in sorted(merged.items(), key=lambda kv: -cpu.get(kv[0][0], 0.0)):
        cpu_s = cpu.get(tid, 0.0)
        on_cpu = {k: v for k, v in counts.items() if not k.startswith("wait:")}
        busy = sum(on_cpu.values()) or 1
        waits = ", ".join(f"{k} {v}" for k, v in counts.items() if k.startswith("wait:"))
        lines.append(f"  {name} ({tid}): {cpu_s / seconds:.2f} cores, {cpu_s / max(ops, 1) * 1e6:.0f} us/op"
                     f" ({busy} samples on CPU; {waits or 'no waits'})")
        for layer, n in sorted(on_cpu.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {layer:<32} {100 * n / busy:5.1f} %  {cpu_s * n / busy / max(ops, 1) * 1e6:6.0f} us/op")
    return "\n".join(lines)


@contextlib.contextmanager
def sampling(py_spy: str, pid: int, out_dir: Path, log: Callable[[str], None], label: str,
             ops: Callable[[], int]) -> Iterator[None]:
    """Sample ``pid`` while the block runs (see the module docstring); ``ops()`` is read after
    the block: the operations completed in it, for the per-op figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([py_spy, "record", "--pid", str(pid), "--threads", "--rate", "200",
                               "--nonblocking", "--format", fmt, "--output", str(out_dir / f"{label}.{ext}")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"))]
    cpu0, t0 = thread_cpu(pid), time.monotonic()
    try:
        yield
    finally:
        cpu1, seconds = thread_cpu(pid), time.monotonic() - t0
        for p in procs:
            p.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        failed = []
        for p in procs:
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                err = b"timed out writing its output"
            if p.returncode not in (0, -signal.SIGINT):
                failed.append(f"py-spy exit {p.returncode}: {err.decode(errors='replace').strip()[-300:]}")
        if failed:
            raise RuntimeError("profiling failed: " + "; ".join(failed))
        cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}
        text = layer_table(layer_counts(out_dir / f"{label}.txt"), cpu, seconds, ops())
        (out_dir / f"{label}.layers.txt").write_text(text + "\n")
        log(f"  profile of pid {pid} in {out_dir / label}.svg, .txt, .layers.txt:\n{text}")
