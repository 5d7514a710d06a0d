"""Service logs on the leader's dispatcher: a node hears of a subscription on its session, and may
publish only for a subscription it was asked for, only lines of its own tasks of that service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from swarmsecrets.api.v1 import dispatcher_pb2 as pb
from swarmsecrets.api.v1 import objects_pb2
from tests.unit.managerkit import Swarm, aborted, ctx
from tests.unit.test_dispatcher import dispatcher, next_message, open_session, run


async def requests(*items: pb.PublishLogsRequest) -> AsyncIterator[pb.PublishLogsRequest]:
    for item in items:
        yield item


def line(task_id: str, data: bytes, node_id: str = "") -> objects_pb2.LogMessage:
    return objects_pb2.LogMessage(task_id=task_id, node_id=node_id, ts_ns=1, data=data)


def test_only_the_asked_node_publishes_and_only_its_own_tasks_of_the_service() -> None:
    async def test(swarm: Swarm) -> None:
        web, api = swarm.service("web"), swarm.service("api")
        swarm.add_node("w1")
        swarm.add_node("w2")
        swarm.task("t-web", web, "w1")
        swarm.task("t-api", api, "w1")
        swarm.task("t-web2", web, "w2", slot=2)
        d = dispatcher(swarm)
        c1, c2 = swarm.cert("w1", "worker"), swarm.cert("w2", "worker")
        s1, first1 = await open_session(d, c1)
        s2, first2 = await open_session(d, c2)
        sub = d.logs.subscribe(web.id, follow=False, tail=5, task_nodes={"w1"})
        told: Any = await next_message(s1)
        assert [(x.id, x.service_id, x.tail, x.follow) for x in told.log_subscriptions] == [(sub.id, web.id, 5, False)]

        def publish(session_id: str, cert: bytes, *lines: objects_pb2.LogMessage, close: bool = False) -> Any:
            return d.PublishLogs(requests(pb.PublishLogsRequest(session_id=session_id, subscription_id=sub.id,
                                                                messages=list(lines), close=close)), ctx(cert))

        err = await aborted(publish(first2.session_id, c2, line("t-web2", b"not asked")))
        assert (err.code, err.details) == (grpc.StatusCode.PERMISSION_DENIED, "this node was not asked for these logs")
        err = await aborted(publish(first1.session_id, c1, line("t-api", b"another service")))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        err = await aborted(publish(first1.session_id, c1, line("t-web2", b"another node's task")))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert sub.queue.empty()

        await publish(first1.session_id, c1, line("t-web", b"hello", node_id="w2"), close=True)
        [got] = await sub.queue.get()
        assert (got.task_id, got.node_id, got.service_id, got.data) == ("t-web", "w1", web.id, b"hello")
        assert await sub.queue.get() is None  # every node asked has sent all it had
        await s1.aclose()
        await s2.aclose()

    run(test)
