"""The daemon's Prometheus metrics (``--metrics-addr``), one registry per process.

Counters and histograms are fed as things happen: raft proposals (``observe_proposal``), journal
fsyncs and snapshots (``raft_observer``), every gRPC call (``GrpcMetrics``, a server interceptor),
secret deliveries (``observe_delivery``). Gauges are read when scraped, from ``Figures`` that the
node hands over (its raft status, what its store holds, its certificate). The raft library and the
manager's services know nothing of Prometheus: they take plain callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from swarmsecrets.raft import RaftObserver, RaftStatus
from swarmsecrets.rpcutil import Around, HandlerInterceptor, wrap_handler

NAMESPACE = "swarmsecrets"
# Seconds: from a fast fdatasync to an election's worth of waiting.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Figures:
    """What a scrape reads from the node at that moment; what a node does not have is left out."""

    cert_not_after: float | None = None  # this node's certificate, unix seconds
    raft: RaftStatus | None = None  # managers only
    nodes: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (role, state) -> count
    tasks: Mapping[str, int] = field(default_factory=dict)  # state -> count
    secrets: int | None = None


NO_FIGURES = Figures()


class _Gauges(Collector):
    """The gauges, computed from ``Figures`` at each scrape (never stale, nothing to keep in step)."""

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        if f.cert_not_after is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_node_certificate_expiry_timestamp_seconds",
                                    "When this node's TLS certificate expires (unix time)", value=f.cert_not_after)
        r = f.raft
        if r is not None:
            for name, doc, value in (
                    ("raft_term", "The current raft term", r.term),
                    ("raft_is_leader", "1 if this manager leads the swarm", int(r.is_leader)),
                    ("raft_has_leader", "1 if this manager knows a leader", int(r.leader is not None)),
                    ("raft_commit_index", "The highest raft index known committed", r.commit_index),
                    ("raft_applied_index", "The highest raft index applied here", r.last_applied),
                    ("raft_snapshot_index", "The raft index of the newest snapshot on disk", r.snapshot_index),
                    ("raft_members", "Members of the raft group", len(r.members)),
                    ("raft_reachable_members", "Members this manager reaches (itself included)", len(r.reachable)),
            ):
                yield GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)
        if f.nodes:
            nodes = GaugeMetricFamily(f"{NAMESPACE}_nodes", "Nodes of the swarm by role and state",
                                      labels=["role", "state"])
            for (role, state), n in sorted(f.nodes.items()):
                nodes.add_metric([role, state], n)
            yield nodes
        if f.secrets is not None:
            tasks = GaugeMetricFamily(f"{NAMESPACE}_tasks", "Tasks of the swarm by state", labels=["state"])
            for state, n in sorted(f.tasks.items()):
                tasks.add_metric([state], n)
            yield tasks
            yield GaugeMetricFamily(f"{NAMESPACE}_secrets", "Secrets stored in the swarm", value=f.secrets)


class Metrics:
    """One daemon's metrics. ``figures`` is read at each scrape (on the HTTP server's thread)."""

    def __init__(self, figures: Callable[[], Figures] = lambda: NO_FIGURES) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        r.register(_Gauges(figures))
        self.proposals = Counter(f"{NAMESPACE}_raft_proposals",
                                 "Commands proposed to raft by this manager (each attempt: a failover is "
                                 "ridden out by proposing again)", registry=r)
        self.proposal_failures = Counter(f"{NAMESPACE}_raft_proposal_failures",
                                         "Proposals that failed, by error kind", ["kind"], registry=r)
        self.proposal_seconds = Histogram(f"{NAMESPACE}_raft_proposal_duration_seconds",
                                          "From proposal to its result on this manager", buckets=LATENCY_BUCKETS,
                                          registry=r)
        self.fsync_seconds = Histogram(f"{NAMESPACE}_raft_fsync_duration_seconds",
                                       "One group commit of the raft journal (write and fdatasync)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.snapshot_seconds = Histogram(f"{NAMESPACE}_raft_snapshot_duration_seconds",
                                          "One raft snapshot, from its start to its file in place",
                                          buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0), registry=r)
        self.grpc_calls = Counter(f"{NAMESPACE}_grpc_server_handled", "gRPC calls finished, by method and code",
                                  ["method", "code"], registry=r)
        self.grpc_seconds = Histogram(f"{NAMESPACE}_grpc_server_handling_seconds",
                                      "Time to answer a unary gRPC call, by method", ["method"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.delivery_seconds = Histogram(f"{NAMESPACE}_dispatcher_delivery_seconds",
                                          "From a task's assignment sent to a node to the node's first report on it",
                                          buckets=LATENCY_BUCKETS, registry=r)

    def observe_proposal(self, seconds: float, failure: str | None) -> None:
        self.proposals.inc()
        self.proposal_seconds.observe(seconds)
        if failure is not None:
            self.proposal_failures.labels(failure).inc()

    def observe_delivery(self, seconds: float) -> None:
        self.delivery_seconds.observe(seconds)

    def raft_observer(self) -> RaftObserver:
        return RaftObserver(fsync=self.fsync_seconds.observe, snapshot=self.snapshot_seconds.observe)


class MetricsServer:
    """Plain HTTP at HOST:PORT serving ``/metrics`` (like dockerd's ``--metrics-addr``)."""

    def __init__(self, metrics: Metrics, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(int(port), host.strip("[]"), registry=metrics.registry)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- gRPC -----------------------------------------------------------------------------------------

def _code(context: grpc.aio.ServicerContext, outcome: str) -> str:
    """The status the call ended with: the one it set or aborted with, else what its end says."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some gRPC releases hand back the number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return outcome


class GrpcMetrics(HandlerInterceptor):
    """Counts every call by method and final status code, and times unary calls (a stream's
    length says how long its client stayed, not how fast it was served)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap(self, handler: Any, method: str) -> Any:
        return wrap_handler(handler, self._measure(method))

    def _measure(self, method: str) -> Around:
        calls, seconds = self.metrics.grpc_calls, self.metrics.grpc_seconds.labels(method)

        @contextlib.asynccontextmanager
        async def measure(context: grpc.aio.ServicerContext, unary: bool) -> AsyncIterator[None]:
            started = time.monotonic()
            outcome = "UNKNOWN"
            try:
                yield
                outcome = "OK"
            except (asyncio.CancelledError, GeneratorExit):  # the client went away
                outcome = "CANCELLED"
                raise
            finally:
                calls.labels(method, _code(context, outcome)).inc()
                if unary:
                    seconds.observe(time.monotonic() - started)

        return measure
