"""What a node remembers on disk: node.json round-trips, earlier files still load, bad roles are refused."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from swarmsecrets.node.nodedir import NodeDir, NodeState
from swarmsecrets.node.roles import Role


def test_state_round_trips_and_is_private(tmp_path: Path) -> None:
    d = NodeDir(str(tmp_path / "data"))
    d.ensure()
    assert d.load() == NodeState()
    state = NodeState(role=Role.WORKER, node_id="n1", cluster_id="c1", advertise_addr="10.0.0.2:2377",
                      remote_managers=["10.0.0.1:2377"])
    d.save(state)
    assert d.load() == state and d.load().role is Role.WORKER
    assert stat.S_IMODE(os.stat(d.state_path).st_mode) == 0o600


def test_a_node_json_written_before_the_role_enum_loads(tmp_path: Path) -> None:
    d = NodeDir(str(tmp_path))
    Path(d.state_path).write_text(json.dumps({
        "role": "manager", "node_id": "n1", "cluster_id": "c1", "advertise_addr": "10.0.0.1:2377",
        "listen_addr": "10.0.0.1:2377", "raft_addr": "10.0.0.1:2378", "members": ["10.0.0.1:2378"],
        "remote_managers": [], "autolock": True}))
    assert d.load().role is Role.MANAGER


@pytest.mark.parametrize("role", ["locked", "leaving", "boss"])
def test_a_role_a_node_cannot_resume_is_refused(tmp_path: Path, role: str) -> None:
    d = NodeDir(str(tmp_path))
    Path(d.state_path).write_text(json.dumps({"role": role}))
    with pytest.raises(ValueError):
        d.load()


def test_forgetting_manager_material_keeps_the_identity_and_wipe_keeps_nothing(tmp_path: Path) -> None:
    d = NodeDir(str(tmp_path))
    d.ensure()
    d.write_identity(b"ca", b"cert", b"key")
    for sub in (d.keys_dir, d.raft_dir):
        os.makedirs(sub)
        Path(sub, "f").write_bytes(b"x")
    d.save(NodeState(role=Role.MANAGER))
    d.forget_manager_material()
    assert not os.path.exists(d.keys_dir) and not os.path.exists(d.raft_dir)
    assert d.read(d.cert_path) == b"cert" and d.load().role is Role.MANAGER
    d.wipe()
    assert not os.path.exists(d.cert_dir) and d.load() == NodeState()


def test_the_clear_key_can_go_and_come_back(tmp_path: Path) -> None:
    d = NodeDir(str(tmp_path))
    d.ensure()
    d.write_identity(b"ca", b"cert", b"key")
    assert d.read_clear_key() == b"key"
    d.remove_clear_key()
    d.remove_clear_key()  # already gone: nothing to do
    assert d.read_clear_key() is None and d.read(d.cert_path) == b"cert"
    d.write_identity(b"ca", b"cert2")
    assert d.read_clear_key() is None and d.read(d.cert_path) == b"cert2"
