"""``scripts/run``: a local swarm on loopback (3 managers, 2 workers) and a tour of the whole job.

The first run forms the swarm under ./.cluster/ and walks through it, printing each command as a user
would type it: a secret, a service whose task reads it from /run/secrets, the rotation idiom, a kill -9
of the leader and the next write, then ``info``, ``node ls`` and ``service ps``. Later runs resume the
same swarm from ./.cluster/ (delete it to start afresh). The swarm keeps running until Ctrl-C (or
SIGTERM), which stops every daemon and removes every mount; ``--exit-after-tour`` stops it right after.
Ports: ``--base-port`` (``$SWARMSECRETS_BASE_PORT``, default 4242) for m1, +10 for each next node.
Run as root, the workers' secrets live on a tmpfs mounted for the run, each task gets a tmpfs and mount
namespace of its own and reads /run/secrets; without root the script says what it does instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType



from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import LocalError
from tests.framework import DEFAULT_TIMINGS, Cluster, Loopback, Node, wait_until
from tests.framework.node import mounts_under

MANAGERS, WORKERS = 3, 2
OLD, NEW, TARGET, SERVICE = "db_pass_v1", "db_pass_v2", "db_password", "reader"
OLD_VALUE, NEW_VALUE = "correct horse", "battery staple"
WAIT = 60.0


def say(node: Node, *args: str, input: str | None = None, shown: str | None = None) -> str:
    """Run a CLI command on ``node``, showing it as a user types it, and print its output."""
    print(f"$ {shown or 'swarmsecrets ' + ' '.join(args)}   # on {node.name}", flush=True)
    out = node.ok(*args, input=input, timeout=120)
    print(out, end="" if out.endswith("\n") or not out else "\n", flush=True)
    return out


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def task_lines(out: Path) -> list[str]:
    try:
        return out.read_text().splitlines()
    except FileNotFoundError:
        return []


def show_task_reads(out: Path, value: str) -> None:
    """Wait until the service's task has written a line that shows ``value``, then print its lines."""
    wait_until(lambda: any(line.endswith(repr(value)) for line in task_lines(out)), WAIT, 0.2,
               f"the task of {SERVICE} to read {value!r}")
    print(f"$ cat {out}   # what the task printed", flush=True)
    print("\n".join(task_lines(out)), flush=True)


def form(cluster: Cluster) -> None:
    m1, *others = cluster.managers
    step("Form the swarm: 3 managers (drained: they keep to management), 2 workers")
    say(m1, "swarm", "init", "--availability", "drain", "--advertise-addr", m1.addr)
    manager_token = m1.ok("swarm", "join-token", "-q", "manager").strip()
    worker_token = m1.ok("swarm", "join-token", "-q", "worker").strip()
    for m in others:
        say(m, "swarm", "join", "--token", manager_token, "--availability", "drain", "--advertise-addr", m.addr,
            m1.addr, shown=f"swarmsecrets swarm join --token <manager token> --availability drain "
                           f"--advertise-addr {m.addr} {m1.addr}")
    for w in cluster.workers:
        say(w, "swarm", "join", "--token", worker_token, "--advertise-addr", w.addr, m1.addr,
            shown=f"swarmsecrets swarm join --token <worker token> --advertise-addr {w.addr} {m1.addr}")
    for n in cluster.members:
        n.node_id = n.info().node_id
    cluster.wait_workers_ready(WAIT)


def tour(cluster: Cluster, out: Path) -> None:
    m1, m2, _ = cluster.managers
    step("A secret, and a service whose task reads it")
    say(m1, "secret", "create", OLD, "-", input=OLD_VALUE,
        shown=f"printf '{OLD_VALUE}' | swarmsecrets secret create {OLD} -")
    say(m2, "secret", "ls", shown="swarmsecrets secret ls          # every manager sees it")
    # $SWARMSECRETS_SECRETS_DIR is /run/secrets when the task has its own mount namespace (root).
    program = (f'v=$(cat "$SWARMSECRETS_SECRETS_DIR/{TARGET}"); '
               f'echo "$(date +%T) task read $SWARMSECRETS_SECRETS_DIR/{TARGET}: \'$v\'" '
               f'| tee -a {out}; exec sleep infinity')
    # The task runs as you, so that it may write into the cluster's dir; a real service has a user of its own.
    user = f"{os.getuid()}:{os.getgid()}"
    say(m1, "service", "create", "--name", SERVICE, "--user", user, "--secret", f"source={OLD},target={TARGET}",
        "--", "sh", "-c", program,
        shown=f"swarmsecrets service create --name {SERVICE} --user {user} --secret source={OLD},target={TARGET} "
              f"-- sh -c '<print what /run/secrets/{TARGET} holds>'")
    show_task_reads(out, OLD_VALUE)

    step("Rotate it: a new secret, the service moved onto it under the same target, the old one removed")
    say(m1, "secret", "create", NEW, "-", input=NEW_VALUE,
        shown=f"printf '{NEW_VALUE}' | swarmsecrets secret create {NEW} -")
    say(m1, "service", "update", "--secret-rm", OLD, "--secret-add", f"source={NEW},target={TARGET}", SERVICE)
    say(m1, "secret", "rm", OLD)
    show_task_reads(out, NEW_VALUE)

    step("Kill the leader with kill -9; the next write succeeds on a new leader")
    leader = cluster.leader(WAIT)
    print(f"$ kill -9 {leader.pid}   # {leader.name}, the leader", flush=True)
    leader.kill(signal.SIGKILL)
    other = next(m for m in cluster.managers if m is not leader)
    say(other, "secret", "create", "after_failover", "-", input="written after the failover",
        shown="echo 'written after the failover' | swarmsecrets secret create after_failover -")
    print(f"{cluster.leader(WAIT).name} leads now.", flush=True)
    print(f"$ swarmsecretsd ...   # {leader.name} restarts and rejoins as a follower", flush=True)
    leader.start()
    wait_until(lambda: every_manager_reachable(other), WAIT, 0.2, f"{leader.name} reachable again")


def list_nodes(manager: Node) -> list[objects_pb2.Node] | None:
    """The nodes as ``manager`` lists them (over the local API: cheaper to poll than the CLI), None if it cannot yet."""
    try:
        return list(manager.control().ListNodes(control_pb2.ListNodesRequest(), timeout=5).nodes)
    except LocalError:
        return None


def every_manager_reachable(manager: Node) -> bool:
    nodes = list_nodes(manager) or []
    return sum(n.manager_status.leader or n.manager_status.reachability == "reachable" for n in nodes) == MANAGERS


def stamp(path: Path) -> tuple[int, int] | None:
    """When ``path`` last changed, and its size; None if it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def join_token(manager: Node, role: str) -> str:
    """A join token, once ``manager`` (just restarted) answers for it."""
    return wait_until(lambda: manager.cli("swarm", "join-token", "-q", role).stdout.strip(), WAIT, 0.2,
                      f"a {role} join token from {manager.name}")


def join_newcomers(cluster: Cluster) -> None:
    """On a resume: members that are in no swarm yet (a swarm made by an earlier, smaller layout) join it."""
    m1 = cluster.managers[0]
    for n in cluster.members:
        if n.info().local_node_state == "inactive":
            token = join_token(m1, n.role)
            extra = ["--availability", "drain"] if n.role == "manager" else []
            say(n, "swarm", "join", "--token", token, *extra, "--advertise-addr", n.addr, m1.addr,
                shown=f"swarmsecrets swarm join --token <{n.role} token> {' '.join(extra)} --advertise-addr {n.addr} "
                      f"{m1.addr}".replace("  ", " "))
        n.node_id = n.info().node_id


def show(cluster: Cluster) -> None:
    leader = cluster.leader(WAIT)
    # A manager that has just started answers once it has caught up with the log.
    wait_until(lambda: list_nodes(leader) is not None, WAIT, 0.2, f"{leader.name} to list the nodes")
    step("How the swarm is doing")
    say(leader, "info")
    say(leader, "node", "ls")
    say(leader, "service", "ps", SERVICE)


def secrets_dir(root: Path) -> Path:
    """Where the workers' secrets roots go: tmpfs, never under the repository; named after ``root``."""
    return Path("/dev/shm") / f"swarmsecrets-run-{hashlib.sha256(bytes(root)).hexdigest()[:12]}"


def mount_secrets(secrets: Path) -> str:
    """As root: a tmpfs of the run's own for the workers' secrets roots. Says what happens otherwise."""
    secrets.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() != 0:
        return (f"Not root: the workers cannot mount tmpfs or make namespaces. Their secrets go to plain 0700 "
                f"dirs under {secrets} (on /dev/shm, a tmpfs shared with the machine, no size limit); "
                f"the task runs as you without a mount or PID namespace of its own and reads its secrets at "
                f"$SWARMSECRETS_SECRETS_DIR instead of /run/secrets. Run as root for the real thing.")
    if str(secrets) not in mounts_under(secrets):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700,nodev,nosuid,noexec", "swarmsecrets-run",
                        str(secrets)], check=True)
    return (f"Root: the workers' secrets roots are on a tmpfs mounted at {secrets}; each task gets a tmpfs "
            f"of its own, mounted read-only at /run/secrets in its own mount and PID namespaces.")


def unmount_secrets(secrets: Path) -> None:
    for point in sorted(mounts_under(secrets), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if secrets.exists():
        os.rmdir(secrets)  # emptied by the stop: each node's secrets root is removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".cluster", help="where the cluster lives (default ./.cluster)")
    parser.add_argument("--base-port", type=int, default=int(os.environ.get("SWARMSECRETS_BASE_PORT", "4242")),
                        help="m1's port; each next node +10 (default $SWARMSECRETS_BASE_PORT or 4242)")
    parser.add_argument("--exit-after-tour", action="store_true", help="stop the swarm after the tour")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    secrets = secrets_dir(root)
    placement = Loopback(base_port=args.base_port, secrets_dir=secrets)
    cluster = Cluster(root, MANAGERS, WORKERS, placement=placement, timings=DEFAULT_TIMINGS, log_level=None,
                      log_dir=root / "logs")
    out = root / f"{SERVICE}.out"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(mount_secrets(secrets), flush=True)
        before = stamp(out)
        cluster.spawn()
        m1 = cluster.managers[0]
        if m1.info().local_node_state != "inactive":
            print(f"Resuming the swarm in {root}.", flush=True)
            join_newcomers(cluster)
            cluster.wait_workers_ready(WAIT)
            # A worker starts its tasks afresh when its daemon starts: the task reads its secret again.
            wait_until(lambda: stamp(out) not in (None, before), WAIT, 0.2, f"the task of {SERVICE} to start again")
            print(f"The task of {SERVICE} started again and printed: {task_lines(out)[-1]}", flush=True)
        else:
            out.unlink(missing_ok=True)
            form(cluster)
            tour(cluster, out)
        show(cluster)
        if args.exit_after_tour:
            return 0
        print(f"""
The swarm is running (logs: {root / 'logs'}; what the task printed: {out}). In another shell:

    export PATH={Path(sys.executable).parent}:$PATH
    export SWARMSECRETS_HOST={m1.host_url}
    swarmsecrets secret ls
    swarmsecrets service ps {SERVICE}

Any manager works: {', '.join(m.host_url for m in cluster.managers[1:])}.
Press Ctrl-C to stop the swarm.""", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    except (RuntimeError, AssertionError, subprocess.CalledProcessError) as e:
        quietly(print, f"scripts/run: {e}\nsee the logs in {root / 'logs'}", file=sys.stderr)
        return 1
    finally:
        # Stopping comes first: the terminal (or a pipe) may be gone already.
        quietly(print, "\nStopping the swarm...", flush=True)
        cluster.stop()
        unmount_secrets(secrets)
        quietly(print, f"Stopped; mounts removed. State is kept in {root} (rm -rf it to start afresh).", flush=True)
    return 0


def quietly(fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
