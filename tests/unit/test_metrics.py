"""The metrics registry: per instance, gauges read at scrape time, and the names the example
Grafana dashboard queries all exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from swarmsecrets.metrics import Figures, Metrics
from swarmsecrets.node.config import parse_args
from swarmsecrets.raft import RaftStatus

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"


def _figures() -> Figures:
    return Figures(cert_not_after=2e9,
                   raft=RaftStatus(leader="a", is_leader=True, term=4, commit_index=9, last_applied=8,
                                   members=["a", "b", "c"], reachable={"a", "b"}, snapshot_index=5),
                   nodes={("manager", "ready"): 3, ("worker", "down"): 1}, tasks={"running": 2}, secrets=7)


def test_each_daemon_has_its_own_registry_and_gauges_follow_the_node() -> None:
    figures = [_figures()]
    a, b = Metrics(lambda: figures[0]), Metrics()
    a.observe_proposal(0.01, None)
    a.observe_proposal(0.5, "NoLeader")
    a.raft_observer().fsync(0.002)
    ra, rb = a.registry, b.registry
    assert ra.get_sample_value("swarmsecrets_raft_proposals_total") == 2
    assert ra.get_sample_value("swarmsecrets_raft_proposal_failures_total", {"kind": "NoLeader"}) == 1
    assert ra.get_sample_value("swarmsecrets_raft_fsync_duration_seconds_count") == 1
    assert rb.get_sample_value("swarmsecrets_raft_proposals_total") == 0
    assert ra.get_sample_value("swarmsecrets_raft_term") == 4
    assert ra.get_sample_value("swarmsecrets_raft_reachable_members") == 2
    assert ra.get_sample_value("swarmsecrets_nodes", {"role": "worker", "state": "down"}) == 1
    assert ra.get_sample_value("swarmsecrets_tasks", {"state": "running"}) == 2
    assert ra.get_sample_value("swarmsecrets_secrets") == 7
    figures[0] = Figures(cert_not_after=3e9)  # demoted to a worker: no raft, no store
    assert ra.get_sample_value("swarmsecrets_raft_term") is None
    assert ra.get_sample_value("swarmsecrets_secrets") is None
    assert ra.get_sample_value("swarmsecrets_node_certificate_expiry_timestamp_seconds") == 3e9
    assert b"process_resident_memory_bytes" in generate_latest(rb)


def test_the_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    exported = {fam.name for fam in Metrics(_figures).registry.collect()}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count|total)$", "", m)
            for e in exprs for m in re.findall(r"\b(?:swarmsecrets|process)_[a-z_]+", e)}
    assert used and used <= exported, used - exported


def test_metrics_addr_is_off_by_default_and_must_be_host_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]).metrics_addr == ""
    assert parse_args(["--metrics-addr", "127.0.0.1:9323"]).metrics_addr == "127.0.0.1:9323"
    for bad in ("9323", "localhost:", ":9323", "127.0.0.1:99999"):
        with pytest.raises(SystemExit) as e:
            parse_args(["--metrics-addr", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f'invalid argument "{bad}" for --metrics-addr: expected HOST:PORT' in err
