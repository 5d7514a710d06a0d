"""What a running manager tells ``swarmsecrets info`` and a metrics scrape about itself."""

from __future__ import annotations

from collections import Counter

from cryptography import x509

from swarmsecrets.ca import certs
from swarmsecrets.manager.dispatcher import heartbeat_of
from swarmsecrets.manager.manager import Manager
from swarmsecrets.manager.state.objects import DEFAULT_TASK_HISTORY
from swarmsecrets.metrics import Figures
from swarmsecrets.node.localapi import ClusterInfo, RaftMemberInfo

# A snapshot replaces the previous one: none is kept.
KEEP_OLD_SNAPSHOTS = 0


def cluster_info(m: Manager) -> ClusterInfo:
    st = m.raft.status()
    node = m.raft.node
    cluster = m.store.cluster
    by_raft_addr = {n.raft_addr: n for n in m.store.managers() if n.raft_addr}
    leader = by_raft_addr.get(st.leader) if st.leader is not None else None
    members = []
    for addr in sorted(st.members):
        rec = by_raft_addr.get(addr)
        members.append(RaftMemberInfo(node_id=rec.id if rec is not None else "", raft_addr=addr,
                                      addr=rec.addr if rec is not None else "", leader=addr == st.leader,
                                      reachable=addr in st.reachable))
    return ClusterInfo(
        task_history_limit=cluster.task_history_limit if cluster is not None else DEFAULT_TASK_HISTORY,
        snapshot_interval=node.tuning.snapshot_entries,
        keep_old_snapshots=KEEP_OLD_SNAPSHOTS,
        raft_heartbeat=node.timing.heartbeat,
        raft_election_min=node.timing.election_min,
        raft_election_max=node.timing.election_max,
        dispatcher_heartbeat=heartbeat_of(cluster, m.heartbeat_period),
        cert_expiry=int(certs.node_validity(cluster.node_cert_expiry if cluster is not None else 0).total_seconds()),
        autolock=cluster.autolock if cluster is not None else False,
        root_rotation_in_progress=cluster is not None and cluster.root_rotation is not None,
        raft_term=st.term,
        raft_leader=leader.id if leader is not None else "",
        commit_index=st.commit_index,
        applied_index=st.last_applied,
        snapshot_index=st.snapshot_index,
        raft_members=tuple(members),
    )


def figures(m: Manager | None, cert: x509.Certificate | None) -> Figures:
    expiry = cert.not_valid_after_utc.timestamp() if cert is not None else None
    if m is None:
        return Figures(cert_not_after=expiry)
    nodes = Counter((n.role, n.status) for n in m.store.nodes())
    tasks = Counter(t.state for t in m.store.tasks())
    return Figures(cert_not_after=expiry, raft=m.raft.status(), nodes=dict(nodes), tasks=dict(tasks),
                   secrets=len(m.store.secrets()))
