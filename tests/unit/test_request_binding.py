"""Request ids bound to their request: a remembered outcome answers only the same command kind, from
the same caller, with the same content; a replay is refused before it is proposed and never gets
another request's outcome, even when applied; records written before ids were bound answer no
bound request; a retry of the same request still gets its first outcome."""

from __future__ import annotations

import logging

import grpc
import pytest

from swarmsecrets import errors
from swarmsecrets.api.v1 import ca_pb2, control_pb2, objects_pb2
from swarmsecrets.ca import certs
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.binding import bound_request_id, control_request_id, join_request_id
from swarmsecrets.manager.datakey import DataKey
from swarmsecrets.manager.nodeca import NodeCAService
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import REQUEST_TTL_NS, Store
from tests.unit.managerkit import CLUSTER_ID, Swarm, aborted, control, ctx, run
from tests.unit.test_state_versions import LEGACY, read_journal, read_snapshot

TS = 1_700_000_000_000_000_000
KEY = DataKey(keys.new_key())


def _secret(rid: str, name: str, index: int) -> state.CreateSecret:
    return state.CreateSecret(rid=rid, ts=TS + index, id=f"id{index:023d}", name=name, data=b"ct", key_id="k")


def _bound(client: str, caller: str, content: bytes = b"c", kind: type[state.Command] = state.CreateSecret) -> str:
    return bound_request_id(KEY, kind, caller, client, content)


def test_a_bound_id_names_its_client_id_and_differs_by_kind_caller_and_content() -> None:
    rid = _bound("r1", "local")
    assert state.client_request_id(rid) == ("r1", True)
    assert state.client_request_id("r1") == ("r1", False)  # the leader's own ids, earlier releases' ids
    others = {_bound("r1", "manager:m2"), _bound("r1", "local", b"d"),
              _bound("r1", "local", kind=state.RemoveSecret)}
    assert rid not in others and len(others) == 3
    # Deterministic for every manager (they share the data key); keyed: another key, another binding.
    assert bound_request_id(DataKey(KEY.key), state.CreateSecret, "local", "r1", b"c") == rid
    assert bound_request_id(DataKey(keys.new_key()), state.CreateSecret, "local", "r1", b"c") != rid
    # An id as the log holds it is not a client's id.
    with pytest.raises(errors.InvalidArgument, match="invalid request id"):
        _bound(rid, "local")


def test_the_same_request_gets_its_first_outcome_and_a_replay_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    s = Store()
    rid = _bound("r1", "local")
    first = state.unwrap(s.apply(_secret(rid, "db", 1), 1))
    retry = _secret(rid, "db", 2)  # a retry builds the command afresh (new object id), same bound id
    s.check_request(retry)
    assert state.unwrap(s.apply(retry, 2)).id == first.id and len(s.secrets()) == 1

    replay = _secret(_bound("r1", "manager:m2"), "other", 3)
    with caplog.at_level(logging.WARNING), pytest.raises(errors.InvalidArgument, match="already used"):
        s.check_request(replay)
    assert "request id r1 was already used by another caller" in caplog.text
    # Proposed before the first one applied, it reaches apply: it runs as the new request it is.
    result = s.apply(replay, 3)
    assert isinstance(result, state.Ok) and result.value.name == "other" and result.value.id != first.id
    assert "applied as a new request" in caplog.text
    # And the first caller's retries still get their first outcome.
    s.check_request(retry)
    assert state.unwrap(s.apply(retry, 4)).id == first.id


def test_records_written_before_ids_were_bound_answer_no_bound_request() -> None:
    s = Store()
    machine = codec.LogStateMachine(s)
    machine.restore(read_snapshot(LEGACY / "raft.snapshot"))
    for index, entry in read_journal(LEGACY / "raft.journal"):
        if index > s.applied_index:
            machine.apply(entry, index)
    assert s.has_request("rid-s1")
    bound = _secret(_bound("rid-s1", "local"), "db_pass", 30)
    with pytest.raises(errors.InvalidArgument, match="request id rid-s1 was already used"):
        s.check_request(bound)
    result = s.apply(bound, 30)  # even if applied: never the recorded outcome
    assert isinstance(result, state.Err) and "already exists" in result.message
    # A bare retry, as a member of the earlier release proposes it, is answered as that release does.
    assert state.unwrap(s.apply(_secret("rid-s1", "db_pass", 31), 31)).id == "s" * 25


def test_a_restored_snapshot_keeps_refusing_replays() -> None:
    s = Store()
    s.apply(_secret(_bound("r1", "local"), "db", 1), 1)
    again = Store()
    codec.LogStateMachine(again).restore(codec.LogStateMachine(s).snapshot())
    with pytest.raises(errors.InvalidArgument):
        again.check_request(_secret(_bound("r1", "manager:m2"), "db", 2))
    again.check_request(_secret(_bound("r1", "local"), "db", 2))


def test_a_forgotten_request_id_may_be_used_again() -> None:
    s = Store()
    s.apply(_secret(_bound("r1", "local"), "db", 1), 1)
    s.apply(state.CreateSecret(rid="later", ts=TS + REQUEST_TTL_NS + 10, id="i" * 25, name="x", data=b"ct",
                               key_id="k"), 2)
    assert not s.has_request(_bound("r1", "local"))
    s.check_request(_secret(_bound("r1", "manager:m2"), "db", 3))


# --- the Control API: the caller from the transport ---------------------------------------------------

def _create(name: str, rid: str) -> control_pb2.CreateSecretRequest:
    return control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=b"v-" + name.encode()),
                                           request_id=rid)


def test_control_writes_are_bound_to_the_transports_caller_and_the_content() -> None:
    swarm = Swarm()
    api = control(swarm)
    m2_cert = swarm.cert("m2", "manager")

    async def test() -> None:
        first = await api.CreateSecret(_create("db", "r1"), ctx())
        proposed = len(swarm.proposer.proposed)
        for request, context in ((_create("db", "r1"), ctx(m2_cert)),  # another caller, same content
                                 (_create("web", "r1"), ctx(m2_cert)),  # another caller and content
                                 (_create("web", "r1"), ctx())):  # the same caller, other content
            err = await aborted(api.CreateSecret(request, context))
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "r1 was already used" in err.details
        assert len(swarm.proposer.proposed) == proposed and [x.name for x in swarm.store.secrets()] == ["db"]
        again = await api.CreateSecret(_create("db", "r1"), ctx())
        assert again.secret.id == first.secret.id and len(swarm.store.secrets()) == 1
        # Removing with another's removal id is refused too (the id names a remembered request).
        err = await aborted(api.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="db", request_id="r1"), ctx()))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and swarm.store.secrets()

    run(test)


def test_the_binding_never_carries_a_secrets_value() -> None:
    rid = control_request_id(KEY, state.CreateSecret, "local", _create("db", "r1"))
    assert b"v-db".hex() not in rid and "v-db" not in rid


# --- joins: the role of the token, the joiner's address, its CSR's key ----------------------------------

def _join(token: str, csr: bytes, rid: str, **fields: str) -> ca_pb2.IssueNodeCertificateRequest:
    return ca_pb2.IssueNodeCertificateRequest(csr=csr, token=token, hostname="box", request_id=rid, **fields)


def test_a_replayed_join_id_never_yields_the_joined_nodes_certificate() -> None:
    swarm = Swarm()
    ca = NodeCAService(store=swarm.store, proposer=swarm.proposer, ca=swarm.swarm_ca, authz=swarm.authz,
                       sealer=swarm.sealer, data_key=swarm.sealer, cluster_id=CLUSTER_ID)
    _, manager_csr = certs.generate_key_and_csr()
    _, other_csr = certs.generate_key_and_csr()
    manager_join = _join(swarm.manager_token, manager_csr, "join-m", advertise_addr="10.0.0.7:2377",
                         raft_addr="10.0.0.7:2378")

    async def test() -> None:
        joined = await ca.IssueNodeCertificate(manager_join, ctx(peer="ipv4:10.0.0.7:40000"))
        assert joined.role == "manager"
        nodes = {n.id for n in swarm.store.nodes()}
        replays = [(_join(swarm.worker_token, other_csr, "join-m"), "ipv4:10.0.0.66:1"),  # a worker-token holder
                   (_join(swarm.manager_token, other_csr, "join-m", advertise_addr="10.0.0.7:2377",
                          raft_addr="10.0.0.7:2378"), "ipv4:10.0.0.7:40001"),  # all the same but the key
                   (manager_join, "ipv4:10.0.0.66:1")]  # the very request, from elsewhere
        for request, peer in replays:
            err = await aborted(ca.IssueNodeCertificate(request, ctx(peer=peer)))
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "join-m was already used" in err.details
        assert {n.id for n in swarm.store.nodes()} == nodes
        # The joiner's own retry (same request, same address) names the same node.
        again = await ca.IssueNodeCertificate(manager_join, ctx(peer="ipv4:10.0.0.7:40002"))
        assert again.node_id == joined.node_id == certs.identity_from_pem(again.certificate).node_id

    run(test)


def test_a_join_with_an_unreadable_csr_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid certificate signing request"):
        join_request_id(KEY, "worker", "10.0.0.5", _join("t", b"not a csr", "j"))
