"""systemd's notify protocol (``Type=notify``): readiness, status, stopping and the watchdog.

The protocol is a datagram of ``KEY=value`` lines sent to the unix socket named by ``$NOTIFY_SOCKET``
(a path, or ``@name`` for an abstract address). Nothing is sent, and nothing runs, when it is unset.
The variables are removed from the environment once read, so that the tasks a worker starts cannot
speak for the daemon. The watchdog is pinged from the event loop itself: a loop that is stuck stops
the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

from swarmsecrets.node.daemon import Node
from swarmsecrets.node.roles import Role

log = logging.getLogger("swarmsecretsd")

# How often the status line is recomputed (and sent when it changed).
STATUS_PERIOD = 1.0
_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The address ``$NOTIFY_SOCKET`` names: a path, or ``@name`` for the abstract namespace; None for
    what this daemon cannot reach (e.g. systemd's vsock addresses)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_period(environ: MutableMapping[str, str]) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``, as systemd advises), or None when the
    watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Sends notify messages to one socket; a message that cannot be sent is dropped (systemd's own
    ``sd_notify`` does the same), the first failure logged."""

    def __init__(self, address: str, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)  # never stall the event loop on a full receive queue
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, or None; the variables leave ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        period = watchdog_period(env)
        for name in _ENVIRONMENT:
            env.pop(name, None)
        if not value:
            return None
        address = socket_address(value)
        if address is None:
            log.warning("NOTIFY_SOCKET=%s: not a unix socket address; systemd will not hear from this daemon",
                        value)
            return None
        return cls(address, period)

    def send(self, *fields: str) -> None:
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            if not self._failed:
                log.warning("could not notify systemd: %s", e)
            self._failed = True

    def close(self) -> None:
        self._sock.close()

    async def run(self, status: Callable[[], str]) -> None:
        """Until cancelled: ping the watchdog, and send ``STATUS=`` whenever ``status()`` changes."""
        loop = asyncio.get_running_loop()
        period = min(STATUS_PERIOD, self.watchdog or STATUS_PERIOD)
        last = ""
        next_ping = loop.time()
        while True:
            fields = []
            if self.watchdog is not None and loop.time() >= next_ping:
                fields.append("WATCHDOG=1")
                next_ping = loop.time() + self.watchdog
            try:
                text = status()
            except Exception as e:  # never let a status line stop the watchdog's pings
                log.debug("no status for systemd: %s", e)
                text = last
            if text != last:
                fields.append(f"STATUS={text}")
                last = text
            if fields:
                self.send(*fields)
            await asyncio.sleep(period)


def describe(node: Node) -> str:
    """One line for ``systemctl status``: the role, the leader, the members."""
    role = node.role
    if role is Role.INACTIVE:
        return "inactive: not part of a swarm"
    if role is Role.LOCKED:
        return "locked: waiting for 'swarmsecrets swarm unlock'"
    m = node.manager
    if role is Role.MANAGER and m is not None:
        st = m.proposer.status()
        if st.is_leader:
            leader = "this node"
        elif st.leader is not None:
            leader = m.store.control_addr_of(st.leader) or st.leader
        else:
            leader = "none"
        reachable = len(st.reachable & set(st.members))
        return f"manager, leader {leader}, {len(st.members)} managers ({reachable} reachable)"
    if role is Role.WORKER:
        managers = list(node.agent.managers) if node.agent is not None else list(node.state.remote_managers)
        return f"worker, managers {', '.join(managers) or 'unknown'}"
    return f"{role.value}, starting" if role is Role.MANAGER else role.value
