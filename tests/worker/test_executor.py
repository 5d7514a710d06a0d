"""TaskProcess and Supervisor: /run/secrets in a private mount namespace, users, signals, restarts with backoff."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swarmsecrets.worker.executor import Supervisor, TaskProcess, TaskStartError, TaskStatus
from swarmsecrets.worker.secretsfs import FileSpec, SecretsFS
from tests.worker.conftest import mounts_below, needs_mount

ENV = {"PATH": "/usr/bin:/bin"}
SEED = FileSpec("password", b"database_password\n", uid=2000, gid=3000, mode=0o400)
SEED_PROGRAM = ["python3", "-c", "print(open('/run/secrets/password').read(), end='')"]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def running(cmdline: str) -> bool:
    """Whether a live process has exactly this command line (NUL-separated): a task's processes live in
    their own PID namespace, so the pids they know are not the host's."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == cmdline.encode() and alive(int(entry)):
                        return True
            except OSError:
                pass
    return False


@pytest.fixture
def procs() -> Iterator[list[TaskProcess]]:
    """Processes to kill whatever the test's outcome."""
    started: list[TaskProcess] = []
    yield started
    for proc in started:
        if proc.pid is not None:
            proc.stop(1.0)


@pytest.fixture
def task_dir(fs: SecretsFS) -> str:
    return fs.materialize("t1", "app", [SEED], owner=(2000, 3000))


@needs_mount
def test_seed_program_reads_its_secret_as_uid_2000(fs: SecretsFS, task_dir: str, procs: list[TaskProcess]) -> None:
    proc = TaskProcess("t1", SEED_PROGRAM, ENV, (2000, 3000), task_dir, mask=[fs.root])
    procs.append(proc)
    proc.start()
    assert proc.wait(10) == 0
    assert proc.output() == b"database_password\n"

    ids = TaskProcess(
        "t1",
        ["python3", "-c", "import os; print(os.getuid(), os.getgid(), os.getgroups())"],
        ENV,
        (2000, 3000),
        task_dir,
    )
    procs.append(ids)
    ids.start()
    assert ids.wait(10) == 0
    assert ids.output() == b"2000 3000 []\n"


@needs_mount
def test_mount_is_private_read_only_and_follows_rotation(
    fs: SecretsFS, task_dir: str, procs: list[TaskProcess], host_run_secrets: str
) -> None:
    program = f"""
import os, sys, time
print(open('/run/secrets/password').read(), end='')
print(sorted(os.listdir({fs.root!r})))
try:
    open('/run/secrets/x', 'w')
except OSError as e:
    print('write', e.errno)
sys.stdout.flush()
while open('/run/secrets/password').read() != 'new_password\\n':
    time.sleep(0.01)
print('rotated')
"""
    proc = TaskProcess("t1", ["python3", "-c", program], ENV, None, task_dir, mask=[fs.root])
    procs.append(proc)
    proc.start()
    wait_for(lambda: b"write" in proc.output())
    assert proc.output() == b"database_password\n[]\nwrite 30\n"  # EROFS; the other tasks' secrets are hidden
    # the host sees an empty /run/secrets without any mount; the child sees the task's tmpfs, read-only
    assert mounts_below(host_run_secrets) == []
    assert os.listdir(host_run_secrets) == []
    with open(f"/proc/{proc.pid}/mountinfo") as f:
        child = [line.split() for line in f if line.split()[4] == "/run/secrets"]
    assert len(child) == 1 and "ro" in child[0][5].split(",")

    fs.materialize("t1", "app", [FileSpec("password", b"new_password\n", 0, 0, 0o400)], owner=(2000, 3000))
    assert proc.wait(10) == 0
    assert proc.output().endswith(b"rotated\n")
    assert mounts_below(host_run_secrets) == [] and os.listdir(host_run_secrets) == []


@needs_mount
def test_environment_is_passed_exactly(task_dir: str, procs: list[TaskProcess]) -> None:
    env = {**ENV, "GREETING": "hello world", "PYTHONPATH": "/nowhere"}
    proc = TaskProcess("t1", ["env", "-0"], env, None, task_dir)  # not python: it would add LC_CTYPE itself
    procs.append(proc)
    proc.start()
    assert proc.wait(10) == 0
    seen = dict(item.split("=", 1) for item in proc.output().decode().split("\0") if item)
    assert seen == {**env, "SWARMSECRETS_SECRETS_DIR": "/run/secrets"}


def test_missing_command_fails_to_start_with_dockers_text(task_dir: str) -> None:
    proc = TaskProcess("t1", ["no-such-command-here"], ENV, None, task_dir)
    with pytest.raises(TaskStartError, match=r'^exec: "no-such-command-here": executable file not found in \$PATH$'):
        proc.start()


def test_stop_terminates_the_whole_process_group(task_dir: str, procs: list[TaskProcess]) -> None:
    child = f"sleep\0{60 + os.getpid() % 1000 / 1000:.3f}\0"
    proc = TaskProcess("t1", ["sh", "-c", f"{child.replace(chr(0), ' ')} & echo started; wait"], ENV, None, task_dir)
    procs.append(proc)
    proc.start()
    wait_for(lambda: proc.output().endswith(b"\n"))
    wait_for(lambda: running(child))
    assert proc.poll() is None
    assert proc.stop(5) == 128 + signal.SIGTERM
    wait_for(lambda: not running(child), 5)


def test_stop_kills_a_command_that_ignores_sigterm(task_dir: str, procs: list[TaskProcess]) -> None:
    proc = TaskProcess(
        "t1", ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], ENV, None, task_dir
    )
    procs.append(proc)
    proc.start()
    wait_for(lambda: b"ready" in proc.output())
    started = time.monotonic()
    assert proc.stop(0.3) == 128 + signal.SIGKILL
    assert time.monotonic() - started < 3


def test_leftovers_of_an_exited_command_are_killed(task_dir: str, procs: list[TaskProcess]) -> None:
    child = f"sleep\0{61 + os.getpid() % 1000 / 1000:.3f}\0"
    proc = TaskProcess("t1", ["sh", "-c", f"{child.replace(chr(0), ' ')} & echo started; "
                                          f"while ! grep -qs sleep /proc/[0-9]*/cmdline; do :; done"],
                       ENV, None, task_dir)
    procs.append(proc)
    proc.start()
    assert proc.wait(10) == 0
    assert proc.output() == b"started\n"
    wait_for(lambda: not running(child), 5)


def test_signal_reaches_the_command(task_dir: str, procs: list[TaskProcess]) -> None:
    proc = TaskProcess(
        "t1", ["sh", "-c", "trap 'echo hup; exit 7' HUP; echo ready; while :; do sleep 0.05; done"], ENV, None, task_dir
    )
    procs.append(proc)
    proc.start()
    wait_for(lambda: b"ready" in proc.output())
    proc.signal(signal.SIGHUP)
    assert proc.wait(5) == 7
    assert proc.output().startswith(b"ready\n") and proc.output().endswith(b"hup\n")  # sleep got it too


def test_a_signal_the_agent_ignores_still_reaches_the_command(task_dir: str, procs: list[TaskProcess]) -> None:
    """An agent started under nohup ignores SIGHUP, and an ignored signal survives exec: the task must
    get default dispositions, or its shell could not trap HUP and ``signal:HUP`` would do nothing."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        proc = TaskProcess(
            "t1", ["sh", "-c", "trap 'echo hup; exit 7' HUP; echo ready; while :; do sleep 0.05; done"], ENV, None,
            task_dir,
        )
        procs.append(proc)
        proc.start()
    finally:
        signal.signal(signal.SIGHUP, before)
    wait_for(lambda: b"ready" in proc.output())
    proc.signal(signal.SIGHUP)
    assert proc.wait(30) == 7
    assert proc.output().endswith(b"hup\n")


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[tuple[float, TaskStatus]] = []

    def __call__(self, status: TaskStatus) -> None:
        self.statuses.append((time.monotonic(), status))

    def states(self, state: str) -> list[tuple[float, TaskStatus]]:
        return [(t, s) for t, s in self.statuses if s.state == state]


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for sup in started:
        sup.stop()


def supervise(
    task_dir: str, argv: list[str], supervisors: list[Supervisor], **kwargs: Any
) -> tuple[Supervisor, Recorder]:
    recorder = Recorder()
    sup = Supervisor(
        lambda: TaskProcess("t1", argv, ENV, None, task_dir), on_change=recorder, stop_timeout=1.0, **kwargs
    )
    supervisors.append(sup)
    sup.start()
    return sup, recorder


def test_supervisor_restarts_an_exiting_command_with_exponential_backoff(
    task_dir: str, supervisors: list[Supervisor]
) -> None:
    sup, rec = supervise(
        task_dir,
        ["sh", "-c", "echo boom; exit 3"],
        supervisors,
        initial_backoff=0.1,
        max_backoff=0.4,
        healthy_after=5.0,
    )
    wait_for(lambda: sup.status.restarts >= 5)
    final = sup.stop()
    assert final.state == "complete" and final.pid is None

    failed = rec.states("failed")
    assert [s.backoff for _, s in failed[:5]] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert all(s.error == "task: non-zero exit (3)" and s.exit_code == 3 for _, s in failed)
    starts = [t for t, s in rec.states("running")]
    for (failed_at, status), next_start in zip(failed, starts[1:], strict=False):
        assert next_start - failed_at >= status.backoff  # type: ignore[operator]
    assert [s.restarts for _, s in rec.states("starting")][:4] == [0, 1, 2, 3]
    assert final.error == "task: non-zero exit (3)"


def test_supervisor_resets_the_backoff_after_a_healthy_run(task_dir: str, supervisors: list[Supervisor]) -> None:
    sup, rec = supervise(
        task_dir, ["sh", "-c", "sleep 0.4; exit 1"], supervisors, initial_backoff=0.1, healthy_after=0.3
    )
    wait_for(lambda: len(rec.states("failed")) >= 3)
    assert [s.backoff for _, s in rec.states("failed")][:3] == [0.1, 0.1, 0.1]


def test_supervisor_reports_start_failures(task_dir: str, supervisors: list[Supervisor]) -> None:
    sup, rec = supervise(task_dir, ["no-such-command-here"], supervisors, initial_backoff=0.05)
    wait_for(lambda: len(rec.states("failed")) >= 2)
    status = rec.states("failed")[0][1]
    assert status.error == 'starting task failed: exec: "no-such-command-here": executable file not found in $PATH'
    assert rec.states("running") == []


def test_supervisor_on_failure_condition_completes_on_exit_zero(task_dir: str, supervisors: list[Supervisor]) -> None:
    sup, rec = supervise(task_dir, ["true"], supervisors, restart_condition="on-failure", initial_backoff=0.05)
    wait_for(lambda: sup.status.state == "complete")
    assert sup.wait(timeout=30), "a clean exit under on-failure must end the supervision, not schedule a restart"
    assert sup.status.restarts == 0 and sup.status.exit_code == 0 and sup.status.error is None
    assert [s.state for _, s in rec.statuses] == ["starting", "running", "complete"]


def test_supervisor_restart_and_signal_actions(task_dir: str, supervisors: list[Supervisor]) -> None:
    runs: list[TaskProcess] = []

    def factory() -> TaskProcess:
        runs.append(
            TaskProcess(
                "t1", ["sh", "-c", "trap 'echo hup' HUP; echo ready; while :; do sleep 0.05; done"], ENV, None, task_dir
            )
        )
        return runs[-1]

    sup = Supervisor(factory, initial_backoff=5.0, stop_timeout=1.0)
    supervisors.append(sup)
    sup.start()
    wait_for(lambda: bool(runs) and b"ready" in runs[0].output())
    first = sup.status.pid
    sup.signal(signal.SIGHUP)
    wait_for(lambda: b"hup" in runs[0].output())
    assert sup.status.pid == first and sup.status.state == "running"
    sup.restart()
    wait_for(lambda: sup.status.state == "running" and sup.status.pid != first)
    assert sup.status.restarts == 1 and sup.status.error is None and len(runs) == 2
    assert sup.stop().state == "complete"
    assert runs[1].exit_code == 128 + signal.SIGTERM


AGENT = """
import sys, time
from swarmsecrets.worker.executor import TaskProcess
proc = TaskProcess("t-orphan", ["sleep", "600"], {"PATH": "/usr/bin:/bin"}, None, sys.argv[1])
proc.start()
print(proc.pid, flush=True)
time.sleep(600)
"""


def test_a_task_dies_with_its_agent(tmp_path: Any) -> None:
    """An agent killed with SIGKILL cannot stop its tasks, and a restarted one cannot adopt them: the
    kernel kills them (nothing would supervise them or give them their secrets)."""
    import subprocess
    import sys

    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(tmp_path)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert agent.stdout is not None
        task_pid = int(agent.stdout.readline())
        assert alive(task_pid)
    finally:
        agent.kill()
        agent.wait()
    wait_for(lambda: not alive(task_pid))
