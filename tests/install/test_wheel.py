"""The wheel and sdist that ``python -m build`` makes, and the wheel installed into a fresh venv.

The installed commands run with an environment that does not name this checkout, from a directory
outside it, so every import comes from the wheel: a module or data file missing from it fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework import free_port_pair, wait_until
from tests.framework.node import LOOPBACK_SHM_PREFIX, REPO_ROOT, SHM_ROOT, mounts_under, signal_group

pytestmark = pytest.mark.integration

VERSION = "0.1.0"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both artifacts, built once; without isolation, from the build backend this venv already has."""
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and the dependencies it declares (from pip's cache or index).

    The venv gets no pip of its own: this venv's pip installs into it (``pip --python``)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    wheel = next(dist.glob("swarmsecrets-*.whl"))
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return root


def clean_env(venv: Path) -> dict[str, str]:
    """What a shell of a user who installed the wheel has: its bin on PATH, nothing pointing here."""
    return {"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8"}


def test_the_artifacts_carry_the_license_and_the_generated_code(dist: Path) -> None:
    wheel = next(dist.glob(f"swarmsecrets-{VERSION}-py3-none-any.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"swarmsecrets-{VERSION}.dist-info/licenses/LICENSE" in names
    for proto in ("ca", "control", "dispatcher", "objects", "raft", "swarm"):
        assert f"swarmsecrets/api/v1/{proto}_pb2.py" in names
        assert f"swarmsecrets/api/v1/{proto}_pb2_grpc.py" in names
    metadata = zipfile.ZipFile(wheel).read(f"swarmsecrets-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"swarmsecrets-{VERSION}.dist-info/entry_points.txt").decode()
    assert "swarmsecrets = swarmsecrets.cli.main:main" in entry_points
    assert "swarmsecretsd = swarmsecrets.node.main:main" in entry_points
    with tarfile.open(next(dist.glob(f"swarmsecrets-{VERSION}.tar.gz"))) as sdist:
        members = set(sdist.getnames())
    assert f"swarmsecrets-{VERSION}/LICENSE" in members
    assert f"swarmsecrets-{VERSION}/swarmsecrets/api/v1/swarm_pb2.py" in members
    # The source of the generated code, and the deployment examples.
    assert f"swarmsecrets-{VERSION}/proto/swarmsecrets/v1/swarm.proto" in members
    assert f"swarmsecrets-{VERSION}/deploy/swarmsecretsd.service" in members
    assert "Apache License" in (REPO_ROOT / "LICENSE").read_text()


@pytest.fixture()
def daemon(venv: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The installed ``swarmsecretsd`` on loopback; yields (its socket URL, its advertise address)."""
    sock = tmp_path / "swarmsecrets.sock"
    # On tmpfs, so that the manager runs its worker agent and tasks too, through the installed helper.
    secrets = SHM_ROOT / f"{LOOPBACK_SHM_PREFIX}wheel"
    addr = f"127.0.0.1:{free_port_pair()}"
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "swarmsecretsd"), "--data-dir", str(tmp_path / "data"),
                                 "--host", f"unix://{sock}", "--secrets-root", str(secrets)],
                                cwd=tmp_path, env=clean_env(venv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True)
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 30, 0.05, "the daemon's socket")
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        yield f"unix://{sock}", addr
    finally:
        signal_group(proc, 15)
        try:
            proc.wait(timeout=20)
        finally:
            signal_group(proc, 9)
            proc.wait(timeout=20)
            for point in sorted(mounts_under(secrets), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(secrets, ignore_errors=True)


def test_the_installed_commands_form_a_swarm_and_keep_a_secret(venv: Path, daemon: tuple[str, str],
                                                                tmp_path: Path) -> None:
    env = clean_env(venv)

    def run(*argv: str, input: str | None = None) -> str:
        p = subprocess.run(list(argv), input=input, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=60)
        assert p.returncode == 0, f"{' '.join(argv)} -> {p.returncode}\n{p.stdout}{p.stderr}"
        return p.stdout

    located = run("python", "-c", "import swarmsecrets; print(swarmsecrets.__file__)")
    assert located.startswith(str(venv)), located
    assert run("swarmsecrets", "--version") == f"swarmsecrets version {VERSION}\n"
    assert run("swarmsecretsd", "--version").strip() == f"swarmsecretsd {VERSION}"
    host, addr = daemon
    assert "Swarm initialized" in run("swarmsecrets", "-H", host, "swarm", "init", "--advertise-addr", addr)
    secret_id = run("swarmsecrets", "-H", host, "secret", "create", "db_pass", "-", input="database_password\n")
    listing = run("swarmsecrets", "-H", host, "secret", "ls")
    assert secret_id.strip()[:12] in listing and "db_pass" in listing, listing
    if os.geteuid() != 0:
        return  # tasks need root for their tmpfs and namespaces
    # A task, started by the installed daemon's helper, reads the secret at /run/secrets.
    out = tmp_path / "task.out"
    run("swarmsecrets", "-H", host, "service", "create", "--name", "reader", "--user", "0", "--secret", "db_pass",
        "--", "sh", "-c", f"cat /run/secrets/db_pass > {out}; exec sleep 600")
    wait_until(lambda: out.exists() and out.read_text() == "database_password\n", 60, 0.2, "the task to read it")
