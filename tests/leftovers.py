"""What a test session left behind: processes it started, mounts under its temp dirs, its namespaces.

Processes: the session makes itself a child subreaper (``adopt_orphans``), so that a process whose
parent died (a task of a killed worker daemon) is re-parented to the session instead of init; then
every live descendant of the session at its end is a leftover, and no other session's are counted.
Mounts: under the session's pytest temp dir or a path named ``swarmsecrets-test-<session pid>-``
(the framework's loopback secrets roots, the worker tests' tmpfs roots). Namespaces: those of every
lab this process built.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.framework.netns import CREATED_PREFIXES, namespaces

_PR_SET_CHILD_SUBREAPER = 36
SESSION_MARK = f"swarmsecrets-test-{os.getpid()}-"


def adopt_orphans() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stat(pid: str) -> tuple[str, int] | None:
    """(state, ppid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root: int | None = None) -> list[int]:
    """Live (not zombie) descendants of ``root`` (this process by default)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(entry)
        if st is None:
            continue
        children.setdefault(st[1], []).append(int(entry))
        if st[0] == "Z":
            zombies.add(int(entry))
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in zombies:
            out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def reap_zombies() -> None:
    """Collect exited children (adopted orphans are ours to reap); at the session's end only."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def mounts(basetemp: Path) -> list[str]:
    base = str(basetemp).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4].replace("\\040", " ") for line in f]
    return [p for p in points if (p + "/").startswith(base) or SESSION_MARK in p]


def find(basetemp: Path, grace: float = 5.0) -> list[str]:
    """Everything left, one line each; waits up to ``grace`` s for processes that are already dying."""
    deadline = time.monotonic() + grace
    while (pids := descendants()) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = [f"process {pid}: {_cmdline(pid)}" for pid in pids]
    found += [f"mount {point}" for point in mounts(basetemp)]
    found += [f"netns {ns}" for prefix in sorted(CREATED_PREFIXES) for ns in namespaces(prefix)]
    return found


def remove(basetemp: Path) -> None:
    """Kill, unmount and delete what ``find`` reports, so that a failed run does not burden the next."""
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for point in sorted(mounts(basetemp), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for prefix in sorted(CREATED_PREFIXES):
        for ns in namespaces(prefix):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    reap_zombies()
