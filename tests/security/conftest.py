"""Attacks against real processes: each test plays an attacker (a hostile worker, task, joiner, disk
thief or network peer) against running daemons and checks that the trust boundary holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three managers on loopback, shared by the tests of one module."""
    with Cluster(Path(tmp_path_factory.mktemp("cluster"))).started() as c:
        yield c
