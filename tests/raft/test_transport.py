"""The raft port: mutual TLS, member identity, refused frames, restricted unpickling, framing."""

from __future__ import annotations

import os
import pickle
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import CONNECTION_STATE

from swarmsecrets.ca import certs
from swarmsecrets.raft import transport, wire
from swarmsecrets.raft.transport import TlsConnection, TlsServer
from tests.raft.conftest import STOCK, Cluster, Pki, free_ports


PER_SOURCE = transport.Admission().per_source
ATTACKER = "127.0.0.9"  # a loopback address no member uses


class Gadget:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def frame(obj: Any, protocol: int = 4) -> bytes:
    body = pickle.dumps(obj, protocol=protocol)
    return struct.pack("!I", len(body)) + body


@pytest.fixture
def lone(cluster_factory: Any) -> tuple[Cluster, str, str]:
    """A two-member group with only its lower-address member running: the attacker can claim
    the other (dialling) member's address without the real one interfering."""
    c = cluster_factory(2)
    low, high = min(c.addrs), max(c.addrs)
    c.start(low)
    return c, low, high


@pytest.fixture(scope="module")
def cluster(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(pki, tmp_path_factory.mktemp("sec"))
    c.start()
    c.leader()
    yield c
    c.stop()


def client_ctx(pki: Pki, cert: tuple[str, str] | None, ca: certs.RootCA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def target_port(cluster: Cluster) -> tuple[str, int]:
    addr = min(cluster.addrs)  # attacked node: the lowest address, which every other member dials
    return addr, int(addr.rsplit(":", 1)[1])


def dialling_member(cluster: Cluster) -> str:
    return max(cluster.addrs)  # a member that legitimately connects to the attacked node


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True if the peer closes (or resets) the connection before ``timeout``; False if it stays open
    (whatever it sends meanwhile)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except (ssl.SSLError, OSError):
        return True
    return False


def tls_connect(pki: Pki, cluster: Cluster, cert: tuple[str, str] | None,
                ca: certs.RootCA | None = None) -> ssl.SSLSocket:
    _, port = target_port(cluster)
    raw = socket.create_connection(("127.0.0.1", port), timeout=3)
    return client_ctx(pki, cert, ca).wrap_socket(raw)


def rejected(cluster: Cluster) -> int:
    return cluster.nodes[target_port(cluster)[0]].status().rejected_peers


def wait_rejected(cluster: Cluster, before: int, timeout: float = 10.0) -> None:
    """The attacked node counts a refusal once its side of the connection is closed: the test may
    see the close first."""
    deadline = time.monotonic() + timeout
    while rejected(cluster) <= before:
        assert time.monotonic() < deadline, "the refusal was not counted"
        time.sleep(0.01)


def assert_gadget_is_live(payload: bytes, marker: Path) -> None:
    """Control for the gadget tests: a stock (unrestricted) unpickler runs this payload's code, so a
    test that shows it did not run can fail."""
    assert not marker.exists()
    pickle.loads(payload)
    assert marker.exists(), "the gadget does not run even unrestricted: the test would prove nothing"
    marker.unlink()


def test_plaintext_tcp_with_a_gadget_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    assert_gadget_is_live(frame(Gadget(marker), protocol=2)[4:], marker)
    _, port = target_port(cluster)
    before = rejected(cluster)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(frame(Gadget(marker), protocol=2))
        assert closed_by_peer(s)
    wait_rejected(cluster, before)
    assert not marker.exists()


def test_tls_client_without_certificate_is_refused(pki: Pki, cluster: Cluster) -> None:
    before = rejected(cluster)
    with pytest.raises((ssl.SSLError, OSError)):
        with tls_connect(pki, cluster, None) as s:  # TLS 1.3: the refusal arrives with the first read
            s.sendall(frame(cluster.addrs[1]))
            s.settimeout(3)
            s.recv(1)
            raise AssertionError("the raft port answered a client without a certificate")
    wait_rejected(cluster, before)


def test_worker_certificate_is_refused(pki: Pki, cluster: Cluster) -> None:
    cert = pki.issue("worker-1", role="worker")
    with tls_connect(pki, cluster, cert) as s:
        s.sendall(frame(cluster.addrs[1]))
        assert closed_by_peer(s)


def test_certificate_of_another_cluster_ca_is_refused(pki: Pki, cluster: Cluster) -> None:
    other = certs.create_root_ca()
    cert = pki.issue("intruder", raft_addr=cluster.addrs[1], ca=other)
    with pytest.raises((ssl.SSLError, OSError)):
        with tls_connect(pki, cluster, cert) as s:
            s.sendall(frame(cluster.addrs[1]))
            s.settimeout(3)
            s.recv(1)
            raise AssertionError("the raft port answered a certificate of another CA")


def test_certificate_with_another_cluster_id_is_refused(pki: Pki, cluster: Cluster) -> None:
    cert = pki.issue("other-cluster", raft_addr=cluster.addrs[1], cluster_id="someothercluster000000000")
    with tls_connect(pki, cluster, cert) as s:
        s.sendall(frame(cluster.addrs[1]))
        assert closed_by_peer(s)


def test_manager_claiming_another_members_address_is_refused(pki: Pki, cluster: Cluster) -> None:
    (port,) = free_ports(1)
    cert = pki.issue("impostor", raft_addr=f"127.0.0.1:{port}")
    before = rejected(cluster)
    with tls_connect(pki, cluster, cert) as s:
        s.sendall(frame(dialling_member(cluster)))  # a member's address, not the one in its certificate
        s.sendall(frame({"type": "request_vote", "term": 10 ** 6, "last_log_index": 10 ** 6,
                         "last_log_term": 10 ** 6}))
        assert closed_by_peer(s)
    wait_rejected(cluster, before)
    assert max(n.status().term for n in cluster.nodes.values()) < 10 ** 6


@pytest.mark.parametrize("first", ["readonly", ["status"], ["add", "127.0.0.1:1"], ["remove", "x"],
                                   ["set_version", 1], ["transfer", None]], ids=str)
def test_readonly_and_admin_frames_are_refused(pki: Pki, cluster: Cluster, first: Any) -> None:
    addr = dialling_member(cluster)
    cert = pki.issue(f"member-{addr}", raft_addr=addr)  # even a genuine member certificate
    with tls_connect(pki, cluster, cert) as s:
        s.sendall(frame(first))
        assert closed_by_peer(s)
    assert cluster.leader().status().members == sorted(cluster.addrs)


def test_gadget_from_an_authenticated_member_executes_nothing(pki: Pki, lone: Any, tmp_path: Path) -> None:
    c, low, high = lone
    marker = tmp_path / "pwned"
    cert = pki.issue(f"member-{high}", raft_addr=high)
    port = int(low.rsplit(":", 1)[1])
    for protocol in (2, 4):
        assert_gadget_is_live(frame(Gadget(marker), protocol)[4:], marker)
        with client_ctx(pki, cert).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3)) as s:
            s.sendall(frame(high))
            s.sendall(frame({"type": "append_entries", "term": 0, "commit_index": 0,
                             "gadget": Gadget(marker)}, protocol))
            assert closed_by_peer(s)
        with client_ctx(pki, cert).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3)) as s:
            s.sendall(frame(Gadget(marker), protocol))  # as the very first frame
            assert closed_by_peer(s)
    # The node decodes a frame before it closes the connection: had the gadget run, the marker
    # would be there by now.
    assert not marker.exists()
    deadline = time.monotonic() + 10
    while c.nodes[low].status().rejected_peers < 4:
        assert time.monotonic() < deadline, c.nodes[low].status()
        time.sleep(0.01)


def test_restricted_unpickler_refuses_gadgets(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        payload = pickle.dumps(Gadget(marker), protocol=protocol)
        assert_gadget_is_live(payload, marker)
        with pytest.raises(pickle.UnpicklingError, match="refused to load global"):
            wire.loads(payload)
        assert not marker.exists()
    # plain data, including bytes, round-trips; protocol 4 stores bytes without the 1.5x inflation
    value = os.urandom(511_999)
    payload = wire.dumps({"v": value, "n": [1, 2.5, None, True, ("a", b"b")]})
    assert wire.loads(payload)["v"] == value
    assert len(payload) < len(value) + 200


def test_oversized_frame_header_drops_the_peer_at_once(pki: Pki, lone: Any) -> None:
    c, low, high = lone
    cert = pki.issue(f"member-{high}", raft_addr=high)
    port = int(low.rsplit(":", 1)[1])
    with client_ctx(pki, cert).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3)) as s:
        s.sendall(frame(high))
        s.sendall(struct.pack("!I", 1 << 30) + b"\0" * 1024)  # announces 1 GiB, sends 1 KiB
        assert closed_by_peer(s, timeout=2.0)


def test_member_whose_certificate_is_bound_elsewhere_is_not_dialled(pki: Pki, cluster_factory: Any) -> None:
    c = cluster_factory(2)
    low, high = sorted(c.addrs, key=lambda a: a)  # the higher address dials the lower one
    c.tls[low] = pki.tls(f"127.0.0.1:{free_ports(1)[0]}")  # the low node's cert names another address
    c.start()
    deadline = time.monotonic() + 10
    while c.nodes[high].status().rejected_peers == 0:
        assert time.monotonic() < deadline, "the member bound elsewhere was never refused"
        time.sleep(0.01)
    assert low not in c.nodes[high].status().reachable
    # Two members with no link between them cannot elect a leader: none may exist now.
    assert not any(n.status().is_leader for n in c.nodes.values())


def test_cluster_still_works_after_the_attacks(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader.propose({"op": "set", "k": "after", "v": 1}, 5.0) > 0
    assert cluster.converge()["after"] == 1


# --- the connection itself -------------------------------------------------------------------------

def test_partial_send_rearms_write_interest(pki: Pki) -> None:
    """A message larger than the socket buffers must arrive without any other traffic."""
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    server_tls, client_tls = pki.tls(addr), pki.tls(f"127.0.0.1:{free_ports(1)[0]}")
    poller = createPoller("poll")
    got: list[Any] = []
    accepted: list[TlsConnection] = []
    def make(ctx: ssl.SSLContext, server_side: bool, sock: socket.socket | None = None) -> TlsConnection:
        return TlsConnection(poller, ctx, server_side=server_side, sock=sock, send_buffer=65536,
                             recv_buffer=65536, keepalive=None, idle_timeout=60.0,
                             verify_peer=server_tls.verify_peer)

    def on_connection(sock: socket.socket) -> None:
        conn = make(server_tls.server_ctx, True, sock)
        conn.setOnMessageReceivedCallback(got.append)
        accepted.append(conn)
        conn.start()

    server = TlsServer(poller, "127.0.0.1", port, send_buffer=65536, recv_buffer=65536,
                       on_connection=on_connection)
    server.bind()
    client = make(client_tls.client_ctx, False)
    connected: list[bool] = []
    client.setOnConnectedCallback(lambda: connected.append(True))
    assert client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not connected and time.monotonic() < deadline:
        poller.poll(0.05)
    assert connected
    quiet = time.monotonic() + 0.3
    while time.monotonic() < quiet:  # let TLS session tickets arrive: no reads may re-arm us later
        poller.poll(0.05)
    blob = os.urandom(6 * 1024 * 1024)
    client.send({"type": "blob", "v": blob})
    assert client.backlog > 0, "the whole message fit in the socket buffers: the test proves nothing"
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        poller.poll(0.05)
    client.disconnect()
    for conn in accepted:
        conn.disconnect()
    server.unbind()
    assert got and got[0]["v"] == blob, "the rest of the message waited for the next send"


def member_socket(pki: Pki, port: int, as_addr: str) -> ssl.SSLSocket:
    cert = pki.issue(f"member-{as_addr}", raft_addr=as_addr)
    s = client_ctx(pki, cert).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3))
    s.sendall(frame(as_addr))
    return s


@pytest.mark.parametrize("bad", [
    {"type": "append_entries", "term": 1, "commit_index": 0, "prevLogIdx": 1, "prevLogTerm": 0,
     "transmission": "start", "data": b"x"},  # stock's chunked entries (truncated by its own bug)
    {"type": "request_vote", "term": "x", "last_log_index": 1, "last_log_term": 1},
    {"type": "append_entries", "term": 1, "commit_index": 0, "prevLogIdx": 1, "prevLogTerm": 0,
     "entries": [("not bytes", 2, 1)]},
    {"type": "status"}, ["status"], "hello"], ids=lambda b: str(b)[:40])
def test_malformed_or_forbidden_messages_drop_the_member(pki: Pki, lone: Any, bad: Any) -> None:
    c, low, high = lone
    with member_socket(pki, int(low.rsplit(":", 1)[1]), high) as s:
        s.sendall(frame(bad))
        assert closed_by_peer(s)
    assert c.nodes[low].status().tick_errors == 0


def test_connections_that_never_identify_are_dropped(pki: Pki, lone: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if "handshake_timeout" not in STOCK:
        monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 0.5)
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:  # no TLS at all
        assert closed_by_peer(s)
    cert = pki.issue(f"member-{high}", raft_addr=high)
    with client_ctx(pki, cert).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3)) as t:
        assert closed_by_peer(t)  # TLS done, but it never says which member it is


def test_pending_connections_are_capped(lone: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 1e9)
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(80)]
    try:
        closed: set[socket.socket] = set()
        deadline = time.monotonic() + 10
        while len(closed) < 80 - PER_SOURCE:
            assert time.monotonic() < deadline, f"only {len(closed)} of 80 connections were closed"
            readable, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.1)
            closed |= {s for s in readable if s.recv(1) == b""}
    finally:
        for s in socks:
            s.close()


def attacker_socket(port: int) -> socket.socket:
    s = socket.socket()
    s.bind((ATTACKER, 0))
    s.settimeout(3)
    s.connect(("127.0.0.1", port))
    return s


def test_unauthenticated_connections_are_dropped_at_the_handshake_deadline(
        lone: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle TCP and a stalled TLS handshake are dropped by the admission deadline, not by the
    (longer) one for authenticated members to name themselves."""
    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 1e9)
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    with attacker_socket(port) as idle:
        assert closed_by_peer(idle)
    hello = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO())
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    with attacker_socket(port) as stalled:
        stalled.sendall(out.read())  # a ClientHello, and then nothing
        assert closed_by_peer(stalled)


def test_a_flood_from_another_address_leaves_room_for_members(pki: Pki, lone: Any) -> None:
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    flood = [attacker_socket(port) for _ in range(100)]
    try:
        # The member, from its own address, is served at once: its first raft message arrives.
        with member_socket(pki, port, high) as s:
            s.settimeout(10)
            assert len(s.recv(4)) > 0
        # The flood held at most its per-source share; the rest was closed without any TLS work.
        still_open = [f for f in flood if not closed_by_peer(f, timeout=0.01)]
        assert len(still_open) <= PER_SOURCE
    finally:
        for f in flood:
            f.close()


def test_a_flood_from_a_members_address_gives_way_to_new_connections(pki: Pki, lone: Any) -> None:
    """An attacker that shares a member's address cannot be told from it before TLS: its oldest
    connections give way, so a member that connects after the flood still gets in."""
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    flood = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(100)]
    try:
        with member_socket(pki, port, high) as s:
            s.settimeout(10)
            assert len(s.recv(4)) > 0
    finally:
        for f in flood:
            f.close()


def test_a_member_this_node_dials_cannot_dial_in(pki: Pki, cluster_factory: Any) -> None:
    c = cluster_factory(2)
    low, high = min(c.addrs), max(c.addrs)
    c.start(high)  # high dials low; low is not up yet
    with member_socket(pki, int(high.rsplit(":", 1)[1]), low) as s:
        assert closed_by_peer(s)
    c.start(low)
    deadline = time.monotonic() + 10
    while low not in c.nodes[high].status().reachable and time.monotonic() < deadline:
        time.sleep(0.05)
    assert low in c.nodes[high].status().reachable


def test_a_reconnecting_member_retires_its_old_connection(pki: Pki, lone: Any) -> None:
    c, low, high = lone
    port = int(low.rsplit(":", 1)[1])
    with member_socket(pki, port, high) as first, member_socket(pki, port, high) as second:
        assert closed_by_peer(first)
        # The second is the member's live connection: the node's campaign reaches it.
        second.settimeout(10)
        assert len(second.recv(4)) > 0


def test_a_peer_that_reads_nothing_is_dropped(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    if "max_backlog" not in STOCK:
        monkeypatch.setattr(transport, "MAX_BACKLOG", 1 << 20)
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen()
        tls = pki.tls("127.0.0.1:1")
        conn = TlsConnection(createPoller("poll"), tls.client_ctx, server_side=False, send_buffer=65536,
                             recv_buffer=65536, keepalive=None, idle_timeout=60.0, verify_peer=tls.verify_peer)
        assert conn.connect("127.0.0.1", sink.getsockname()[1])
        for _ in range(8):
            conn.send({"type": "x", "v": os.urandom(256 * 1024)})
        assert conn.state == CONNECTION_STATE.DISCONNECTED
        conn.disconnect()
