"""An attacker's tools: forged certificates, raw TLS connections, gRPC channels with a chosen identity."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc

from swarmsecrets.api.v1 import ca_pb2_grpc
from swarmsecrets.ca import certs


def tls_connect(port: int, cert: tuple[str, str] | None, host: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection that trusts anything and presents ``cert`` (cert path, key path) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection((host, port), timeout=5)
    return ctx.wrap_socket(raw)


def refused(port: int, cert: tuple[str, str] | None) -> bool:
    """True if the raft port closes the connection instead of talking raft to us."""
    try:
        s = tls_connect(port, cert)
    except (ssl.SSLError, OSError):
        return True
    try:
        s.settimeout(3)
        s.sendall(b"\x00" * 64)
        return s.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True
    finally:
        s.close()


def forge_cert(tmp: Path, name: str, ca: certs.RootCA, role: str, cluster_id: str,
               raft: str | None) -> tuple[str, str]:
    """A node certificate signed by ``ca`` (another swarm's, or a stolen one): (cert path, key path)."""
    key, csr = certs.generate_key_and_csr()
    cert = certs.issue_node_cert(ca, csr, node_id="x" * 25, role=role, cluster_id=cluster_id,
                                 raft_addr=raft)
    (tmp / f"{name}.crt").write_bytes(cert)
    (tmp / f"{name}.key").write_bytes(key)
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


def node_channel(addr: str, cert_dir: Path, server_name: str = "swarm-manager") -> grpc.Channel:
    """A gRPC channel to ``addr`` with a node's identity, read from its ``certificates`` dir."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(cert_dir / "swarm-root-ca.crt").read_bytes(),
        private_key=(cert_dir / "swarm-node.key").read_bytes(),
        certificate_chain=(cert_dir / "swarm-node.crt").read_bytes())
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", server_name)])


def bootstrap_channel(addr: str, root_pem: bytes, server_name: str = "swarm-manager") -> grpc.Channel:
    """A gRPC channel to a manager with the bootstrap identity anyone derives from the root's digest:
    what a joiner without a certificate (or an outsider) presents."""
    key, cert = certs.bootstrap_client_cert(certs.ca_digest(root_pem))
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", server_name)])


class _TokenTrap(ca_pb2_grpc.NodeCAServicer):
    def __init__(self, caught: list[str]) -> None:
        self.caught = caught

    def IssueNodeCertificate(self, request, context):  # type: ignore[no-untyped-def]
        self.caught.append(request.token)
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again later")


@contextlib.contextmanager
def fake_manager(cert_pem: bytes, key_pem: bytes, root_pem: bytes) -> Iterator[tuple[str, list[str]]]:
    """A NodeCA impostor on 127.0.0.1 presenting ``cert_pem`` (chained to ``root_pem``, as a manager
    does): yields its address and the join tokens that joiners dialling it have handed over."""
    caught: list[str] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ca_pb2_grpc.add_NodeCAServicer_to_server(_TokenTrap(caught), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem + root_pem)]))
    server.start()
    try:
        yield f"127.0.0.1:{port}", caught
    finally:
        server.stop(0).wait()
