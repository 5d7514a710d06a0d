"""deploy/: the Ansible playbook, the cloud-init user-data, and the swarmsecrets commands both issue.

Both examples issue their swarmsecrets commands only through deploy/swarmsecrets-bootstrap. The test
takes the copy of it that cloud-init/make-user-data embeds, and the per-machine settings the user-data
writes, and runs ``swarmsecrets-bootstrap up`` on network-namespace hosts against real daemons started
with deploy/swarmsecretsd.toml: 3 managers and a worker form a swarm as they would on VMs. Only the
transport of the join token differs (SSH to the first manager there, the same ``token`` command here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarmsecrets.cli.client import DEFAULT_HOST
from tests.framework import FAST_TIMINGS, Cluster, Namespaces, NetnsLab, Node
from tests.framework.node import REPO_ROOT

pytestmark = pytest.mark.integration

DEPLOY = REPO_ROOT / "deploy"
BOOTSTRAP = "/usr/local/sbin/swarmsecrets-bootstrap"
ENV_FILE = "/etc/swarmsecrets/bootstrap.env"
KEY_FILE = "/etc/swarmsecrets/bootstrap_key"
WHEEL = "https://files.example.internal/swarmsecrets-0.1.0-py3-none-any.whl"


def make_user_data(tmp: Path, role: str, advertise: str, first: str) -> str:
    key = tmp / "bootstrap_key"
    if not key.exists():
        # Any text serves: the key is only carried, never used, on this side of SSH.
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key\n-----END OPENSSH PRIVATE KEY-----\n")
        Path(f"{key}.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey swarmsecrets-bootstrap\n")
    args = ["--role", role, "--advertise-addr", advertise, "--wheel", WHEEL, "--bootstrap-key", str(key)]
    if first:
        args += ["--first-manager", first]
    p = subprocess.run([sys.executable, str(DEPLOY / "cloud-init" / "make-user-data"), *args], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def written(user_data: str) -> dict[str, str]:
    """The files a user-data writes: path -> content."""
    return {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}


def test_the_playbook_passes_ansible_syntax_check() -> None:
    ansible = DEPLOY / "ansible"
    p = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i",
                        str(ansible / "inventory.example.ini"), str(ansible / "swarmsecrets.yml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_playbook_issues_swarmsecrets_commands_only_through_the_bootstrap_script() -> None:
    """What the namespace test runs is what the playbook runs: ``up`` (init or join) and ``token``."""
    plays: list[dict[str, Any]] = yaml.safe_load((DEPLOY / "ansible" / "swarmsecrets.yml").read_text())
    commands = [task["ansible.builtin.command"]["argv"] for play in plays for task in play["tasks"]
                if "ansible.builtin.command" in task]
    assert {tuple(c[:2]) for c in commands} == {(BOOTSTRAP, "install"), (BOOTSTRAP, "up"), (BOOTSTRAP, "token")}
    sources = {task["ansible.builtin.copy"]["src"] for play in plays for task in play["tasks"]
               if "src" in task.get("ansible.builtin.copy", {})}
    assert {"../swarmsecrets-bootstrap", "../swarmsecretsd.toml", "../swarmsecretsd.service"} <= sources
    for src in sources - {"{{ swarmsecrets_wheel }}"}:
        assert (DEPLOY / "ansible" / src).resolve().is_file(), src
    env = next(task["ansible.builtin.copy"]["content"] for play in plays for task in play["tasks"]
               if task.get("ansible.builtin.copy", {}).get("dest") == ENV_FILE)
    assert [line.split("=")[0] for line in env.splitlines()] == [
        "SWARMSECRETS_ROLE", "SWARMSECRETS_ADVERTISE_ADDR", "SWARMSECRETS_FIRST_MANAGER"]


def test_the_user_data_passes_the_cloud_init_schema_check(tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (scripts/test installs it when run as root)")
    for role, first in (("first-manager", ""), ("manager", "10.0.0.11:2377"), ("worker", "10.0.0.11:2377")):
        path = tmp_path / f"{role}.yaml"
        path.write_text(make_user_data(tmp_path, role, "10.0.0.12:2377", first))
        p = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and "Valid cloud-config" in p.stdout, f"{role}: {p.stdout}{p.stderr}"
    files = written(path.read_text())
    for name, path_on_host in (("swarmsecrets-bootstrap", BOOTSTRAP),
                               ("swarmsecretsd.toml", "/etc/swarmsecrets/swarmsecretsd.toml"),
                               ("swarmsecretsd.service", "/etc/systemd/system/swarmsecretsd.service")):
        assert files[path_on_host] == (DEPLOY / name).read_text(), name


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs ip (apt-get install -y iproute2)"
    return None


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, NetnsLab]]:
    """Four namespace hosts, each running a daemon (not yet in a swarm) with the example config file."""
    if why := lab_unavailable():
        pytest.skip(why)
    root = tmp_path_factory.mktemp("deploy")
    lab = NetnsLab("deploy", 4, log_dir=root)
    lab.up()
    try:
        cluster = Cluster(root, 3, 1, placement=Namespaces(lab), timings=FAST_TIMINGS,
                          extra_args=("--config", str(DEPLOY / "swarmsecretsd.toml")))
        try:
            cluster.spawn()
            yield cluster, lab
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            cluster.stop()
    finally:
        lab.down()


def playbook_env(role: str, advertise: str, first: str) -> str:
    """The bootstrap.env the playbook writes on a host, its three template variables filled in."""
    plays: list[dict[str, Any]] = yaml.safe_load((DEPLOY / "ansible" / "swarmsecrets.yml").read_text())
    template: str = next(task["ansible.builtin.copy"]["content"] for play in plays for task in play["tasks"]
                         if task.get("ansible.builtin.copy", {}).get("dest") == ENV_FILE)
    env = template.replace("{{ role }}", role).replace("{{ advertise_addr }}", advertise)
    env = env.replace("{{ first_addr }}", first)
    assert "{{" not in env, env
    return env


def test_the_bootstrap_commands_form_a_swarm_on_namespace_hosts(hosts: tuple[Cluster, NetnsLab],
                                                               tmp_path: Path) -> None:
    """m1, m2 and w1 come up as cloud-init would bring them up, m3 as the playbook would."""
    cluster, lab = hosts
    m1 = cluster.managers[0]
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    roles = {"m1": "first-manager", "m2": "manager", "m3": "manager", "w1": "worker"}

    def bootstrap(node: Node, argv: list[str], env: dict[str, str] | None = None) -> str:
        """The script cloud-init would install, run on the node's host against its daemon."""
        script = tmp_path / "m1" / "swarmsecrets-bootstrap"
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        p = lab.exec(node.host, ["env", f"PATH={path}", f"SWARMSECRETS_HOST={node.host_url}", *extra, "bash",
                                 str(script), *argv], check=False)
        assert p.returncode == 0, f"{node.name}: {p.stdout}{p.stderr}\n{node.log_tail()}"
        return p.stdout

    def up(node_name: str) -> str:
        node = cluster.member(node_name)
        here = tmp_path / node.name
        here.mkdir(exist_ok=True)
        files = written(make_user_data(tmp_path, roles[node.name], node.addr,
                                       "" if node is m1 else m1.addr))
        if node is m1:
            (here / "swarmsecrets-bootstrap").write_text(files[BOOTSTRAP])
        key = here / "bootstrap_key"
        env = files[ENV_FILE]
        if node is not m1:
            key.write_text(files[KEY_FILE])
            # What the SSH forced command runs on the first manager, run here directly.
            source = f"env SWARMSECRETS_HOST={m1.host_url} bash {tmp_path / 'm1' / 'swarmsecrets-bootstrap'} token"
            assert f"SWARMSECRETS_FORGET={KEY_FILE}\n" in env
            env = "".join(f"SWARMSECRETS_TOKEN_SOURCE='{source}'\n" if line.startswith("SWARMSECRETS_TOKEN_SOURCE=")
                          else f"SWARMSECRETS_FORGET={key}\n" if line.startswith("SWARMSECRETS_FORGET=")
                          else line + "\n" for line in env.splitlines())
        (here / "bootstrap.env").write_text(env)
        out = bootstrap(node, ["up", str(here / "bootstrap.env")])
        if node is not m1 and "already in a swarm" not in out:
            assert not key.exists(), "a joiner keeps the key that fetched its token"
        return out

    def playbook_join(node_name: str) -> str:
        """The playbook's steps: ``token manager`` on the first manager, then ``up`` with it in the environment."""
        node = cluster.member(node_name)
        token = bootstrap(m1, ["token", "manager"]).strip()
        assert token.startswith("SWMTKN-1-"), token
        env_file = tmp_path / f"{node.name}.env"
        env_file.write_text(playbook_env(roles[node.name], node.addr, m1.addr))
        return bootstrap(node, ["up", str(env_file)], {"SWARMSECRETS_JOIN_TOKEN": token})

    assert "Swarm initialized" in up("m1")
    # As the machines would boot: the worker joins while the managers join one after the other.
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(up, "w1")
        assert "This node joined a swarm as a manager." in up("m2")
        assert "This node joined a swarm as a manager." in playbook_join("m3")
        assert "This node joined a swarm as a worker." in worker.result()
    assert "already in a swarm (Swarm: active)" in up("m2")
    for n in cluster.members:
        n.node_id = n.info().node_id
    cluster.wait_workers_ready()
    listing = cluster.leader().ok("node", "ls")
    assert listing.count("Leader") == 1, listing
    assert listing.count("Reachable") == 2, listing
    assert len(listing.strip().splitlines()) == 5, listing


def test_the_unit_starts_the_daemon_where_the_documented_install_puts_it() -> None:
    """README: the wheel is installed with pipx, PIPX_BIN_DIR=/usr/local/bin (swarmsecrets-bootstrap install)."""
    unit = (DEPLOY / "swarmsecretsd.service").read_text()
    exec_start = next(line.split("=", 1)[1].split()[0] for line in unit.splitlines() if line.startswith("ExecStart="))
    script = (DEPLOY / "swarmsecrets-bootstrap").read_text()
    assert "PIPX_BIN_DIR=${PIPX_BIN_DIR:-/usr/local/bin}" in script
    assert exec_start == "/usr/local/bin/swarmsecretsd"
    assert "PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install" in (REPO_ROOT / "README.md").read_text()


def test_the_example_config_serves_the_socket_the_cli_dials_by_default() -> None:
    """swarmsecrets-bootstrap runs the CLI without -H on a daemon started with the example config."""
    config = tomllib.loads((DEPLOY / "swarmsecretsd.toml").read_text())
    assert config.get("host", DEFAULT_HOST) == DEFAULT_HOST
