"""SecretsFS: per-task tmpfs, file owner/mode/content, atomic swaps, cleanup, recovery, refusal of disk roots."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import pytest

from swarmsecrets.worker.secretsfs import TMPFS_MAGIC, FileSpec, NotTmpfsError, SecretsFS, fs_type
from tests.worker.conftest import CAN_MOUNT, force_unmount, mounts_below, needs_mount

SEED = FileSpec("password", b"database_password\n", uid=2000, gid=3000, mode=0o400)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mountinfo_entry(path: str) -> tuple[set[str], set[str], str]:
    """(per-mount options, super options, fstype) of the topmost mount at ``path``."""
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for fields in reversed(entries):
        if fields[4] == path:
            sep = fields.index("-")
            return set(fields[5].split(",")), set(fields[sep + 3].split(",")), fields[sep + 1]
    raise AssertionError(f"{path} is not a mount point")


def unseal(task: str) -> None:
    """Make a sealed task tmpfs writable, as it is while SecretsFS updates it (when someone could tamper)."""
    if CAN_MOUNT:
        subprocess.run(["mount", "-o", "remount,rw", task], check=True)


def tree(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, ds, fs in os.walk(path) for n in ds + fs)


def test_seed_file_has_owner_mode_and_content(fs: SecretsFS) -> None:
    task = fs.materialize("t1", "app", [SEED], owner=(2000, 3000))
    st = os.stat(os.path.join(task, "password"))
    if CAN_MOUNT:
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, 2000, 3000)
    else:
        assert stat.S_IMODE(st.st_mode) == 0o400  # chown needs root
    with open(os.path.join(task, "password"), "rb") as f:
        assert f.read() == b"database_password\n"
    assert fs_type(task) == TMPFS_MAGIC
    assert fs.list_tasks() == ["t1"]


@needs_mount
def test_one_file_per_target_each_with_its_own_owner_and_mode(fs: SecretsFS) -> None:
    task = fs.materialize(
        "t1",
        "app",
        [FileSpec("a", b"same", 1, 2, 0o400), FileSpec("conf/b", b"same", 3, 4, 0o444)],
    )
    a, b = os.stat(os.path.join(task, "a")), os.stat(os.path.join(task, "conf/b"))
    assert a.st_ino != b.st_ino
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) == (0o400, 1, 2)
    assert (stat.S_IMODE(b.st_mode), b.st_uid, b.st_gid) == (0o444, 3, 4)


@needs_mount
def test_task_dir_is_its_own_hardened_size_limited_tmpfs(fs: SecretsFS) -> None:
    task = fs.materialize("t1", "app", [SEED], owner=(2000, 3000))
    options, super_options, fstype = mountinfo_entry(task)
    assert fstype == "tmpfs"
    assert {"ro", "nodev", "nosuid", "noexec"} <= options
    assert "size=1024k" in super_options
    st = os.stat(task)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 2000, 3000)
    assert stat.S_IMODE(os.stat(fs.tasks_dir).st_mode) == 0o711
    with pytest.raises(OSError) as info:  # sealed between updates, even for root
        open(os.path.join(task, "planted"), "w")
    assert info.value.errno == errno.EROFS


@needs_mount
def test_a_reader_holding_a_replaced_file_delays_only_the_seal(fs: SecretsFS) -> None:
    """The kernel will not remount read-only while a replaced file is open; the update still lands,
    the mount stays writable meanwhile, and the next update seals it."""
    task = fs.materialize("t1", "app", [FileSpec("password", b"old", 0, 0, 0o400)])
    with open(os.path.join(task, "password"), "rb") as held:
        fs.materialize("t1", "app", [FileSpec("password", b"new", 0, 0, 0o400)])
        assert held.read() == b"old"
        assert "ro" not in mountinfo_entry(task)[0]
    with open(os.path.join(task, "password"), "rb") as f:
        assert f.read() == b"new"
    fs.materialize("t1", "app", [FileSpec("password", b"newer", 0, 0, 0o400)])
    assert "ro" in mountinfo_entry(task)[0]


@needs_mount
def test_tmpfs_grows_for_big_payloads_and_keeps_flags(fs: SecretsFS) -> None:
    task = fs.materialize("t1", "app", [SEED])
    big = [FileSpec(f"s{i}", bytes([i]) * 500_000, 0, 0, 0o400) for i in range(6)]
    fs.materialize("t1", "app", big)
    options, super_options, _ = mountinfo_entry(task)
    assert {"ro", "nodev", "nosuid", "noexec"} <= options
    size = os.statvfs(task).f_blocks * os.statvfs(task).f_frsize
    assert 2 * 3_000_000 <= size <= 8 * 3_000_000
    assert sorted(os.listdir(task)) == [f"s{i}" for i in range(6)]
    with open(os.path.join(task, "s5"), "rb") as f:
        assert f.read() == bytes([5]) * 500_000


def test_swaps_are_atomic_for_a_concurrent_reader(fs: SecretsFS) -> None:
    old, new = b"old-secret-" * 500, b"new-" * 3000
    task = fs.materialize("t1", "app", [FileSpec("password", old, 0, 0, 0o400)])
    path = os.path.join(task, "password")
    seen: dict[bytes, int] = {}
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                bad.append(repr(e))
                continue
            if data in (old, new):
                seen[data] = seen.get(data, 0) + 1
            else:
                bad.append(f"partial read of {len(data)} bytes")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            fs.materialize("t1", "app", [FileSpec("password", new if i % 2 == 0 else old, 0, 0, 0o400)])
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert bad == []
    assert seen.get(old, 0) > 0 and seen.get(new, 0) > 0


def test_changed_set_swaps_files_and_removes_unlisted_ones(fs: SecretsFS) -> None:
    task = fs.materialize("t1", "app", [FileSpec("a", b"1", 0, 0, 0o400), FileSpec("d/x", b"2", 0, 0, 0o400)])
    assert tree(task) == ["a", "d", "d/x"]
    fs.materialize("t1", "app", [FileSpec("a", b"3", 0, 0, 0o444), FileSpec("e/f/y", b"4", 0, 0, 0o400)])
    assert tree(task) == ["a", "e", "e/f", "e/f/y"]
    with open(os.path.join(task, "a"), "rb") as f:
        assert f.read() == b"3"
    assert stat.S_IMODE(os.stat(os.path.join(task, "a")).st_mode) == 0o444
    fs.materialize("t1", "app", [FileSpec("e", b"5", 0, 0, 0o400)])  # a directory becomes a file
    assert tree(task) == ["e"]


def test_unchanged_files_are_not_rewritten(fs: SecretsFS) -> None:
    task = fs.materialize("t1", "app", [FileSpec("a", b"1", os.geteuid(), os.getegid(), 0o400)])
    inode = os.stat(os.path.join(task, "a")).st_ino
    fs.materialize("t1", "app", [FileSpec("a", b"1", os.geteuid(), os.getegid(), 0o400)])
    assert os.stat(os.path.join(task, "a")).st_ino == inode


def test_symlinks_planted_in_the_task_dir_are_not_followed(fs: SecretsFS) -> None:
    outside = tempfile.mkdtemp(prefix="swarmsecrets-outside-")
    try:
        task = fs.materialize("t1", "app", [FileSpec("d/x", b"1", 0, 0, 0o400), FileSpec("y", b"2", 0, 0, 0o400)])
        unseal(task)
        subprocess.run(["rm", "-rf", os.path.join(task, "d")], check=True)
        os.symlink(outside, os.path.join(task, "d"))
        os.unlink(os.path.join(task, "y"))
        os.symlink(os.path.join(outside, "victim"), os.path.join(task, "y"))
        fs.materialize("t1", "app", [FileSpec("d/x", b"3", 0, 0, 0o400), FileSpec("y", b"4", 0, 0, 0o400)])
        assert os.listdir(outside) == []
        assert not os.path.islink(os.path.join(task, "d")) and not os.path.islink(os.path.join(task, "y"))
        with open(os.path.join(task, "d/x"), "rb") as f:
            assert f.read() == b"3"
    finally:
        subprocess.run(["rm", "-rf", outside], check=True)


def test_service_link_points_at_the_newest_task_and_follows_removals(fs: SecretsFS) -> None:
    first = fs.materialize("t1", "app", [SEED])
    second = fs.materialize("t2", "app", [FileSpec("password", b"second\n", 0, 0, 0o400)])
    link = os.path.join(fs.services_dir, "app")
    assert os.path.realpath(link) == second
    fs.materialize("t1", "app", [SEED])  # updating the older task does not make it current
    assert os.path.realpath(link) == second
    fs.remove_task("t2")
    assert os.path.realpath(link) == first
    with open(os.path.join(link, "password"), "rb") as f:
        assert f.read() == b"database_password\n"
    with pytest.raises(ValueError, match="belongs to service app"):
        fs.materialize("t1", "other", [SEED])


def test_remove_task_leaves_no_files_links_or_mounts(fs: SecretsFS) -> None:
    fs.materialize("t1", "app", [SEED, FileSpec("a/b", b"x", 0, 0, 0o400)])
    fs.materialize("t2", "db", [SEED])
    fs.remove_task("t1")
    fs.remove_task("t2")
    fs.remove_task("t2")  # idempotent
    assert fs.list_tasks() == []
    assert tree(fs.root) == ["services", "tasks"]
    assert mounts_below(fs.tasks_dir) == []


def test_wipe_removes_everything_but_leaves_other_files_of_the_root(fs: SecretsFS) -> None:
    with open(os.path.join(fs.root, "swarmsecrets.sock"), "w"):
        pass
    fs.materialize("t1", "app", [SEED])
    fs.materialize("t2", "db", [SEED])
    fs.wipe()
    assert tree(fs.root) == ["swarmsecrets.sock"]
    assert mounts_below(os.path.join(fs.root, "tasks")) == []
    assert fs.list_tasks() == []
    fs.materialize("t3", "app", [SEED])  # usable again after a rejoin
    assert fs.list_tasks() == ["t3"]


@pytest.mark.parametrize("target", ["/abs", "../x", "a/../b", "a//b", "a/", ".", "", "a/./b", "x\0y", "a/" + "n" * 256])
def test_bad_targets_are_rejected_before_anything_is_written(fs: SecretsFS, target: str) -> None:
    with pytest.raises(ValueError, match="invalid secret target"):
        fs.materialize("t1", "app", [FileSpec(target, b"x", 0, 0, 0o400)])
    assert fs.list_tasks() == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([FileSpec("a", b"x", 0, 0, 0o400), FileSpec("a", b"y", 0, 0, 0o400)], "duplicate secret target"),
        ([FileSpec("a", b"x", 0, 0, 0o400), FileSpec("a/b", b"y", 0, 0, 0o400)], "also a directory"),
        ([FileSpec("a", b"x", 0, 0, 0o4755)], "invalid mode"),
        ([FileSpec("a", b"x", -1, 0, 0o400)], "invalid uid"),
    ],
)
def test_bad_file_sets_are_rejected(fs: SecretsFS, files: list[FileSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fs.materialize("t1", "app", files)
    assert fs.list_tasks() == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_bad_task_ids_and_service_names_are_rejected(fs: SecretsFS, name: str) -> None:
    with pytest.raises(ValueError, match="invalid task id"):
        fs.materialize(name, "app", [SEED])
    with pytest.raises(ValueError, match="invalid service name"):
        fs.materialize("t1", name, [SEED])
    assert fs.list_tasks() == []


def test_secret_data_never_appears_in_a_spec_repr() -> None:
    assert "database_password" not in repr(SEED)


def test_refuses_a_root_that_is_not_tmpfs(tmp_path: os.PathLike[str]) -> None:
    path = os.path.realpath(tmp_path)
    if fs_type(path) == TMPFS_MAGIC:
        pytest.skip(f"{path} is on tmpfs here; need a disk-backed directory")
    with pytest.raises(NotTmpfsError) as info:
        SecretsFS(path)
    assert str(info.value) == (
        f"secrets root {path} is not on tmpfs; refusing to write secrets to disk "
        "(use --dev-allow-non-tmpfs for development)"
    )
    assert os.listdir(path) == []


@needs_mount
def test_allowed_disk_root_still_gets_a_tmpfs_per_task(tmp_path: os.PathLike[str]) -> None:
    path = os.path.realpath(tmp_path)
    try:
        fs = SecretsFS(path, allow_non_tmpfs=True)
        task = fs.materialize("t1", "app", [SEED])
        assert fs_type(task) == TMPFS_MAGIC
        fs.remove_task("t1")
        assert mounts_below(path) == []
    finally:
        force_unmount(path)


@needs_mount
def test_recover_unmounts_and_removes_leftovers_of_an_earlier_run(root: str) -> None:
    before = SecretsFS(root)
    before.materialize("t1", "app", [SEED])
    kept = before.materialize("t2", "db", [FileSpec("pw", b"kept\n", 0, 0, 0o400)])
    stray = os.path.join(before.tasks_dir, "junk")
    os.mkdir(stray)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", stray], check=True)
    nested = os.path.join(kept, "nested")
    unseal(kept)
    os.mkdir(nested)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", nested], check=True)

    after = SecretsFS(root)  # the agent restarted
    assert after.recover(keep={"t2"}) == ["junk", "t1"]
    assert sorted(mounts_below(after.tasks_dir)) == [kept]
    assert after.list_tasks() == ["t2"]
    assert os.listdir(after.services_dir) == ["db"]
    with open(os.path.join(after.services_dir, "db", "pw"), "rb") as f:
        assert f.read() == b"kept\n"
    assert os.listdir(kept) == ["nested", "pw"]  # the mount point of the stray mount, now empty
    after.materialize("t2", "db", [FileSpec("pw", b"kept\n", 0, 0, 0o400)])
    assert os.listdir(kept) == ["pw"]

    assert after.recover() == ["t2"]
    assert mounts_below(after.tasks_dir) == []
    assert tree(root) == ["services", "tasks"]


@pytest.fixture
def nobody_dir() -> Iterator[str]:
    """A disk-backed directory owned by nobody (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    path = tempfile.mkdtemp(prefix="swarmsecrets-nobody-", dir="/var/tmp")
    if fs_type(path) == TMPFS_MAGIC:
        pytest.skip(f"{path} is on tmpfs here; need a disk-backed directory")
    os.chown(path, 65534, 65534)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", path], check=True)


def test_without_privileges_tasks_fall_back_to_a_private_dir_in_dev_shm(nobody_dir: str) -> None:
    """Runs the unprivileged path for real, as nobody."""
    disk_root = os.path.join(nobody_dir, "root")
    script = f"""
import json, os, stat, sys
sys.path.insert(0, {REPO!r})
from swarmsecrets.worker.secretsfs import FileSpec, SecretsFS, TMPFS_MAGIC, fs_type
from swarmsecrets.worker.executor import TaskProcess
fs = SecretsFS({disk_root!r}, allow_non_tmpfs=True)
task = fs.materialize("t1", "app", [FileSpec("password", b"database_password\\n", 2000, 3000, 0o400)])
st = os.stat(os.path.join(task, "password"))
argv = ["sh", "-c", 'cat "$SWARMSECRETS_SECRETS_DIR/password"']
proc = TaskProcess("t1", argv, {{"PATH": "/usr/bin:/bin"}}, None, task)
proc.start()
code = proc.wait(10)
out = dict(fs_reason=fs.fallback_reason, proc_reason=proc.fallback_reason, task=task,
           tmpfs=fs_type(task) == TMPFS_MAGIC, mode=stat.S_IMODE(st.st_mode),
           dir_mode=stat.S_IMODE(os.stat(task).st_mode), code=code, output=proc.output().decode(),
           private=os.path.dirname(fs.tasks_dir))
fs.wipe()
out["private_left"] = os.path.exists(out["private"])
print(json.dumps(out))
"""

    def as_nobody(python: str, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-c", code], user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=30
        )

    for python in (sys.executable, "/usr/bin/python3"):  # a venv under /root is out of nobody's reach
        try:
            if as_nobody(python, "import sys; assert sys.version_info >= (3, 11)").returncode == 0:
                break
        except OSError:
            continue
    else:
        pytest.skip("no Python >= 3.11 that nobody may run")
    done = as_nobody(python, script)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["fs_reason"].startswith("no CAP_SYS_ADMIN (euid 65534): cannot mount a tmpfs per task")
    assert out["proc_reason"].startswith("no CAP_SYS_ADMIN (euid 65534): task t1 runs without a private mount")
    assert out["task"].startswith("/dev/shm/swarmsecrets-65534-") and out["tmpfs"]
    assert (out["mode"], out["dir_mode"], out["code"]) == (0o400, 0o700, 0)
    assert out["output"] == "database_password\n"
    assert out["private_left"] is False
    assert os.listdir(disk_root) == []
