"""An attacker's tools: forged certificates, raw TLS connections, gRPC channels with a chosen identity."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import grpc

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
