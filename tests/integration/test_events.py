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


# -- the whole log on a running cluster: operations audited, state changes recorded ---------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.conftest import running_cluster

    yield from running_cluster(tmp_path_factory, 2)


def test_a_scripted_sequence_is_in_the_log_in_order_and_filters_work(cluster):
    import datetime
    import json
    import subprocess
    import time

    from tests.conftest import wait_until

    cluster.define("evvm", node="hv1")
    cluster.pvc("vm", "start", "evvm", "--wait")
    cluster.pvc("vm", "migrate", "evvm", "--target", "hv2", "--wait")
    before_stop = time.time()
    # Follow (filtered to this VM) while it stops: the newest event first (the follower is ready),
    # then what comes.
    follower = subprocess.Popen(["pvc", "cluster", "events", "-f", "--vm", "evvm", "-n", "1", "-o", "json"],
                                env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        backlog = json.loads(follower.stdout.readline())
        cluster.pvc("vm", "stop", "evvm", "--wait")
        followed = []
        deadline = time.monotonic() + 30
        # (the operation's entry is written once it returned: the stop it asked for may come first)
        while time.monotonic() < deadline and len(followed) < 2:
            followed.append(json.loads(follower.stdout.readline()))
    finally:
        follower.terminate()
        follower.wait(10)
    cluster.pvc("vm", "start", "evvm", "--wait")
    cluster.pvc("node", "flush", "hv2", "--wait")
    cluster.pvc("node", "ready", "hv2", "--wait")
    wait_until(lambda: any(e["kind"] == "ready_finished" for e in cluster.pvc_json("cluster", "events", "--node", "hv2")))

    mine = cluster.pvc_json("cluster", "events", "--vm", "evvm", "-n", "200")
    assert mine and all(e["vm"] == "evvm" for e in mine)
    audited = [(e["operation"], e["actor"], e["result"]) for e in mine if e["kind"] == "operation"]
    assert audited == [("vm.define", "zookeeper", "ok"), ("vm.start", "zookeeper", "ok"),
                       ("vm.migrate", "zookeeper", "ok"), ("vm.stop", "zookeeper", "ok"),
                       ("vm.start", "zookeeper", "ok")]
    def on(node):
        return [(e["kind"], e["args"].get("method", "")) for e in mine if e["kind"] != "operation" and e["node"] == node]

    # Each node's own changes, in order (across nodes, a hand-over and the target's start race).
    # The test driver cannot migrate live: "any" falls back to shutdown, and says so.
    moved = [("vm_migration_fallback", ""), ("vm_migrated", "shutdown")]
    assert on("hv1") == [("vm_started", ""), *moved, ("vm_started", ""), *moved]  # start, migrate; back by flush, ready
    assert on("hv2") == [("vm_started", ""), ("vm_stopped", ""), ("vm_started", ""), *moved, ("vm_started", "")]
    assert [e["args"]["target"] for e in mine if e["kind"] == "vm_migrated"] == ["hv2", "hv1", "hv2"]
    assert backlog["vm"] == "evvm" and sorted(e["kind"] for e in followed) == ["operation", "vm_stopped"]

    on_hv2 = cluster.pvc_json("cluster", "events", "--node", "hv2", "-n", "200")
    assert all(e["node"] == "hv2" for e in on_hv2)
    assert [e["operation"] for e in on_hv2 if e["operation"].startswith("flush.")] == ["flush.start", "flush.ready"]
    assert [e["kind"] for e in on_hv2 if e["kind"].startswith(("flush_", "ready_"))] == [
        "flush_started", "flush_finished", "ready_started", "ready_finished"]
    primaries = [e for e in cluster.pvc_json("cluster", "events", "-n", "1000") if e["kind"] == "primary_changed"]
    assert primaries and primaries[0]["node"] in cluster.nodes

    # --since: a time (local, as a user types it) and a duration; -n: the newest N
    local = datetime.datetime.fromtimestamp(before_stop).isoformat()
    since = cluster.pvc_json("cluster", "events", "--vm", "evvm", "--since", local, "-n", "200")
    assert since == [e for e in mine if e["time"] >= before_stop] and 0 < len(since) < len(mine)
    assert cluster.pvc_json("cluster", "events", "--vm", "evvm", "--since", "1h", "-n", "200") == mine
    assert cluster.pvc_json("cluster", "events", "--vm", "evvm", "-n", "2") == mine[-2:]
    assert cluster.pvc_json("event", "list", "--vm", "evvm", "-n", "2") == mine[-2:]  # the older name
    assert cluster.pvc("cluster", "events", "--vm", "nosuchvm").stdout == ""
    bad = cluster.pvc("cluster", "events", "--since", "yesterday", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --since 'yesterday'") and bad.stderr.count("\n") == 1
