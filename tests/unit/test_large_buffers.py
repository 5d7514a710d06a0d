"""The daemon's malloc setting: a freed large buffer leaves the process instead of its heap."""

from __future__ import annotations

import subprocess
import sys

# Two rounds of a 24 MiB buffer built from small pieces and freed; prints the resident growth in MiB.
_PROBE = """
import sys
from swarmsecrets.heap import return_large_buffers
if sys.argv[1] == "tuned":
    return_large_buffers()
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
before = rss()
for _ in range(2):
    buf = b"".join([bytes(1024)] * (24 * 1024))
    del buf
print(rss() - before)
"""


def growth(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_freed_large_buffer_is_returned_to_the_system() -> None:
    assert growth("stock") >= 20  # glibc's default keeps the second buffer's pages (why the setting exists)
    assert growth("tuned") < 4
