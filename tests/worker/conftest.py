"""Fixtures for the worker tests: a tmpfs secrets root that is unmounted again even when a test fails."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from swarmsecrets.worker.secretsfs import SecretsFS, has_cap_sys_admin

CAN_MOUNT = has_cap_sys_admin()
needs_mount = pytest.mark.skipif(
    not CAN_MOUNT, reason="needs root with CAP_SYS_ADMIN to mount tmpfs and enter mount namespaces"
)


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path``, parsed here rather than with the code under test."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def force_unmount(path: str) -> None:
    """Unmount everything under ``path``, also mounts stacked over it (umount -R takes only the top one)."""
    for _ in range(16):
        if not mounts_below(path):
            return
        subprocess.run(["umount", "-R", "-l", path], check=False, capture_output=True)


@pytest.fixture
def root() -> Iterator[str]:
    """A fresh secrets root on tmpfs: its own tmpfs mount as root, a dir in /dev/shm otherwise."""
    if CAN_MOUNT:
        path = tempfile.mkdtemp(prefix=f"swarmsecrets-test-{os.getpid()}-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", path], check=True)
    else:
        path = tempfile.mkdtemp(prefix="swarmsecrets-test-", dir="/dev/shm")
    try:
        yield path
    finally:
        force_unmount(path)
        subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
        assert not mounts_below(path), f"mounts left behind under {path}"


@pytest.fixture
def fs(root: str) -> SecretsFS:
    return SecretsFS(root)


@pytest.fixture
def host_run_secrets() -> Iterator[str]:
    """/run/secrets as the host sees it; restored afterwards even if a broken executor mounted over it."""
    path = "/run/secrets"
    existed = os.path.lexists(path)
    before = mounts_below(path)
    try:
        yield path
    finally:
        while len(mounts_below(path)) > len(before):
            subprocess.run(["umount", "-l", path], check=True)
        if not existed and os.path.isdir(path):
            os.rmdir(path)
