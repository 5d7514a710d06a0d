"""What already held before the security review, kept holding: no plaintext on disk, TLS everywhere,
authorization from certificates, a private socket, restricted unpickling on the raft port."""

from __future__ import annotations

import base64
import os
import pickle
import secrets
import socket
import stat
from pathlib import Path

import grpc
import pytest

from swarmsecrets.api.v1 import control_pb2, control_pb2_grpc
from swarmsecrets.ca import certs
from tests.framework import Cluster, Node, wait_until
from tests.security.attack import forge_cert, node_channel, refused


def test_no_secret_marker_on_any_managers_disk_or_in_its_log(cluster: Cluster) -> None:
    markers = [secrets.token_hex(16).encode() for _ in range(3)]
    m1, m2, m3 = cluster.managers
    for i, marker in enumerate(markers):
        payload = b"prefix-" + marker + b"-suffix" + (b"\0" * (i * 70_000))
        cluster.managers[i].ok("secret", "create", f"marker{i}", "-", input=payload)
    # Force snapshots too: many writes so compaction runs on at least the defaults' thresholds.
    for n in cluster.managers:
        wait_until(lambda n=n: {f"marker{i}" for i in range(3)} <= set(
            n.ok("secret", "ls", "--format", "{{.Name}}").split()), 15, 0.2, "replication")
    needles = []
    for marker in markers:
        needles += [marker, base64.b64encode(marker), marker.hex().encode(), base64.b64encode(b"prefix-" + marker)]
    hits = []
    for n in cluster.managers:
        log = n.log_path.read_bytes()
        hits += [f"{n.log_path}: {needle[:12]!r}" for needle in needles if needle in log]
        for dirpath, _, files in os.walk(n.data_dir):
            for f in files:
                path = Path(dirpath) / f
                if path.is_socket():
                    continue
                data = path.read_bytes()
                hits += [f"{path}: {needle[:12]!r}" for needle in needles if needle in data]
    assert hits == []


def test_unix_socket_is_0600(cluster: Cluster) -> None:
    for n in cluster.managers:
        assert stat.S_IMODE(n.sock.stat().st_mode) == 0o600


def test_raft_port_refuses_outsiders(cluster: Cluster, tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    raft_port = m1.port + 1
    # Plain TCP: a raft frame in clear gets nothing back.
    with socket.create_connection(("127.0.0.1", raft_port), timeout=5) as s:
        s.settimeout(3)
        s.sendall(b"\x00\x00\x00\x10" + b"{" * 16)
        try:
            assert s.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            pass
    # TLS without a client certificate.
    assert refused(raft_port, None)
    # A certificate of another cluster's CA, claiming a real member's raft address.
    other = certs.create_root_ca()
    assert refused(raft_port, forge_cert(tmp_path, "other", other, "manager", "y" * 25, m1.raft_addr))


def test_worker_certificate_is_refused_by_raft_and_control(cluster: Cluster, tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    worker = Node("w1", cluster.root)
    worker.start()
    try:
        token = m1.ok("swarm", "join-token", "-q", "worker").strip()
        assert "This node joined a swarm as a worker." in worker.ok("swarm", "join", "--token", token, m1.addr)
        cert_dir = worker.data_dir / "certificates"
        wcert = (str(cert_dir / "swarm-node.crt"), str(cert_dir / "swarm-node.key"))
        assert refused(m1.port + 1, wcert)
        with node_channel(m1.addr, cert_dir) as ch:
            with pytest.raises(grpc.RpcError) as e:
                control_pb2_grpc.ControlStub(ch).ListSecrets(control_pb2.ListSecretsRequest(), timeout=10)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The worker's own CLI gets Docker's message.
        assert "This node is not a swarm manager." in worker.fails("secret", "ls")
    finally:
        worker.kill()
        worker.cleanup()


def test_pickle_gadget_on_raft_port_executes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    m1 = cluster.managers[0]
    flag = tmp_path / "pwned"

    class Gadget:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {flag}",))

    import zlib

    frame = zlib.compress(pickle.dumps(Gadget(), protocol=2))
    payload = len(frame).to_bytes(4, "big") + frame
    # The gadget would run synchronously while the port handles the frame, so once the port has closed
    # the connection (it refuses what it cannot read) its verdict is in: no sleep needed after that.
    with socket.create_connection(("127.0.0.1", m1.port + 1), timeout=10) as s:
        s.sendall(payload)
        s.settimeout(10)  # the bound for the port to refuse the frame; it takes milliseconds
        try:
            answer = s.recv(1 << 16)
            while answer:  # whatever the port says before closing is not a reply to a pickle
                answer = s.recv(1 << 16)
        except ConnectionResetError:
            pass
    assert not flag.exists()
    m1.ok("secret", "ls")  # and the manager still serves


def test_inactive_node_says_it_is_not_in_a_swarm(cluster: Cluster) -> None:
    lone = Node("lone", cluster.root)
    lone.start()
    try:
        assert "This node is not part of a swarm" in lone.fails("secret", "ls")
    finally:
        lone.kill()
        lone.cleanup()
