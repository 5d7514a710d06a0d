"""swarmsecretsd's process: settings, logging, the local API, signals, the node.

``python -m swarmsecrets.node`` and the ``swarmsecretsd`` command both start here.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

import uvloop

from swarmsecrets import __version__, errors
from swarmsecrets.heap import return_large_buffers
from swarmsecrets.logfmt import setup_logging
from swarmsecrets.manager.controlapi import ControlServicer
from swarmsecrets.metrics import Metrics, MetricsServer
from swarmsecrets.node.config import DaemonConfig, parse_args
from swarmsecrets.node.daemon import Node
from swarmsecrets.node.localapi import LocalAPI, SwarmService
from swarmsecrets.node.systemd import Notifier, describe

log = logging.getLogger("swarmsecretsd")


async def serve(config: DaemonConfig) -> None:
    """Run until SIGTERM or SIGINT: serve the CLI at once, then resume the role the data dir records.
    Under systemd (``Type=notify``) it says when it is ready, how it is doing, and when it stops."""
    notifier = Notifier.from_environ()
    node = Node(config)
    metrics_server = serve_metrics(node.metrics, config.metrics_addr) if config.metrics_addr else None
    api = LocalAPI(config.socket_path, SwarmService(node), ControlServicer(node.local_control), metrics=node.metrics,
                   group=config.group)
    await api.start()
    log.info("listening on %s (version %s, data dir %s)", config.host, __version__, node.dir.root)
    if metrics_server is not None:
        log.info("metrics on http://%s/metrics", config.metrics_addr)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    notifying: asyncio.Task[None] | None = None
    if notifier is not None:  # the watchdog counts from the start, so its pings do too
        notifying = loop.create_task(notifier.run(lambda: describe(node)), name="systemd notify")
    try:
        await node.resume()
    except Exception as e:
        log.error("could not resume the %s role: %s", node.role, e)
    if notifier is not None:
        notifier.send("READY=1")  # the status loop follows the role from here
    await stopping.wait()
    log.info("shutting down")
    if notifier is not None and notifying is not None:
        notifying.cancel()
        notifier.send("STOPPING=1", "STATUS=stopping")
    # While the CLI and the peers are still served: a leader hands over, so writes need no election.
    await node.hand_over_leadership()
    await api.stop(grace=1.0)
    await node.shutdown()
    if metrics_server is not None:
        metrics_server.stop()
    if notifier is not None:
        notifier.close()
    log.info("stopped")


def serve_metrics(metrics: Metrics, addr: str) -> MetricsServer:
    try:
        return MetricsServer(metrics, addr)
    except OSError as e:  # said the way dockerd says it, and nothing else starts
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        log.error("metrics: listen tcp %s: bind: %s", addr, reason)
        raise SystemExit(1) from None


_PR_SET_DUMPABLE = 4


def make_undumpable() -> None:
    """No core file and no ptrace or /proc/<pid>/mem by processes of the same uid: the daemon's memory holds
    the data key, the CA key and every secret it delivers. Tasks run as root must not reach them."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE): {os.strerror(err)}")


def main(argv: Sequence[str] | None = None) -> None:
    make_undumpable()  # before any key or secret is in memory
    return_large_buffers()
    config = parse_args(argv)
    setup_logging(config.log_level, config.log_format)
    try:
        # uvloop: less CPU per request than the stock loop (the gRPC servers run on it).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config))
    except KeyboardInterrupt:
        pass
    except errors.SwarmError as e:  # the data dir or the socket cannot be used: one line, as dockerd says it
        log.error("failed to start daemon: %s", e)
        sys.exit(1)
    except Exception as e:  # never a traceback for a start-up problem; the log has the details
        log.exception("fatal: %s", e)
        sys.exit(1)
