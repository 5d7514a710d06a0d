"""One swarmsecretsd process, where it runs (loopback or a namespace host), and how to drive it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from swarmsecrets.api.v1 import control_pb2, swarm_pb2
from swarmsecrets.client import LocalClient, LocalError
from swarmsecrets.client.local import Service
from tests.ports import free_port_pair

if TYPE_CHECKING:
    from tests.framework.netns import NetnsLab

# How a daemon and the CLI are started: ``python -m <module>``. One place, so a move of either is one edit.
DAEMON_MODULE = "swarmsecrets.node"
CLI_MODULE = "swarmsecrets.cli.main"
# The repository root: daemons started here import this same tree, whatever the caller's cwd.
REPO_ROOT = Path(__file__).resolve().parents[2]
# Loopback secrets roots are named after the process that made them, so that a test session can tell
# its own leftovers from another session's on the same machine.
LOOPBACK_SHM_PREFIX = f"swarmsecrets-test-{os.getpid()}-"
SHM_ROOT = Path("/dev/shm")
SOCKET_TIMEOUT = 30.0

Role = Literal["manager", "worker"]


@dataclass(frozen=True)
class Timings:
    """Raft and dispatcher timers passed to every daemon; None keeps the daemon's default."""

    raft_heartbeat: float | None = None
    election_min: float | None = None
    election_max: float | None = None
    dispatcher_heartbeat: float | None = None

    def flags(self) -> list[str]:
        out: list[str] = []
        for flag, value in (("--raft-heartbeat", self.raft_heartbeat), ("--raft-election-min", self.election_min),
                            ("--raft-election-max", self.election_max),
                            ("--dispatcher-heartbeat", self.dispatcher_heartbeat)):
            if value is not None:
                out += [flag, f"{value:g}"]
        return out


# Fast elections and heartbeats keep fault tests and chaos windows short; the defaults are tested elsewhere.
FAST_TIMINGS = Timings(raft_heartbeat=0.05, election_min=0.4, election_max=0.8, dispatcher_heartbeat=1.0)
DEFAULT_TIMINGS = Timings()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of daemons and CLIs: this tree importable first, unbuffered logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group led by ``proc`` (every node runs in a session of its own); gone is fine."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Placement(Protocol):
    """Where a node runs: its address, socket, secrets root, and how its process is started."""

    def address(self, host: int) -> tuple[str, int]:
        """(ip, gRPC port) of the node on ``host``; the raft port is the next one."""
        ...

    def socket_path(self, name: str, data_dir: Path) -> Path: ...

    def secrets_root(self, name: str) -> Path: ...

    def spawn(self, host: int, argv: list[str], log: Path) -> subprocess.Popen[bytes]: ...

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """``proc`` exited and was reaped: nothing more to clean up for it."""
        ...


class Loopback:
    """Every node on 127.0.0.1, its socket in its data dir, its secrets root on tmpfs.

    By default a node gets a free port pair and a fresh secrets root under /dev/shm. A long-lived cluster
    that is resumed later (``scripts/run``) fixes both: node ``host`` listens on ``base_port + 10 *
    (host - 1)`` and keeps its secrets in ``secrets_dir/<name>``.
    """

    def __init__(self, base_port: int | None = None, secrets_dir: Path | None = None) -> None:
        self.base_port = base_port
        self.secrets_dir = secrets_dir

    def address(self, host: int) -> tuple[str, int]:
        if self.base_port is None:
            return "127.0.0.1", free_port_pair()
        return "127.0.0.1", self.base_port + 10 * (host - 1)

    def socket_path(self, name: str, data_dir: Path) -> Path:
        return data_dir / "swarmsecrets.sock"

    def secrets_root(self, name: str) -> Path:
        if self.secrets_dir is not None:
            return self.secrets_dir / name
        return SHM_ROOT / f"{LOOPBACK_SHM_PREFIX}{name}-{uuid.uuid4().hex[:8]}"

    def spawn(self, host: int, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env(),
                                    start_new_session=True)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        pass


class Namespaces:
    """Node ``host`` runs on host ``host`` of a NetnsLab, at its lab address on the swarm port.

    Its socket lives in the lab's run dir, reachable from the root namespace: clients are never cut off
    from their own daemon, only daemons from each other.
    """

    SWARM_PORT = 2377

    def __init__(self, lab: NetnsLab) -> None:
        self.lab = lab

    def address(self, host: int) -> tuple[str, int]:
        return self.lab.ip(host), self.SWARM_PORT

    def socket_path(self, name: str, data_dir: Path) -> Path:
        return self.lab.run_dir / f"{name}.sock"

    def secrets_root(self, name: str) -> Path:
        return self.lab.shm_dir(name)

    def spawn(self, host: int, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        return self.lab.spawn(host, argv, log=log)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        self.lab.forget(proc)


LOOPBACK = Loopback()


class Node:
    """A swarmsecretsd of its own: ``start`` spawns it and waits for its socket; ``cli``/``ok``/``fails``
    run the real CLI against it; ``control``/``swarm`` are its local API services (``LocalClient``)."""

    def __init__(self, name: str, root: Path, *, role: Role = "manager", placement: Placement = LOOPBACK,
                 host: int = 1, timings: Timings = FAST_TIMINGS, log_level: str | None = "debug",
                 extra_args: tuple[str, ...] = (), log_dir: Path | None = None) -> None:
        """``root``: the parent of the node's data dir (``root/name``); ``host``: its number (from 1) for
        the placement; ``log_level``: None keeps the daemon's; ``extra_args``: more daemon flags; logs go
        to ``log_dir/name.log`` (default root)."""
        self.name = name
        self.role: Role = role
        self.root = root
        self.host = host
        self.placement = placement
        self.timings = timings
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.ip, self.port = placement.address(host)
        self.data_dir = root / name
        self.sock = placement.socket_path(name, self.data_dir)
        self.secrets_root = placement.secrets_root(name)
        self.log_path = (log_dir or root) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.node_id = ""
        self._client: LocalClient | None = None

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.role}, {self.addr})"

    # --- addresses --------------------------------------------------------------------------------

    @property
    def host_url(self) -> str:
        """What ``swarmsecrets -H`` takes."""
        return f"unix://{self.sock}"

    @property
    def addr(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def raft_addr(self) -> str:
        return f"{self.ip}:{self.port + 1}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- process ----------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        level = ["--log-level", self.log_level] if self.log_level else []
        return [sys.executable, "-m", DAEMON_MODULE, "--data-dir", str(self.data_dir), "--host", self.host_url,
                *level, *self.timings.flags(), "--secrets-root", str(self.secrets_root), *self.extra_args]

    def spawn(self) -> None:
        """Start the daemon without waiting for it (see ``wait_socket``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.secrets_root.mkdir(parents=True, exist_ok=True)
        self.proc = self.placement.spawn(self.host, self.argv(), self.log_path)
        self.paused = False

    def wait_socket(self, timeout: float = SOCKET_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.sock.exists():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not open {self.sock} within {timeout:g} s")
            time.sleep(0.05)

    def start(self, timeout: float = SOCKET_TIMEOUT) -> None:
        """Start the daemon and return once it serves its socket."""
        self.spawn()
        self.wait_socket(timeout)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Signal the daemon's process group and reap it; SIGKILL follows if ``sig`` is not obeyed within
        ``timeout`` s. After a SIGKILL the stale socket goes too, as the daemon's next start would do."""
        self.close_client()
        proc = self.proc
        if proc is None:
            return
        if self.paused and sig != signal.SIGKILL:
            signal_group(proc, signal.SIGCONT)
        signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=20)
        signal_group(proc, signal.SIGKILL)  # the group may outlive its leader
        self.placement.forget(proc)
        self.proc = None
        self.paused = False
        if sig == signal.SIGKILL:
            self.sock.unlink(missing_ok=True)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: the daemon stops its tasks and wipes its secrets, as ``systemctl stop`` would."""
        self.kill(signal.SIGTERM, timeout)

    def pause(self) -> None:
        if self.proc is not None:
            signal_group(self.proc, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None:
            signal_group(self.proc, signal.SIGCONT)
        self.paused = False

    def cleanup(self) -> None:
        """After the daemon is gone: unmount what it left under its secrets root and remove the root."""
        if self.running:
            raise RuntimeError(f"{self.name} still runs; kill it first")
        if self.secrets_root.exists():
            for point in sorted(mounts_under(self.secrets_root), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(self.secrets_root, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- the CLI ----------------------------------------------------------------------------------

    def cli(self, *args: str, input: bytes | str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``swarmsecrets -H <this node> args...`` as a user types it; never raises on a non-zero exit."""
        data = input.encode() if isinstance(input, str) else input
        p = subprocess.run([sys.executable, "-m", CLI_MODULE, "-H", self.host_url, *args], input=data,
                           stdin=None if data is not None else subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=child_env())
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(errors="replace"),
                                           p.stderr.decode(errors="replace"))

    def ok(self, *args: str, input: bytes | str | None = None, timeout: float = 30) -> str:
        """The command's stdout; AssertionError with its output if it failed."""
        p = self.cli(*args, input=input, timeout=timeout)
        assert p.returncode == 0, f"{self.name}: swarmsecrets {' '.join(args)} -> {p.returncode}\n{p.stdout}{p.stderr}"
        return p.stdout

    def fails(self, *args: str, input: bytes | str | None = None, timeout: float = 30) -> str:
        """The command's one-line error; AssertionError if it succeeded or printed a traceback."""
        p = self.cli(*args, input=input, timeout=timeout)
        assert p.returncode != 0, f"{self.name}: expected failure of {' '.join(args)}, got\n{p.stdout}"
        assert "Traceback" not in p.stderr, p.stderr
        return p.stderr.strip()

    # --- the local API ----------------------------------------------------------------------------

    def client(self) -> LocalClient:
        """One client of the node's socket, kept until the node is killed."""
        if self._client is None:
            self._client = LocalClient(self.sock)
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def control(self) -> Service:
        return self.client().control

    def swarm(self) -> Service:
        return self.client().swarm

    def is_leader(self, timeout: float = 1.0) -> bool | None:
        """Whether the node says it leads (its answer passes a read barrier); None if it cannot say."""
        if not self.running or self.paused:
            return None
        try:
            node = self.control().GetNode(control_pb2.GetNodeRequest(node_id="self"), timeout=timeout).node
        except LocalError:
            return None
        return bool(node.manager_status.leader)

    def info(self, timeout: float = 10.0) -> swarm_pb2.InfoResponse:
        resp: swarm_pb2.InfoResponse = self.swarm().Info(swarm_pb2.InfoRequest(), timeout=timeout)
        return resp


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p + "/" == prefix or p.startswith(prefix)]
