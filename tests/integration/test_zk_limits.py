"""The ZooKeeper adapter against a real server: what ZooKeeper cannot hold is refused before it is
sent (the server would drop the connection and the request would be retried until its timeout), and a
request whose connection drops is resent, never lost and never made twice. (Server loss in an ensemble:
test_zookeeper_ensemble.py.)"""

from __future__ import annotations

import asyncio

import pytest
from aiozk import exc

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


def dropping_once(real, calls: list):
    """``real`` applied by the server, then its connection "drops" before the answer arrives once."""
    async def call(*args, **kw):
        calls.append(args)
        result = await real(*args, **kw)
        if len(calls) == 1:
            raise exc.ConnectError("127.0.0.1", 0)
        return result

    return call


def test_a_dropped_request_is_resent(server):
    async def work(zk):
        await zk.put("/resend", b"v")
        calls: list = []
        zk._client.get = dropping_once(zk._client.get, calls)
        return await zk.get_data("/resend"), len(calls)

    assert run(server, work) == (b"v", 2)


def test_a_dropped_sequential_create_is_not_made_twice(server):
    """Applied, but the answer was lost: the adapter finds the node instead of creating a second one
    (for a lock, a ghost entry ahead of its own owner)."""
    async def work(zk):
        await zk.ensure_path("/seq")
        calls: list = []
        zk._client.create = dropping_once(zk._client.create, calls)
        path = await zk.create("/seq/lock-", b"me", ephemeral=True, sequential=True)
        return path, await zk.children("/seq"), len(calls)

    path, children, calls = run(server, work)
    assert children == [path.rsplit("/", 1)[1]] and calls == 1


def test_many_reads_and_children_decode_every_value_and_name(server):
    """pvc.zk decodes multiRead and children answers itself (not through aiozk's generic parts)."""
    names = [f"n{i}" for i in range(1200)] + ["ünïcode-név", "x" * 200]  # more than two multiRead batches
    values = {name: f"value of {name} ✓".encode() * (i % 3) for i, name in enumerate(names)}  # b"" for a third

    async def work(zk):
        await zk.ensure_path("/many")
        await zk.multi([("create", f"/many/{n}", v) for n, v in list(values.items())[:600]])
        await zk.multi([("create", f"/many/{n}", v) for n, v in list(values.items())[600:]])
        await zk.ensure_path("/many-empty")
        read = await zk.get_many([f"/many/{n}" for n in names] + ["/many/missing", "/many-empty"])
        return sorted(await zk.children("/many")), await zk.children("/many-empty"), read

    children, empty, read = run(server, work)
    assert children == sorted(names) and empty == []
    assert read == [values[n] for n in names] + [None, b""]
