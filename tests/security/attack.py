"""An attacker's tools: forged certificates, raw TLS connections, gRPC channels with a chosen identity."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import pickle
import re
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import nacl.exceptions
import nacl.secret
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from swarmsecrets.api.v1 import ca_pb2_grpc
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
class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def raft_journal_commands(data_dir: Path) -> list[dict[str, Any]]:
    """The commands a manager's raft journal holds on disk, as anyone who reads the file sees them:
    magic, then records (u32 length, u32 crc, u64 index, u64 term, type byte + pickle)."""
    raw = (data_dir / "raft" / "raft.journal").read_bytes()
    assert raw[:8] == b"SWRJ\x00\x00\x00\x01", "not a raft journal"
    out, at = [], 8
    while at + 24 <= len(raw):
        length, _crc, _index, _term = struct.unpack_from("!IIQQ", raw, at)
        entry = raw[at + 24:at + 24 + length]
        at += 24 + length
        if entry[:1] == b"\x00":  # a regular command (the others are raft's own)
            cmd = _PlainUnpickler(io.BytesIO(entry[1:])).load()
            if isinstance(cmd, dict):
                out.append(cmd)
    return out


def join_channel(addr: str, token: str) -> grpc.Channel:
    """A channel to a manager's TLS port as a joiner opens it: the swarm's root (fetched unverified, then
    checked against the token's digest) and a bootstrap client certificate."""
    parsed = tokens.parse_token(token)
    host, port = addr.rsplit(":", 1)
    root = certs.fetch_unverified_root(host, int(port), parsed.ca_digest)
    key, cert = certs.bootstrap_client_cert(parsed.ca_digest)
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "swarm-manager")])


def identity_channel(addr: str, root_pem: bytes, key_pem: bytes, cert_pem: bytes) -> grpc.Channel:
    """A channel to a manager's TLS port with a certificate the attacker holds (and its key)."""
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=key_pem, certificate_chain=cert_pem)
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "swarm-manager")])


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


def presented_certificate(port: int, host: str = "127.0.0.1") -> bytes | None:
    """The certificate (DER) a TLS port presents to a client that shows none, or None if the port is
    closed or no handshake happens."""
    try:
        s = tls_connect(port, None, host)
    except (ssl.SSLError, OSError):
        return None
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def _blobs(data: bytes) -> list[bytes]:
    """A file's bytes, and every value in it a thief would decode: PEM blocks and base64 strings
    (JSON values included)."""
    out = [data]
    out += re.findall(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", data, re.S)
    for token in re.findall(rb"[A-Za-z0-9+/=]{40,}", data):
        try:
            out.append(base64.b64decode(token + b"=" * (-len(token) % 4), validate=True))
        except (binascii.Error, ValueError):
            pass
    return out


def _private_keys(blob: bytes) -> list[PrivateKeyTypes]:
    found: list[PrivateKeyTypes] = []
    for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            found.append(load(blob, None))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
    return found


def loot_disk(data_dir: Path, keks: tuple[bytes, ...] = ()) -> tuple[list[PrivateKeyTypes], list[bytes]]:
    """What a thief holding ``data_dir`` (and the keys ``keks``, if any) recovers: every private key
    that loads from any file, in clear or opened by a key found on the same disk (any 32-byte file or
    value) or given in ``keks``, and every payload such a key opens (the wrapped data key among them)."""
    blobs = [b for f in sorted(data_dir.rglob("*")) if f.is_file() for b in _blobs(f.read_bytes())]
    candidates = set(keks) | {b for b in blobs if len(b) == nacl.secret.SecretBox.KEY_SIZE}
    opened: list[bytes] = []
    for kek in candidates:
        box = nacl.secret.SecretBox(kek)
        for b in blobs:
            if len(b) > box.NONCE_SIZE + box.MACBYTES:
                try:
                    opened.append(box.decrypt(b))
                except nacl.exceptions.CryptoError:
                    pass
    private = [k for b in blobs + opened for k in _private_keys(b)]
    return private, opened


def public_der(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# An address of this host that no node uses: on loopback the whole of 127/8 is local, so a socket
# bound here reaches the managers from a source address of its own.
FLOOD_SOURCE = "127.0.0.9"


def _client_hello() -> bytes:
    """The first flight of a TLS client: what a slow handshake sends before it stalls."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class RaftFlood:
    """Unauthenticated connections to raft ports, from ``source``, kept up until ``stop``.

    Per target it holds ``half_open`` connections that send nothing, ``garbage`` that send random
    bytes, ``slow_tls`` that send a ClientHello and stall, and ``no_cert`` that complete a TLS
    handshake without a client certificate; whatever the target closes is opened again, at most
    ``rate`` new connections per second per target.
    """

    KINDS = ("half_open", "garbage", "slow_tls", "no_cert")

    def __init__(self, targets: list[tuple[str, int]], source: str = FLOOD_SOURCE, *, half_open: int = 150,
                 garbage: int = 50, slow_tls: int = 50, no_cert: int = 20,
                 rates: dict[str, float] | None = None) -> None:
        self.targets = targets
        self.source = source
        self.quota = {"half_open": half_open, "garbage": garbage, "slow_tls": slow_tls, "no_cert": no_cert}
        self.rates = {"half_open": 2000.0, "garbage": 100.0, "slow_tls": 300.0, "no_cert": 50.0, **(rates or {})}
        self.opened = 0
        self.closed_by_target = 0
        self.peak_open = 0
        self._hello = _client_hello()
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raft-flood", daemon=True)

    def start(self) -> RaftFlood:
        self._thread.start()
        return self

    def __enter__(self) -> RaftFlood:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _open(self, sel: selectors.BaseSelector, target: tuple[str, int], kind: str) -> bool:
        s: Any = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((self.source, 0))
            s.setblocking(False)
            if kind == "no_cert":
                s = self._ctx.wrap_socket(s, do_handshake_on_connect=False)
            s.connect_ex(target)
        except OSError:
            s.close()
            return False
        self.opened += 1
        sel.register(s, selectors.EVENT_WRITE, (target, kind, "connecting"))
        return True

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        count = {(t, k): 0 for t in self.targets for k in self.KINDS}
        budget = dict.fromkeys(count, 0.0)
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for (t, kind), n in count.items():
                    rate = self.rates[kind]
                    budget[(t, kind)] = min(rate, budget[(t, kind)] + (now - last) * rate)
                    while n < self.quota[kind] and budget[(t, kind)] >= 1:
                        budget[(t, kind)] -= 1
                        n += self._open(sel, t, kind)
                    count[(t, kind)] = n
                last = now
                self.peak_open = max(self.peak_open, len(sel.get_map()))
                for key, _ in sel.select(0.01):
                    target, kind, phase = key.data
                    if not self._step(sel, key.fileobj, target, kind, phase):
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
                        count[(target, kind)] -= 1
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _step(self, sel: selectors.BaseSelector, sock: Any, target: tuple[str, int], kind: str,
              phase: str) -> bool:
        """Advance one connection; False once it is closed (by the target, or refused)."""
        if phase == "connecting":
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return False
            with contextlib.suppress(OSError):
                if kind == "garbage":
                    sock.send(os.urandom(512))
                elif kind == "slow_tls":
                    sock.send(self._hello)
            phase = "handshake" if kind == "no_cert" else "idle"
            sel.modify(sock, selectors.EVENT_READ, (target, kind, phase))
            if phase == "idle":
                return True
        if phase == "handshake":
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return True
            except ssl.SSLWantWriteError:
                sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, (target, kind, phase))
                return True
            except (ssl.SSLError, OSError):
                self.closed_by_target += 1
                return False
            sel.modify(sock, selectors.EVENT_READ, (target, kind, "idle"))
            return True
        try:
            if sock.recv(65536):
                return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except (ssl.SSLError, OSError):
            pass
        self.closed_by_target += 1
        return False


def _plain_values(obj: Any) -> Iterator[bytes]:
    """Every bytes value inside a decoded raft command or snapshot (dicts, lists, tuples)."""
    if isinstance(obj, bytes | bytearray):
        yield bytes(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _plain_values(k)
            yield from _plain_values(v)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from _plain_values(v)


def _raft_values(raw: bytes) -> Iterator[bytes]:
    """The bytes values of a raft journal's commands or of a snapshot's header and state, decoded as
    their formats define them (``raft/journal.py``, ``raft/snapshots.py``); nothing for other files."""
    if raw[:8] == b"SWRJ\x00\x00\x00\x01":
        at = 8
        while at + 24 <= len(raw):
            length = struct.unpack_from("!I", raw, at)[0]
            entry = raw[at + 24:at + 24 + length]
            at += 24 + length
            yield entry
            with contextlib.suppress(Exception):
                yield from _plain_values(_PlainUnpickler(io.BytesIO(entry[1:])).load())
    elif raw[:8] in (b"SWRS\x00\x00\x00\x01", b"SWRS\x00\x00\x00\x02"):  # one state pickle, or frames
        parts, at = [], 8
        while at + 8 <= len(raw) - 32:  # u64 length + pickle: the header, then the state or each frame
            (length,) = struct.unpack_from("!Q", raw, at)
            parts.append(raw[at + 8:at + 8 + length])
            at += 8 + length
        for part in parts:
            with contextlib.suppress(Exception):
                yield from _plain_values(_PlainUnpickler(io.BytesIO(part)).load())


def sealed_candidates(data_dir: Path) -> dict[Path, list[bytes]]:
    """Everything on a manager's disk that could be SecretBox ciphertext, by file: each value of
    every raft command and snapshot (decoded), every PEM or base64 value of any file, and each
    whole file."""
    box = nacl.secret.SecretBox
    out: dict[Path, list[bytes]] = {}
    for f in sorted(data_dir.rglob("*")):
        if f.is_file():
            raw = f.read_bytes()
            values = {*_raft_values(raw), *_blobs(raw)}
            out[f] = [v for v in values if len(v) >= box.NONCE_SIZE + box.MACBYTES]
    return out


def opened_under(key: bytes, candidates: dict[Path, list[bytes]]) -> list[tuple[Path, bytes]]:
    """The candidates (see ``sealed_candidates``) that ``key`` opens, with their files."""
    box = nacl.secret.SecretBox(key)
    found = []
    for f, values in candidates.items():
        for v in values:
            try:
                found.append((f, box.decrypt(v)))
            except nacl.exceptions.CryptoError:
                pass
    return found
