"""Replayed request ids: the store remembers each request's first outcome by its id, and the ids are
readable in the raft log. A caller who replays another's id must never get that request's outcome:
not a manager's certificate for a worker-token holder, not another operator's write."""

from __future__ import annotations

import grpc
import pytest

from swarmsecrets.api.v1 import ca_pb2, ca_pb2_grpc, control_pb2, objects_pb2
from swarmsecrets.client import LocalError, Status
from swarmsecrets.client.local import Service
from swarmsecrets.ca import certs
from tests.framework import Cluster, wait_until
from tests.security.attack import identity_channel, join_channel, raft_journal_commands


def _client_id(logged: str) -> str:
    """The id the client sent, from the id the log holds (which may carry a binding after a '/')."""
    return logged.split("/", 1)[0]


def _escalate(addr: str, root: bytes, key: bytes, issued: ca_pb2.IssueNodeCertificateResponse) -> str:
    """What a certificate for a manager's node id leads to: a renewal into a manager certificate,
    then the manager keys."""
    with identity_channel(addr, root, key, issued.certificate) as ch:
        key2, csr2 = certs.generate_key_and_csr()
        renewed = ca_pb2_grpc.NodeCAStub(ch).RenewNodeCertificate(ca_pb2.RenewNodeCertificateRequest(csr=csr2),
                                                                   timeout=10)
    with identity_channel(addr, root, key2, renewed.certificate) as ch:
        keys = ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(ca_pb2.GetManagerKeysRequest(), timeout=10)
    return f"renewed as a {renewed.role}, then read the data key ({len(keys.data_key)} bytes)"


def test_a_worker_token_and_a_managers_join_id_from_the_journal_get_no_certificate(cluster: Cluster) -> None:
    m1, m2 = cluster.managers[0], cluster.managers[1]
    # What the attacker reads on a manager's disk: the join of m2, a manager, with its request id.
    joins = [cmd for cmd in raft_journal_commands(m1.data_dir)
             if cmd.get("op") == "add_node" and cmd["node"].get("id") == m2.node_id]
    assert len(joins) == 1 and joins[0]["node"]["role"] == "manager"
    stolen = _client_id(joins[0]["rid"])
    worker_token = m1.ok("swarm", "join-token", "-q", "worker").strip()
    nodes_before = m1.ok("node", "ls", "-q").split()
    root = (m1.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()

    key, csr = certs.generate_key_and_csr()
    with join_channel(m1.addr, worker_token) as ch:
        ca = ca_pb2_grpc.NodeCAStub(ch)
        replay = ca_pb2.IssueNodeCertificateRequest(csr=csr, token=worker_token, hostname="intruder",
                                                    request_id=stolen)
        try:
            issued = ca.IssueNodeCertificate(replay, timeout=15)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert e.details() == f"request id {stolen} was already used for another request; use a new request id"
        else:
            pytest.fail(f"the replay was answered with a {issued.role} certificate for node {issued.node_id} "
                        f"(m2 is {m2.node_id}); " + _escalate(m1.addr, root, key, issued))
        assert "request id " + stolen + " was already used by another caller" in m1.log_tail(20_000)
        assert m1.ok("node", "ls", "-q").split() == nodes_before  # nothing written

        # The same probe with an id of its own gets what a worker token entitles it to, and its retry
        # (same id, same request) the same node again.
        own = ca_pb2.IssueNodeCertificateRequest(csr=csr, token=worker_token, hostname="intruder",
                                                 request_id="intruder-own-request")
        first = ca.IssueNodeCertificate(own, timeout=15)
        again = ca.IssueNodeCertificate(own, timeout=15)
    assert first.role == "worker" and first.node_id not in nodes_before
    assert again.node_id == first.node_id and certs.identity_from_pem(again.certificate).node_id == first.node_id
    m1.ok("node", "rm", "--force", first.node_id)


def _create(control: Service, name: str, rid: str) -> control_pb2.CreateSecretResponse:
    request = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=b"value-" + name.encode()),
                                              request_id=rid)
    response: control_pb2.CreateSecretResponse = control.CreateSecret(request, timeout=15)
    return response


def test_another_callers_request_id_gets_no_other_outcome(cluster: Cluster) -> None:
    m1, m2 = cluster.managers[0], cluster.managers[1]
    rid = "replayed-control-request"
    first = _create(m1.control(), "replay_first", rid)
    # m2 has applied it (a read there waits for every acknowledged write).
    wait_until(lambda: "replay_first" in m2.ok("secret", "ls", "--format", "{{.Name}}").split(), 15, 0.1, "replication")

    # The same id with other content, on another manager: refused, nothing written.
    with pytest.raises(LocalError) as refused:
        answered = _create(m2.control(), "replay_second", rid)
        pytest.fail(f"m2's request was answered with m1's outcome: secret {answered.secret.spec.name}")
    assert refused.value.code is Status.INVALID_ARGUMENT, refused.value
    assert "already used for another request" in refused.value.message
    assert "request id " + rid + " was already used by another caller" in m2.log_tail(20_000)
    # The same caller with other content: refused as well.
    with pytest.raises(LocalError) as changed:
        _create(m1.control(), "replay_third", rid)
    assert changed.value.code is Status.INVALID_ARGUMENT
    names = m1.ok("secret", "ls", "--format", "{{.Name}}").split()
    assert "replay_first" in names and "replay_second" not in names and "replay_third" not in names

    # The retry the id is for (same request, from the operator, on either manager) gets its first outcome;
    # m2's own id works.
    assert _create(m1.control(), "replay_first", rid).secret.id == first.secret.id
    assert _create(m2.control(), "replay_first", rid).secret.id == first.secret.id
    assert _create(m2.control(), "replay_second", "m2-own-request").secret.spec.name == "replay_second"
    for name in ("replay_first", "replay_second"):
        m1.ok("secret", "rm", name)
