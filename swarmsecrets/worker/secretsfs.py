"""Secrets on a worker: one tmpfs per task, one file per target, atomic swaps, nothing on disk.

Layout under the root (the agent's run dir, e.g. ``/run/swarmsecrets``)::

    tasks/<task-id>/            a tmpfs per task: nodev,nosuid,noexec (+noswap where the kernel has it),
                                size-limited, root dir 0700 owned by the task's user, read-only but while
                                being updated
    tasks/<task-id>/<target>    one file per target (not per secret id), written atomically
    services/<service-name>     symlink to this node's newest task dir of that service

Only ``tasks/`` and ``services/`` are ours: whatever else the root holds is left alone.
Everything inside a task dir is reached through directory file descriptors with ``O_NOFOLLOW``,
because the dir belongs to the task's user, who could plant symlinks to make root write elsewhere.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# How long sealing a task's tmpfs read-only waits for readers of replaced files to close them.
SEAL_PATIENCE = 0.5

TMPFS_MAGIC = 0x01021994
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
CLONE_NEWNS = 0x20000
CLONE_NEWPID = 0x20000000
CAP_SYS_ADMIN = 21

MIN_TMPFS_SIZE = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SHM_DIR = "/dev/shm"
SECURE_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

_TMP_PREFIX = ".swarmsecrets-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


class NotTmpfsError(RuntimeError):
    """The secrets root is on a filesystem that would keep secrets on disk."""


class _Statfs(ctypes.Structure):
    """``struct statfs`` of 64-bit Linux (``os.statvfs`` has no ``f_type``)."""

    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def _raise_errno(what: str, path: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _statfs(path: str) -> _Statfs:
    st = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(st)) != 0:
        _raise_errno("statfs", path)
    return st


def fs_type(path: str) -> int:
    """The filesystem magic of ``path`` (``TMPFS_MAGIC`` for tmpfs)."""
    return int(_statfs(path).f_type) & 0xFFFFFFFF


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2) without forking mount(8)."""

    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        _raise_errno("mount" + (f" -t {fstype}" if fstype else "") + (f" -o {data}" if data else ""), target)


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(os.fsencode(target), flags) != 0:
        _raise_errno("umount", target)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        _raise_errno("unshare", "/")


def has_cap_sys_admin() -> bool:
    """Whether this process may mount (root in a container may lack it, so euid alone is not enough)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


@dataclass(frozen=True)
class MountInfo:
    mount_point: str
    fstype: str
    options: frozenset[str]
    super_options: frozenset[str]


def _unescape(field_: bytes) -> str:
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_))


def read_mountinfo() -> list[MountInfo]:
    """This mount namespace's mounts, in mount order."""
    result = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.rstrip(b"\n").partition(b" - ")
            fields, rfields = left.split(b" "), right.split(b" ")
            result.append(
                MountInfo(
                    mount_point=_unescape(fields[4]),
                    fstype=rfields[0].decode(),
                    options=frozenset(fields[5].decode().split(",")),
                    super_options=frozenset(rfields[2].decode().split(",")),
                )
            )
    return result


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest and most recent first (the order to unmount them in)."""
    prefix = path.rstrip("/") + "/"
    points = [m.mount_point for m in reversed(read_mountinfo()) if (m.mount_point + "/").startswith(prefix)]
    return sorted(points, key=lambda p: -p.count("/"))


def _umount_quietly(point: str) -> None:
    """Unmount, lazily if busy (a task may still have a file open); gone already is fine."""
    try:
        umount(point)
    except OSError as e:
        if e.errno == errno.EBUSY:
            umount(point, MNT_DETACH)
        elif e.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def _unmount_until_gone(base: str, unwanted: Callable[[str], bool]) -> None:
    """Unmount every unwanted mount point under ``base``, including mounts stacked on one another."""
    for _ in range(64):
        points = [p for p in mounts_under(base) if unwanted(p)]
        if not points:
            return
        for point in points:
            _umount_quietly(point)
    raise OSError(errno.EBUSY, f"mounts under {base} keep coming back", base)


def unmount_all(path: str) -> None:
    """Unmount everything at or below ``path``."""
    _unmount_until_gone(path, lambda _p: True)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _mkdir(path: str, mode: int) -> None:
    """mkdir with exactly ``mode``: the umask must not narrow a directory tasks have to traverse."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    os.chmod(path, mode, follow_symlinks=False)


def _pages(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


def _size_for(nbytes: int) -> int:
    """tmpfs size for ``nbytes`` of page-rounded payload: room for a full swap of every file, at least 1 MiB."""
    return _pages(max(MIN_TMPFS_SIZE, 2 * nbytes))


def validate_target(target: str) -> None:
    """Raise ValueError unless ``target`` is a normalized relative path that stays inside the task dir."""
    parts = target.split("/") if isinstance(target, str) else []
    if (
        not parts
        or target.startswith("/")
        or "\0" in target
        or any(p in ("", ".", "..") or len(os.fsencode(p)) > 255 for p in parts)
    ):
        raise ValueError(
            f"invalid secret target {target!r}: must be a relative path without '.', '..' or empty components"
        )


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"invalid {kind} {value!r}")


@dataclass(frozen=True)
class FileSpec:
    """One file to materialize. ``data`` is kept out of repr so a logged spec never shows a secret."""

    target: str
    data: bytes = field(repr=False)
    uid: int
    gid: int
    mode: int


def _validate_files(files: Iterable[FileSpec]) -> dict[str, FileSpec]:
    specs: dict[str, FileSpec] = {}
    for spec in files:
        validate_target(spec.target)
        if not isinstance(spec.data, bytes):
            raise ValueError(f"secret target {spec.target!r}: data must be bytes")
        for name, value, top in (("uid", spec.uid, _MAX_ID), ("gid", spec.gid, _MAX_ID), ("mode", spec.mode, 0o777)):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"secret target {spec.target!r}: invalid {name} {value!r}")
        if spec.target in specs:
            raise ValueError(f"duplicate secret target {spec.target!r}")
        specs[spec.target] = spec
    dirs = _ancestors(specs)
    for target in specs:
        if target in dirs:
            raise ValueError(f"secret target {target!r} is also a directory of another target")
    return specs


def _ancestors(targets: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for target in targets:
        parts = target.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return dirs


@dataclass
class _Task:
    service: str | None
    seq: int


class SecretsFS:
    """The secrets of this node's tasks, under ``root``.

    With CAP_SYS_ADMIN each task gets its own size-limited tmpfs. Without it nothing can be mounted:
    task dirs are plain 0700 dirs (on ``root`` if it is tmpfs, else in a private dir under /dev/shm),
    and ``fallback_reason`` says so.
    """

    def __init__(self, root: str, *, allow_non_tmpfs: bool = False) -> None:
        os.makedirs(root, mode=0o755, exist_ok=True)
        self.root = os.path.realpath(root)
        on_tmpfs = fs_type(self.root) == TMPFS_MAGIC
        if not on_tmpfs and not allow_non_tmpfs:
            raise NotTmpfsError(
                f"secrets root {self.root} is not on tmpfs; refusing to write secrets to disk "
                "(use --dev-allow-non-tmpfs for development)"
            )
        self.can_mount = has_cap_sys_admin()
        self.services_dir = os.path.join(self.root, "services")
        self._private: str | None = None
        if not self.can_mount and not on_tmpfs and fs_type(SHM_DIR) == TMPFS_MAGIC:
            digest = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:12]
            self._private = os.path.join(SHM_DIR, f"swarmsecrets-{os.geteuid()}-{digest}")
        self.tasks_dir = os.path.join(self._private or self.root, "tasks")
        self.fallback_reason: str | None = None
        if not self.can_mount:
            where = "tmpfs" if self._private or on_tmpfs else "NOT tmpfs: secrets go to disk"
            self.fallback_reason = (
                f"no CAP_SYS_ADMIN (euid {os.geteuid()}): cannot mount a tmpfs per task; task dirs are plain 0700 "
                f"dirs without size limit in {self.tasks_dir} ({where}); file owners are set only where permitted"
            )
            log.warning("%s", self.fallback_reason)
        elif not on_tmpfs:
            log.warning("secrets root %s is not on tmpfs (allowed for development); task dirs are tmpfs", self.root)
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._seq = itertools.count()
        self._noswap = True
        self._warned_chown = False

    # --- public API -------------------------------------------------------------------------------

    def task_dir(self, task_id: str) -> str:
        _check_name("task id", task_id)
        return os.path.join(self.tasks_dir, task_id)

    def list_tasks(self) -> list[str]:
        try:
            return sorted(os.listdir(self.tasks_dir))
        except FileNotFoundError:
            return []

    def materialize(
        self, task_id: str, service_name: str, files: Iterable[FileSpec], *, owner: tuple[int, int] | None = None
    ) -> str:
        """Make the task's dir hold exactly ``files``; return the dir.

        Changed files are renamed over the old ones (a reader sees the old or the new content, never
        nothing), unlisted ones are removed after; the tmpfs is read-only again when this returns.
        ``owner`` is the uid/gid the task runs as: the dir is 0700, so the task can only reach its
        files if the dir is its own (None: the agent's user). A new task whose first materialization
        fails is removed again, as Docker does.
        """
        path = self.task_dir(task_id)
        _check_name("service name", service_name)
        specs = _validate_files(files)
        if owner is not None and (len(owner) != 2 or not all(isinstance(i, int) and 0 <= i <= _MAX_ID for i in owner)):
            raise ValueError(f"invalid owner {owner!r}")
        new_bytes = sum(_pages(len(s.data)) for s in specs.values())
        with self._lock:
            known = self._tasks.get(task_id)
            if known is not None and known.service not in (None, service_name):
                raise ValueError(f"task {task_id} belongs to service {known.service}, not {service_name}")
            is_new = known is None and not os.path.lexists(path)
            try:
                self._ensure_layout()
                self._prepare_dir(path, new_bytes)
                self._fill(path, specs, new_bytes, owner)
            except BaseException:
                if is_new:
                    self._destroy(path)
                raise
            if known is None:
                self._tasks[task_id] = _Task(service_name, next(self._seq))
            else:
                known.service = service_name
            self._sync_services()
        return path

    def remove_task(self, task_id: str) -> None:
        """Unmount and delete the task's secrets; idempotent."""
        path = self.task_dir(task_id)
        with self._lock:
            self._destroy(path)
            self._tasks.pop(task_id, None)
            self._sync_services()

    def wipe(self) -> None:
        """Remove every task and service link (the node left the swarm or was removed)."""
        with self._lock:
            for path in (self.tasks_dir, self.services_dir):
                self._destroy(path)
            if self._private:
                _remove_path(self._private)
            self._tasks.clear()

    def recover(self, keep: Collection[str] = ()) -> list[str]:
        """Clean up after an earlier run: drop every task not in ``keep``, plus stray mounts; return the dropped ids.

        Kept tasks must still be intact tmpfs mounts (when mounting is possible); their service is
        taken from the service links pointing at them.
        """
        wanted = set(keep)
        with self._lock:
            if self.can_mount:
                # only a task's own tmpfs is kept, not what is mounted inside it or over tasks/
                _unmount_until_gone(self.tasks_dir, lambda p: os.path.relpath(p, self.tasks_dir) not in wanted)
                if os.path.isdir(self.services_dir):
                    unmount_all(self.services_dir)
            dropped = []
            for task_id in self.list_tasks():
                path = os.path.join(self.tasks_dir, task_id)
                intact = not self.can_mount or os.path.ismount(path)
                if task_id not in wanted or not intact or not _NAME_RE.match(task_id):
                    self._destroy(path)
                    dropped.append(task_id)
            self._tasks = {}
            services = self._linked_services()
            for task_id in self.list_tasks():
                self._tasks[task_id] = _Task(services.get(task_id), next(self._seq))
            self._sync_services()
            return dropped

    # --- internals --------------------------------------------------------------------------------

    def _linked_services(self) -> dict[str, str]:
        """task id -> service, from the service links on disk."""
        result: dict[str, str] = {}
        try:
            names = os.listdir(self.services_dir)
        except FileNotFoundError:
            return result
        for name in names:
            link = os.path.join(self.services_dir, name)
            if os.path.islink(link):
                target = os.path.normpath(os.path.join(self.services_dir, os.readlink(link)))
                if os.path.dirname(target) == self.tasks_dir:
                    result[os.path.basename(target)] = name
        return result

    def _ensure_layout(self) -> None:
        if self._private:
            try:
                os.mkdir(self._private, 0o700)
            except FileExistsError:
                st = os.lstat(self._private)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                    raise RuntimeError(f"{self._private} exists and is not a directory of uid {os.geteuid()}") from None
            os.chmod(self._private, 0o700)
        _mkdir(self.tasks_dir, 0o711)
        _mkdir(self.services_dir, 0o755)

    def _prepare_dir(self, path: str, new_bytes: int) -> None:
        if not self.can_mount:
            _mkdir(path, 0o700)
            return
        if os.path.ismount(path):
            return
        _remove_path(path)  # a leftover plain dir would be shadowed by the mount, not cleaned
        os.mkdir(path, 0o700)
        self._mount_tmpfs(path, _size_for(new_bytes))
        if fs_type(path) != TMPFS_MAGIC:
            raise NotTmpfsError(f"{path} is not tmpfs after mounting it; refusing to write secrets there")

    def _mount_tmpfs(self, path: str, size: int) -> None:
        data = f"size={size},mode=0700"
        if self._noswap:
            try:
                mount("tmpfs", path, "tmpfs", SECURE_FLAGS, data + ",noswap")
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._noswap = False
                log.warning("tmpfs noswap needs Linux >= 6.4; secrets may be swapped out on this kernel")
        mount("tmpfs", path, "tmpfs", SECURE_FLAGS, data)

    def _remount(self, path: str, flags: int, size: int | None = None) -> None:
        info = next(m for m in reversed(read_mountinfo()) if m.mount_point == path)
        data = [f"size={size}"] if size else []
        if "noswap" in info.super_options:
            data.append("noswap")  # tmpfs refuses to drop it on remount
        mount(None, path, None, MS_REMOUNT | SECURE_FLAGS | flags, ",".join(data) or None)

    def _unseal(self, path: str, new_bytes: int) -> None:
        """Remount read-write, bigger if the current files plus the new ones might not fit while being swapped."""
        st = _statfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_bsize
        fits = used + new_bytes + PAGE_SIZE <= st.f_blocks * st.f_bsize
        self._remount(path, 0, None if fits else _size_for(used + new_bytes))

    def _seal(self, path: str) -> None:
        """Read-only between updates, as Docker does: not even the dir's owner (the task's user) can change a file.

        The kernel refuses (EBUSY) while a file replaced by this update is still open: a task reading its
        old secret holds it. That wait is the reader's, so after SEAL_PATIENCE the mount stays writable
        (only by the task's own user, for its own files) until the next update seals it."""
        deadline = time.monotonic() + SEAL_PATIENCE
        while True:
            try:
                self._remount(path, MS_RDONLY)
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                if time.monotonic() >= deadline:
                    log.warning("%s stays writable until its next update: a replaced secret file is still open", path)
                    return
                time.sleep(0.01)

    def _fill(self, path: str, specs: dict[str, FileSpec], new_bytes: int, owner: tuple[int, int] | None) -> None:
        if self.can_mount:
            self._unseal(path, new_bytes)
        dfd = os.open(path, _DIR_FLAGS)
        try:
            uid, gid = owner if owner is not None else (os.geteuid(), os.getegid())
            self._chown(dfd, uid, gid, path)
            os.fchmod(dfd, 0o700)
            for spec in specs.values():
                self._write(dfd, spec)
            _prune(dfd, "", set(specs), _ancestors(specs))
        finally:
            os.close(dfd)
            if self.can_mount:
                self._seal(path)

    def _chown(self, fd: int, uid: int, gid: int, what: str) -> None:
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            if self.can_mount:
                raise
            if not self._warned_chown:
                self._warned_chown = True
                log.warning("cannot chown %s to %d:%d as euid %d; owners left as is", what, uid, gid, os.geteuid())

    def _write(self, dfd: int, spec: FileSpec) -> None:
        *parents, name = spec.target.split("/")
        pfd = _open_parents(dfd, parents)
        try:
            if _unchanged(pfd, name, spec):
                return
            tmp = _TMP_PREFIX + secrets.token_hex(8)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0, dir_fd=pfd)
            try:
                try:
                    self._chown(fd, spec.uid, spec.gid, spec.target)
                    os.fchmod(fd, spec.mode)
                    write_all(fd, spec.data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                except IsADirectoryError:  # the target was a directory in the previous set
                    shutil.rmtree(name, dir_fd=pfd)
                    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=pfd)
                except FileNotFoundError:
                    pass
                raise
        finally:
            if pfd != dfd:
                os.close(pfd)

    def _destroy(self, path: str) -> None:
        if self.can_mount and os.path.lexists(path):
            unmount_all(path)
        _remove_path(path)

    def _sync_services(self) -> None:
        """Point each service link at the service's newest task; drop links (and temp links) of no task."""
        newest: dict[str, tuple[int, str]] = {}
        for task_id, task in self._tasks.items():
            if task.service is not None and task.seq >= newest.get(task.service, (-1, ""))[0]:
                newest[task.service] = (task.seq, task_id)
        if not os.path.isdir(self.services_dir):
            return  # never materialized anything, or wiped: no tasks either
        for name in os.listdir(self.services_dir):
            if name not in newest:
                _remove_path(os.path.join(self.services_dir, name))
        for service, (_seq, task_id) in newest.items():
            link = os.path.join(self.services_dir, service)
            target = os.path.relpath(self.task_dir(task_id), self.services_dir)
            if os.path.islink(link) and os.readlink(link) == target:
                continue
            tmp = os.path.join(self.services_dir, _TMP_PREFIX + secrets.token_hex(8))
            os.symlink(target, tmp)
            try:
                os.replace(tmp, link)
            except BaseException:
                os.unlink(tmp)
                raise


def _open_subdir(dfd: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=dfd)  # a file or symlink where the new set needs a directory
    os.mkdir(name, 0o755, dir_fd=dfd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    os.fchmod(fd, 0o755)
    return fd


def _open_parents(dfd: int, parts: list[str]) -> int:
    fd = dfd
    try:
        for part in parts:
            sub = _open_subdir(fd, part)
            if fd != dfd:
                os.close(fd)
            fd = sub
    except BaseException:
        if fd != dfd:
            os.close(fd)
        raise
    return fd


def _unchanged(pfd: int, name: str, spec: FileSpec) -> bool:
    """Whether the file is already exactly as specified: rewriting it would only wake file watchers."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_size != len(spec.data)
        or stat.S_IMODE(st.st_mode) != spec.mode
        or (st.st_uid, st.st_gid) != (spec.uid, spec.gid)
    ):
        return False
    # The dir belongs to the task's user, who may have swapped the file for a FIFO or a device since the
    # stat: such an open must not block the agent, and only a regular file is ever read.
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(spec.data) + 1) == spec.data  # a short read only costs a rewrite
    finally:
        os.close(fd)


def _prune(dfd: int, prefix: str, files: set[str], dirs: set[str]) -> None:
    """Remove everything under ``dfd`` that is neither a listed file nor a directory leading to one."""
    with os.scandir(dfd) as it:
        entries = list(it)
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            if rel in dirs:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    _prune(sub, rel + "/", files, dirs)
                finally:
                    os.close(sub)
            else:
                shutil.rmtree(entry.name, dir_fd=dfd)
        elif rel not in files:
            os.unlink(entry.name, dir_fd=dfd)
