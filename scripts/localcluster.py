"""``scripts/run``: a local cluster on loopback, 3 managers and a worker, with a service reading its secret.

The first run forms the swarm under ./.cluster/ and walks through the secret commands once, printing
each one as a user would type it; later runs resume the same cluster from ./.cluster/ (delete it to
start afresh). The cluster keeps running until Ctrl-C (or SIGTERM), which stops every daemon cleanly.
Ports: ``$SWARMSECRETS_BASE_PORT`` (default 4242) for m1, +10 for each next node. The worker needs root
to mount its tmpfs and run tasks in a private mount namespace; without it the daemon says what it does
instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tests.framework import DEFAULT_TIMINGS, Cluster, Loopback, Node, wait_until

MANAGERS = 3
WORKERS = 1
SECRET, SERVICE = "db_pass", "reader"


def say(node: Node, *args: str, input: str | None = None, shown: str | None = None) -> str:
    """Run a CLI command on ``node``, showing it as a user types it, and print its output."""
    print(f"$ {shown or 'swarmsecrets ' + ' '.join(args)}   # on {node.name}", flush=True)
    out = node.ok(*args, input=input, timeout=120)
    print(out, end="" if out.endswith("\n") or not out else "\n", flush=True)
    return out


def form(cluster: Cluster, reader_out: Path) -> None:
    m1, *others = cluster.managers
    # Managers keep to management here (drain): the demo's task runs on the worker.
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
    print()
    say(m1, "secret", "create", SECRET, "-", input="database_password\n",
        shown=f"echo 'database_password' | swarmsecrets secret create {SECRET} -")
    say(others[0], "secret", "ls", shown="swarmsecrets secret ls          # every manager sees it")
    # $SWARMSECRETS_SECRETS_DIR is /run/secrets when the task has its own mount namespace.
    program = f'cat "$SWARMSECRETS_SECRETS_DIR/{SECRET}" > {reader_out}; exec sleep infinity'
    # The task runs as you (the default user, nobody, could not write into the cluster's dir).
    user = f"{os.getuid()}:{os.getgid()}"
    say(m1, "service", "create", "--name", SERVICE, "--user", user, "--secret", SECRET, "--", "sh", "-c", program,
        shown=f"swarmsecrets service create --name {SERVICE} --user {user} --secret {SECRET} -- sh -c '{program}'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".cluster", help="where the cluster lives (default ./.cluster)")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    base = int(os.environ.get("SWARMSECRETS_BASE_PORT", "4242"))
    # Worker secrets go to tmpfs, never under the repository: /dev/shm, named after the cluster's dir.
    secrets = Path("/dev/shm") / f"swarmsecrets-run-{hashlib.sha256(bytes(root)).hexdigest()[:12]}"
    placement = Loopback(base_port=base, secrets_dir=secrets)
    cluster = Cluster(root, MANAGERS, WORKERS, placement=placement, timings=DEFAULT_TIMINGS, log_level=None,
                      log_dir=root / "logs")
    reader_out = root / f"{SERVICE}.out"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.spawn()
        m1 = cluster.managers[0]
        if m1.cli("node", "ls").returncode == 0:
            print(f"Resuming the existing cluster in {root}.")
        else:
            form(cluster, reader_out)
        print()
        for n in cluster.members:
            n.node_id = n.info().node_id
        cluster.leader(60)
        cluster.wait_workers_ready(60)
        say(m1, "node", "ls")
        say(m1, "service", "ps", SERVICE)
        wait_until(lambda: reader_out.exists() and reader_out.read_text(), 60, 0.2, f"{SERVICE} to read its secret")
        print(f"The task of {SERVICE} read its secret: {reader_out.read_text().strip()!r} (in {reader_out})")
        host = m1.host_url
        print(f"""
The cluster is running (logs: {root / 'logs'}). In another shell:

    export PATH={Path(sys.executable).parent}:$PATH
    export SWARMSECRETS_HOST={host}
    swarmsecrets secret ls

Any manager works: {', '.join(m.host_url for m in cluster.managers[1:])}.
Press Ctrl-C to stop the cluster.""", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    except (RuntimeError, AssertionError) as e:
        print(f"scripts/run: {e}\nsee the logs in {root / 'logs'}", file=sys.stderr)
        return 1
    finally:
        print("\nStopping the cluster...", flush=True)
        cluster.stop()
        if secrets.exists():
            os.rmdir(secrets)  # emptied by the stop: each node's secrets root is removed
        print(f"Stopped. State is kept in {root} (rm -rf it to start afresh).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
