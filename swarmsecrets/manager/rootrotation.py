"""A manager's part in a root CA rotation (see ``ca.rotation``).

Every manager follows the cluster record as it applies it: its trusted roots (the node's TLS
material and its CA file) become the record's bundle, its CA becomes the new root once the
rotation finishes (the key comes sealed in the finishing command, never in clear), it renews its
own certificate when a rotation starts, and it reports which roots it trusts. The leader ends the
rotation once every node that is not down holds a certificate from the new root; any manager
that becomes leader picks this up, as everything it needs is in the replicated state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from cryptography import x509

from swarmsecrets import errors
from swarmsecrets.ca import rotation
from swarmsecrets.ca.material import TLSMaterial, issuer_key_id
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader

log = logging.getLogger(__name__)

# How often the leader looks at the nodes' certificates while a rotation runs, at the least.
CHECK_INTERVAL = 1.0


class TrustedRoots:
    """The roots the swarm trusts now, as parsed certificates, read from the cluster record (the
    node's own root until the record exists): what ``ca.authz`` checks every peer against."""

    def __init__(self, store: StoreReader, fallback: x509.Certificate) -> None:
        self._store = store
        self._fallback = (fallback,)
        self._cached: tuple[str, tuple[x509.Certificate, ...]] = ("", self._fallback)

    def __call__(self) -> Sequence[x509.Certificate]:
        cluster = self._store.cluster
        if cluster is None:
            return self._fallback
        bundle = cluster.trust_bundle()
        if self._cached[0] != bundle:
            self._cached = (bundle, tuple(x509.load_pem_x509_certificates(bundle.encode())))
        return self._cached[1]


def rotation_done(cluster: state.Cluster, nodes: Sequence[state.Node]) -> bool:
    """Whether every node that is not down holds a certificate from the rotation's new root."""
    if cluster.root_rotation is None:
        return False
    want = issuer_key_id(x509.load_pem_x509_certificate(cluster.root_rotation.ca_cert.encode()))
    return all(n.cert_issuer_key == want for n in nodes if n.status != "down")


def cluster_progress(cluster: state.Cluster, nodes: Sequence[state.Node]) -> rotation.Progress:
    """The rotation's progress over the nodes that are not down (a down node does not hold the
    rotation back, nor the command that follows it)."""
    desired = x509.load_pem_x509_certificate(cluster.desired_root().encode())
    return rotation.progress(issuer_key_id(desired), rotation.bundle_digest(cluster.desired_root().encode()),
                             ((n.cert_issuer_key, n.trust_roots) for n in nodes if n.status != "down"),
                             cluster.root_rotation is not None)


class RootRotationFollower:
    """Wired by the manager: ``on_apply`` runs on the raft thread, ``run`` on the event loop.

    ``on_new_ca_key(key_pem, index)`` re-wraps the manager's keys on disk with the new CA key;
    ``save_roots(bundle)`` writes the node's CA file; ``renew_now()`` asks for a certificate from
    the CA that signs now."""

    def __init__(self, *, store: StoreReader, proposer: Proposer, sealer: Sealer, ca: rotation.SwarmCA,
                 material: TLSMaterial, node_id: str, save_roots: Callable[[bytes], None],
                 on_new_ca_key: Callable[[bytes, int], None], renew_now: Callable[[], None]) -> None:
        self.store = store
        self.proposer = proposer
        self.sealer = sealer
        self.ca = ca
        self.material = material
        self.save_roots = save_roots
        self.node_id = node_id
        self.on_new_ca_key = on_new_ca_key
        self.renew_now = renew_now
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    def on_apply(self, event: state.Applied) -> None:
        try:
            self._follow(event)
        except Exception:  # the raft thread must go on applying; the next change tries again
            log.exception("could not follow the swarm's root CA at index %d", event.index)

    def _follow(self, event: state.Applied) -> None:
        cmd = event.command
        if not event.ok or not isinstance(cmd, state.InitCluster | state.StartRootRotation | state.FinishRootRotation):
            if event.ok and isinstance(cmd, state.RecordNodeCert | state.UpdateNode | state.RemoveNode):
                self.loop.call_soon_threadsafe(self._wake.set)
            return
        cluster = self.store.cluster
        if cluster is None:
            return
        if isinstance(cmd, state.FinishRootRotation):
            self.ca.finish(cmd.root.encode(), self.sealer.unseal(cmd.ca_key))
            self.on_new_ca_key(self.sealer.unseal(cmd.ca_key), event.index)
            log.info("root CA rotation finished: the old root is no longer trusted")
        self.ca.follow(cluster.root_ca_cert.encode())
        bundle = cluster.trust_bundle().encode()
        if self.material.current().roots != bundle:
            self.save_roots(bundle)
            self.material.replace(roots=bundle)
        if isinstance(cmd, state.StartRootRotation):
            log.info("root CA rotation started: renewing this manager's certificate from the new root")
            self.loop.call_soon_threadsafe(self.renew_now)
        self.loop.call_soon_threadsafe(self._wake.set)

    async def _report_trust(self) -> None:
        digest = rotation.bundle_digest(self.material.current().roots)
        node = self.store.node(self.node_id)
        if node is None or node.trust_roots == digest:
            return
        cmd = state.SetTrustRoots(node_id=self.node_id, trust_roots=digest)
        if any(m.state_version == 0 for m in self.store.managers()):
            # A manager that just joined has not advertised its state version yet (it does at
            # once); the report waits for it rather than being refused as if the swarm were mixed.
            return
        state.require_supported(cmd, self.store.managers())
        await self.proposer.propose(cmd)

    async def _finish_if_done(self) -> None:
        cluster = self.store.cluster
        if cluster is None or cluster.root_rotation is None or not self.proposer.status().is_leader:
            return
        if rotation_done(cluster, self.store.nodes()):
            rot = cluster.root_rotation
            await self.proposer.propose(state.FinishRootRotation(root=rot.ca_cert, ca_key=rot.ca_key))

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._report_trust()
                await self._finish_if_done()
            except errors.SwarmError as e:
                log.info("root CA rotation: %s (will retry)", e)
            try:
                await asyncio.wait_for(self._wake.wait(), CHECK_INTERVAL)
            except TimeoutError:
                pass
