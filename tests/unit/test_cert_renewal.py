"""Certificate renewal at unit level: the schedule (50-80 % of the life, backdating not counted),
the backoff, the renewer's retries and "renew now", the replicated lifetime and certificate
records, the TLS material every port reads, and the lifetime's flag."""

from __future__ import annotations

import asyncio
import datetime
import random
import socket
import ssl
from typing import Any

import grpc
import pytest
from cryptography import x509

from swarmsecrets import errors, validation
from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.ca import certs
from swarmsecrets.ca.material import RaftContexts, TLSMaterial
from swarmsecrets.crypto import keys
from swarmsecrets.manager import state
from swarmsecrets.manager.controlapi.cluster import ClusterAPI
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import Store
from swarmsecrets.node import renewal
from swarmsecrets.raft import Peer

TS = 1_700_000_000_000_000_000
CA = certs.create_root_ca()


def issue(validity: datetime.timedelta) -> tuple[bytes, bytes]:
    key, csr = certs.generate_key_and_csr()
    return certs.issue_node_cert(CA, csr, node_id="n" * 25, role="worker", cluster_id="c" * 25,
                                 validity=validity), key


def cert_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


# --- lifetime and schedule -------------------------------------------------------------------------

def test_a_certificate_lives_exactly_its_lifetime_from_issue() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = cert_of(issue(datetime.timedelta(seconds=10))[0])
    assert renewal.lifetime(cert) == datetime.timedelta(seconds=10)
    assert before <= certs.issued_at(cert) <= before + datetime.timedelta(seconds=2)
    # notBefore is backdated for lagging clocks; that hour is not part of the life.
    assert certs.issued_at(cert) - cert.not_valid_before_utc == certs.BACKDATE


@pytest.mark.parametrize("fraction", [renewal.RENEW_FROM, 0.65, renewal.RENEW_TO])
def test_renewal_falls_between_half_and_four_fifths_of_the_life(fraction: float) -> None:
    cert = cert_of(issue(datetime.timedelta(days=90))[0])
    issued = certs.issued_at(cert)
    delay = renewal.renewal_delay(cert, issued, fraction)
    assert delay == pytest.approx(datetime.timedelta(days=90).total_seconds() * fraction)


def test_the_renewer_draws_its_point_in_the_window() -> None:
    rng = random.Random(7)
    cert = cert_of(issue(datetime.timedelta(seconds=1000))[0])
    issued = certs.issued_at(cert)
    delays = [renewal.renewal_delay(cert, issued, rng.uniform(renewal.RENEW_FROM, renewal.RENEW_TO))
              for _ in range(200)]
    assert 500 <= min(delays) and max(delays) <= 800 and max(delays) - min(delays) > 200


def test_a_certificate_past_its_point_or_expired_renews_at_once() -> None:
    cert = cert_of(issue(datetime.timedelta(seconds=100))[0])
    issued = certs.issued_at(cert)
    assert renewal.renewal_delay(cert, issued + datetime.timedelta(seconds=90), 0.5) == 0.0
    assert renewal.renewal_delay(cert, issued + datetime.timedelta(days=3), 0.8) == 0.0


def test_backoff_doubles_and_is_capped_by_the_life() -> None:
    day = datetime.timedelta(days=90)
    assert [renewal.backoff_delay(a, day) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert renewal.backoff_delay(40, day) == renewal.BACKOFF_MAX
    # A 10 s certificate never waits more than a second between attempts.
    assert renewal.backoff_delay(10, datetime.timedelta(seconds=10)) == 1.0
    assert renewal.backoff_delay(10, datetime.timedelta(seconds=1)) == renewal.BACKOFF_FIRST


def test_refusal_says_how_to_rejoin_only_when_the_swarm_refuses() -> None:
    cert = cert_of(issue(datetime.timedelta(seconds=100))[0])
    issued = certs.issued_at(cert)
    assert renewal.refusal_message(cert, errors.Unavailable("no leader"), issued) is None
    expired = renewal.refusal_message(cert, errors.Unavailable("handshake"), issued + datetime.timedelta(days=1))
    assert expired is not None and "certificate expired at" in expired
    removed = renewal.refusal_message(cert, errors.node_removed("n" * 25), issued)
    assert removed is not None and "removed" in removed
    for line in (expired, removed):
        assert "\n" not in line
        assert "'swarmsecrets swarm leave --force'" in line and "'swarmsecrets swarm join --token" in line


# --- the renewer -----------------------------------------------------------------------------------

def test_the_renewer_retries_until_renewed_and_renew_now_waits_for_it() -> None:
    async def main() -> None:
        pem = issue(datetime.timedelta(days=90))[0]
        attempts: list[int] = []
        refused: list[str] = []

        async def renew() -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise errors.Unavailable("no leader")

        r = renewal.Renewer(certificate=lambda: cert_of(pem), renew=renew, refused=refused.append,
                            rng=random.Random(1))
        r.start()
        await asyncio.wait_for(r.renew_now(), 10)
        assert len(attempts) == 3 and r.renewals == 1 and refused == []
        await asyncio.wait_for(r.renew_now(), 10)
        assert len(attempts) == 4 and r.renewals == 2
        await r.stop()

    asyncio.run(main())


def test_an_expired_node_says_so_once_and_clears_it_when_renewed() -> None:
    async def main() -> None:
        pem = issue(datetime.timedelta(seconds=1))[0]
        while datetime.datetime.now(datetime.UTC) < cert_of(pem).not_valid_after_utc:
            await asyncio.sleep(0.05)
        attempts: list[int] = []
        refused: list[str] = []

        async def renew() -> None:
            attempts.append(1)
            if len(attempts) < 4:
                raise errors.Unavailable("handshake failed")

        r = renewal.Renewer(certificate=lambda: cert_of(pem), renew=renew, refused=refused.append)
        r.start()  # expired: at once, without being asked
        while r.renewals == 0:
            await asyncio.sleep(0.05)
        assert len(refused) == 2 and "certificate expired at" in refused[0] and refused[1] == ""
        await r.stop()

    asyncio.run(main())


# --- the replicated lifetime and records -----------------------------------------------------------

def _store() -> Store:
    s = Store()
    s.apply(state.InitCluster(rid="init", ts=TS, cluster=state.Cluster(
        id="c" * 25, root_ca_cert="", join_tokens=state.JoinTokens(worker=b"w", manager=b"m")),
        node=state.Node(id="n" * 25, role="manager")), 1)
    return s


def test_set_cert_expiry_is_replicated_and_idempotent() -> None:
    s = _store()
    assert s.cluster is not None and s.cluster.node_cert_expiry == 0
    assert certs.node_validity(0) == certs.NODE_VALIDITY
    state.unwrap(s.apply(state.SetCertExpiry(rid="e1", ts=TS + 2, seconds=7200), 2))
    assert s.cluster.node_cert_expiry == 7200 and s.cluster.version == 2
    state.unwrap(s.apply(state.SetCertExpiry(rid="e1", ts=TS + 3, seconds=7200), 3))  # a retry
    assert s.cluster.version == 2
    with pytest.raises(errors.InvalidArgument):
        state.unwrap(s.apply(state.SetCertExpiry(rid="e2", ts=TS + 4, seconds=0), 4))
    assert state.SetCertExpiry.SINCE == state.RecordNodeCert.SINCE == 3


def test_a_certificate_record_keeps_the_latest_issued() -> None:
    s = _store()
    nid = "n" * 25

    def record(rid: str, index: int, issued: int, serial: str) -> None:
        state.unwrap(s.apply(state.RecordNodeCert(rid=rid, ts=TS + index, node_id=nid, serial=serial,
                                                  not_after=issued + 10, issued_at=issued, issuer="CN=swarm-ca",
                                                  issuer_key="ab"), index))

    record("r1", 2, 1000, "s1")
    record("r2", 3, 1005, "s2")
    node = s.node(nid)
    assert node is not None and (node.cert_serial, node.cert_not_after, node.cert_issuer) == ("s2", 1015, "CN=swarm-ca")
    record("r3", 4, 1000, "s1-late")  # a join's record that waited: older than what the node holds
    node = s.node(nid)
    assert node is not None and node.cert_serial == "s2"
    with pytest.raises(errors.NotFound):
        state.unwrap(s.apply(state.RecordNodeCert(rid="r4", ts=TS, node_id="x" * 25, serial="", not_after=0,
                                                  issued_at=0, issuer="", issuer_key=""), 5))


def test_a_snapshot_written_before_the_new_fields_loads_with_defaults() -> None:
    s = _store()
    snap = codec.LogStateMachine(s).snapshot()
    snap["state_version"] = 2
    # Fields at their default are left out of what the codec writes: the version-2 form, here.
    assert "node_cert_expiry" not in snap["state"]["cluster"]
    for node in snap["state"]["nodes"].values():
        assert not {"cert_not_after", "cert_issued_at", "cert_issuer", "cert_issuer_key"} & set(node)
    again = Store()
    codec.LogStateMachine(again).restore(snap)
    assert again.cluster is not None and again.cluster.node_cert_expiry == 0
    node = again.node("n" * 25)
    assert node is not None and (node.cert_not_after, node.cert_issuer, node.cert_issuer_key) == (0, "", "")


# --- swarm update --cert-expiry ---------------------------------------------------------------------

def test_durations_read_and_print_like_go() -> None:
    assert validation.parse_duration("2160h0m0s") == 90 * 86400
    assert validation.parse_duration("90m") == 5400 and validation.parse_duration("1h30m") == 5400
    assert validation.parse_duration("1.5h") == 5400 and validation.parse_duration("10s") == 10
    for bad in ("", "ten", "1x", "h", "1h 2m"):
        with pytest.raises(ValueError, match="invalid duration"):
            validation.parse_duration(bad)
    assert validation.format_duration(3600) == "1h0m0s" and validation.format_duration(90) == "1m30s"
    assert validation.format_duration(5) == "5s"


def test_the_minimum_lifetime_is_dockers_hour_unless_a_test_lowers_it() -> None:
    async def update(api: ClusterAPI, seconds: int) -> Any:
        return await api.update_cluster(control_pb2.UpdateClusterRequest(node_cert_expiry_seconds=seconds), "local")

    class Unreached:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"a refused lifetime must not reach {name}")

    api = ClusterAPI(Unreached(), Unreached(), Unreached(), CA)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match=r"^minimum certificate expiry time is: 1h0m0s$"):
        asyncio.run(update(api, 3599))
    lowered = ClusterAPI(Unreached(), Unreached(), Unreached(), CA, min_cert_expiry=5)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match=r"^minimum certificate expiry time is: 5s$"):
        asyncio.run(update(lowered, 4))
    # No lifetime the root itself would not outlive (a huge one once overflowed the date arithmetic).
    with pytest.raises(errors.InvalidArgument, match=r"^maximum certificate expiry time is: 175200h0m0s$"):
        asyncio.run(update(api, 2**62))
    # The same call with an accepted lifetime goes on to the state (here: the stand-in refuses).
    with pytest.raises(AssertionError, match="must not reach"):
        asyncio.run(update(api, 3600))


def test_apply_refuses_a_lifetime_out_of_bounds() -> None:
    s = _store()
    for seconds in (0, -1, validation.MAX_CERT_EXPIRY + 1):
        with pytest.raises(errors.InvalidArgument):
            state.unwrap(s.apply(state.SetCertExpiry(rid=f"x{seconds}", ts=TS, seconds=seconds), 50))


# --- the TLS material --------------------------------------------------------------------------------

def test_material_replaces_together_and_tells_subscribers() -> None:
    cert1, key1 = issue(datetime.timedelta(hours=2))
    cert2, key2 = issue(datetime.timedelta(hours=2))
    m = TLSMaterial(cert1, key1, CA.cert_pem)
    seen: list[int] = []
    stop = m.subscribe(lambda snap: seen.append(snap.generation))
    with pytest.raises(ValueError):
        m.replace(cert_chain=cert2)
    m.replace(cert_chain=cert2, key=key2)
    assert m.current().cert_chain == cert2 and m.current().key == key2 and m.current().roots == CA.cert_pem
    m.replace(roots=CA.cert_pem + CA.cert_pem)
    stop()
    m.replace(cert_chain=cert1, key=key1)
    assert seen == [1, 2]
    assert m.current().certificate.serial_number == cert_of(cert1).serial_number


def test_raft_contexts_follow_the_material() -> None:
    cert1, key1 = issue(datetime.timedelta(hours=2))
    cert2, key2 = issue(datetime.timedelta(hours=2))
    m = TLSMaterial(cert1, key1, CA.cert_pem)
    tls = RaftContexts(m, lambda der: Peer(name="x", raft_addrs=frozenset()))
    server, client = tls.server_ctx, tls.client_ctx
    m.replace(cert_chain=cert2, key=key2)
    assert tls.server_ctx is not server and tls.client_ctx is not client
    server, client = tls.server_ctx, tls.client_ctx
    tls.close()
    m.replace(cert_chain=cert1, key=key1)
    assert tls.server_ctx is server and tls.client_ctx is client


def _served_serial(port: int) -> int:
    """The serial of the certificate a TLS port presents to a new connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    key, cert = certs.bootstrap_client_cert(certs.ca_digest(CA.cert_pem))
    with keys.memory_file(cert) as cert_path, keys.memory_file(key) as key_path:
        ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_grpc_server_presents_the_renewed_certificate_without_a_restart() -> None:
    cert1, key1 = issue(datetime.timedelta(hours=2))
    cert2, key2 = issue(datetime.timedelta(hours=2))
    m = TLSMaterial(cert1, key1, CA.cert_pem)

    async def main() -> tuple[int, int]:
        server = grpc.aio.server()
        bootstrap = certs.bootstrap_ca_cert(certs.ca_digest(CA.cert_pem))
        port = server.add_secure_port("127.0.0.1:0", m.grpc_server_credentials(lambda snap: bootstrap))
        await server.start()
        try:
            before = await asyncio.to_thread(_served_serial, port)
            m.replace(cert_chain=cert2, key=key2)
            after = await asyncio.to_thread(_served_serial, port)
        finally:
            await server.stop(None)
        return before, after

    before, after = asyncio.run(main())
    assert before == cert_of(cert1).serial_number
    assert after == cert_of(cert2).serial_number
