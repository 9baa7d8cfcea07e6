"""The per-node VM index (docs/schema.md, "Per-node VM index"): kept exact through define, start,
migrate, a pending hand-over and undefine; a VM's record watched only by the daemons it concerns;
`pvc init` builds the index of a version-1 cluster."""

from __future__ import annotations

import asyncio

from pvc import domain_index, store
from pvc.devcluster.zookeeper_server import four_letter
from pvc.schema import Paths
from pvc.zk import ZK
from tests.conftest import wait_until


def _zk_call(cluster, work):
    async def run():
        zk = ZK(cluster.zookeeper)
        await zk.start()
        try:
            return await work(zk)
        finally:
            await zk.close()

    return asyncio.run(run())


async def _index_and_records(zk: ZK):
    folders = await zk.children(Paths.node_domains)
    index = {n: set(await zk.children(Paths.node_domains_of(n))) for n in folders}
    return {n: u for n, u in index.items() if u}, domain_index.entries(await store.list_domains(zk))


def assert_index_exact(cluster) -> None:
    index, expected = _zk_call(cluster, _index_and_records)
    assert index == expected


def watchers(cluster, path: str) -> int:
    """Sessions watching ``path``, over every ZooKeeper server."""
    count = 0
    for z in cluster.dev.state.zookeeper_servers:
        lines = four_letter(f"127.0.0.1:{z.client_port}", "wchp", timeout=5).splitlines()
        for i, line in enumerate(lines):
            if line.strip() == path:
                count += sum(1 for _ in _sessions(lines[i + 1:]))
    return count


def _sessions(lines):
    for line in lines:
        if not line.strip().startswith("0x"):
            return
        yield line


def test_index_follows_every_change_and_only_concerned_daemons_watch(cluster):
    cluster.define("ix1", node="hv1", start=True)
    cold = cluster.define("ix2", node="hv1")
    assert_index_exact(cluster)
    record = f"/domains/{cold['uuid']}"
    # Only hv1's daemon watches a VM of hv1 (the others' pvcd never read it).
    wait_until(lambda: watchers(cluster, record) == 1, timeout=10)

    cluster.pvc("vm", "migrate", "ix1", "--target", "hv2", "--wait")
    assert cluster.vm("ix1")["node"] == "hv2"
    assert_index_exact(cluster)

    # A hand-over: hv3 is in the index from the request on, hv1 until it confirmed the VM off.
    cluster.pvc("vm", "move", "ix2", "--target", "hv3", "--wait")
    info = cluster.vm("ix2")
    assert (info["node"], info["target_node"]) == ("hv3", "")
    assert_index_exact(cluster)
    # hv3 follows it now; hv1 let go (a watch ZooKeeper still holds for hv1 fires once more, at the
    # next change, and is not renewed).
    cluster.pvc("vm", "start", "ix2", "--wait")
    assert cluster.where_running("ix2") == ["hv3"]
    wait_until(lambda: watchers(cluster, record) == 1, timeout=10)

    for name in ("ix1", "ix2"):
        cluster.pvc("vm", "stop", name, "--wait")
        cluster.pvc("vm", "undefine", name, "--yes")
    assert_index_exact(cluster)
    index, _ = _zk_call(cluster, _index_and_records)
    assert not any(cold["uuid"] in uuids for uuids in index.values())


def test_init_builds_the_index_of_a_version_1_cluster(cluster):
    cluster.define("old1", node="hv2", start=True)
    cluster.define("old2", node="hv3")

    async def downgrade(zk: ZK) -> None:
        await zk.set(Paths.schema_version, b"1")
        for node in await zk.children(Paths.node_domains):
            await zk.delete_tree(Paths.node_domains_of(node))
        await zk.delete(Paths.node_domains)

    _zk_call(cluster, downgrade)
    refused = cluster.pvc("vm", "list", check=False)
    assert refused.returncode != 0 and "run `pvc init` to upgrade it" in refused.stderr
    cluster.pvc("init")
    assert _zk_call(cluster, lambda zk: zk.get_data(Paths.schema_version)) == b"2"
    assert_index_exact(cluster)
    index, _ = _zk_call(cluster, _index_and_records)
    assert cluster.vm("old1")["uuid"] in index["hv2"] and cluster.vm("old2")["uuid"] in index["hv3"]
    # The daemons follow the rebuilt index: a request is carried out.
    cluster.pvc("vm", "stop", "old1", "--wait")
    assert cluster.where_running("old1") == []
