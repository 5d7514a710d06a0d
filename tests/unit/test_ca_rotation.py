"""Root CA rotation: the cross-signed intermediate, chain checks (ours and OpenSSL's), the
replicated rotation commands and the progress count."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from cryptography import x509

from swarmsecrets.ca import certs, rotation
from swarmsecrets.ca.material import issuer_key_id
from swarmsecrets.crypto.keys import memory_file
from swarmsecrets.manager import state
from swarmsecrets.manager.rootrotation import cluster_progress, rotation_done
from swarmsecrets.manager.state import codec
from swarmsecrets.manager.state.store import Store


def leaf(ca: certs.RootCA, intermediates: bytes = b"") -> tuple[bytes, bytes]:
    key, csr = certs.generate_key_and_csr()
    return certs.issue_node_cert(ca, csr, node_id="n1", role="manager", cluster_id="c") + intermediates, key


def handshake(server: tuple[bytes, bytes], server_roots: bytes, client: tuple[bytes, bytes],
              client_roots: bytes) -> str:
    """A mutual-TLS handshake over a socket pair with OpenSSL: "ok" or "refused"."""
    with memory_file(server[0]) as sc, memory_file(server[1]) as sk, \
            memory_file(client[0]) as cc, memory_file(client[1]) as ck:
        sctx = certs.server_context(sc, sk, server_roots)
        cctx = certs.client_context(cc, ck, client_roots)
    a, b = socket.socketpair()
    outcome: dict[str, str] = {}

    def serve() -> None:
        try:
            with sctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
            outcome["server"] = "ok"
        except (ssl.SSLError, OSError) as e:
            outcome["server"] = f"refused: {e}"

    t = threading.Thread(target=serve)
    t.start()
    try:
        with cctx.wrap_socket(b) as c:
            c.sendall(b"x")
            c.recv(1)
    except (ssl.SSLError, OSError) as e:
        outcome.setdefault("client", f"refused: {e}")
    t.join()
    return "ok" if outcome.get("server") == "ok" and "client" not in outcome else "refused"


@pytest.fixture(scope="module")
def roots() -> tuple[certs.RootCA, certs.RootCA, bytes]:
    old = certs.create_root_ca()
    new = rotation.create_rotation_root()
    return old, new, rotation.cross_sign(old, new.cert_pem)


def test_the_cross_signed_intermediate_carries_the_new_roots_subject_and_key(roots: tuple) -> None:
    old, new, cross = roots
    c = x509.load_pem_x509_certificate(cross)
    assert c.subject == new.cert.subject and c.issuer == old.cert.subject
    assert issuer_key_id(c) == issuer_key_id(new.cert)
    c.verify_directly_issued_by(old.cert)
    assert new.cert.subject != old.cert.subject  # a name of its own, so no verifier picks the wrong root


def test_chains_to_accepts_direct_and_cross_signed_paths_only(roots: tuple) -> None:
    old, new, cross = roots
    new_leaf = x509.load_pem_x509_certificate(leaf(new)[0])
    inter = [x509.load_pem_x509_certificate(cross)]
    assert rotation.chains_to(new_leaf, [], [new.cert])
    assert not rotation.chains_to(new_leaf, [], [old.cert])
    assert rotation.chains_to(new_leaf, inter, [old.cert])
    stranger = certs.create_root_ca()
    assert not rotation.chains_to(new_leaf, inter, [stranger.cert])


def test_old_and_new_certificates_trust_each_other_during_the_rotation(roots: tuple) -> None:
    old, new, cross = roots
    bundle = old.cert_pem + new.cert_pem
    new_id, old_id = leaf(new, cross), leaf(old)
    # A node that still trusts only the old root accepts a new certificate through the intermediate.
    assert handshake(new_id, bundle, old_id, old.cert_pem) == "ok"
    assert handshake(old_id, old.cert_pem, new_id, bundle) == "ok"
    # Without the intermediate it could not: the check can fail.
    assert handshake(leaf(new), bundle, old_id, old.cert_pem) == "refused"
    # Nodes that trust the bundle accept both.
    assert handshake(old_id, bundle, new_id, bundle) == "ok"


def test_after_the_rotation_old_certificates_are_refused(roots: tuple) -> None:
    old, new, cross = roots
    new_id = leaf(new, cross)
    assert handshake(new_id, new.cert_pem, leaf(old), old.cert_pem) == "refused"
    assert handshake(new_id, new.cert_pem, leaf(new, cross), new.cert_pem) == "ok"


def _cluster_store(root_pem: str) -> Store:
    store = Store()
    store.apply(state.InitCluster(rid="i", ts=1, cluster=state.Cluster(
        id="c", root_ca_cert=root_pem, join_tokens=state.JoinTokens(worker=b"w", manager=b"m")),
        node=state.Node(id="n1", role="manager", raft_addr="a:1")), 1)
    store.apply(state.AddNode(rid="a", ts=1, node=state.Node(id="w1", role="worker")), 2)
    return store


def test_rotation_commands_apply_once_and_round_trip(roots: tuple) -> None:
    old, new, cross = roots
    store = _cluster_store(old.cert_pem.decode())
    rot = state.RootRotation(ca_cert=new.cert_pem.decode(), ca_key=b"sealed", cross_signed=cross.decode())
    start = state.StartRootRotation(rid="s", ts=2, from_root=old.cert_pem.decode(), rotation=rot,
                                    join_tokens=state.JoinTokens(worker=b"w2", manager=b"m2"))
    assert codec.decode_command(codec.encode_command(start)) == start
    assert isinstance(store.apply(start, 3), state.Ok)
    c = store.cluster
    assert c is not None and c.trust_bundle() == (old.cert_pem + new.cert_pem).decode()
    assert c.join_tokens.worker == b"w2" and c.desired_root() == new.cert_pem.decode()
    again = state.StartRootRotation(rid="s2", ts=2, from_root=old.cert_pem.decode(), rotation=rot,
                                    join_tokens=state.JoinTokens(worker=b"w3", manager=b"m3"))
    assert isinstance(store.apply(again, 4), state.Err)  # one rotation at a time
    # Snapshots keep the rotation; a snapshot written before rotations existed still loads.
    tables, _ = codec.decode_snapshot(codec.encode_snapshot(store.tables(), 4))
    assert tables.cluster == store.cluster
    legacy = codec.encode_snapshot(store.tables(), 4)
    del legacy["state"]["cluster"]["root_rotation"]
    assert codec.decode_snapshot(legacy)[0].cluster.root_rotation is None  # type: ignore[union-attr]

    nodes = store.nodes()
    assert not rotation_done(c, nodes)
    key = issuer_key_id(new.cert)
    store.apply(state.RecordNodeCert(rid="r1", ts=3, node_id="n1", serial="1", issued_at=1, not_after=9, issuer="x",
                                     issuer_key=key), 5)
    store.apply(state.UpdateNode(rid="d", ts=3, id="w1", status="down"), 6)
    c = store.cluster
    assert c is not None and rotation_done(c, store.nodes())  # a down node does not hold it back
    p = cluster_progress(c, store.nodes())
    assert (p.certs_rotated, p.roots_rotated, p.total, p.done) == (1, 0, 1, False)  # down: not counted

    finish = state.FinishRootRotation(rid="f", ts=4, root=new.cert_pem.decode(), ca_key=b"sealed")
    assert codec.decode_command(codec.encode_command(finish)) == finish
    assert isinstance(store.apply(finish, 7), state.Ok) and isinstance(store.apply(
        state.FinishRootRotation(rid="f2", ts=4, root=new.cert_pem.decode(), ca_key=b"sealed"), 8), state.Err)
    c = store.cluster
    assert c is not None and c.trust_bundle() == new.cert_pem.decode() and c.root_rotation is None
    digest = rotation.bundle_digest(new.cert_pem)
    for i, n in enumerate(("n1", "w1")):
        report = state.SetTrustRoots(rid=f"t{i}", ts=5, node_id=n, trust_roots=digest)
        assert isinstance(store.apply(report, 9 + i), state.Ok)
    store.apply(state.RecordNodeCert(rid="r2", ts=3, node_id="w1", serial="2", issued_at=1, not_after=9, issuer="x",
                                     issuer_key=key), 11)
    assert cluster_progress(c, store.nodes()).done


def test_the_peer_check_follows_the_trusted_roots(roots: tuple) -> None:
    from swarmsecrets import errors
    from swarmsecrets.ca.authz import MANAGERS, PeerAuthorizer

    old, new, cross = roots
    trusted = [old.cert, new.cert]

    class Nodes:
        def node_role(self, node_id: str) -> str | None:
            return "manager"

        def is_removed_node(self, node_id: str) -> bool:
            return False

    authz = PeerAuthorizer(lambda: trusted, "c", Nodes())
    old_cert, new_cert = leaf(old)[0], leaf(new, cross)[0]
    assert authz.admit(old_cert, MANAGERS).node_id == authz.admit(new_cert, MANAGERS).node_id == "n1"
    trusted.remove(old.cert)  # the rotation finished
    assert authz.admit(new_cert, MANAGERS).node_id == "n1"
    with pytest.raises(errors.PermissionDenied):
        authz.admit(old_cert, MANAGERS)


def test_a_manager_that_pinned_the_new_root_takes_the_current_root_for_its_key(roots: tuple) -> None:
    old, new, cross = roots
    ca = rotation.SwarmCA(certs.RootCA(new.cert_pem, old.key_pem), lambda: None, sealer=None)  # type: ignore[arg-type]
    ca.follow(certs.create_root_ca().cert_pem)  # not the key's root: kept as it is
    assert ca.current.cert_pem == new.cert_pem
    ca.follow(old.cert_pem)
    assert ca.current.cert_pem == old.cert_pem and ca.signer().ca.key_pem == old.key_pem
