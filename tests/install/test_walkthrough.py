"""``scripts/run`` as a user runs it: the tour, then Ctrl-C; then a second run resumes the same swarm."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.localcluster import secrets_dir
from tests.framework import wait_until
from tests.framework.node import REPO_ROOT, child_env, mounts_under

pytestmark = pytest.mark.integration

NODES = 5


def free_base_port() -> int:
    """A port P with P+10i and P+10i+1 free on 127.0.0.1 for every node i (scripts/run's layout)."""
    for base in range(20000, 60000, 97):
        try:
            socks = []
            for i in range(NODES):
                for port in (base + 10 * i, base + 10 * i + 1):
                    s = socket.socket()
                    socks.append(s)
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range on 127.0.0.1")


def run(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as f:
        # SIGINT as a terminal's Ctrl-C delivers it (a background job would inherit it ignored).
        return subprocess.Popen([sys.executable, "-m", "scripts.localcluster", *args], cwd=REPO_ROOT,
                                env=child_env(), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen[bytes], out: Path) -> str:
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.read_text()
    assert proc.returncode == 0, text
    return text


def test_the_walk_through_shows_the_whole_job_then_resumes(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    base = free_base_port()
    args = ["--dir", str(root), "--base-port", str(base)]
    out = tmp_path / "run.out"
    proc = run(args, out)
    try:
        wait_until(lambda: "Press Ctrl-C" in out.read_text() or proc.poll() is not None, 120, 0.2, "the tour")
        assert proc.poll() is None, out.read_text()
        if os.geteuid() == 0:
            assert mounts_under(secrets_dir(root)), "the workers' secrets are not on the run's own tmpfs"
        proc.send_signal(signal.SIGINT)
    finally:
        text = finish(proc, out)

    where = "/run/secrets" if os.geteuid() == 0 else str(secrets_dir(root))
    assert ("Root: the workers' secrets roots are on a tmpfs" if os.geteuid() == 0 else "Not root:") in text
    assert "Swarm initialized" in text
    assert text.count("This node joined a swarm as a manager.") == 2
    assert text.count("This node joined a swarm as a worker.") == 2
    old = re.search(rf"task read {where}\S*/db_password: 'correct horse'\n", text)
    new = re.search(rf"task read {where}\S*/db_password: 'battery staple'\n", text)
    rotation = text.index("swarmsecrets service update --secret-rm db_pass_v1 --secret-add "
                          "source=db_pass_v2,target=db_password reader")
    assert old and new and old.start() < rotation < text.index("swarmsecrets secret rm db_pass_v1") < new.start(), text
    killed = re.search(r"\$ kill -9 \d+   # (m\d), the leader\n", text)
    assert killed, text
    after = re.search(r"secret create after_failover -   # on m\d\n([a-z0-9]{25})\n(m\d) leads now\.\n", text)
    assert after and after.group(2) != killed.group(1), text
    tail = text[text.index("== How the swarm is doing"):]
    assert "Swarm: active" in tail and " Managers: 3" in tail and " Nodes: 5" in tail, tail
    nodes = tail[tail.index("$ swarmsecrets node ls"):tail.index("$ swarmsecrets service ps")]
    assert nodes.count("Leader") == 1 and nodes.count("Reachable") == 2 and nodes.count("Ready") == NODES, nodes
    assert re.search(r"reader\.1 .* Running ", tail), tail
    assert f"export SWARMSECRETS_HOST=unix://{root}/m1/swarmsecrets.sock" in text
    assert "Stopped; mounts removed." in text
    assert not secrets_dir(root).exists() and not mounts_under(secrets_dir(root))

    again = tmp_path / "again.out"
    text = finish(run([*args, "--exit-after-tour"], again), again)
    assert f"Resuming the swarm in {root}." in text
    assert re.search(rf"The task of reader started again and printed: .*{where}\S*/db_password: 'battery staple'",
                     text), text
    assert "Swarm initialized" not in text and "Press Ctrl-C" not in text
    assert "Stopped; mounts removed." in text and not secrets_dir(root).exists()
