"""NFQUEUE delayer: holds every packet queued to it for delay ± jitter, then accepts it, in FIFO order.

This kernel has no netem (sch_netem is not built), so delay is done in userspace: run this inside a host's
namespace, then ``iptables -A INPUT -i eth0 -j NFQUEUE --queue-num N --queue-bypass`` there. Raw
nfnetlink, stdlib only. Copy-meta mode (verdicts need only the packet id), fail-open (a full queue
passes packets instead of dropping them), GSO. On SIGTERM or after --max-seconds everything still held
is accepted and it exits; if it dies, --queue-bypass lets traffic through undelayed.
"""

from __future__ import annotations

import argparse
import collections
import errno
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 0x1, 0x4
NF_DROP, NF_ACCEPT = 0, 1
QUEUE_MAXLEN = 16384


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg_type: int, flags: int, seq: int, queue: int, attrs: list[bytes]) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload after the nlmsghdr) of each netlink message in one datagram."""
    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        out.append((msg_type, data[offset + 16: offset + length]))
        offset += (length + 3) & ~3
    return out


def _packet_id(payload: bytes) -> int | None:
    offset = 4  # nfgenmsg
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            return None
        if kind & 0x7FFF == NFQA_PACKET_HDR:
            return int(struct.unpack_from("!I", payload, offset + 4)[0])
        offset += (length + 3) & ~3
    return None


class Delayer:
    def __init__(self, queue: int, delay: float, jitter: float, loss: float, rng: random.Random) -> None:
        self.queue = queue
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.rng = rng
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.held: collections.deque[tuple[float, int]] = collections.deque()
        self.last_release = 0.0

    def _request(self, attrs: list[bytes]) -> None:
        self.sock.send(_message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 1, self.queue, attrs))
        for msg_type, payload in _messages(self.sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, f"nfqueue config: {errno.errorcode.get(code, code)}")

    def bind(self) -> None:
        self._request([_attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))])
        flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO)
        self._request([_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_META)),
                       _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)),
                       _attr(NFQA_CFG_MASK, flags), _attr(NFQA_CFG_FLAGS, flags)])

    def verdict(self, packet_id: int, verdict: int) -> None:
        self.sock.send(_message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, self.queue,
                                [_attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))]))

    def receive(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                return
            raise
        now = time.monotonic()
        for msg_type, payload in _messages(data):
            if msg_type != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            packet_id = _packet_id(payload)
            if packet_id is None:
                continue
            if self.rng.random() < self.loss:
                self.verdict(packet_id, NF_DROP)
                continue
            due = now + max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
            self.last_release = max(self.last_release, due)  # never reorder
            self.held.append((self.last_release, packet_id))

    def release(self, until: float) -> None:
        while self.held and self.held[0][0] <= until:
            self.verdict(self.held.popleft()[1], NF_ACCEPT)

    def serve(self, stop_at: float, stopping: list[bool]) -> None:
        while not stopping and time.monotonic() < stop_at:
            now = time.monotonic()
            wait = min(stop_at - now, 0.5, *([max(0.0, self.held[0][0] - now)] if self.held else []))
            ready, _, _ = select.select([self.sock], [], [], wait)
            if ready:
                self.receive()
            self.release(time.monotonic())
        self.release(float("inf"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaoskit.delayer", description=__doc__)
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="fraction of packets dropped, 0..1")
    p.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this long")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    d = Delayer(a.queue, a.delay_ms / 1000, a.jitter_ms / 1000, a.loss, random.Random(a.seed))
    d.bind()
    print("ready", flush=True)
    d.serve(time.monotonic() + a.max_seconds, stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
