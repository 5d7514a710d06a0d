"""Who is on the other end of the CLI socket: the kernel's SO_PEERCRED, handed to gRPC.

gRPC accepts its own connections and shows a unix peer only as its address, which a CLI never
binds. So the daemon accepts on the public socket itself, reads the peer's credentials, and relays
the bytes to gRPC's socket in a private directory (0700, beside the public socket) over a connection whose address the
kernel picks (Linux autobind). That address is what ``context.peer()`` shows; ``uid_of`` maps it
back to the uid the kernel gave for the accepted connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_UCRED = struct.Struct("3i")  # pid, uid, gid


class PeerCredRelay:
    """Serves ``public_path`` and relays each connection to gRPC at ``grpc_path``."""

    def __init__(self, public_path: str) -> None:
        self.public_path = public_path
        self._dir = ""
        self._uids: dict[str, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def uid_of(self, peer: str) -> int | None:
        """The uid behind a gRPC peer string (``unix-abstract:…``), while its connection lasts."""
        return self._uids.get(peer)

    def prepare(self) -> str:
        """Make the private directory afresh (one an earlier run left goes); returns the path gRPC
        is to listen on."""
        head, tail = os.path.split(self.public_path)
        self._dir = os.path.join(head, f".{tail}.grpc")
        shutil.rmtree(self._dir, ignore_errors=True)
        os.mkdir(self._dir, 0o700)
        os.chmod(self._dir, 0o700)  # whatever the umask
        return self.grpc_path

    @property
    def grpc_path(self) -> str:
        return os.path.join(self._dir, "s")

    async def start(self) -> None:
        """Listen on the public path (the caller sets its mode: the socket is made with the umask)."""
        self._server = await asyncio.start_unix_server(self._accepted, self.public_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock: socket.socket = writer.get_extra_info("socket")
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        key = ""
        try:
            inner.bind("")  # autobind: a unique abstract address, which gRPC reports as the peer
            key = "unix-abstract:" + inner.getsockname()[1:].decode()
            self._uids[key] = uid
            inner.setblocking(False)
            await asyncio.get_running_loop().sock_connect(inner, self.grpc_path)
            r2, w2 = await asyncio.open_unix_connection(sock=inner)
            self._writers.add(w2)
            try:
                await asyncio.gather(_pipe(reader, w2), _pipe(r2, writer))
            finally:
                self._writers.discard(w2)
                w2.close()
        except OSError as e:
            log.debug("local API connection ended: %s", e)
        finally:
            self._uids.pop(key, None)
            inner.close()
            writer.close()
            self._writers.discard(writer)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()
