"""The node in-process, with its real manager on loopback: a failed init rolls back to a clean
inactive node that can init again, and leave brings it back to inactive."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from swarmsecrets import errors
from swarmsecrets.node.config import DaemonConfig, RaftSettings
from swarmsecrets.node.daemon import Node
from swarmsecrets.node.localapi import InitOptions
from swarmsecrets.node.roles import Role
from tests.framework import free_port_pair


async def _init_fails_then_succeeds(tmp_path: Path) -> None:
    config = DaemonConfig(data_dir=str(tmp_path / "data"), host=f"unix://{tmp_path}/s.sock",
                          secrets_root=str(tmp_path / "secrets"),
                          raft=RaftSettings(heartbeat=0.05, election_min=0.4, election_max=0.8))
    node = Node(config)
    port = free_port_pair()
    advertise = f"127.0.0.1:{port}"
    try:
        with socket.socket() as squatter:  # the raft port (advertised + 1) is taken: init must fail
            squatter.bind(("127.0.0.1", port + 1))
            squatter.listen()
            in_use = f"^listen tcp 127.0.0.1:{port + 1}: bind: address already in use$"
            with pytest.raises(errors.ListenFailed, match=in_use):
                await node.init(InitOptions(advertise_addr=advertise))
        assert node.role is Role.INACTIVE and node.manager is None
        assert node.info().local_node_state == "inactive"
        assert sorted(os.listdir(config.data_dir)) == []  # no identity, keys, raft data or node.json left

        done = await node.init(InitOptions(advertise_addr=advertise))
        assert node.role is Role.MANAGER and node.dir.load().role is Role.MANAGER
        assert node.info().node_id == done.node_id and node.info().control_available

        with pytest.raises(errors.FailedPrecondition, match="already part of a swarm"):
            await node.init(InitOptions(advertise_addr=advertise))
        with pytest.raises(errors.FailedPrecondition) as e:
            await node.leave(force=False)
        assert e.value.message == errors.LAST_MANAGER_LEAVE and node.role is Role.MANAGER

        await node.leave(force=True)
        assert node.role is Role.INACTIVE and node.manager is None
        assert sorted(os.listdir(config.data_dir)) == []
    finally:
        await node.shutdown()


def test_a_failed_init_rolls_back_and_leave_forgets_the_swarm(tmp_path: Path) -> None:
    asyncio.run(_init_fails_then_succeeds(tmp_path))
