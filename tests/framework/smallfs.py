"""A small filesystem a test mounts over a data directory to run a node out of disk space.

``SmallFs(path)`` mounts a size-limited tmpfs at ``path`` (it behaves like a full disk where it
matters here: a write that finds no page fails with ENOSPC, partly written or not at all);
``fill()`` writes a ballast file until the filesystem refuses another byte, ``free()`` deletes
it. Leaving the ``with`` block unmounts it, lazily if a process still holds a file there.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from types import TracebackType


class SmallFs:
    def __init__(self, path: Path, size_mib: int = 8) -> None:
        self.path = path
        self.size_mib = size_mib
        self.ballast = path / "ballast"

    def __enter__(self) -> SmallFs:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m,mode=0700", "tmpfs",
                        str(self.path)], check=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], check=True)

    def fill(self) -> None:
        """Write the ballast until not one more byte fits (big chunks first, then single bytes)."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
                while True:
                    try:
                        if os.write(fd, chunk) < len(chunk):
                            break
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)
