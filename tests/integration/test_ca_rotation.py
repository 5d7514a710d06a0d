"""Root CA rotation under load: `swarm ca --rotate` moves every node onto a new root while a writer
creates secrets and a task reads its secret; afterwards the old root's certificates are refused on
the gRPC port and on the raft port, and the same probes with a current certificate pass. A worker
that was down during the whole rotation says in one line how to come back, and comes back so."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from swarmsecrets import wire
from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc
from swarmsecrets.crypto.keys import memory_file
from tests.framework import Cluster, Node, wait_until


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(Path(tmp_path_factory.mktemp("carot")), managers=3, workers=2).started() as c:
        yield c


def identity(node: Node) -> tuple[bytes, bytes, bytes]:
    """(trusted roots, certificate chain, key) as the node holds them on disk now."""
    d = node.data_dir / "certificates"
    return ((d / "swarm-root-ca.crt").read_bytes(), (d / "swarm-node.crt").read_bytes(),
            (d / "swarm-node.key").read_bytes())


def grpc_probe(target: Node, ident: tuple[bytes, bytes, bytes]) -> str:
    """A Control call to ``target`` with this identity: the cluster id, or the error code."""
    roots, chain, key = ident
    creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    with grpc.secure_channel(target.addr, creds, options=wire.TLS_CHANNEL_OPTIONS) as ch:
        try:
            resp = control_pb2_grpc.ControlStub(ch).GetCluster(control_pb2.GetClusterRequest(), timeout=5)
        except grpc.RpcError as e:
            return str(e.code())
        return resp.cluster.id


def raft_probe(target: Node, ident: tuple[bytes, bytes, bytes]) -> str:
    """A TLS handshake with ``target``'s raft port: "accepted", or the alert the server sent."""
    roots, chain, key = ident
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=roots.decode())
    with memory_file(chain) as cert_path, memory_file(key) as key_path:
        ctx.load_cert_chain(cert_path, key_path)
    host, port = target.raft_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        try:
            # TLS 1.3: the server's verdict on our certificate comes after the handshake. A server
            # that accepted us reads what we send (not raft's hello) and hangs up; one that refused
            # us sends an alert instead.
            tls.sendall(b"not a raft hello\n" * 64)
            tls.recv(1)
        except ssl.SSLError as e:
            return e.reason or "refused"
    return "accepted"


def test_rotation_under_load_refuses_the_old_root_afterwards(fleet: Cluster) -> None:
    m1, m2, m3 = fleet.managers
    w1, w2 = fleet.workers
    w2.stop()  # down during the whole rotation
    old_root = m1.ok("swarm", "ca")
    tokens_before = {r: m1.ok("swarm", "join-token", "-q", r) for r in ("worker", "manager")}
    old_worker, old_manager = identity(w1), identity(m2)
    # The probes work: before the rotation the old identities are accepted on both ports.
    cluster_id = grpc_probe(m1, old_manager)
    assert len(cluster_id) == 25
    assert raft_probe(m1, old_manager) == "accepted"

    wait_until(lambda: "Down" in m1.ok("node", "inspect", "-f", "{{.Status.State}}", w2.node_id).title(), 30, 0.2,
               "w2 to be down")
    m1.ok("secret", "create", "db_pass", "-", input="database_password\n")
    out = fleet.root / "read.txt"
    program = f"import time; open('{out}', 'w').write(open('/run/secrets/password').read()); time.sleep(600)"
    m1.ok("service", "create", "--name", "app", "--user", "0", "--secret", "source=db_pass,target=password",
          "--", "python3", "-c", program)
    wait_until(lambda: out.exists() and out.read_text() == "database_password\n", 30, 0.2, "the task")

    failures: list[str] = []
    written = [0]
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            r = m3.cli("secret", "create", f"load{written[0]}", "-", input="x")
            if r.returncode != 0:
                failures.append(r.stderr)
            written[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        out_rotate = m2.ok("swarm", "ca", "--rotate", timeout=60)
    finally:
        stop.set()
        t.join()
    assert failures == [] and written[0] > 0
    lines = out_rotate.splitlines()
    assert lines[0].startswith("desired root digest: sha256:")
    # w2 is down: it does not count
    assert "  rotated TLS certificates:  4/4 nodes" in lines and "  rotated CA certificates:   4/4 nodes" in lines
    new_root = m1.ok("swarm", "ca")
    assert new_root != old_root and new_root.strip() in out_rotate
    for r, before in tokens_before.items():
        after = m1.ok("swarm", "join-token", "-q", r)
        assert after != before and after.split("-")[2] != before.split("-")[2]  # the CA digest changed

    # Old-root certificates are refused on the gRPC port and on the raft port of every manager;
    # the same probes with the identities the nodes hold now are accepted.
    for m in (m1, m2, m3):
        assert grpc_probe(m, old_manager) == str(grpc.StatusCode.UNAVAILABLE)
        assert grpc_probe(m, old_worker) == str(grpc.StatusCode.UNAVAILABLE)
        assert raft_probe(m, old_manager) != "accepted"
        assert grpc_probe(m, identity(m2)) == cluster_id
        assert raft_probe(m, identity(m2)) == "accepted"

    # The worker still serves its task and receives new secrets over its new identity.
    assert out.read_text() == "database_password\n"
    m1.ok("secret", "create", "db_pass_1", "-", input="new_password\n")
    m1.ok("service", "update", "--secret-rm", "db_pass", "--secret-add", "source=db_pass_1,target=password", "app")
    wait_until(lambda: out.read_text() == "new_password\n", 30, 0.2, "the task to read the secret sent after")

    # The worker that slept through it: one clear line, in its log and in `info`; then the way back.
    w2.start()
    wait_until(lambda: "root CA that the swarm no longer trusts" in w2.log_tail(), 30, 0.2, "w2's line")
    assert "swarmsecrets swarm leave --force" in w2.ok("info")
    w2.ok("swarm", "leave", "--force")
    m1.ok("node", "rm", "--force", w2.node_id)
    w2.ok("swarm", "join", "--token", m1.ok("swarm", "join-token", "-q", "worker").strip(), m1.addr)
    rejoined = w2.info().node_id
    wait_until(lambda: m1.ok("node", "inspect", "-f", "{{.Status.State}}", rejoined).strip() == "ready", 30, 0.2,
               "w2 back in the swarm")
