"""The node CA on a real store with real certificates: issuing to a token holder, refusing a wrong
token, renewal with the role the store says (not the certificate's), and the manager keys for
current managers only."""

from __future__ import annotations

import grpc
import pytest

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import ca_pb2
from swarmsecrets.ca import certs, tokens
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.nodeca import NodeCAService
from tests.unit.managerkit import CLUSTER_ID, SELF_ID, SELF_RAFT, Swarm, aborted, ctx, run


def nodeca(swarm: Swarm) -> NodeCAService:
    return NodeCAService(store=swarm.store, proposer=swarm.proposer, ca=swarm.swarm_ca, authz=swarm.authz,
                         sealer=swarm.sealer, data_key=swarm.sealer, cluster_id=CLUSTER_ID)


def issue(token: str, *, advertise: str = "", raft: str = "", rid: str = "",
          availability: str = "") -> ca_pb2.IssueNodeCertificateRequest:
    _, csr = certs.generate_key_and_csr()
    return ca_pb2.IssueNodeCertificateRequest(csr=csr, token=token, advertise_addr=advertise, raft_addr=raft,
                                              hostname="box", request_id=rid, availability=availability)


def renew() -> ca_pb2.RenewNodeCertificateRequest:
    _, csr = certs.generate_key_and_csr()
    return ca_pb2.RenewNodeCertificateRequest(csr=csr)


def test_the_root_certificate_is_public() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await nodeca(swarm).GetRootCACertificate(ca_pb2.GetRootCACertificateRequest(), ctx())
        assert resp.certificate == swarm.ca.cert_pem

    run(test)


def test_a_worker_token_gets_a_worker_certificate_and_record() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await nodeca(swarm).IssueNodeCertificate(issue(swarm.worker_token), ctx(peer="ipv4:10.0.0.5:53012"))
        assert (resp.role, resp.cluster_id) == ("worker", CLUSTER_ID)
        ident = certs.verified_identity(resp.certificate, swarm.ca.cert)
        assert ident is not None and (ident.node_id, ident.role, ident.cluster_id) == (resp.node_id, "worker",
                                                                                        CLUSTER_ID)
        assert ident.raft_addrs == ()
        node = swarm.store.node(resp.node_id)
        # Without --advertise-addr a worker is known by the address it called from.
        assert node is not None and (node.role, node.addr, node.hostname) == ("worker", "10.0.0.5", "box")
        assert node.availability == "active"  # the default when the joiner names none

    run(test)


def test_a_joining_node_names_its_first_availability() -> None:
    swarm = Swarm()

    async def test() -> None:
        ca = nodeca(swarm)
        resp = await ca.IssueNodeCertificate(
            issue(swarm.manager_token, advertise="10.0.0.7:4242", raft="10.0.0.7:4243", availability="drain"), ctx())
        node = swarm.store.node(resp.node_id)
        assert node is not None and (node.role, node.availability) == ("manager", "drain")
        before = swarm.store.nodes()
        bad = await aborted(ca.IssueNodeCertificate(issue(swarm.worker_token, availability="busy"), ctx()))
        assert (bad.code, bad.details) == (
            grpc.StatusCode.INVALID_ARGUMENT, 'invalid availability "busy", only active, pause and drain are supported')
        assert swarm.store.nodes() == before

    run(test)


def test_a_worker_calling_over_ipv6_is_known_by_that_address() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await nodeca(swarm).IssueNodeCertificate(issue(swarm.worker_token), ctx(peer="ipv6:[::1]:53012"))
        node = swarm.store.node(resp.node_id)
        assert node is not None and node.addr == "::1"

    run(test)


def test_a_manager_token_binds_the_raft_address_into_the_certificate() -> None:
    swarm = Swarm()

    async def test() -> None:
        ca = nodeca(swarm)
        resp = await ca.IssueNodeCertificate(
            issue(swarm.manager_token, advertise="10.0.0.7:4242", raft="10.0.0.7:4243"), ctx())
        ident = certs.identity_from_pem(resp.certificate)
        assert (resp.role, ident.role, ident.raft_addrs) == ("manager", "manager", ("10.0.0.7:4243",))
        node = swarm.store.node(resp.node_id)
        assert node is not None and (node.addr, node.raft_addr) == ("10.0.0.7:4242", "10.0.0.7:4243")
        no_addr = await aborted(ca.IssueNodeCertificate(issue(swarm.manager_token), ctx()))
        assert no_addr.details == "--advertise-addr is required to join as a manager"

    run(test)


def test_a_retried_issuance_names_the_same_node() -> None:
    swarm = Swarm()

    async def test() -> None:
        ca = nodeca(swarm)
        request = issue(swarm.worker_token, rid="join-1")  # a retry sends the same request: same CSR
        first = await ca.IssueNodeCertificate(request, ctx())
        again = await ca.IssueNodeCertificate(request, ctx())
        assert again.node_id == first.node_id
        assert [n.id for n in swarm.store.nodes() if n.role == "worker"] == [first.node_id]

    run(test)


def test_a_wrong_or_malformed_token_is_refused_and_admits_nobody() -> None:
    swarm = Swarm()
    other_swarms = str(tokens.new_token(Swarm().ca.cert_pem))
    same_ca_unknown = str(tokens.new_token(swarm.ca.cert_pem))

    async def test() -> None:
        ca = nodeca(swarm)
        for token in (other_swarms, same_ca_unknown, "SWMTKN-1-garbage", ""):
            err = await aborted(ca.IssueNodeCertificate(issue(token), ctx()))
            assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_JOIN_TOKEN)
        assert [n.id for n in swarm.store.nodes()] == [SELF_ID]

    run(test)


def test_a_rotated_token_no_longer_admits() -> None:
    swarm = Swarm()
    fresh = str(tokens.new_token(swarm.ca.cert_pem))
    cluster = swarm.store.cluster
    assert cluster is not None
    swarm.proposer.apply(state.UpdateCluster(rid="rot", join_tokens=state.JoinTokens(
        worker=swarm.sealer.current().seal(fresh.encode()), manager=cluster.join_tokens.manager)))

    async def test() -> None:
        ca = nodeca(swarm)
        old = await aborted(ca.IssueNodeCertificate(issue(swarm.worker_token), ctx()))
        assert old.details == errors.INVALID_JOIN_TOKEN
        assert (await ca.IssueNodeCertificate(issue(fresh), ctx())).role == "worker"

    run(test)


def test_renewal_issues_the_role_the_store_says() -> None:
    swarm = Swarm()
    swarm.add_node("w1", addr="10.0.0.7:4242")
    swarm.add_node("m2", "manager", addr="10.0.0.8:4242", raft_addr="10.0.0.8:4243")

    async def test() -> None:
        ca = nodeca(swarm)
        # Promoted: a worker certificate renews into a manager one, with the raft address the swarm bound.
        swarm.proposer.apply(state.UpdateNode(id="w1", role="manager", raft_addr="10.0.0.7:4243"))
        promoted = await ca.RenewNodeCertificate(renew(), ctx(swarm.cert("w1", "worker")))
        ident = certs.identity_from_pem(promoted.certificate)
        assert (promoted.node_id, promoted.role, ident.role, ident.raft_addrs) == (
            "w1", "manager", "manager", ("10.0.0.7:4243",))
        # Demoted: a manager certificate renews into a worker one, without a raft address.
        swarm.proposer.apply(state.UpdateNode(id="m2", role="worker", raft_addr=""))
        demoted = await ca.RenewNodeCertificate(renew(), ctx(swarm.cert("m2", "manager", raft_addr="10.0.0.8:4243")))
        ident = certs.identity_from_pem(demoted.certificate)
        assert (demoted.role, ident.role, ident.raft_addrs) == ("worker", "worker", ())

    run(test)


def test_renewal_refuses_removed_nodes_and_strangers() -> None:
    swarm = Swarm()
    swarm.add_node("w1")
    swarm.proposer.apply(state.RemoveNode(node_id="w1"))

    async def test() -> None:
        ca = nodeca(swarm)
        removed = await aborted(ca.RenewNodeCertificate(renew(), ctx(swarm.cert("w1", "worker"))))
        assert removed.kind == errors.node_removed("w1").kind
        stranger = await aborted(ca.RenewNodeCertificate(renew(), ctx(swarm.cert("w1", "worker", ca=Swarm().ca))))
        assert stranger.code == grpc.StatusCode.PERMISSION_DENIED
        anonymous = await aborted(ca.RenewNodeCertificate(renew(), ctx()))
        assert anonymous.code == grpc.StatusCode.PERMISSION_DENIED

    run(test)


def test_manager_keys_go_to_current_managers_only() -> None:
    swarm = Swarm(autolock=True)
    unlock = swarm.unlock
    assert unlock is not None
    swarm.add_node("w1")
    swarm.add_node("m2", "manager", addr="10.0.0.8:4242", raft_addr="10.0.0.8:4243")

    async def test() -> None:
        ca = nodeca(swarm)
        got = await ca.GetManagerKeys(ca_pb2.GetManagerKeysRequest(), ctx(swarm.cert(SELF_ID, "manager")))
        assert got.data_key == swarm.sealer.key and got.ca_key == swarm.ca.key_pem
        assert keys.parse_unlock_key(got.unlock_key) == unlock and list(got.raft_members) == [SELF_RAFT]
        worker = await aborted(ca.GetManagerKeys(ca_pb2.GetManagerKeysRequest(), ctx(swarm.cert("w1", "worker"))))
        assert worker.code == grpc.StatusCode.PERMISSION_DENIED
        # Demoted, m2 still holds its manager certificate: the store's word decides.
        swarm.proposer.apply(state.UpdateNode(id="m2", role="worker", raft_addr=""))
        demoted = await aborted(ca.GetManagerKeys(
            ca_pb2.GetManagerKeysRequest(), ctx(swarm.cert("m2", "manager", raft_addr="10.0.0.8:4243"))))
        assert demoted.code == grpc.StatusCode.PERMISSION_DENIED and "is a worker now" in demoted.details

    run(test)


def test_callers_the_certificate_or_token_refuses_run_no_read_barrier() -> None:
    swarm = Swarm()
    swarm.add_node("w1")

    async def test() -> None:
        ca = nodeca(swarm)
        for call in (ca.RenewNodeCertificate(renew(), ctx()),
                     ca.RenewNodeCertificate(renew(), ctx(swarm.cert("w1", "worker", ca=Swarm().ca))),
                     ca.GetManagerKeys(ca_pb2.GetManagerKeysRequest(), ctx()),
                     ca.GetManagerKeys(ca_pb2.GetManagerKeysRequest(), ctx(swarm.cert("w1", "worker"))),
                     ca.IssueNodeCertificate(issue(str(tokens.new_token(swarm.ca.cert_pem))), ctx())):
            await aborted(call)
        assert swarm.proposer.barriers == 0
        # A caller the certificate admits is checked against its record after one barrier.
        await ca.RenewNodeCertificate(renew(), ctx(swarm.cert("w1", "worker")))
        assert swarm.proposer.barriers == 1

    run(test)


def test_a_bad_join_is_refused_before_any_node_record_is_written() -> None:
    swarm = Swarm()

    async def test() -> None:
        before = {n.id for n in swarm.store.nodes()}
        ca = nodeca(swarm)
        cases = [
            (ca_pb2.IssueNodeCertificateRequest(token=swarm.worker_token, csr=b"not a csr", hostname="box"),
             "invalid certificate request: not a PEM-encoded CSR"),
            (replace_fields(issue(swarm.worker_token), hostname="h" * 1_000_000),
             "must be at most 253 characters"),
            (replace_fields(issue(swarm.worker_token), hostname="evil\x1b[2J"), "invalid hostname"),
            (replace_fields(issue(swarm.worker_token), request_id="r" * 10_000), "invalid request id"),
        ]
        for request, reason in cases:
            err = await aborted(ca.IssueNodeCertificate(request, ctx()))
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and reason in err.details
        assert {n.id for n in swarm.store.nodes()} == before

    run(test)


def test_joins_stop_at_the_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    swarm = Swarm()

    async def test() -> None:
        ca = nodeca(swarm)
        monkeypatch.setattr(validation, "MAX_NODES", len(swarm.store.nodes()) + 1)
        await ca.IssueNodeCertificate(issue(swarm.worker_token), ctx())
        err = await aborted(ca.IssueNodeCertificate(issue(swarm.worker_token), ctx()))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details.startswith("the swarm has reached its limit of")
        assert len(swarm.store.nodes()) == validation.MAX_NODES

    run(test)


def replace_fields(request: ca_pb2.IssueNodeCertificateRequest, **fields: str) -> ca_pb2.IssueNodeCertificateRequest:
    out = ca_pb2.IssueNodeCertificateRequest()
    out.CopyFrom(request)
    for k, v in fields.items():
        setattr(out, k, v)
    return out
