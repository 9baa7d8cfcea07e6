"""The event log (pvc.events) against a real ZooKeeper: order, trimming, following."""

from __future__ import annotations

import asyncio

import pytest

from pvc import events
from pvc.devcluster.zookeeper_server import ZookeeperServer
from pvc.schema import Paths
from pvc.zk import ZK


@pytest.fixture(scope="module")
def zk_address(tmp_path_factory):
    server = ZookeeperServer(tmp_path_factory.mktemp("zk-events"))
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


def with_zk(address, fn):
    async def main():
        zk = ZK(address)
        await zk.start()
        try:
            return await fn(zk)
        finally:
            await zk.close()

    return asyncio.run(main())


def test_events_keep_order_and_the_newest_are_kept(zk_address):
    async def work(zk):
        for i in range(25):
            await events.record(zk, "test", f"event {i}", node="hv1")
        await events.prune(zk, kept=10)
        kept = await events.recent(zk, 100)
        newest = await events.recent(zk, 3)
        return kept, newest, await zk.children(Paths.events)

    kept, newest, children = with_zk(zk_address, work)
    assert [e.message for _, e in kept] == [f"event {i}" for i in range(15, 25)]
    assert [e.message for _, e in newest] == ["event 22", "event 23", "event 24"]
    assert len(children) == 10


def test_follow_gives_the_backlog_then_new_events(zk_address):
    async def work(zk):
        await events.record(zk, "test", "before")
        seen = []

        async def follow():
            async for e in events.follow(zk, 1):
                seen.append(e.message)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        await events.record(zk, "test", "after 1")
        await events.record(zk, "test", "after 2")
        await asyncio.wait_for(task, 10)
        return seen

    assert with_zk(zk_address, work) == ["before", "after 1", "after 2"]
