"""The one peer check: certificate (issuer, cluster, OU) and the node's current record, with real certificates."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from cryptography import x509

from swarmsecrets import errors, wire
from swarmsecrets.ca import certs
from swarmsecrets.ca.authz import MANAGERS, MEMBERS, PeerAuthorizer, Role

CLUSTER = "c" * 25


@dataclass
class Nodes:
    """The swarm's node records as the authorizer reads them."""

    roles: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def node_role(self, node_id: str) -> str | None:
        return self.roles.get(node_id)

    def is_removed_node(self, node_id: str) -> bool:
        return node_id in self.removed


@pytest.fixture(scope="module")
def ca() -> certs.RootCA:
    return certs.create_root_ca()


def cert(ca: certs.RootCA, node_id: str, role: str, cluster_id: str = CLUSTER) -> bytes:
    _, csr = certs.generate_key_and_csr()
    return certs.issue_node_cert(ca, csr, node_id=node_id, role=role, cluster_id=cluster_id,
                                 raft_addr="127.0.0.1:2378" if role == "manager" else None)


def authz(ca: certs.RootCA, nodes: Nodes) -> PeerAuthorizer:
    return PeerAuthorizer(ca.cert, CLUSTER, nodes)


def denied(a: PeerAuthorizer, pem: bytes | None, roles: frozenset[Role]) -> errors.PermissionDenied:
    with pytest.raises(errors.PermissionDenied) as e:
        a.admit(pem, roles)
    return e.value


def test_manager_is_admitted_to_manager_calls(ca: certs.RootCA) -> None:
    peer = authz(ca, Nodes({"m1": "manager"})).admit(cert(ca, "m1", "manager"), MANAGERS)
    assert (peer.node_id, peer.role) == ("m1", Role.MANAGER)
    assert peer.identity.raft_addrs == ("127.0.0.1:2378",)


def test_no_certificate_or_another_swarms_is_nobody(ca: certs.RootCA) -> None:
    a = authz(ca, Nodes({"m1": "manager"}))
    assert "a certificate of this swarm is required" in denied(a, None, MEMBERS).message
    other = certs.create_root_ca()
    assert "a certificate of this swarm is required" in denied(a, cert(other, "m1", "manager"), MEMBERS).message
    _, boot = certs.bootstrap_client_cert(certs.ca_digest(ca.cert_pem))
    assert "a certificate of this swarm is required" in denied(a, boot, MEMBERS).message


def test_certificate_of_another_cluster_id_is_refused(ca: certs.RootCA) -> None:
    err = denied(authz(ca, Nodes({"m1": "manager"})), cert(ca, "m1", "manager", "z" * 25), MANAGERS)
    assert err.message == f"Permission denied: remote certificate not part of organization: {CLUSTER}"


def test_worker_certificate_is_refused_where_managers_are_required(ca: certs.RootCA) -> None:
    err = denied(authz(ca, Nodes({"w1": "worker"})), cert(ca, "w1", "worker"), MANAGERS)
    assert err.message == "Permission denied: remote certificate not part of OUs: [swarm-manager]"
    assert type(err) is errors.PermissionDenied


@pytest.mark.parametrize("nodes", [Nodes({}), Nodes({"w1": "worker"}, {"w1"})], ids=["missing", "removed"])
def test_removed_node_is_refused_as_node_removed(ca: certs.RootCA, nodes: Nodes) -> None:
    err = denied(authz(ca, nodes), cert(ca, "w1", "worker"), MEMBERS)
    assert isinstance(err, errors.NodeRemoved)
    assert err.message == "Permission denied: node w1 was removed from swarm"


def test_demoted_manager_with_its_old_certificate_may_only_renew(ca: certs.RootCA) -> None:
    a = authz(ca, Nodes({"m2": "worker"}))
    old = cert(ca, "m2", "manager")
    err = denied(a, old, MANAGERS)
    assert type(err) is errors.PermissionDenied and "m2 is a worker now" in err.message
    # No worker session with a manager's key either: only the renewal into its worker certificate.
    assert "good only to renew it" in denied(a, old, MEMBERS).message
    assert a.authorize(a.authenticate(old, MEMBERS), MEMBERS, renewal=True).role is Role.WORKER
    assert a.admit(cert(ca, "m2", "worker"), MEMBERS).role is Role.WORKER


def test_promoted_worker_is_a_member_with_its_new_role(ca: certs.RootCA) -> None:
    a = authz(ca, Nodes({"w3": "manager"}))
    assert a.admit(cert(ca, "w3", "worker"), MEMBERS).role is Role.MANAGER
    assert a.authorize(a.authenticate(cert(ca, "w3", "worker"), MEMBERS), MEMBERS, renewal=True).role is Role.MANAGER
    # Manager calls wait for the manager certificate.
    assert "not part of OUs" in denied(a, cert(ca, "w3", "worker"), MANAGERS).message


class NoState:
    def node_role(self, node_id: str) -> str | None:
        raise AssertionError("authentication read the state")

    def is_removed_node(self, node_id: str) -> bool:
        raise AssertionError("authentication read the state")


def test_authentication_reads_only_the_certificate(ca: certs.RootCA) -> None:
    a = PeerAuthorizer(ca.cert, CLUSTER, NoState())
    assert a.authenticate(cert(ca, "m1", "manager"), MANAGERS).node_id == "m1"
    _, boot = certs.bootstrap_client_cert(certs.ca_digest(ca.cert_pem))
    for pem in (None, boot, cert(ca, "w1", "worker")):
        with pytest.raises(errors.PermissionDenied):
            a.authenticate(pem, MANAGERS)


def test_manager_certificates_carry_the_name_clients_verify(ca: certs.RootCA) -> None:
    parsed = x509.load_pem_x509_certificate(cert(ca, "m1", "manager"))
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert wire.MANAGER_SERVER_NAME in names.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("role", ["manager", "worker"])
def test_certificates_carry_only_the_names_the_ca_assigns(ca: certs.RootCA, role: str) -> None:
    parsed = x509.load_pem_x509_certificate(cert(ca, "n1", role))
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    want = ["swarm-manager", "n1", "swarm-ca"] if role == "manager" else ["swarm-worker", "n1"]
    assert names.get_values_for_type(x509.DNSName) == want
    assert names.get_values_for_type(x509.IPAddress) == []
