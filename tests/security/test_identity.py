"""Identity: a worker cannot pass for a manager, a demoted manager's certificate stops being one, and
a caller without a certificate of this swarm makes no manager touch raft."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from swarmsecrets import ids
from swarmsecrets.api.v1 import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    raft_pb2,
    raft_pb2_grpc,
    swarm_pb2,
)
from swarmsecrets.ca import certs
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import bootstrap_channel, fake_manager, node_channel

ROLE_NAMES = ("swarm-manager", "swarm-worker", "swarm-ca")


def cert_dir(n: Node) -> Path:
    return n.data_dir / "certificates"


def root_of(n: Node) -> bytes:
    return (cert_dir(n) / "swarm-root-ca.crt").read_bytes()


def dns_names(pem: bytes) -> list[str]:
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    return e.value.code()  # type: ignore[no-any-return]


@pytest.fixture
def node(cluster: Cluster) -> Iterator[Node]:
    """A fresh daemon, not in the swarm yet."""
    n = Node(f"n{ids.new_id()[:6]}", cluster.root)
    n.start()
    try:
        yield n
    finally:
        n.kill()
        n.cleanup()


def test_worker_advertising_a_manager_name_cannot_pose_as_a_manager(cluster: Cluster, node: Node,
                                                                     tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    root = root_of(m1)
    tokens = m1.control().GetCluster(control_pb2.GetClusterRequest(), timeout=20).cluster.join_tokens
    worker_token, manager_token = tokens.worker, tokens.manager

    # The hostile worker joins advertising the name clients check when they dial a manager.
    joined = node.swarm().Join(swarm_pb2.JoinRequest(remote_addr=m1.addr, join_token=worker_token,
                                                     advertise_addr="swarm-manager:4242"), timeout=30)
    assert joined.role == "worker"
    stolen = (cert_dir(node) / "swarm-node.crt").read_bytes(), (cert_dir(node) / "swarm-node.key").read_bytes()
    own_id = certs.identity_from_pem(stolen[0]).node_id
    assert dns_names(stolen[0]) == ["swarm-worker", own_id]
    # Nor does a joiner get another identity's name by advertising it as its host.
    for host in ("swarm-ca", m1.node_id, "SWARM-MANAGER"):
        key, csr = certs.generate_key_and_csr()
        with bootstrap_channel(m1.addr, root) as ch:
            got = ca_pb2_grpc.NodeCAStub(ch).IssueNodeCertificate(ca_pb2.IssueNodeCertificateRequest(
                csr=csr, token=worker_token, advertise_addr=f"{host}:4242", hostname="h",
                request_id=ids.new_request_id()), timeout=20)
        assert dns_names(got.certificate) == ["swarm-worker", got.node_id]

    # A joiner dialling the impostor (as after a DNS or routing hijack) refuses it before it says a word.
    node.swarm().Leave(swarm_pb2.LeaveRequest(), timeout=30)
    with fake_manager(*stolen, root) as (addr, caught):
        node.fails("swarm", "join", "--token", manager_token, addr)
        assert caught == []
    # The same trap with a real manager's certificate does catch the token: the probe can fail.
    m2 = cluster.managers[1]
    real = (cert_dir(m2) / "swarm-node.crt").read_bytes(), (cert_dir(m2) / "swarm-node.key").read_bytes()
    with fake_manager(*real, root) as (addr, caught):
        node.fails("swarm", "join", "--token", manager_token, addr)
        assert caught == [manager_token]


def test_unauthenticated_callers_make_no_raft_work(cluster: Cluster) -> None:
    """With quorum lost, anything that reaches a read barrier waits for a leader that does not come;
    a caller the certificate alone refuses is told so at once."""
    m1, others = cluster.managers[0], cluster.managers[1:]
    root = root_of(m1)
    key, csr = certs.generate_key_and_csr()
    for m in others:
        m.pause()
    try:
        with bootstrap_channel(m1.addr, root) as ch:
            nodeca, raft = ca_pb2_grpc.NodeCAStub(ch), raft_pb2_grpc.RaftMembershipStub(ch)
            assert code_of(lambda: nodeca.RenewNodeCertificate(
                ca_pb2.RenewNodeCertificateRequest(csr=csr), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(lambda: nodeca.GetManagerKeys(
                ca_pb2.GetManagerKeysRequest(), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(lambda: raft.Join(
                raft_pb2.RaftJoinRequest(raft_addr=m1.raft_addr), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            bogus = "SWMTKN-1-" + "0" * 50 + "-" + "0" * 25
            assert code_of(lambda: nodeca.IssueNodeCertificate(ca_pb2.IssueNodeCertificateRequest(
                csr=csr, token=bogus), timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT
        # The manager's own certificate passes the certificate check and then does wait on raft.
        with node_channel(m1.addr, cert_dir(m1)) as ch:
            assert code_of(lambda: ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(
                ca_pb2.GetManagerKeysRequest(), timeout=20)) in (grpc.StatusCode.UNAVAILABLE,
                                                                  grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        for m in others:
            m.resume()
    cluster.leader()


def test_demoted_managers_old_certificate_is_refused_everywhere(cluster: Cluster, tmp_path: Path) -> None:
    m1, m2, m3 = cluster.managers
    copied = tmp_path / "m3-certificates"
    shutil.copytree(cert_dir(m3), copied)
    with node_channel(m2.addr, copied) as ch:  # the copy is a manager's certificate while m3 is one
        assert ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(ca_pb2.GetManagerKeysRequest(), timeout=20).data_key

    m1.ok("node", "demote", m3.node_id)

    def m3_holds_a_worker_certificate() -> bool:
        return certs.identity_from_pem((cert_dir(m3) / "swarm-node.crt").read_bytes()).role == "worker"

    wait_until(m3_holds_a_worker_certificate, 40, 0.2, "m3's renewal into a worker certificate")
    for m in (m1, m2):
        with node_channel(m.addr, copied) as ch:
            assert code_of(lambda: ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(
                ca_pb2.GetManagerKeysRequest(), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(lambda: control_pb2_grpc.ControlStub(ch).ListSecrets(
                control_pb2.ListSecretsRequest(), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(lambda: raft_pb2_grpc.RaftMembershipStub(ch).Join(
                raft_pb2.RaftJoinRequest(raft_addr=m3.raft_addr), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(lambda: raft_pb2_grpc.RaftMembershipStub(ch).Leave(
                raft_pb2.RaftLeaveRequest(), timeout=20)) == grpc.StatusCode.PERMISSION_DENIED

    # Nor does the manager's key open a worker session; the node's own renewed certificate does.
    leader = cluster.leader()

    def first_session_message(certificates: Path) -> dispatcher_pb2.SessionMessage:
        with node_channel(leader.addr, certificates) as ch:
            stream = dispatcher_pb2_grpc.DispatcherStub(ch).Session(dispatcher_pb2.SessionRequest(), timeout=20)
            msg: dispatcher_pb2.SessionMessage = next(stream)
            stream.cancel()
            return msg

    assert code_of(lambda: first_session_message(copied)) == grpc.StatusCode.PERMISSION_DENIED
    assert first_session_message(cert_dir(m3)).node_id == m3.node_id
