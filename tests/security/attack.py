"""An attacker's tools: forged certificates, raw TLS connections, gRPC channels with a chosen identity."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import grpc

from swarmsecrets.ca import certs, tokens


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
                                 addrs=["127.0.0.1:1"], raft_addr=raft)
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


def joiner_channel(addr: str, root_pem: bytes, token: str) -> grpc.Channel:
    """A gRPC channel to a manager as a joiner has it: the bootstrap client certificate of the join
    token's CA digest, trusting ``root_pem`` (what a join does before it holds a certificate)."""
    key, cert = certs.bootstrap_client_cert(tokens.parse_token(token).ca_digest)
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "swarm-manager"),
                                                     ("grpc.max_send_message_length", 8 << 20)])


def write_identity(cert_dir: Path, root_pem: bytes, cert_pem: bytes, key_pem: bytes) -> Path:
    """Lay out an identity the way a node's ``certificates`` dir holds it, for ``node_channel``."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "swarm-root-ca.crt").write_bytes(root_pem)
    (cert_dir / "swarm-node.crt").write_bytes(cert_pem)
    (cert_dir / "swarm-node.key").write_bytes(key_pem)
    return cert_dir
