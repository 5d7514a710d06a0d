"""Disaster recovery on a node: ``swarm init --force-new-cluster`` on a manager that lost its
quorum, ``swarm backup`` on any manager, and ``swarm init --restore`` on an inactive node.

Both recoveries end in a one-manager swarm that keeps the whole state. The managers it no longer
counts are taken out of raft AND removed from the store (as ``node rm --force`` does): a node's
certificate admits it only while the store holds its record, so their old certificates open
nothing (no raft, no control API), and each may come back only as a new node, with a join token,
after ``swarm leave --force``. Keeping their records, as Docker does, would let a dead manager's
certificate ask to rejoin raft on its own. Workers keep their records, certificates and tasks:
they resume as soon as a manager answers at an address they know.

Run under the node's lifecycle lock (``Node.init`` calls in here).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from swarmsecrets import errors, ids, raft, validation
from swarmsecrets.ca import certs
from swarmsecrets.crypto import keys
from swarmsecrets.fsutil import write_private
from swarmsecrets.manager import state
from swarmsecrets.manager.datakey import DataKey, join_tokens
from swarmsecrets.manager.manager import Manager
from swarmsecrets.manager.nodeca import certificate_record
from swarmsecrets.manager.state.codec import decode_snapshot, encode_snapshot
from swarmsecrets.node import backup
from swarmsecrets.node.localapi import Backedup, InitOptions, Initialized
from swarmsecrets.node.nodedir import NodeState
from swarmsecrets.node.roles import Change, Role

if TYPE_CHECKING:
    from swarmsecrets.node.daemon import Node

log = logging.getLogger("swarmsecretsd")

# How long a recovered manager may take to elect itself and commit the removals.
RECOVERY_TIMEOUT = 30.0
# A backup file is read whole; a swarm's state at the command size cap is far below this.
MAX_BACKUP_BYTES = 4 * 1024 * 1024 * 1024


def _addresses(options: InitOptions, current: NodeState) -> tuple[str, str, str]:
    """(advertise, listen, raft) addresses: the options' where given, else the node's own."""
    if not options.advertise_addr:
        return current.advertise_addr, current.listen_addr, current.raft_addr
    advertise = validation.format_addr(*validation.validate_addr(options.advertise_addr, 0))
    listen = options.listen_addr or advertise
    validation.validate_addr(listen, 0)
    return advertise, listen, validation.raft_addr_for(advertise, options.raft_addr)


def _issue_own_cert(node: Node, ca: certs.RootCA, raft_addr: str) -> bytes:
    """A new key and certificate for this node, signed here with the CA key it holds, made its
    identity; returns the certificate."""
    key_pem, csr = certs.generate_key_and_csr()
    cert = certs.issue_node_cert(ca, csr, node_id=node.state.node_id, role="manager",
                                 cluster_id=node.state.cluster_id, raft_addr=raft_addr)
    node._hold_identity(cert, key_pem, roots=ca.cert_pem)
    return cert


async def _settle(node: Node, m: Manager, self_record: state.Node) -> None:
    """Before the TLS port opens: wait to lead the group of one, then remove every other manager
    from the store and record this node as it is now."""
    if not await asyncio.to_thread(m.raft.wait_ready, RECOVERY_TIMEOUT):  # the store holds the whole log
        raise errors.Unavailable("this manager did not become the leader of its one-manager swarm in time")
    for n in m.store.managers():
        if n.id != self_record.id:
            await node._propose_until_leader(m, state.RemoveNode(node_id=n.id))
            log.info("recovery: removed manager %s (%s) from the swarm", n.id, n.addr)
    if m.store.node(self_record.id) is None:
        await node._propose_until_leader(m, state.AddNode(node=self_record))
    else:
        await node._propose_until_leader(m, state.UpdateNode.describing(self_record))
    if node.node_cert is not None:  # what node inspect shows of its certificate
        await node._propose_until_leader(m, certificate_record(self_record.id, node.node_cert, m.ca.current.cert))


def _initialized(node: Node, m: Manager) -> Initialized:
    worker = join_tokens(m.store, m.data_key)["worker"]
    return Initialized(node_id=node.state.node_id,
                       worker_join_command=f"swarmsecrets swarm join --token {worker} {node.state.advertise_addr}")


# --- swarm init --force-new-cluster -------------------------------------------------------------------

async def force_new_cluster(node: Node, options: InitOptions) -> Initialized:
    """Docker's ``swarm init --force-new-cluster`` on a running manager: stop it, make its raft
    data a group of one (keeping every entry, see ``raft.force_new_cluster``), start it again,
    and remove the other managers from the store."""
    if node.role is Role.LOCKED:
        raise errors.SwarmLocked()
    if node.role is not Role.MANAGER:
        raise errors.FailedPrecondition("--force-new-cluster can only be used on a manager of a swarm")
    m = node.manager
    if m is None or node.node_cert is None:
        raise errors.Unavailable("the manager is not running: restart the daemon and try again")
    advertise, listen, raft_addr = _addresses(options, node.state)
    ring = m.data_key.ring
    dek, previous, ca = ring[0], ring[1:], m.ca.current
    assert ca.key_pem is not None
    cluster = m.store.cluster
    unlock = backup.manager_keys(m).unlock_key if cluster is not None and cluster.autolock else None
    as_of = keys.WrappedKeys(node.dir.keys_dir).as_of()
    log.warning("force-new-cluster: stopping the manager to make it a one-manager swarm")
    await node._stop_components()
    try:
        if raft_addr != node.state.raft_addr:
            _issue_own_cert(node, ca, raft_addr)  # the raft address is bound into the certificate
            node._save_identity((dek, ca.key_pem), unlock, as_of=as_of, previous_deks=previous)
        removed = await asyncio.to_thread(raft.force_new_cluster, node.dir.raft_dir, raft_addr)
        log.warning("force-new-cluster: raft members removed: %s", ", ".join(removed) or "none")
        node.state.advertise_addr, node.state.listen_addr, node.state.raft_addr = advertise, listen, raft_addr
        node.state.members = [raft_addr]
        node.dir.save(node.state)
        me = node._self_node_record("manager")
        m = await node._start_manager(dek, ca.key_pem, lambda m: _settle(node, m, me), previous_deks=previous)
    except BaseException:
        # Run what is on disk now (the old group, or the group of one): the command may be run again.
        if node.manager is None:
            try:
                await node._start_manager(dek, ca.key_pem, previous_deks=previous)
            except Exception as e:
                log.error("force-new-cluster: could not restart the manager: %s", e)
        raise
    await node._follow_availability()
    log.warning("force-new-cluster: this node is now the only manager of swarm %s", node.state.cluster_id)
    return _initialized(node, m)


# --- swarm backup -----------------------------------------------------------------------------------------

def _snapshot(m: Manager) -> dict[str, Any]:
    with m.store.lock:  # every apply holds it: the tables are those of one applied index
        return encode_snapshot(m.store.tables(), m.store.applied_index)


async def take_backup(node: Node, path: str) -> Backedup:
    """Write a backup of the swarm as this manager holds it after a read barrier (so every write
    acknowledged before the call is in it) to ``path``, atomically, mode 0600."""
    if not os.path.isabs(path):
        raise errors.InvalidArgument(f"backup path {path!r} is not absolute")
    if not os.path.isdir(os.path.dirname(path)):
        raise errors.InvalidArgument(f"cannot write {path}: no such directory")
    m = node.serving_manager()
    await m.proposer.barrier()
    cluster_keys = backup.manager_keys(m)
    snapshot = await asyncio.to_thread(_snapshot, m)
    index = int(snapshot["applied_index"])
    if cluster_keys.unlock_key is not None and m.store.cluster is not None and m.store.cluster.autolock:
        key, kind, shown = cluster_keys.unlock_key, backup.KEY_UNLOCK, ""
    else:
        key = keys.new_key()
        kind, shown = backup.KEY_BACKUP, keys.format_unlock_key(key)
    contents = backup.Contents(cluster_id=node.state.cluster_id, ca_cert=m.ca.current.cert_pem, keys=cluster_keys,
                               snapshot=snapshot, applied_index=index)
    data = await asyncio.to_thread(backup.encode, contents, key, kind)
    try:
        await asyncio.to_thread(write_private, path, data, tmp=f"{path}.tmp.{os.getpid()}")
    except OSError as e:
        raise errors.FailedPrecondition(f"cannot write {path}: {e.strerror}") from None
    log.info("backup of swarm %s at raft index %d written to %s", node.state.cluster_id, index, path)
    return Backedup(path=path, applied_index=index, backup_key=shown,
                    secrets=len(snapshot["state"]["secrets"]), nodes=len(snapshot["state"]["nodes"]))


# --- swarm init --restore ----------------------------------------------------------------------------------

def _read_backup(path: str, key_text: str) -> backup.Contents:
    """The backup's contents, all checked, before anything is written."""
    if not os.path.isabs(path):
        raise errors.InvalidArgument(f"backup path {path!r} is not absolute")
    key = keys.parse_unlock_key(key_text)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BACKUP_BYTES + 1)
    except OSError as e:
        raise errors.InvalidArgument(f"cannot read {path}: {e.strerror}") from None
    contents = backup.decode(data, key, path)
    try:
        decode_snapshot(contents.snapshot)
    except ValueError as e:
        raise errors.InvalidArgument(f"{path}: its state does not load: {e}") from None
    return contents


async def restore(node: Node, options: InitOptions) -> Initialized:
    """``swarm init --restore FILE``: a one-manager swarm from a backup (same cluster id, CA and
    data key), its raft group seeded with the backup's state, the backup's managers removed."""
    if node.role is not Role.INACTIVE:
        raise errors.FailedPrecondition(errors.ALREADY_IN_SWARM)
    if not options.advertise_addr:
        raise errors.InvalidArgument("--advertise-addr is required (HOST:PORT of this node's swarm port)")
    advertise, listen, raft_addr = _addresses(options, node.state)
    contents = await asyncio.to_thread(_read_backup, options.restore_path, options.restore_key)
    tables, index = decode_snapshot(contents.snapshot)
    cluster = tables.cluster
    if cluster is None:
        raise errors.InvalidArgument(f"{options.restore_path} holds no swarm")
    dek, previous, ca_key = contents.keys.data_keys[0], contents.keys.data_keys[1:], contents.keys.ca_key
    if DataKey(dek).key_id != cluster.key_id and cluster.key_id:
        raise errors.InvalidArgument(f"{options.restore_path} is damaged: its data key is not the swarm's")
    unlock = contents.keys.unlock_key if cluster.autolock else None
    ca = certs.RootCA(contents.ca_cert, ca_key)
    availability = validation.parse_join_availability(options.availability)
    async with node._undo():
        node.dir.wipe()
        node.dir.ensure()
        node.state = NodeState(node_id=ids.new_id(), cluster_id=contents.cluster_id, advertise_addr=advertise,
                               listen_addr=listen, raft_addr=raft_addr, members=[raft_addr],
                               autolock=unlock is not None)
        node.dir.write_identity(ca.cert_pem, _issue_own_cert(node, ca, raft_addr))
        node._save_identity((dek, ca_key), unlock, as_of=index, previous_deks=previous)
        await asyncio.to_thread(raft.seed, node.dir.raft_dir, raft_addr, contents.snapshot, max(index, 2))
        me = replace(node._self_node_record("manager"), availability=availability)
        m = await node._start_manager(dek, ca_key, lambda m: _settle(node, m, me), previous_deks=previous)
        node._become(Change.INIT)
    await node._follow_availability()
    log.warning("restored swarm %s from %s (raft index %d) as its only manager, node %s", contents.cluster_id,
                options.restore_path, index, node.state.node_id)
    return _initialized(node, m)


