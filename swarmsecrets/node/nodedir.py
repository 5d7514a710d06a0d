"""What a node remembers about itself across restarts, under its data dir.

    DIR/node.json                          role, ids, addresses (no secrets)
    DIR/certificates/swarm-root-ca.crt     the cluster's root CA
    DIR/certificates/swarm-node.crt        this node's certificate
    DIR/certificates/swarm-node.key        this node's TLS key in clear (0600, never leaves the node):
                                           workers, and managers without autolock only
    DIR/keys/manager-keys.json             managers: the data key and the CA key wrapped by the
                                           key-encryption key; with autolock the node's TLS key too
    DIR/keys/kek                           the key-encryption key (managers without autolock)
    DIR/raft/                              the raft journal, metadata and snapshot (managers)

With autolock the KEK is the operator's unlock key, which is never stored: nothing under DIR opens
a private key without it, and a restarted manager presents no identity until ``swarm unlock``
(see ``crypto/keys.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

from swarmsecrets.fsutil import fsync_dir, write_private
from swarmsecrets.node.roles import DURABLE_ROLES, Role


@dataclass
class NodeState:
    role: Role = Role.INACTIVE  # one of DURABLE_ROLES: a locked manager is a manager on disk
    node_id: str = ""
    cluster_id: str = ""
    advertise_addr: str = ""
    listen_addr: str = ""
    raft_addr: str = ""
    # Raft members this node starts with (the raft journal's own record wins once it has one).
    members: list[str] = field(default_factory=list)
    # Managers' control addresses, for workers and for leaving.
    remote_managers: list[str] = field(default_factory=list)
    autolock: bool = False


class NodeDir:
    def __init__(self, data_dir: str) -> None:
        self.root = os.path.abspath(data_dir)
        self.state_path = os.path.join(self.root, "node.json")
        self.cert_dir = os.path.join(self.root, "certificates")
        self.keys_dir = os.path.join(self.root, "keys")
        self.raft_dir = os.path.join(self.root, "raft")
        self.ca_path = os.path.join(self.cert_dir, "swarm-root-ca.crt")
        self.cert_path = os.path.join(self.cert_dir, "swarm-node.crt")
        self.key_path = os.path.join(self.cert_dir, "swarm-node.key")

    def ensure(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)

    def load(self) -> NodeState:
        try:
            with open(self.state_path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return NodeState()
        state = NodeState(**doc)
        state.role = Role(state.role)
        if state.role not in DURABLE_ROLES:
            raise ValueError(f"{self.state_path}: role {state.role!r} is not one a node can resume")
        return state

    def save(self, state: NodeState) -> None:
        write_private(self.state_path, json.dumps(asdict(state), indent=2).encode())

    def write_identity(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes | None = None) -> None:
        """The root CA and this node's certificate, and its key in clear if given."""
        os.makedirs(self.cert_dir, mode=0o700, exist_ok=True)
        if key_pem is not None:
            write_private(self.key_path, key_pem)
        write_private(self.ca_path, ca_pem)
        write_private(self.cert_path, cert_pem)

    def read_clear_key(self) -> bytes | None:
        try:
            return self.read(self.key_path)
        except FileNotFoundError:
            return None

    def remove_clear_key(self) -> None:
        """Drop the node key's clear copy (it is wrapped with the manager keys now), durably."""
        try:
            os.unlink(self.key_path)
        except FileNotFoundError:
            return
        fsync_dir(self.cert_dir)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def forget_manager_material(self) -> None:
        """Drop what only a manager keeps: the wrapped keys and the raft data."""
        for d in (self.keys_dir, self.raft_dir):
            shutil.rmtree(d, ignore_errors=True)

    def wipe(self) -> None:
        """Forget the swarm: identity, keys, raft data. Leaves an inactive node."""
        for d in (self.cert_dir, self.keys_dir, self.raft_dir):
            shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(self.state_path):
            os.unlink(self.state_path)
