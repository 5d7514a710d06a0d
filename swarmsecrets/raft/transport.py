"""Mutual-TLS transport for pysyncobj (plugged in through ``transportClass``).

pysyncobj's TCPTransport speaks unauthenticated pickles over plain TCP: anyone who reaches the
raft port can execute code (a pickle is a program), join as a read-only node and read the log,
or run admin commands ('add', 'remove', 'transfer', ...). TlsTransport keeps TCPTransport's
bookkeeping (which side dials, how a connection is tied to a node) and replaces the connection
and the listener:

- TlsConnection: a non-blocking ``ssl`` socket on pysyncobj's poller. Frames are a 4-byte length
  and a protocol-4 pickle decoded by the restricted unpickler; a length over MAX_FRAME drops the
  peer before anything is buffered; WRITE interest is re-armed after every partial send (stock
  drops it, so the rest of a large message waits for the next one); the "no data for
  connectionTimeout" rule is kept but node.py sets it far beyond any quiet period: dead peers are
  found by TCP keepalive and TCP_USER_TIMEOUT instead.
- Admission: an incoming connection is nobody until its TLS handshake ends with a certificate the
  verifier accepts; until then it is held outside raft's own bookkeeping, within per-source and
  total bounds, and dropped ``handshake_timeout`` after it was accepted. Sources that host a
  configured member have slots of their own, so a flood from any other address cannot keep
  members from connecting (see ``Admission``).
- TlsTransport: the host's peer verifier (``RaftTLS.verify_peer``) is given each peer's
  certificate and says which raft addresses that peer may claim, or refuses it; the member
  address a peer claims (or that we dialled) must be one of them. Read-only nodes,
  utility/admin frames ('status', 'add', 'remove', 'set_version', 'transfer') and malformed
  messages are refused and the connection dropped.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj.node import Node
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from swarmsecrets.raft import wire
from swarmsecrets.raft.errors import PeerRefused

log = logging.getLogger(__name__)

READ, WRITE, ERROR = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, POLL_EVENT_TYPE.ERROR
SEND_CHUNK = 256 * 1024
RECV_CHUNK = 64 * 1024
# A peer that lets this much pile up unsent is dropped; it catches up after reconnecting.
MAX_BACKLOG = 64 * 1024 * 1024
# An authenticated incoming connection must name itself, an outgoing one must connect, in this time.
HANDSHAKE_TIMEOUT = 5.0
# Authenticated incoming connections that have not named their member address yet.
MAX_PENDING_INCOMING = 64
# Rate buckets kept for this many sources that host no member at most (beyond: they share the total).
MAX_TRACKED_SOURCES = 4096
# Refusals of unauthenticated connections are logged as one summary line per this many seconds.
REFUSAL_LOG_INTERVAL = 10.0

_TCP, _TLS, _READY = 1, 2, 3


Clock = Callable[[], float]


@dataclass(frozen=True)
class Admission:
    """Bounds on incoming connections that have not authenticated yet (TLS not finished, or no
    certificate the verifier accepts).

    Every such connection is dropped ``handshake_timeout`` s after it was accepted. A source
    (an IPv4 address, an IPv6 /64) that hosts no configured member may hold ``per_source`` of them
    and start ``source_rate`` per second, and all such sources together ``total`` and
    ``total_rate``; beyond that a new connection is closed at once, before any TLS work. A source
    that hosts configured members has ``per_source`` slots per member there, which no other source
    can take; when they are all held, its oldest connection gives way to the new one.

    What this guarantees: a flood from addresses that host no member never holds a slot a member
    needs, so members connect as if it were not there (it costs them only the CPU the flood takes).
    An attacker that shares a member's address cannot be told from that member before TLS: it can
    delay the member's handshake only by opening more than ``per_source`` connections per member
    on that host while the handshake runs, and never for longer than it keeps that up.
    """

    handshake_timeout: float = 1.0
    per_source: int = 8
    total: int = 64
    source_rate: float = 20.0
    total_rate: float = 100.0
    accept_batch: int = 64  # connections accepted per poll, so that a flood cannot hold up raft's timers


@dataclass(frozen=True)
class Peer:
    """What the host's verifier learned from a peer's certificate."""

    name: str                    # for logs
    raft_addrs: frozenset[str]   # the member addresses this peer may claim


# Given the DER certificate a peer presented (already chain-verified by the TLS context), return
# the Peer, or raise PeerRefused with the reason (e.g. not a manager of this cluster).
PeerVerifier = Callable[[bytes], Peer]


class TLSConfig(Protocol):
    @property
    def server_ctx(self) -> ssl.SSLContext: ...
    @property
    def client_ctx(self) -> ssl.SSLContext: ...
    @property
    def verify_peer(self) -> PeerVerifier: ...
    @property
    def admission(self) -> Admission: ...


def _source_of(host: str) -> str:
    """What admission counts as one source: an IPv4 address (IPv4-mapped IPv6 as IPv4), or an IPv6
    /64, which one holder gets whole. Anything else (a name) as it is."""
    host = host.strip("[]")
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _configure(sock: socket.socket, send_buffer: int, recv_buffer: int,
               keepalive: tuple[int, int, int] | None) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive is not None:
        idle, interval, count = keepalive
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        # Keepalive only probes idle links; this bounds how long sent data may stay unacknowledged.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, (idle + interval * count) * 1000)
    sock.setblocking(False)


class TlsConnection:
    """The connection interface TCPTransport expects, over TLS, with our framing."""

    # Read by TCPTransport (its Fernet 'password' mode, which we never enable).
    encryptor = None
    sendRandKey = None
    recvRandKey = None

    def __init__(self, poller: Any, ctx: ssl.SSLContext, *, server_side: bool, send_buffer: int,
                 recv_buffer: int, keepalive: tuple[int, int, int] | None, idle_timeout: float,
                 verify_peer: PeerVerifier, sock: socket.socket | None = None,
                 clock: Clock = time.monotonic, ctx_source: Callable[[], ssl.SSLContext] | None = None) -> None:
        """``ctx_source``: for an outgoing connection, where each (re)connection takes its context,
        so that a certificate the host renewed is used from the next connection on."""
        self._poller = poller
        self._ctx_source = ctx_source
        self._verify_peer = verify_peer
        self._clock = clock
        self._ctx = ctx
        self._server_side = server_side
        self._send_buffer = send_buffer
        self._recv_buffer = recv_buffer
        self._keepalive = keepalive
        self._idle_timeout = idle_timeout
        self._on_connected: Callable[[], None] | None = None
        self._on_message: Callable[[Any], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock: Any = None
        self._fd: int | None = None
        self._state: int = CONNECTION_STATE.DISCONNECTED
        self._phase = 0
        self._mask = 0
        self._handshake_wants_write = False
        self._read_wants_write = False
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._chunk = bytearray(RECV_CHUNK)
        self._last_read = self._clock()
        self.created = self._clock()
        self.peer: Peer | None = None
        self.source = ""  # the address an incoming connection came from
        self.refusal = ""  # why this connection refused its peer (TLS, framing), for the transport
        if sock is not None:
            _configure(sock, send_buffer, recv_buffer, keepalive)
            self._sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self._fd = self._sock.fileno()
            self._state = CONNECTION_STATE.CONNECTING
            self._phase = _TLS

    # --- the TcpConnection interface -------------------------------------------------------

    def setOnConnectedCallback(self, cb: Callable[[], None] | None) -> None:
        self._on_connected = cb

    def setOnMessageReceivedCallback(self, cb: Callable[[Any], None] | None) -> None:
        self._on_message = cb

    def setOnDisconnectedCallback(self, cb: Callable[[], None] | None) -> None:
        self._on_disconnected = cb

    @property
    def state(self) -> int:
        return self._state

    def fileno(self) -> int | None:
        return self._fd

    @property
    def backlog(self) -> int:
        return len(self._wbuf)

    def connect(self, host: str | None, port: int) -> bool:
        if host is None or self._server_side:
            return False
        self.disconnect()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        _configure(sock, self._send_buffer, self._recv_buffer, self._keepalive)
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            return False
        self._sock = sock
        self._fd = sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._phase = _TCP
        self.refusal = ""
        self.created = self._last_read = self._clock()
        self._update_interest()
        return True

    def start(self) -> None:
        """Begin the server-side handshake (after the transport has set its callbacks)."""
        self._update_interest()
        self._handshake()

    def send(self, message: Any) -> None:
        if self._state == CONNECTION_STATE.DISCONNECTED:
            return
        if self._state == CONNECTION_STATE.CONNECTED and self._idle_expired():
            return
        try:
            head, body = wire.encode_frame(message)
        except ValueError:
            log.exception("raft: not sending an oversized message")
            return
        self._wbuf += head
        self._wbuf += body
        if len(self._wbuf) > MAX_BACKLOG:
            log.warning("raft: dropping a connection with %d bytes unsent", len(self._wbuf))
            self.disconnect()
            return
        if self._state == CONNECTION_STATE.CONNECTED:
            self._flush()
        self._rearm_after_send()

    def disconnect(self) -> None:
        notify = self._state != CONNECTION_STATE.DISCONNECTED and self._on_disconnected is not None
        if self._fd is not None:
            self._poller.unsubscribe(self._fd)
            self._fd = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._state = CONNECTION_STATE.DISCONNECTED
        self._phase = 0
        self._mask = 0
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        if notify and self._on_disconnected is not None:
            self._on_disconnected()

    # --- poller events ------------------------------------------------------------------

    def _rearm_after_send(self) -> None:
        """Keep WRITE interest while bytes remain (stock drops it after a partial send, so the rest
        of the message waits until the next message is sent)."""
        self._update_interest()

    def _update_interest(self) -> None:
        if self._fd is None:
            return
        mask = ERROR
        if self._phase == _TCP:
            mask |= WRITE
        elif self._phase == _TLS:
            mask |= READ | (WRITE if self._handshake_wants_write else 0)
        else:
            mask |= READ | (WRITE if self._wbuf or self._read_wants_write else 0)
        if mask != self._mask:
            self._mask = mask
            self._poller.subscribe(self._fd, self._on_event, mask)

    def _idle_expired(self) -> bool:
        if self._clock() - self._last_read > self._idle_timeout:
            self.disconnect()
            return True
        return False

    def _on_event(self, fd: int, events: int) -> None:
        if fd != self._fd or self._state == CONNECTION_STATE.DISCONNECTED:
            return
        try:
            self._process(events)
        except Exception:  # a broken connection must not wedge the raft loop: drop it
            log.exception("raft: dropping %s after an unexpected error", self._who())
            self.disconnect()

    def _process(self, events: int) -> None:
        if self._phase == _TCP:
            if events & ERROR or self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            raw, self._sock = self._sock, None
            if self._ctx_source is not None:
                self._ctx = self._ctx_source()
            self._sock = self._ctx.wrap_socket(raw, server_side=False, do_handshake_on_connect=False)
            self._phase = _TLS
        if self._phase == _TLS:
            self._handshake()
            if self._phase == _TLS and events & ERROR:
                self.disconnect()
            return
        if self._idle_expired():
            return
        if events & WRITE:
            self._flush()
            if self._read_wants_write:
                self._read_wants_write = False
                self._read()
        if events & (READ | ERROR):
            self._read()
        if events & ERROR:
            self.disconnect()
        self._update_interest()

    def _handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_wants_write = False
            self._update_interest()
            return
        except ssl.SSLWantWriteError:
            self._handshake_wants_write = True
            self._update_interest()
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            self.disconnect()  # the peer went away mid-handshake: not a refusal
            return
        except (ssl.SSLError, OSError) as e:
            self._refuse(f"TLS handshake failed: {e or type(e).__name__}")
            return
        try:
            der = self._sock.getpeercert(binary_form=True)
            if not der:
                raise PeerRefused("no certificate")
            self.peer = self._verify_peer(der)
        except PeerRefused as e:
            self._refuse(str(e))
            return
        except Exception as e:  # an unparseable certificate, or a verifier that broke on it
            self._refuse(f"unusable peer certificate: {e}")
            return
        self._phase = _READY
        self._state = CONNECTION_STATE.CONNECTED
        self._last_read = self._clock()
        if self._on_connected is not None:
            self._on_connected()
        if self._state != CONNECTION_STATE.CONNECTED:
            return
        self._flush()
        self._read()  # application data may have arrived with the last handshake flight
        self._update_interest()

    def _flush(self) -> None:
        while self._wbuf and self._state == CONNECTION_STATE.CONNECTED:
            try:
                # TLS needs a retried write to start with the same bytes: we only ever append.
                with memoryview(self._wbuf) as view, view[:SEND_CHUNK] as part:
                    n = self._sock.send(part)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except (ssl.SSLError, OSError):
                self.disconnect()
                return
            del self._wbuf[:n]

    def _read(self) -> None:
        while self._state == CONNECTION_STATE.CONNECTED:
            try:
                n = self._sock.recv_into(self._chunk)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except ssl.SSLWantWriteError:
                self._read_wants_write = True
                return
            except (ssl.SSLError, OSError):
                self.disconnect()
                return
            if n == 0:
                self.disconnect()
                return
            self._last_read = self._clock()
            with memoryview(self._chunk) as view:
                self._rbuf += view[:n]
            if not self._dispatch():
                return

    def _dispatch(self) -> bool:
        buf = self._rbuf
        while len(buf) >= wire.FRAME_HEADER.size:
            (length,) = wire.FRAME_HEADER.unpack_from(buf)
            if length > wire.MAX_FRAME:
                self._refuse(f"frame of {length} bytes exceeds {wire.MAX_FRAME}")
                return False
            end = wire.FRAME_HEADER.size + length
            if len(buf) < end:
                return True
            try:
                with memoryview(buf) as view, view[wire.FRAME_HEADER.size:end] as body:
                    message = wire.loads(body)
            except Exception as e:
                self._refuse(f"undecodable frame ({e})")
                return False
            del buf[:end]
            if self._on_message is not None:
                self._on_message(message)
            if self._state != CONNECTION_STATE.CONNECTED:
                return False
        return True

    def _refuse(self, reason: str) -> None:
        self.refusal = reason
        self.disconnect()

    def _who(self) -> str:
        return f"peer {self.peer.name}" if self.peer else "unidentified peer"


class TlsServer:
    """The listening socket, bound to exactly the node's raft address (never 0.0.0.0)."""

    def __init__(self, poller: Any, host: str, port: int, *, send_buffer: int, recv_buffer: int,
                 on_connection: Callable[[socket.socket], None], batch: int = 64) -> None:
        self._poller = poller
        self._batch = batch
        self._host = host
        self._port = port
        self._send_buffer = send_buffer
        self._recv_buffer = recv_buffer
        self._on_connection = on_connection
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Set before listen() so accepted sockets get a window scale to match.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_accept, READ | ERROR)

    def unbind(self) -> None:
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_accept(self, fd: int, events: int) -> None:
        # At most a batch per poll: the rest waits in the backlog while raft's timers run.
        for _ in range(self._batch):
            if self._sock is None:
                return
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("raft: accept failed: %s", e)
                return
            self._on_connection(sock)


class TlsTransport(TCPTransport):  # type: ignore[misc]  # pysyncobj ships no type information
    """TCPTransport with TLS connections and member authentication (see module docstring)."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._tls: TLSConfig = syncObj.raft_tls
        self._admission: Admission = self._tls.admission
        self._clock: Clock = syncObj.clock
        self.rejected = 0
        # Unauthenticated incoming connections by source address, oldest first, and all of them in
        # the order they were accepted (for the deadline; closed ones are skipped there).
        self._pending: dict[str, deque[TlsConnection]] = {}
        self._pending_order: deque[TlsConnection] = deque()
        self._pending_others: set[TlsConnection] = set()  # those of sources that host no member
        self._buckets: dict[str, tuple[float, float]] = {}  # source: (tokens, when counted)
        self._total_bucket = (self._admission.total_rate, self._clock())
        self._pruned_at = self._clock()
        self._refused_unauthenticated = 0
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL
        self._last_refusal = ""
        # Set by the owner: adds its fields to each AppendEntries on its way out.
        self.stamp_append_entries: Callable[[dict[str, Any]], None] | None = None
        super().__init__(syncObj, selfNode, otherNodes)

    def send(self, node: Any, message: Any) -> bool:
        if self.stamp_append_entries is not None and message["type"] == "append_entries":
            self.stamp_append_entries(message)
        sent: bool = super().send(node, message)
        return sent

    # --- construction hooks of TCPTransport ------------------------------------------------

    def _new_connection(self, ctx: ssl.SSLContext, *, server_side: bool,
                        sock: socket.socket | None = None) -> TlsConnection:
        conf = self._syncObj.conf
        return TlsConnection(self._syncObj._poller, ctx, server_side=server_side, sock=sock,
                             send_buffer=conf.sendBufferSize, recv_buffer=conf.recvBufferSize,
                             keepalive=conf.tcp_keepalive, idle_timeout=conf.connectionTimeout,
                             verify_peer=self._tls.verify_peer, clock=self._clock,
                             ctx_source=None if server_side else (lambda: self._tls.client_ctx))

    def _createServer(self) -> None:
        """Listen with TLS on exactly our own address (stock binds 0.0.0.0)."""
        host, port = self._selfNode.address.rsplit(":", 1)
        conf = self._syncObj.conf
        self._server = TlsServer(self._syncObj._poller, host.strip("[]"), int(port),
                                 send_buffer=conf.sendBufferSize, recv_buffer=conf.recvBufferSize,
                                 on_connection=self._accept, batch=self._admission.accept_batch)

    def addNode(self, node: Any) -> None:
        """Register a member; the side that dials gets a TLS connection instead of a TcpConnection."""
        super().addNode(node)
        if node in self._connections:
            conn = self._new_connection(self._tls.client_ctx, server_side=False)
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    # --- admission ----------------------------------------------------------------------

    def _members_at(self, source: str) -> int:
        """How many configured members (other than this node) have raft addresses at ``source``."""
        return sum(1 for node in self._nodes if _source_of(node.address.rsplit(":", 1)[0]) == source)

    def _take_token(self, source: str, now: float) -> bool:
        """Rate of new handshakes from sources that host no member: ``source_rate`` per source and
        ``total_rate`` for all of them (a handshake costs the raft thread real CPU)."""
        adm = self._admission
        tokens, last = self._buckets.get(source, (float(adm.per_source), now))
        tokens = min(float(adm.per_source), tokens + (now - last) * adm.source_rate)
        total, total_last = self._total_bucket
        total = min(adm.total_rate, total + (now - total_last) * adm.total_rate)
        ok = tokens >= 1 and total >= 1
        if ok:
            tokens -= 1
            total -= 1
        self._total_bucket = (total, now)
        refill = adm.per_source / adm.source_rate
        if (len(self._buckets) >= MAX_TRACKED_SOURCES and source not in self._buckets
                and now - self._pruned_at >= refill):
            # Forget the sources whose buckets have filled up again: no entry means a full bucket.
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
            self._pruned_at = now
        if len(self._buckets) < MAX_TRACKED_SOURCES or source in self._buckets:
            self._buckets[source] = (tokens, now)
        return ok

    def _accept(self, sock: socket.socket) -> None:
        """Hold a new connection until it authenticates; only then does raft's transport see it."""
        try:
            source = _source_of(str(sock.getpeername()[0]))
        except OSError:  # reset before we got to it
            sock.close()
            return
        now = self._clock()
        self._expire_pending(now)
        members = self._members_at(source)
        queue = self._pending.get(source)
        held = len(queue) if queue else 0
        if members:
            if queue and held >= self._admission.per_source * members:
                self._drop_pending(queue[0], "gave way to a newer connection from its address")
        elif (held >= self._admission.per_source or len(self._pending_others) >= self._admission.total
              or not self._take_token(source, now)):
            sock.close()  # before any TLS work: an address that hosts no member gets no more
            self._count_refusal(f"too many unauthenticated connections (from {source})")
            return
        try:
            conn = self._new_connection(self._tls.server_ctx, server_side=True, sock=sock)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            self._count_refusal(f"could not set up a connection from {source}: {e}")
            return
        conn.source = source
        conn.created = now
        self._pending.setdefault(source, deque()).append(conn)
        self._pending_order.append(conn)
        if not members:
            self._pending_others.add(conn)
        conn.setOnConnectedCallback(functools.partial(self._authenticated, conn))
        conn.setOnDisconnectedCallback(functools.partial(self._pending_closed, conn))
        conn.start()  # the connection refuses a peer the verifier refuses, during the handshake

    def _release(self, conn: TlsConnection) -> bool:
        """Forget a pending connection; False if it was not pending."""
        queue = self._pending.get(conn.source)
        if not queue or conn not in queue:
            return False
        queue.remove(conn)
        if not queue:
            del self._pending[conn.source]
        self._pending_others.discard(conn)
        return True

    def _authenticated(self, conn: TlsConnection) -> None:
        """TLS done with a certificate the verifier accepted: now raft's transport takes it, and its
        first frame must name the member it is."""
        self._release(conn)
        conn.setOnConnectedCallback(None)
        if len(self._unknownConnections) >= MAX_PENDING_INCOMING:
            self._reject(conn, "too many authenticated connections that have not named their member")
            return
        conn.created = self._clock()
        self._onNewIncomingConnection(conn)

    def _pending_closed(self, conn: TlsConnection) -> None:
        if self._release(conn):
            self._count_refusal(conn.refusal or "closed before it authenticated")

    def _drop_pending(self, conn: TlsConnection, reason: str) -> None:
        conn.refusal = reason
        conn.disconnect()  # calls _pending_closed

    def _expire_pending(self, now: float) -> None:
        order = self._pending_order
        deadline = now - self._admission.handshake_timeout
        while order and (order[0].state == CONNECTION_STATE.DISCONNECTED or order[0].peer is not None
                         or order[0].created < deadline):
            conn = order.popleft()
            if conn.state != CONNECTION_STATE.DISCONNECTED and conn.peer is None:
                self._drop_pending(conn, "did not complete TLS with a valid certificate in time")

    def _count_refusal(self, reason: str) -> None:
        """Unauthenticated refusals are counted one by one but logged as a summary: a flood must not
        become a flood of log lines."""
        self.rejected += 1
        self._refused_unauthenticated += 1
        self._last_refusal = reason
        now = self._clock()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
            log.warning("raft: refused %d unauthenticated connection(s) since the last report; latest: %s",
                        self._refused_unauthenticated, reason)
            self._refused_unauthenticated = 0
            self._refusal_logged_at = now

    def _problem(self, conn: TlsConnection, claimed: str) -> str | None:
        """Why a verified peer may not be the member at ``claimed``, or None."""
        peer = conn.peer
        if peer is None:
            return "no verified certificate"
        if claimed not in peer.raft_addrs:
            return f"claims raft address {claimed} but its certificate binds {sorted(peer.raft_addrs)}"
        return None

    def _reject(self, conn: TlsConnection | None, reason: str, level: int = logging.WARNING) -> None:
        self.rejected += 1
        who = conn.peer.name if conn is not None and conn.peer else "unidentified peer"
        log.log(level, "raft: refused %s: %s", who, reason)
        if conn is not None:
            self._unknownConnections.discard(conn)
            conn.disconnect()

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        """Admit an incoming peer only by a member address its certificate is bound to; stock
        also accepts 'readonly' (a log reader) and utility commands (admin over the network)."""
        if not isinstance(message, str):
            self._reject(conn, "sent a utility/admin frame instead of its address")
            return
        if message not in self._nodeAddrToNode or message == self._selfNode.address:
            if message != self._selfNode.address and self._problem(conn, message) is None:
                # A manager that is joining dials its peers as soon as it starts, often before the
                # change that adds it is applied here: normal, and it redials.
                self._reject(conn, f"{message} is not a raft member yet (joining)", level=logging.DEBUG)
            else:
                self._reject(conn, f"{message[:80]!r} is not a raft member")
            return
        problem = self._problem(conn, message)
        if problem:
            self._reject(conn, problem)
            return
        node = self._nodeAddrToNode[message]
        if self._dials(node):
            self._reject(conn, f"{message} is a member this node dials, not one that dials it")
            return
        self._retire_previous(node, conn)
        super()._onIncomingMessageReceived(conn, message)

    def _dials(self, node: Any) -> bool:
        """Only the member with the higher address dials. Stock lets an incoming connection claiming
        a member we dial replace our own connection object, which it later cannot redial: the
        member stays unreachable for good."""
        return bool(self._shouldConnect(node))

    def _retire_previous(self, node: Any, conn: TlsConnection) -> None:
        """A member has one connection: when it reconnects, close the old one at once (stock leaves
        it open, so repeated connections under one identity pile up)."""
        old = self._connections.get(node)
        if old is not None and old is not conn:
            old.setOnDisconnectedCallback(None)
            old.disconnect()

    def _onOutgoingConnected(self, conn: Any) -> None:
        node = self._connToNode(conn)
        problem = self._problem(conn, node.address if node is not None else "?")
        if problem:
            self._reject(conn, problem)
            return
        super()._onOutgoingConnected(conn)

    def _onMessageReceived(self, node: Node, message: Any) -> None:
        if not wire.valid_message(message):
            kind = message.get("type") if isinstance(message, dict) else type(message).__name__
            self._reject(self._connections.get(node), f"sent a malformed or forbidden message ({kind!r})")
            return
        super()._onMessageReceived(node, message)

    def _onDisconnected(self, conn: Any) -> None:
        if conn.refusal:
            self.rejected += 1
            who = conn.peer.name if conn.peer else "unidentified peer"
            log.warning("raft: refused %s: %s", who, conn.refusal)
        super()._onDisconnected(conn)

    def _onTick(self) -> None:
        super()._onTick()
        now = self._clock()
        self._expire_pending(now)
        for conn in list(self._unknownConnections):
            if now - conn.created > HANDSHAKE_TIMEOUT:
                self._reject(conn, "did not complete TLS and identify itself in time")
        for conn in list(self._connections.values()):
            if conn.state == CONNECTION_STATE.CONNECTING and now - conn.created > HANDSHAKE_TIMEOUT:
                conn.disconnect()

    def backlog(self, node: Any) -> int:
        conn = self._connections.get(node)
        return conn.backlog if isinstance(conn, TlsConnection) else 0
