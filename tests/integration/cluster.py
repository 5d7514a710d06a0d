"""Real swarmsecretsd processes on loopback, driven through the real CLI."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Fast elections keep the fault tests short; the defaults are tested elsewhere.
RAFT_FLAGS = ["--raft-heartbeat", "0.05", "--raft-election-min", "0.4", "--raft-election-max", "0.8",
              "--dispatcher-heartbeat", "1"]


def free_port_pair() -> int:
    """A port P such that P and P+1 are free on 127.0.0.1 (gRPC and raft)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@dataclass
class Node:
    name: str
    root: Path
    port: int = field(default_factory=free_port_pair)
    proc: subprocess.Popen[bytes] | None = None
    # Where a worker puts task secrets: on tmpfs (/dev/shm), unique per node.
    secrets_root: Path = field(default_factory=lambda: Path("/dev/shm") / f"swarmsecrets-test-{uuid.uuid4().hex[:12]}")

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def sock(self) -> Path:
        return self.data_dir / "swarmsecrets.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.port + 1}"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swarmsecrets.node", "--data-dir", str(self.data_dir),
             "--host", self.host, "--log-level", "debug", *RAFT_FLAGS, "--secrets-root", str(self.secrets_root)],
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while not self.sock.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not open its socket")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        if sig == signal.SIGKILL and self.sock.exists():
            self.sock.unlink()
        self.proc = None

    def cleanup(self) -> None:
        """After kill: unmount what a killed worker left and remove its secrets root."""
        if self.secrets_root.exists():
            subprocess.run(["umount", "-R", "-l", str(self.secrets_root)], capture_output=True)
            for task_dir in (self.secrets_root / "tasks").glob("*"):
                subprocess.run(["umount", "-l", str(task_dir)], capture_output=True)
            shutil.rmtree(self.secrets_root, ignore_errors=True)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def cli(self, *args: str, input: bytes | str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        p = subprocess.run([sys.executable, "-m", "swarmsecrets.cli.main", "-H", self.host, *args],
                           input=data, capture_output=True, timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(errors="replace"),
                                           p.stderr.decode(errors="replace"))

    def ok(self, *args: str, input: bytes | str | None = None, timeout: float = 30) -> str:
        p = self.cli(*args, input=input, timeout=timeout)
        assert p.returncode == 0, f"{self.name}: swarmsecrets {' '.join(args)} -> {p.returncode}\n{p.stdout}{p.stderr}"
        return p.stdout

    def fails(self, *args: str, input: bytes | str | None = None, timeout: float = 30) -> str:
        p = self.cli(*args, input=input, timeout=timeout)
        assert p.returncode != 0, f"{self.name}: expected failure of {' '.join(args)}, got\n{p.stdout}"
        assert "Traceback" not in p.stderr, p.stderr
        return p.stderr.strip()


def wait_until(fn, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except AssertionError as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last}")


class Cluster:
    def __init__(self, root: Path, managers: int = 3) -> None:
        self.root = root
        self.nodes = [Node(f"m{i + 1}", root) for i in range(managers)]

    def start(self) -> Cluster:
        for n in self.nodes:
            n.start()
        first = self.nodes[0]
        first.ok("swarm", "init", "--advertise-addr", first.addr)
        token = first.ok("swarm", "join-token", "-q", "manager").strip()
        for n in self.nodes[1:]:
            n.ok("swarm", "join", "--token", token, "--advertise-addr", n.addr, first.addr, timeout=60)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            try:
                n.kill()
            except Exception:
                pass
            n.cleanup()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log_path.read_text()[-4000:]}" for n in self.nodes if n.log_path.exists())

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None]

    def leader(self, timeout: float = 20) -> Node:
        def find() -> Node | None:
            for n in self.running():
                out = n.cli("node", "inspect", "self", "--format", "{{.ManagerStatus.Leader}}")
                if out.returncode == 0 and out.stdout.strip() == "true":
                    return n
            return None
        return wait_until(find, timeout, 0.2, "a leader")

