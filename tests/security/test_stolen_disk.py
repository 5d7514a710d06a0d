"""A disk thief against an autolocked manager: the data dir of a stopped manager opens no private key
(not the node's TLS key, not the CA key) and no data key without the unlock key, and the restarted
manager presents no identity on its ports until ``swarm unlock``."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmsecrets.crypto import keys
from tests.framework import Cluster, wait_until
from tests.framework.node import Node
from tests.security.attack import loot_disk, presented_certificate, public_der


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three managers of a swarm initialized with autolock (the first inits it, the others join)."""
    with Cluster(Path(tmp_path_factory.mktemp("locked")), autolock=True).started() as c:
        assert c.unlock_key.startswith(keys.UNLOCK_PREFIX)
        yield c


def certificate(n: Node) -> x509.Certificate:
    return x509.load_pem_x509_certificate((n.data_dir / "certificates" / "swarm-node.crt").read_bytes())


def assert_disk_yields_nothing(n: Node, unlock_key: str) -> None:
    """The thief's loot from ``n``'s data dir is empty; with the unlock key the same probe opens the
    node's TLS key (the one its certificate names) and the wrapped keys, so it is a probe that finds."""
    private, opened = loot_disk(n.data_dir)
    assert private == [], f"{n.name}: a private key loads from its disk"
    assert opened == [], f"{n.name}: a key on its own disk opens its wrapped keys"
    private, opened = loot_disk(n.data_dir, (keys.parse_unlock_key(unlock_key),))
    assert public_der(certificate(n)) in [public_der(k) for k in private], f"{n.name}: its node key is not on disk"
    assert len(opened) == 3, f"{n.name}: the data key, the CA key and the node key are wrapped"


def test_stolen_disk_of_an_autolocked_manager_yields_no_key(cluster: Cluster) -> None:
    m1, m3 = cluster.managers[0], cluster.managers[2]
    assert_disk_yields_nothing(m1, cluster.unlock_key)  # the manager that initialized the swarm, running
    # The thief pulls the disk of a manager that joined: no shutdown, nothing cleaned up.
    m3.kill(signal.SIGKILL)
    assert_disk_yields_nothing(m3, cluster.unlock_key)

    # Put back, it stays locked and presents no identity: neither port hands out its certificate.
    m3.start()
    wait_until(lambda: m3.info().local_node_state == "locked", 20, 0.1, "m3 locked")
    mine = certificate(m3).public_bytes(serialization.Encoding.DER)
    assert presented_certificate(m3.port) is None and presented_certificate(m3.port + 1) is None
    # The same probe gets a running manager's certificate from both its ports.
    theirs = certificate(m1).public_bytes(serialization.Encoding.DER)
    assert presented_certificate(m1.port) == theirs and presented_certificate(m1.port + 1) == theirs

    # Unlocked, it serves both ports with its own certificate and takes part in the swarm again.
    m3.ok("swarm", "unlock", input=cluster.unlock_key + "\n")
    wait_until(lambda: presented_certificate(m3.port) == mine and presented_certificate(m3.port + 1) == mine,
               20, 0.1, "m3 serving its ports")
    m3.ok("secret", "create", "after-unlock", "-", input="v")
    wait_until(lambda: "after-unlock" in m1.ok("secret", "ls"), 20, 0.2, "m1 lists the secret created through m3")
    # Unlocking opened the key in memory only: the disk still yields nothing.
    assert_disk_yields_nothing(m3, cluster.unlock_key)


def wrapped_under(n: Node, new: str, old: str) -> bool:
    """``n``'s disk yields nothing without ``new`` and nothing with ``old``; its keys open with ``new``."""
    assert_disk_yields_nothing(n, new)
    return loot_disk(n.data_dir, (keys.parse_unlock_key(old),)) == ([], [])


def test_unlock_key_rotation_rewraps_every_managers_node_key(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    rotated = m1.ok("swarm", "unlock-key", "--rotate", "-q").strip()
    assert rotated != cluster.unlock_key
    old, cluster.unlock_key = cluster.unlock_key, rotated
    for n in cluster.managers:
        wait_until(partial(wrapped_under, n, rotated, old), 20, 0.2,
                   f"{n.name}'s keys wrapped under the new unlock key only")


def in_clear(n: Node) -> bool:
    """Without autolock a thief finds the node's TLS key, and a key file that opens the other two."""
    private, opened = loot_disk(n.data_dir)
    return public_der(certificate(n)) in [public_der(k) for k in private] and len(opened) == 2


def test_turning_autolock_off_and_on_rewraps_every_managers_keys(cluster: Cluster) -> None:
    m1, m2 = cluster.managers[0], cluster.managers[1]
    assert m1.ok("swarm", "update", "--autolock=false") == "Swarm updated.\n"
    for n in cluster.managers:
        wait_until(partial(in_clear, n), 20, 0.2, f"{n.name}'s keys as without autolock")
    assert "no unlock key is set" in m1.fails("swarm", "unlock-key")

    out = m1.ok("swarm", "update", "--autolock=true")
    found = re.search(r"SWMKEY-1-[A-Za-z0-9+/]{43}", out)
    assert out.startswith("Swarm updated.\n") and found, out
    old, cluster.unlock_key = cluster.unlock_key, found.group(0)
    for n in cluster.managers:
        wait_until(partial(wrapped_under, n, cluster.unlock_key, old), 20, 0.2,
                   f"{n.name}'s keys wrapped under the new unlock key only")
    # A manager restarted now is locked, and opens with the new key.
    m2.kill(signal.SIGKILL)
    m2.start()
    wait_until(lambda: m2.info().local_node_state == "locked", 20, 0.1, "m2 locked")
    assert presented_certificate(m2.port) is None and presented_certificate(m2.port + 1) is None
    m2.ok("swarm", "unlock", input=cluster.unlock_key + "\n")
    mine = certificate(m2).public_bytes(serialization.Encoding.DER)
    wait_until(lambda: presented_certificate(m2.port) == mine, 20, 0.1, "m2 serving its port")
