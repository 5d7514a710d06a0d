"""N managers and M workers formed into one swarm: start, drive, wait for states, stop and clean up."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType


from swarmsecrets.api.v1 import control_pb2, swarm_pb2
from swarmsecrets.client import LocalError
from tests.framework.node import FAST_TIMINGS, LOOPBACK, Node, Placement, Timings, signal_group
from tests.framework.waiting import wait_until

FORM_TIMEOUT = 60.0


class Cluster:
    """``managers`` managers (m1..) and ``workers`` workers (w1..), data dirs under ``root``.

    Nothing starts until ``start`` (or ``spawn`` + ``form``); ``stop`` is safe to call at any point and
    more than once. On a namespace placement, node i (managers first) runs on lab host i.
    """

    def __init__(self, root: Path, managers: int = 3, workers: int = 0, *, placement: Placement = LOOPBACK,
                 timings: Timings = FAST_TIMINGS, log_level: str | None = "debug", extra_args: tuple[str, ...] = (),
                 log_dir: Path | None = None, worker_join_via: int = 0,
                 manager_availability: str = "drain", autolock: bool = False) -> None:
        """``worker_join_via``: the index of the manager that workers give as the remote to join through.
        ``manager_availability``: what managers init and join with; ``drain`` (the default) keeps tasks
        on the workers, so that a test's tasks run where it expects them; ``active`` lets managers
        run tasks too (they then run the worker agent). ``autolock``: init with autolock; the unlock key
        is then in ``unlock_key`` once the cluster is formed."""
        if managers < 1:
            raise ValueError("a cluster needs at least one manager")
        self.root = root
        self.worker_join_via = worker_join_via
        self.manager_availability = manager_availability
        self.autolock = autolock
        self.unlock_key = ""
        roles = ["manager"] * managers + ["worker"] * workers
        self.members: list[Node] = []
        for i, role in enumerate(roles):
            name = f"m{i + 1}" if role == "manager" else f"w{i + 1 - managers}"
            self.members.append(Node(name, root, role="manager" if role == "manager" else "worker",
                                     placement=placement, host=i + 1, timings=timings, log_level=log_level,
                                     extra_args=extra_args, log_dir=log_dir))

    @contextlib.contextmanager
    def started(self, timeout: float = FORM_TIMEOUT) -> Iterator[Cluster]:
        """The cluster formed for the block's length (a fixture's ``yield``); its members' logs are
        printed if forming it or the block fails, and it is stopped in any case."""
        try:
            self.start(timeout)
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- members ----------------------------------------------------------------------------------

    @property
    def managers(self) -> list[Node]:
        return [m for m in self.members if m.role == "manager"]

    @property
    def workers(self) -> list[Node]:
        return [m for m in self.members if m.role == "worker"]

    def member(self, name: str) -> Node:
        return next(m for m in self.members if m.name == name)

    def running(self) -> list[Node]:
        """Managers whose daemon runs (paused ones included)."""
        return [n for n in self.managers if n.running]

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.members if n.proc is not None and n.running]

    # --- formation --------------------------------------------------------------------------------

    def start(self, timeout: float = FORM_TIMEOUT) -> Cluster:
        """Spawn every daemon, then ``form``; on failure everything started is stopped again."""
        try:
            self.spawn()
            self.form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_socket()

    def form(self, timeout: float = FORM_TIMEOUT) -> None:
        """Init on m1, join the other managers one by one through m1, then the workers; wait until a
        leader answers and every worker is Ready. Uses the Swarm service of the local API (the CLI's texts are tested
        on their own)."""
        first = self.members[0]
        try:
            init = first.swarm().Init(swarm_pb2.InitRequest(advertise_addr=first.addr, autolock=self.autolock,
                                                            availability=self.manager_availability), timeout=timeout)
            self.unlock_key = init.unlock_key
            tokens = first.control().GetCluster(control_pb2.GetClusterRequest(), timeout=timeout).cluster.join_tokens
            via = self.managers[self.worker_join_via]
            for m in self.members[1:]:
                token, remote = (tokens.manager, first) if m.role == "manager" else (tokens.worker, via)
                availability = self.manager_availability if m.role == "manager" else "active"
                m.swarm().Join(swarm_pb2.JoinRequest(remote_addr=remote.addr, join_token=token, advertise_addr=m.addr,
                                                     availability=availability), timeout=timeout)
            for m in self.members:
                m.node_id = m.info().node_id
        except LocalError as e:
            raise RuntimeError(f"the cluster did not form: {e.message}\n{self.logs()}") from None
        self.leader(timeout)
        self.wait_workers_ready(timeout)

    def wait_workers_ready(self, timeout: float = FORM_TIMEOUT) -> None:
        """Until the leader lists every worker as Ready."""
        want = {w.node_id for w in self.workers}
        if not want:
            return

        def ready() -> bool:
            leader = self.leader(timeout)
            try:
                nodes = leader.control().ListNodes(control_pb2.ListNodesRequest(), timeout=5).nodes
            except LocalError:
                return False
            return want <= {n.id for n in nodes if n.status.state == "ready"}

        wait_until(ready, timeout, 0.2, "every worker Ready")

    # --- states -----------------------------------------------------------------------------------

    def leader(self, timeout: float = 20.0) -> Node:
        """The manager that says it leads, waiting for one; AssertionError after ``timeout`` s."""
        def find() -> Node | None:
            return next((n for n in self.running() if n.is_leader()), None)
        return wait_until(find, timeout, 0.1, "a leader")

    def current_leader(self) -> Node | None:
        """The manager that says it leads right now, or None: no waiting."""
        return next((n for n in self.running() if n.is_leader()), None)

    # --- teardown ---------------------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every daemon at once (workers stop their tasks and wipe their secrets), SIGKILL what is
        left after ``grace`` s, then unmount and remove every secrets root."""
        for m in self.members:
            m.close_client()
            if m.proc is not None:
                if m.paused:
                    m.resume()
                signal_group(m.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for m in self.members:
            if m.proc is not None:
                m.kill(signal.SIGTERM, max(0.1, deadline - time.monotonic()))
        for m in self.members:
            m.cleanup()

    def logs(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n.name} ({n.log_path})\n{n.log_tail(chars)}" for n in self.members
                         if n.log_path.exists())
