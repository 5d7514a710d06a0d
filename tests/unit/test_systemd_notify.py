"""The notify protocol's client: the environment systemd sets, abstract addresses, the watchdog period."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from swarmsecrets.node.daemon import Node
from swarmsecrets.node.roles import Role
from swarmsecrets.node.systemd import Notifier, describe, socket_address, watchdog_period


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket at an abstract address, as $NOTIFY_SOCKET names it."""
    name = f"@swarmsecrets-unit-{os.getpid()}-{tmp_path.name}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(5)
    yield name, sock
    sock.close()


def test_nothing_without_notify_socket() -> None:
    env = {"WATCHDOG_USEC": "1000000"}
    assert Notifier.from_environ(env) is None
    assert env == {}


def test_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("vsock:2:1234") is None


def test_watchdog_period_is_half_and_honours_watchdog_pid() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_period({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.5
    assert watchdog_period({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({}) is None


def test_messages_reach_an_abstract_socket_and_the_environment_is_cleared(
        receiver: tuple[str, socket.socket]) -> None:
    name, sock = receiver
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    n = Notifier.from_environ(env)
    assert n is not None and n.watchdog == 0.1
    assert env == {"PATH": "/bin"}  # a task started later must not speak for the daemon
    n.send("READY=1", "STATUS=manager")
    assert sock.recv(4096) == b"READY=1\nSTATUS=manager"
    n.close()


def test_run_pings_the_watchdog_and_sends_status_when_it_changes(receiver: tuple[str, socket.socket]) -> None:
    name, sock = receiver
    n = Notifier("\0" + name[1:], watchdog=0.05)
    states = iter(["a", "a", "a", "b"])
    last = ["b"]

    def status() -> str:
        last[0] = next(states, last[0])
        return last[0]

    async def main() -> list[str]:
        task = asyncio.get_running_loop().create_task(n.run(status))
        got: list[str] = []
        while got.count("STATUS=b") < 1 or got.count("WATCHDOG=1") < 3:
            data = await asyncio.get_running_loop().sock_recv(sock, 4096)
            got += data.decode().split("\n")
        task.cancel()
        return got

    sock.setblocking(False)
    got = asyncio.run(asyncio.wait_for(main(), 10))
    n.close()
    assert [f for f in got if f.startswith("STATUS=")] == ["STATUS=a", "STATUS=b"]


def test_status_lines_of_the_roles_without_raft() -> None:
    def node(role: Role, **kw: Any) -> Node:
        defaults: dict[str, Any] = {"role": role, "manager": None, "agent": None,
                                    "state": SimpleNamespace(remote_managers=["10.0.0.1:2377"])}
        return cast(Node, SimpleNamespace(**(defaults | kw)))

    assert describe(node(Role.INACTIVE)) == "inactive: not part of a swarm"
    assert describe(node(Role.LOCKED)) == "locked: waiting for 'swarmsecrets swarm unlock'"
    assert describe(node(Role.WORKER)) == "worker, managers 10.0.0.1:2377"
    agent = SimpleNamespace(managers=["10.0.0.1:2377", "10.0.0.2:2377"])
    assert describe(node(Role.WORKER, agent=agent)) == "worker, managers 10.0.0.1:2377, 10.0.0.2:2377"
    assert describe(node(Role.MANAGER)) == "manager, starting"
