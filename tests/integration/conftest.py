from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(Path(tmp_path_factory.mktemp("cluster"))).started() as c:
        yield c
