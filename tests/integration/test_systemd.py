"""swarmsecretsd under systemd: the notify protocol, a rolling restart under writes, the socket's group.

The managers are started as systemd starts a ``Type=notify`` unit: ``$NOTIFY_SOCKET`` names a datagram
socket the test binds (one a path, one an abstract ``@`` address) and ``$WATCHDOG_USEC`` asks for pings.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.client import DEFAULT_RETRY, LocalClient, LocalError
from tests.framework import Cluster, Loopback, Node, Timings, wait_until
from swarmsecrets.node.config import parse_args
from tests.framework.node import DAEMON_MODULE, REPO_ROOT, child_env

# Election timeouts longer than the client's whole retry budget: once every manager runs with them,
# a leader that stopped without handing over would leave the swarm without a leader for longer than
# any write may wait, so the rolling restart below passes only if the hand-over works.
SLOW_ELECTIONS = Timings(raft_heartbeat=0.05, election_min=15.0, election_max=20.0, dispatcher_heartbeat=1.0)
assert SLOW_ELECTIONS.election_min is not None and SLOW_ELECTIONS.election_min > DEFAULT_RETRY.budget
WATCHDOG_USEC = 1_000_000


class NotifyListener:
    """A datagram socket in systemd's place, read at once as systemd does (a full queue would drop
    messages): every message a daemon sends, in order."""

    def __init__(self, address: str) -> None:
        self.address = address  # as $NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.received: list[str] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def fields(self) -> list[str]:
        return [line for message in list(self.received) for line in message.split("\n")]

    def statuses(self) -> list[str]:
        return [f.removeprefix("STATUS=") for f in self.fields() if f.startswith("STATUS=")]

    def close(self) -> None:
        self._closing.set()
        self._reader.join()
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


@contextlib.contextmanager
def notify_env(listener: NotifyListener) -> Iterator[None]:
    """What systemd sets for a Type=notify unit with WatchdogSec=1s, while a daemon is spawned."""
    saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    os.environ.update(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_notified(node: Node, listener: NotifyListener) -> None:
    with notify_env(listener):
        node.spawn()
    node.wait_socket()


@pytest.fixture(scope="module")
def notified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, NotifyListener]]]:
    root = Path(tmp_path_factory.mktemp("systemd"))
    c = Cluster(root)
    listeners = {m.name: NotifyListener(f"@swarmsecrets-test-{os.getpid()}-{m.name}") for m in c.managers}
    listeners["m1"] = NotifyListener(str(root / "notify-m1"))  # one by path, the others abstract
    try:
        for m in c.managers:
            with notify_env(listeners[m.name]):
                m.spawn()
        for m in c.managers:
            m.wait_socket()
        c.form()
        yield c, listeners
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
        for listener in listeners.values():
            listener.close()


def test_ready_status_and_watchdog_reach_the_notify_socket(
        notified: tuple[Cluster, dict[str, NotifyListener]]) -> None:
    c, listeners = notified
    leader = c.leader()
    for m in c.managers:
        got = listeners[m.name]
        wait_until(lambda: "READY=1" in got.fields(), 10, 0.1, f"READY=1 from {m.name}")  # noqa: B023
        wait_until(lambda: got.fields().count("WATCHDOG=1") >= 2, 10, 0.1,  # noqa: B023
                   f"watchdog pings from {m.name}")
        if m is leader:
            want = "manager, leader this node, 3 managers (3 reachable)"
        else:
            want = f"manager, leader {leader.addr}, 3 managers (3 reachable)"
        wait_until(lambda: got.statuses()[-1:] == [want], 10, 0.1, f"{m.name}'s STATUS={want}")  # noqa: B023


class Writer(threading.Thread):
    """Creates secrets one after another, through each manager's socket in turn, with the clients'
    retry policy; records what was acknowledged and what failed."""

    def __init__(self, managers: list[Node]) -> None:
        super().__init__(daemon=True)
        self.sockets = [m.sock for m in managers]
        self.acked: dict[str, str] = {}
        self.failed: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        clients = [LocalClient(s) for s in self.sockets]
        try:
            i = 0
            while not self.done.is_set():
                name = f"rolling-{i}"
                stub = clients[i % len(clients)].control
                req = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name=name, data=b"v"))
                try:
                    self.acked[name] = DEFAULT_RETRY.write(stub.CreateSecret, req, timeout=30).secret.id
                except LocalError as e:
                    self.failed.append(f"{name}: {e.code.name} {e.message}")
                i += 1
        finally:
            for client in clients:
                client.close()


def test_rolling_restart_under_writes_fails_no_write(notified: tuple[Cluster, dict[str, NotifyListener]]) -> None:
    c, listeners = notified
    leader = c.leader()
    # The followers first, the leader last: by then every manager runs with SLOW_ELECTIONS.
    order = [m for m in c.managers if m is not leader] + [leader]
    writer = Writer(c.managers)
    writer.start()
    try:
        for m in order:
            before = len(writer.acked)
            m.stop()
            wait_until(lambda: "STOPPING=1" in listeners[m.name].fields(), 5, 0.05,  # noqa: B023
                       f"STOPPING=1 from {m.name}")
            m.timings = SLOW_ELECTIONS
            start_notified(m, listeners[m.name])
            wait_until(lambda: len(writer.acked) >= before + 6 or writer.failed, 30, 0.05,  # noqa: B023
                       f"writes through the restart of {m.name}")
            assert not writer.failed, writer.failed
    finally:
        writer.done.set()
        writer.join(60)
    assert not writer.failed, writer.failed
    assert "handed leadership over to " in leader.log_path.read_text()
    new_leader = c.leader()
    assert new_leader is not leader
    wait_until(lambda: listeners[new_leader.name].statuses()[-1:] == [
        "manager, leader this node, 3 managers (3 reachable)"], 10, 0.1, "the new leader's STATUS")
    listed = new_leader.control().ListSecrets(control_pb2.ListSecretsRequest(), timeout=10).secrets
    present = {s.spec.name: s.id for s in listed}
    assert {n: present.get(n) for n in writer.acked} == writer.acked


# --- the socket's group ------------------------------------------------------------------------------------

NOBODY = 65534
# The CLI, run as NOBODY with the given supplementary groups. Its modules are imported while still root:
# the interpreter lives under /root here, which other users may not enter.
# What the command imports lazily is imported before the uid changes: the test's tree and venv are root's.
AS_USER = (f"import os, sys\n"
           f"import binascii, difflib  # click and protobuf import them on first use\n"
           f"import swarmsecrets.api.v1.control_pb2, swarmsecrets.cli.secret\n"
           f"from swarmsecrets.cli.main import run\n"
           f"os.setgroups([int(g) for g in sys.argv[1].split(',') if g])\n"
           f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
           f"sys.exit(run(sys.argv[2:]))\n")


class SharedSocketDir(Loopback):
    """Sockets in a directory every user may enter (the test's own temp dirs are root's alone)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def socket_path(self, name: str, data_dir: Path) -> Path:
        return self.directory / f"{name}.sock"


def cli_as_nobody(node: Node, groups: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", AS_USER, ",".join(map(str, groups)), "-H", node.host_url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env(),
                          stdin=subprocess.DEVNULL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: groupadd, and a CLI run as another user")
def test_group_members_may_use_the_socket_and_others_may_not(tmp_path: Path) -> None:
    name = f"sstest{os.getpid()}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    shared = Path(tempfile.mkdtemp(prefix="swarmsecrets-sock-"))
    shared.chmod(0o755)
    node = Node("grouped", tmp_path, placement=SharedSocketDir(shared), extra_args=("--group", name))
    try:
        gid = grp.getgrnam(name).gr_gid
        node.start()
        st = node.sock.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, gid)
        member = cli_as_nobody(node, [gid], "secret", "ls")
        assert (member.returncode, member.stderr.strip()) == (1, "Error response from daemon: This node is not "
                                                                 "part of a swarm"), member
        other = cli_as_nobody(node, [], "secret", "ls")
        assert (other.returncode, other.stderr) == (1, "permission denied while trying to connect to the "
                                                       f"swarmsecrets daemon socket at {node.host_url}: connect: "
                                                       "permission denied\n"), other
    finally:
        node.kill()
        node.cleanup()
        subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(shared)  # the socket's directory
    # A group that does not exist: one line, exit 2, nothing started.
    p = subprocess.run([sys.executable, "-m", DAEMON_MODULE, "--data-dir", str(tmp_path / "nogroup"),
                        "-H", f"unix://{tmp_path}/nogroup.sock", "--group", name], capture_output=True,
                       text=True, timeout=30, env=child_env())
    assert (p.returncode, p.stderr) == (
        2, f'swarmsecretsd: error: invalid argument "{name}" for --group: group {name} not found\n')
    assert not (tmp_path / "nogroup.sock").exists()



# --- the unit -----------------------------------------------------------------------------------------------

UNIT = REPO_ROOT / "deploy" / "swarmsecretsd.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_matches_the_daemon() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["WatchdogSec"] and s["KillSignal"] == ["SIGTERM"]
    assert s["ExecStart"][0].split()[0] == "/usr/local/bin/swarmsecretsd"
    config = parse_args([])
    socket_dir = os.path.dirname(config.socket_path)
    assert socket_dir == "/run/" + s["RuntimeDirectory"][0]
    # systemd removes the runtime directory on stop: it must not hold the secrets root.
    assert os.path.commonpath([socket_dir, config.secrets_root]) != socket_dir


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify wants ExecStart's binary to exist; the install puts it at /usr/local/bin (the test above).
    fake = tmp_path / "swarmsecretsd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = tmp_path / "swarmsecretsd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/swarmsecretsd", str(fake)))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Unknown or misspelled settings are only warnings: none is allowed either.
    assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), p.stderr
