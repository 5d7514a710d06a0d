"""Run a service's command as a task: its secrets read-only at /run/secrets, restarted with backoff when it exits.

The command runs through a small helper (this module, re-executed) that, with CAP_SYS_ADMIN, enters new
mount and PID namespaces: it bind-mounts the task's secrets dir read-only at /run/secrets, hides the
secrets root and the daemon's state under empty read-only mounts, gives the task its own /dev (no disks)
and a read-only /sys, and forks PID 1 of the new namespace. PID 1 mounts a /proc of that namespace only
(``/proc/sys`` read-only), forks the command, reaps, and exits with the command's status. The command
drops to the task's user, keeps only ``TASK_CAPABILITIES`` if it stays root (never CAP_SYS_ADMIN, so it
cannot unmount what hides the rest), runs with ``no_new_privs`` and without core dumps. The mounts exist
only in that namespace; the host's /run/secrets stays an empty directory. A helper rather than
``preexec_fn`` because the agent is multi-threaded, and forked children of threaded processes must not
run arbitrary Python.

A task never outlives its agent: a restarted agent cannot adopt the tasks of the one before (it wipes
their secrets and starts afresh), so a task left running would hold no secrets and no supervisor. The
helper gets SIGKILL when the thread that started it ends (that thread supervises the task until it
exits, so only the agent's death fires it), PID 1 gets SIGKILL when the helper dies, and the kernel kills
every process of a PID namespace whose PID 1 is gone. The command cannot break the chain: PID 1 ignores
signals from inside its namespace and cannot be traced by it (not dumpable, and it holds capabilities the
command lacks).

Without CAP_SYS_ADMIN the helper skips the namespaces, the command finds its secrets through
``$SWARMSECRETS_SECRETS_DIR``, and ``fallback_reason`` says so.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import os
import resource
import signal as signals
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from swarmsecrets.logfmt import event
from swarmsecrets.worker import tasklogs
from swarmsecrets.worker.secretsfs import (
    CLONE_NEWNS,
    CLONE_NEWPID,
    MS_BIND,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    SECURE_FLAGS,
    has_cap_sys_admin,
    mount,
    unshare,
    write_all,
)

log = logging.getLogger(__name__)

SECRETS_MOUNT = "/run/secrets"
SECRETS_DIR_ENV = "SWARMSECRETS_SECRETS_DIR"
OUTPUT_TAIL = 64 * 1024

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# -I and an empty environment: the task's (PYTHONPATH, PYTHONHOME…) must not steer the root helper, and
# Python's locale coercion must not leak LC_CTYPE into the task. The task's environment comes through a pipe.
_HELPER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from swarmsecrets.worker.executor import helper_main; sys.exit(helper_main(sys.argv[2:]))"
)


class TaskStartError(RuntimeError):
    """The command could not be started (setup or exec failed); the text says why."""


def _exit_code(returncode: int) -> int:
    """Shell/Docker convention: killed by signal N -> 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class TaskProcess:
    """One run of a task's command, in its own process group (stop/signal reach everything it spawned)."""

    def __init__(
        self,
        task_id: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        user: tuple[int, int] | None,
        secrets_dir: str,
        *,
        mask: Sequence[str] = (),
        log_dir: str | None = None,
    ) -> None:
        """``mask``: directories to hide from the task under an empty read-only tmpfs (the secrets root).
        ``log_dir``: where the task's output is kept on disk (``tasklogs``), shared by its runs."""
        self.task_id = task_id
        self.argv = list(argv)
        self.env = dict(env)
        self.user = user
        self.secrets_dir = secrets_dir
        self.mask = list(mask)
        self.log_dir = log_dir
        self.namespaced = has_cap_sys_admin()
        self.fallback_reason: str | None = None
        if not self.namespaced:
            self.fallback_reason = (
                f"no CAP_SYS_ADMIN (euid {os.geteuid()}): task {task_id} runs without a private mount namespace; "
                f"its secrets are at ${SECRETS_DIR_ENV}={secrets_dir}, not {SECRETS_MOUNT}"
            )
            if user is not None and os.geteuid() != 0 and user != (os.geteuid(), os.getegid()):
                self.fallback_reason += f"; runs as {os.geteuid()}:{os.getegid()}, not {user[0]}:{user[1]}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._reap_lock = threading.Lock()
        self._output = bytearray()
        self._output_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exit_code(self) -> int | None:
        if self._proc is None or self._proc.returncode is None:
            return None
        return _exit_code(self._proc.returncode)

    def start(self) -> None:
        """Start the command; returns once it is exec'd. Raises TaskStartError if that fails.

        The kernel kills the command when the calling thread ends (the parent-death signal follows the
        thread that forked), so call it from the thread that supervises the command until it exits.
        """
        if self._proc is not None:
            raise RuntimeError(f"task {self.task_id} was already started")
        if not self.argv:
            raise TaskStartError("no command to run")
        if self.fallback_reason:
            log.warning("%s", self.fallback_reason)
        self._start_helper()

    def poll(self) -> int | None:
        """The exit code if the command has exited, else None."""
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the command to exit (None: forever); its exit code, or None on timeout.

        When the main process exits, whatever it left in its process group is killed, as a container's
        leftovers die with it.
        """
        proc = self._started()
        if proc.returncode is None and not self._wait_exited(proc.pid, timeout):
            return None
        with self._reap_lock:
            if proc.returncode is None:
                self._kill_group(signals.SIGKILL)  # the unreaped leader keeps the group id from being reused
                proc.wait()
        if self._reader is not None:
            self._reader.join(2.0)
        return self.exit_code

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (e.g. SIGHUP after a secret rotation)."""
        with self._reap_lock:
            if self._started().returncode is None:
                self._kill_group(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the group, SIGKILL after ``timeout`` seconds; the exit code."""
        proc = self._started()
        self.signal(signals.SIGTERM)
        if proc.returncode is None and not self._wait_exited(proc.pid, timeout):
            self.signal(signals.SIGKILL)
        return self.wait()

    def output(self) -> bytes:
        """The last 64 KiB the command wrote to stdout/stderr."""
        with self._output_lock:
            return bytes(self._output)

    # --- internals --------------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"task {self.task_id} was not started")
        return self._proc

    def _start_helper(self) -> None:
        env = {**self.env, SECRETS_DIR_ENV: SECRETS_MOUNT if self.namespaced else self.secrets_dir}
        if any("\0" in k + v or "=" in k or not k for k, v in env.items()):
            raise TaskStartError("invalid environment: names must be non-empty without '=', no NUL anywhere")
        status_r, status_w = os.pipe()
        env_r, env_w = os.pipe()
        cmd = [sys.executable, "-I", "-c", _HELPER, _PACKAGE_PARENT, "--secrets-dir", self.secrets_dir]
        cmd += ["--status-fd", str(status_w), "--env-fd", str(env_r), "--parent-pid", str(os.getpid())]
        if self.namespaced:
            for path in self.mask:
                cmd += ["--mask", path]
        else:
            cmd += ["--no-mounts"]
        # Without privileges the task runs as the agent's user (fallback_reason says so).
        if self.user is not None and (self.namespaced or os.geteuid() == 0):
            cmd += ["--user", f"{self.user[0]}:{self.user[1]}"]
        try:
            self._popen([*cmd, "--", *self.argv], {}, pass_fds=(status_w, env_r))
        except BaseException:
            os.close(status_r)
            os.close(env_w)
            raise
        finally:
            os.close(status_w)
            os.close(env_r)
        try:
            write_all(env_w, b"\0".join(os.fsencode(f"{k}={v}") for k, v in env.items()))
        except BrokenPipeError:
            pass  # the helper died before reading it; the status pipe says why
        finally:
            os.close(env_w)
        with os.fdopen(status_r, "rb") as status:
            error = status.read()  # EOF when the helper execs the command (the fd is close-on-exec)
        if error:
            self.wait()
            raise TaskStartError(error.decode(errors="replace"))

    def _popen(self, cmd: list[str], env: dict[str, str], *, pass_fds: Sequence[int] = ()) -> None:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._read_output, name=f"task-{self.task_id}-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        stream = self._started().stdout
        assert stream is not None
        writer = None
        if self.log_dir is not None:
            try:
                writer = tasklogs.TaskLogWriter(self.log_dir)
            except OSError as e:
                log.warning("task %s: its output is not kept on disk: %s", self.task_id, e)
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                with self._output_lock:
                    self._output += chunk
                    del self._output[:-OUTPUT_TAIL]
                if writer is not None:
                    try:
                        writer.write(chunk)
                    except OSError as e:  # a full disk: the task runs on, its output is lost
                        log.warning("task %s: its output is not kept on disk: %s", self.task_id, e)
                        writer = None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass

    def _wait_exited(self, pid: int, timeout: float | None) -> bool:
        """Wait for the process to exit without reaping it, so its pid stays ours for killpg."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = os.WEXITED | os.WNOWAIT
        while True:
            try:
                if os.waitid(os.P_PID, pid, flags | (0 if deadline is None else os.WNOHANG)) is not None:
                    return True
            except ChildProcessError:
                return True  # reaped by a concurrent wait()
            if deadline is None:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.02, left))

    def _kill_group(self, sig: int) -> None:
        try:
            os.killpg(self._started().pid, sig)
        except ProcessLookupError:
            pass


def _exec_error(command: str, e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return f'exec: "{command}": executable file not found in $PATH'
    return f'exec: "{command}": {e.strerror}'


# --- the helper: runs as root in the child, between fork and the task's exec -------------------------

# The capabilities a task that runs as root keeps: Docker's default set without CAP_MKNOD (no device
# cgroup here would stop it from opening a disk it made a node for), CAP_NET_RAW and CAP_SETFCAP.
# Never CAP_SYS_ADMIN (mount, umount, setns), CAP_SYS_PTRACE, CAP_SYS_RAWIO or CAP_SYS_MODULE.
TASK_CAPABILITIES = frozenset({
    0,   # CAP_CHOWN
    1,   # CAP_DAC_OVERRIDE
    3,   # CAP_FOWNER
    4,   # CAP_FSETID
    5,   # CAP_KILL (its own PID namespace is all it can see)
    6,   # CAP_SETGID
    7,   # CAP_SETUID
    8,   # CAP_SETPCAP
    10,  # CAP_NET_BIND_SERVICE
    18,  # CAP_SYS_CHROOT
    29,  # CAP_AUDIT_WRITE
})
# Device nodes a task gets in its own /dev, as a container does: (name, major, minor).
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Kernel knobs under /proc a root task could use to run code outside its namespaces (core_pattern,
# sysrq…): read-only, as in a container.
_PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    if _libc.prctl(option, arg, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def make_undumpable() -> None:
    """No core dump and no ptrace by same-uid processes: the process holds secrets or keys in memory."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl(_PR_SET_DUMPABLE, 0)


def helper_main(args: list[str]) -> int:
    """Set up the task's namespaces and user, then run its command; errors go to --status-fd."""
    split = args.index("--")
    parser = argparse.ArgumentParser(prog="swarmsecrets-task")
    parser.add_argument("--secrets-dir", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--env-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--user")
    parser.add_argument("--mask", action="append", default=[])
    parser.add_argument("--no-mounts", action="store_true")
    opts = parser.parse_args(args[:split])
    argv = args[split + 1 :]
    os.set_inheritable(opts.status_fd, False)
    step = "unable to read the task environment"
    try:
        with os.fdopen(opts.env_fd, "rb") as f:
            env = dict(os.fsdecode(item).split("=", 1) for item in f.read().split(b"\0") if item)
        user = None
        if opts.user:
            uid, gid = (int(x) for x in opts.user.split(":"))
            user = uid, gid
        if opts.no_mounts:
            if user is not None:
                step = "unable to switch to user " + opts.user
                _switch_user(user)
            step = "unable to tie the task to its agent"
            die_with_parent(opts.parent_pid)
            reset_signals()
            step = ""
            os.execvpe(argv[0], argv, env)
        step = "unable to isolate the task"
        make_undumpable()
        die_with_parent(opts.parent_pid)
        unshare(CLONE_NEWNS | CLONE_NEWPID)
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
        step = "unable to setup secret mount"
        os.makedirs(SECRETS_MOUNT, mode=0o755, exist_ok=True)  # the host keeps an empty dir
        mount(opts.secrets_dir, SECRETS_MOUNT, None, MS_BIND)
        step = "unable to remount dir as readonly"
        mount(None, SECRETS_MOUNT, None, MS_REMOUNT | MS_BIND | MS_RDONLY | SECURE_FLAGS)
        step = "unable to hide other secrets"
        for path in opts.mask:
            _hide(path)
        step = "unable to set up the task's /dev and /sys"
        _mount_dev()
        # a fresh sysfs hides the cgroup and debug mounts below /sys; the kernel refuses one straight over
        # the host's (the same filesystem twice on one mount point), hence the tmpfs between
        mount("tmpfs", "/sys", "tmpfs", MS_RDONLY | SECURE_FLAGS, "size=4k,mode=0755")
        mount("sysfs", "/sys", "sysfs", SECURE_FLAGS)
        mount(None, "/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | SECURE_FLAGS)
        os.chdir("/")  # a working dir inside a hidden dir would still reach what lies below the mask
        alive_r, alive_w = os.pipe()
        init = os.fork()  # PID 1 of the task's PID namespace
        if init == 0:
            os.close(alive_w)
            _init_main(alive_r, opts.status_fd, user, argv, env)
    except Exception as e:  # anything: the parent must learn why, not see a clean exec
        message = f"{step}: {e}" if step or not isinstance(e, OSError) else _exec_error(argv[0], e)
        os.write(opts.status_fd, message.encode())
        return 127
    os.close(opts.status_fd)
    # The agent signals the task's process group: this process ignores what it is not meant to obey and
    # leaves the command to get it directly; the SIGKILL after a stop timeout ends it and, through the
    # parent-death signal of PID 1, the whole namespace.
    for sig in signals.valid_signals():
        if sig not in (signals.SIGKILL, signals.SIGSTOP, signals.SIGCHLD):
            try:
                signals.signal(sig, signals.SIG_IGN)
            except (OSError, ValueError):
                pass
    _, status = os.waitpid(init, 0)
    return _exit_code(os.waitstatus_to_exitcode(status))


def _hide(path: str) -> None:
    """Put an empty read-only filesystem over ``path`` (a dir) or /dev/null over it (anything else)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY | SECURE_FLAGS, "size=4k,mode=0755")
    else:
        mount("/dev/null", path, None, MS_BIND)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | SECURE_FLAGS)


def _mount_dev() -> None:
    """A /dev of a few character devices: the host's disks (a manager's data dir on them) stay out of reach."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name, major, minor in _DEVICES:
        path = f"/dev/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    for name in ("pts", "shm"):
        os.mkdir(f"/dev/{name}", 0o755)
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    mount("tmpfs", "/dev/shm", "tmpfs", SECURE_FLAGS, "mode=1777")
    mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")


def _init_main(alive_fd: int, status_fd: int, user: tuple[int, int] | None, argv: list[str],
               env: dict[str, str]) -> None:
    """PID 1 of the task's namespace: start the command, reap, and exit with the command's status.

    When this process exits, the kernel kills every process of the namespace. It dies with the helper
    (which dies with the agent); the command can neither signal it (PID 1 ignores signals it has no
    handler for) nor trace it (not dumpable, and it holds capabilities the command lacks).
    """
    step = "unable to tie the task to its agent"
    try:
        _prctl(_PR_SET_PDEATHSIG, signals.SIGKILL)
        os.set_blocking(alive_fd, False)
        try:
            if os.read(alive_fd, 1) == b"":  # the helper died before the signal was armed
                os._exit(1)
        except BlockingIOError:
            pass
        os.close(alive_fd)
        for sig in signals.valid_signals():  # no handler: signals from the task and the agent pass it by
            if sig not in (signals.SIGKILL, signals.SIGSTOP):
                try:
                    signals.signal(sig, signals.SIG_DFL)
                except (OSError, ValueError):
                    pass
        step = "unable to mount /proc"
        mount("proc", "/proc", "proc", SECURE_FLAGS)  # this namespace's processes only
        for name in _PROC_READ_ONLY:
            path = f"/proc/{name}"
            if os.path.exists(path):
                mount(path, path, None, MS_BIND | MS_REC)
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | SECURE_FLAGS)
        command = os.fork()
        if command == 0:
            _exec_command(status_fd, user, argv, env)
        os.close(status_fd)
    except Exception as e:
        os.write(status_fd, f"{step}: {e}".encode())
        os._exit(127)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(127)
        if pid == command:
            os._exit(_exit_code(os.waitstatus_to_exitcode(status)))


def _exec_command(status_fd: int, user: tuple[int, int] | None, argv: list[str], env: dict[str, str]) -> None:
    step = "unable to drop privileges"
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        drop_capabilities(TASK_CAPABILITIES)
        if user is not None:
            step = f"unable to switch to user {user[0]}:{user[1]}"
            _switch_user(user)
        step = "unable to drop privileges"
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        reset_signals()
        step = ""
        os.execvpe(argv[0], argv, env)
    except Exception as e:
        message = f"{step}: {e}" if step or not isinstance(e, OSError) else _exec_error(argv[0], e)
        os.write(status_fd, message.encode())
    os._exit(127)


def _switch_user(user: tuple[int, int]) -> None:
    os.setgroups([])
    os.setgid(user[1])
    os.setuid(user[0])


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(keep: frozenset[int]) -> None:
    """Leave only ``keep`` in the bounding, effective, permitted and inheritable sets; none ambient.

    A root command execs with its bounding set; a change to another user clears the rest anyway.
    """
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            _prctl(_PR_CAPBSET_DROP, cap)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    mask = sum(1 << cap for cap in keep)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    for i in range(2):
        part = mask >> (32 * i) & 0xFFFFFFFF
        data[i].effective &= part
        data[i].permitted &= part
        data[i].inheritable = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def reset_signals() -> None:
    """Give the command default signal dispositions and an empty signal mask.

    Both survive an exec: an agent started under ``nohup`` (SIGHUP ignored) would otherwise pass
    the ignored SIGHUP on, and a shell cannot trap a signal that was ignored when it started, so
    the ``signal:HUP`` update action would silently do nothing.
    """
    for sig in signals.valid_signals():
        if sig in (signals.SIGKILL, signals.SIGSTOP):
            continue
        try:
            signals.signal(sig, signals.SIG_DFL)
        except (OSError, ValueError):  # signals the runtime reserves
            pass
    signals.pthread_sigmask(signals.SIG_SETMASK, set())


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit at once if the parent is already gone.

    Set after the last credential change (a change of user clears it) and kept across the exec.
    """
    _prctl(_PR_SET_PDEATHSIG, signals.SIGKILL)
    if os.getppid() != parent_pid:  # the agent died before the signal was armed
        os._exit(1)


# --- supervision ----------------------------------------------------------------------------------------

State = Literal["starting", "running", "failed", "complete"]


@dataclass(frozen=True)
class TaskStatus:
    """What the agent reports to the leader. ``error`` is the last error, kept while the task runs again."""

    state: State
    error: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    restarts: int = 0
    backoff: float | None = None  # seconds until the next start, while waiting for it


class Supervisor:
    """Keeps a task's command running: restarts it when it exits, with exponential backoff.

    The delay starts at ``initial_backoff``, doubles on each restart up to ``max_backoff``, and goes back
    to the start after a run that lasted ``healthy_after`` seconds. ``restart_condition`` follows
    Swarm's restart policy: ``any`` (default), ``on-failure`` (exit 0 completes the task), ``none``.
    """

    def __init__(
        self,
        factory: Callable[[], TaskProcess],
        *,
        restart_condition: Literal["any", "on-failure", "none"] = "any",
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        healthy_after: float = 10.0,
        stop_timeout: float = 10.0,
        on_change: Callable[[TaskStatus], None] | None = None,
    ) -> None:
        """``factory`` makes a fresh TaskProcess per run; ``on_change`` gets every status (under a lock: be quick)."""
        self._factory = factory
        self._condition = restart_condition
        self._initial = initial_backoff
        self._max = max_backoff
        self._healthy_after = healthy_after
        self._stop_timeout = stop_timeout
        self._on_change = on_change
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._restart_now = False
        self._proc: TaskProcess | None = None
        self._status = TaskStatus(state="starting")
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    @property
    def status(self) -> TaskStatus:
        with self._lock:
            return self._status

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> TaskStatus:
        """Stop the command (SIGTERM, then SIGKILL after ``stop_timeout``) and supervising; the final status."""
        with self._lock:
            self._stopping = True
            self._wake.set()
            proc = self._proc
        if proc is not None and proc.pid is not None:
            proc.stop(self._stop_timeout)
        if self._thread.is_alive():
            self._thread.join()
        return self.status

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until supervision has ended: stopped, or the command's exit was final (its restart
        condition asks for no restart). False if it still supervises after ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def restart(self) -> None:
        """Stop the command and start it again at once (the ``restart`` update action after a rotation)."""
        with self._lock:
            self._restart_now = True
            self._wake.set()
            proc = self._proc
        if proc is not None and proc.pid is not None:
            proc.stop(self._stop_timeout)

    def signal(self, sig: int) -> None:
        """Signal the running command's process group (the ``signal:HUP`` update action)."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.pid is not None and proc.exit_code is None:
            proc.signal(sig)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)
            if self._on_change is not None:
                try:
                    self._on_change(self._status)
                except Exception:  # a reporting bug must not end the supervision
                    log.exception("status callback failed")

    def _run(self) -> None:
        delay = self._initial
        runs = 0
        while True:
            with self._lock:
                if self._stopping:
                    self._update(state="complete", pid=None, backoff=None)
                    return
                if self._restart_now:
                    delay = self._initial
                self._wake.clear()
                self._restart_now = False
                self._update(state="starting", restarts=runs, pid=None, backoff=None, exit_code=None)
                runs += 1
                proc: TaskProcess | None = None
                try:
                    proc = self._proc = self._factory()
                    proc.start()
                    error = None
                    self._update(state="running", pid=proc.pid)
                    event(log, logging.INFO, "task_started", f"task {proc.task_id} started",
                          task=proc.task_id, pid=proc.pid, restarts=runs - 1)
                except Exception as e:  # reported and retried, never the end of the supervisor
                    error = f"starting task failed: {e}"
            started = time.monotonic()
            code = proc.wait() if proc is not None and error is None else None
            with self._lock:
                if self._stopping:
                    self._update(state="complete", exit_code=code, pid=None)
                    return
                if self._restart_now:
                    continue
                if time.monotonic() - started >= self._healthy_after:
                    delay = self._initial
                failed = error is not None or code != 0
                error = error or (f"task: non-zero exit ({code})" if failed else None)
                final = self._condition == "none" or (self._condition == "on-failure" and not failed)
                self._update(
                    state="failed" if failed else "complete",
                    error=error or self._status.error,
                    exit_code=code,
                    pid=None,
                    backoff=None if final else delay,
                )
                task_id = proc.task_id if proc is not None else ""
                if failed:
                    event(log, logging.WARNING, "task_failed", f"task {task_id} failed: {error}",
                          task=task_id, exit_code="" if code is None else code, error=error or "")
                if final:
                    return
            event(log, logging.INFO, "task_restarting", f"task {task_id}: restarting in {delay:.1f}s",
                  task=task_id, delay=round(delay, 3), restarts=runs)
            if not self._wake.wait(delay):
                delay = min(delay * 2, self._max)
