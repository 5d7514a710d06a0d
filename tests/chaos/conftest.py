"""The chaos suite: real daemons in a network-namespace lab. Runs only as root where ``ip netns add``
works and nftables/iptables are installed; skipped with the reason otherwise."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: builds a netns lab and injects faults (root only, ~30 s each)")


@functools.cache
def lab_unavailable() -> str | None:
    """Why a lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "chaos tests need root (network namespaces, nftables, tmpfs mounts)"
    missing = [t for t in ("ip", "nft", "iptables") if shutil.which(t) is None]
    if missing:
        return f"chaos tests need {', '.join(missing)} (apt-get install -y nftables iptables iproute2)"
    probe = f"chaosprobe{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"chaos tests need 'ip netns add' to work: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chaos = [item for item in items if item.get_closest_marker("chaos")]
    reason = lab_unavailable() if chaos else None
    if reason:
        for item in chaos:
            item.add_marker(pytest.mark.skip(reason=reason))
