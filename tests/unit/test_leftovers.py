"""The end-of-session check finds what the tests leave, including orphans whose parent is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import leftovers

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def test_an_orphan_of_a_test_is_still_found() -> None:
    # The shell exits at once; its background child is re-parented to this session (a subreaper).
    p = subprocess.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                       check=True)
    orphan = int(p.stdout)
    try:
        assert orphan in leftovers.descendants()
        assert f"process {orphan}: sleep 600" in leftovers.find(Path("/nonexistent-basetemp"), grace=0)
    finally:
        os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while orphan in leftovers.descendants():
        assert time.monotonic() < deadline, "the killed orphan is still listed"
        time.sleep(0.02)

