"""The ZooKeeper adapter against a real server: what ZooKeeper cannot hold is refused before it is
sent (the server would drop the connection and the request would be retried until its timeout)."""

from __future__ import annotations

import asyncio

import pytest

from pvc.devcluster.zookeeper_server import ZookeeperServer
from pvc.errors import InvalidInput
from pvc.zk import MAX_REQUEST_BYTES, ZK


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    zk = ZookeeperServer(tmp_path_factory.mktemp("zk"))
    zk.start()
    yield zk
    zk.stop()


def run(server, work):
    async def main():
        # A long request timeout: a refusal that waited for it would show as a hang, not pass.
        zk = ZK(server.address, request_timeout=600)
        await zk.start()
        try:
            return await work(zk)
        finally:
            await zk.close()

    return asyncio.run(asyncio.wait_for(main(), 120))


MB = 1024 * 1024


def test_too_large_records_are_refused_and_nothing_written(server):
    async def work(zk):
        await zk.put("/limits", b"small")
        with pytest.raises(InvalidInput, match=r"/limits is 5.0 MB; ZooKeeper holds at most 1 MB per record"):
            await zk.set("/limits", bytes(5 * MB))
        with pytest.raises(InvalidInput, match=r"/limits-new is 2.0 MB"):
            await zk.create("/limits-new", bytes(2 * MB))
        with pytest.raises(InvalidInput, match=r"/limits-put is 1.0 MB"):
            await zk.put("/limits-put", bytes(MB))
        return await zk.get_data("/limits"), await zk.exists("/limits-new"), await zk.exists("/limits-put")

    assert run(server, work) == (b"small", False, False)


def test_transactions_are_checked_as_a_whole(server):
    async def work(zk):
        half = bytes(600 * 1024)
        with pytest.raises(InvalidInput, match=r"a transaction of 2 operations is 1.2 MB; .* at most 1 MB per request"):
            await zk.multi([("create", "/txn-a", half), ("create", "/txn-b", half)])
        with pytest.raises(InvalidInput, match=r"/txn-c is 3.0 MB"):
            await zk.multi([("create", "/txn-c", bytes(3 * MB)), ("create", "/txn-d", b"")])
        await zk.multi([("create", "/txn-e", half)])  # under the limit: fine
        return [await zk.exists(p) for p in ("/txn-a", "/txn-b", "/txn-c", "/txn-d", "/txn-e")]

    assert run(server, work) == [False, False, False, False, True]


def test_the_largest_record_zookeeper_takes_is_accepted(server):
    """The limit is exact: the largest request the server takes passes, one byte more is refused."""
    async def work(zk):
        await zk.put("/edge", b"")
        overhead = len("/edge") + 20  # a setData request: xid, opcode, path and data lengths, version
        await zk.set("/edge", bytes(MAX_REQUEST_BYTES - overhead))
        with pytest.raises(InvalidInput):
            await zk.set("/edge", bytes(MAX_REQUEST_BYTES - overhead + 1))
        return len(await zk.get_data("/edge"))

    assert run(server, work) == MAX_REQUEST_BYTES - len("/edge") - 20
