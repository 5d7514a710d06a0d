"""Forming, locking and leaving a swarm through the CLI, and who may call what."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmsecrets.api.v1 import ca_pb2, ca_pb2_grpc, control_pb2, control_pb2_grpc
from swarmsecrets.ca import certs, tokens
from tests.framework import Cluster, Node, wait_until


def test_init_and_join_print_dockers_text(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    out = m1.ok("swarm", "join-token", "worker")
    assert re.search(r"To add a worker to this swarm, run the following command:\n\n"
                     r"    swarmsecrets swarm join --token SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25} "
                     r"127\.0\.0\.1:\d+\n", out), out
    ls = m1.ok("node", "ls").splitlines()
    assert ls[0].split()[:4] == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY"]
    rows = ls[1:]
    assert len(rows) == 3
    assert sum("Leader" in r for r in rows) == 1
    assert sum("Reachable" in r for r in rows) == 2
    assert sum(" * " in r or r.split()[1] == "*" for r in rows) == 1
    # The framework's managers join with --availability drain (they keep to management).
    assert all("Ready" in r and "Drain" in r for r in rows)


def test_wrong_token_and_wrong_ca_are_refused(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    joiner = Node("badjoin", cluster.root)
    joiner.start()
    try:
        good = m1.ok("swarm", "join-token", "-q", "manager").strip()
        forged = good[:-25] + "0" * 25
        err = joiner.fails("swarm", "join", "--token", forged, "--advertise-addr", joiner.addr, m1.addr)
        assert "A valid join token is necessary to join this cluster" in err
        other_ca = certs.create_root_ca()
        wrong_digest = str(tokens.new_token(other_ca.cert_pem))
        err = joiner.fails("swarm", "join", "--token", wrong_digest, "--advertise-addr", joiner.addr, m1.addr)
        assert "remote CA does not match fingerprint" in err
        assert "This node is not part of a swarm" in joiner.fails("secret", "ls")
    finally:
        joiner.kill()
        joiner.cleanup()


def test_busy_ports_read_like_dockers(cluster: Cluster) -> None:
    """A port another process holds fails init and join with Go's text, as Docker prints it, and
    the node stays out of the swarm (the swarm records no node for the join)."""
    m1 = cluster.managers[0]
    node = Node("busyport", cluster.root)
    node.start()
    try:
        nodes_before = m1.control().ListNodes(control_pb2.ListNodesRequest(), timeout=10).nodes
        token = m1.ok("swarm", "join-token", "-q", "manager").strip()
        for held_port, addr in ((node.port, node.addr), (node.port + 1, node.raft_addr)):
            with socket.socket() as held:
                held.bind(("127.0.0.1", held_port))
                held.listen()
                in_use = f"Error response from daemon: listen tcp {addr}: bind: address already in use"
                assert node.fails("swarm", "init", "--advertise-addr", node.addr) == in_use
                assert node.fails("swarm", "join", "--token", token, "--advertise-addr", node.addr, m1.addr) == in_use
        assert node.info().local_node_state == "inactive"
        assert m1.control().ListNodes(control_pb2.ListNodesRequest(), timeout=10).nodes == nodes_before
    finally:
        node.kill()
        node.cleanup()


def test_rotated_worker_token_is_refused_at_once(cluster: Cluster) -> None:
    m1, m2, _ = cluster.managers
    old = m1.ok("swarm", "join-token", "-q", "worker").strip()
    out = m2.ok("swarm", "join-token", "--rotate", "worker")
    assert "Successfully rotated worker join token." in out
    new = m1.ok("swarm", "join-token", "-q", "worker").strip()
    assert new != old and new in out
    joiner = Node("rotjoin", cluster.root)
    joiner.start()
    try:
        err = joiner.fails("swarm", "join", "--token", old, m1.addr)
        assert "A valid join token is necessary to join this cluster" in err
    finally:
        joiner.kill()
        joiner.cleanup()
    assert "unknown role nobody" in m1.fails("swarm", "join-token", "nobody")


def _forged_manager_cert(tmp: Path, digest: str, cluster_id: str) -> tuple[bytes, bytes]:
    """A manager-looking certificate signed by the public bootstrap key, not the root CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    boot_key = certs._bootstrap_key(digest)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "f" * 25),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id)]))
            .issuer_name(certs._bootstrap_name(digest)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(certs._now() - certs.BACKDATE).not_valid_after(certs._now() + certs.BACKDATE)
            .sign(boot_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_bootstrap_certificates_grant_nothing(cluster: Cluster, tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    token = tokens.parse_token(m1.ok("swarm", "join-token", "-q", "worker").strip())
    root = (m1.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()
    cluster_id = certs.identity_from_pem((m1.data_dir / "certificates" / "swarm-node.crt").read_bytes()).cluster_id
    key, cert = _forged_manager_cert(tmp_path, token.ca_digest, cluster_id)
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(m1.addr, creds, options=[("grpc.ssl_target_name_override", "swarm-manager")]) as ch:
        for call in (lambda: control_pb2_grpc.ControlStub(ch).ListSecrets(control_pb2.ListSecretsRequest(), timeout=10),
                     lambda: ca_pb2_grpc.NodeCAStub(ch).GetManagerKeys(ca_pb2.GetManagerKeysRequest(), timeout=10)):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value.details()
        # What a bootstrap peer may do: fetch the CA.
        got = ca_pb2_grpc.NodeCAStub(ch).GetRootCACertificate(ca_pb2.GetRootCACertificateRequest(), timeout=10)
        assert got.certificate == root


def test_autolock_restart_needs_the_unlock_key(tmp_path: Path) -> None:
    n = Node("locked", tmp_path)
    n.start()
    try:
        out = n.ok("swarm", "init", "--autolock", "--advertise-addr", n.addr)
        key = re.search(r"SWMKEY-1-[A-Za-z0-9+/]{43}", out)
        assert key, out
        n.ok("secret", "create", "locked-secret", "-", input="v")
        assert n.ok("swarm", "unlock-key", "-q").strip() == key.group(0)
        n.stop()
        n.start()
        assert "Swarm is encrypted and needs to be unlocked" in n.fails("secret", "ls")
        bad = "SWMKEY-1-" + "A" * 43
        assert "invalid key provided" in n.fails("swarm", "unlock", input=bad + "\n")
        n.ok("swarm", "unlock", input=key.group(0) + "\n")
        wait_until(lambda: "locked-secret" in n.ok("secret", "ls"), 20, 0.2, "the unlocked manager")
        assert "swarm is not locked" in n.fails("swarm", "unlock", input=key.group(0) + "\n")
        rotated = n.ok("swarm", "unlock-key", "--rotate", "-q").strip()
        assert rotated != key.group(0) and rotated.startswith("SWMKEY-1-")
        n.stop()
        n.start()
        assert "invalid key provided" in n.fails("swarm", "unlock", input=key.group(0) + "\n")
        n.ok("swarm", "unlock", input=rotated + "\n")
        wait_until(lambda: "locked-secret" in n.ok("secret", "ls"), 20, 0.2, "the unlocked manager")
    finally:
        n.kill()
        n.cleanup()


def test_unlock_key_without_autolock(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    assert "cannot rotate because autolock is not turned on" in m1.fails("swarm", "unlock-key", "--rotate")
    assert "no unlock key is set" in m1.fails("swarm", "unlock-key")


def test_leave_shrinks_the_group_and_the_last_manager_needs_force(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start()
        m1, m2, m3 = c.managers
        m1.ok("secret", "create", "stays", "-", input="v")
        assert "Node left the swarm." in m3.ok("swarm", "leave")
        assert "This node is not part of a swarm" in m3.fails("secret", "ls")
        wait_until(lambda: len(m1.ok("node", "ls", "-q").split()) == 2, 15, 0.2, "the node to be gone")
        assert not (m3.data_dir / "raft").exists() or not any((m3.data_dir / "raft").iterdir())
        m2.ok("secret", "create", "after-leave", "-", input="v")
        m2.ok("swarm", "leave")
        m1.ok("secret", "create", "alone", "-", input="v")
        err = m1.fails("swarm", "leave")
        assert "Removing the last manager erases all current state of the swarm" in err
        m1.ok("swarm", "leave", "--force")
        assert "This node is not part of a swarm" in m1.fails("node", "ls")
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
