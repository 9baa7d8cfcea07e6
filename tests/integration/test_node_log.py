"""`pvc node log`: pvcd's own log lines kept in a bounded ring in ZooKeeper (pvc.node_log), shown and
followed; the daemon's sink (pvc.daemon.log.ZooKeeperSink) against a real ZooKeeper that goes away."""

from __future__ import annotations

import asyncio
import itertools
import queue
import shutil
import signal
import subprocess
import threading

import pytest

from pvc.daemon.log import ZooKeeperSink
from pvc.devcluster.zookeeper_server import ZookeeperServer
from pvc.node_log import RING_BYTES, RING_CHUNKS, Pending, chunk_first
from pvc.ops.nodelog import read_ring
from pvc.schema import Paths
from pvc.zk import ZK
from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 1)


def node_log(cluster, *args: str) -> list[str]:
    return cluster.pvc("node", "log", cluster.nodes[0], *args).stdout.splitlines()


def test_node_log_shows_the_daemons_lines_bounded_by_lines(cluster) -> None:
    node = cluster.nodes[0]
    # What pvcd logs at start reaches ZooKeeper within its flush interval.
    lines = wait_until(lambda: (out := node_log(cluster, "--lines", "1000")) and
                       any("daemon_state" in line and "run" in line for line in out) and out, timeout=10)
    assert all(f"node={node}" in line for line in lines)
    last2 = node_log(cluster, "--lines", "2")
    assert len(last2) == 2 and set(last2) <= set(node_log(cluster, "--lines", "1000"))
    assert node_log(cluster, "--lines", "0") == []
    # The daemon's ring, as stored: within its bounds, numbered without gaps.
    ring = asyncio.run(_with_zk(cluster.zookeeper, lambda zk: read_ring(zk, Paths.node_log(node))))
    assert ring and len(ring) <= RING_CHUNKS and sum(len(c.encode()) for c in ring) <= RING_BYTES
    assert all(a.end == b.first for a, b in itertools.pairwise(ring)) and lines[-1] in {x for c in ring for x in c.lines}
    unknown = cluster.pvc("node", "log", "nosuchnode", check=False)
    assert unknown.returncode != 0 and unknown.stderr.strip() == "error: unknown node 'nosuchnode'"
    bad = cluster.pvc("node", "log", node, "--lines", "-1", check=False)
    assert bad.returncode == 1 and bad.stderr == "error: lines must be 0 or more, not -1\n"


def test_follow_shows_new_lines_and_ends_on_sigterm(cluster) -> None:
    node = cluster.nodes[0]
    proc = subprocess.Popen([shutil.which("pvc") or "pvc", "node", "log", node, "-f", "--lines", "0"],
                            env=cluster.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()
    try:
        cluster.define("logvm", node=node)
        cluster.pvc("vm", "start", "logvm", "--wait")
        seen: list[str] = []

        def vm_step_seen() -> bool:
            while not out.empty():
                seen.append(out.get())
            return any("vm_step" in line and "vm=logvm" in line for line in seen)

        wait_until(vm_step_seen, timeout=10)
        assert not any("daemon_state" in line for line in seen)  # --lines 0: only what came after
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        cluster.pvc("vm", "stop", "logvm", "--wait", check=False)
        cluster.pvc("vm", "undefine", "logvm", "--yes", check=False)
    assert code == 0, proc.stderr.read()


def test_sink_keeps_the_ring_bounded_and_counts_lines_dropped_while_zookeeper_is_away(tmp_path) -> None:
    server = ZookeeperServer(tmp_path / "zk")
    server.start()
    folder = "/nodelog-test"

    async def main() -> None:
        zk = ZK(server.address, session_timeout=30, request_timeout=2)
        await zk.start()
        sink = ZooKeeperSink(interval=0.05, pending=Pending(max_bytes=2000),
                             ring_bounds={"max_bytes": 3000, "max_chunks": 4})
        task = asyncio.create_task(sink.run(zk, folder))
        try:
            for i in range(300):  # many chunks: the ring must stay within 4 chunks and 3000 bytes
                sink.add(f"line {i:04d} " + "x" * 40)
                if i % 10 == 9:  # within the 2000 bytes that may wait: nothing dropped
                    await asyncio.wait_for(_until(lambda: not len(sink.pending)), 10)

            async def trimmed() -> list[str]:  # the last write's trim may still be under way
                while len(names := await zk.children(folder)) > 4:
                    await asyncio.sleep(0.02)
                return names

            names = await asyncio.wait_for(trimmed(), 10)
            sizes = [len(v) for v in await zk.get_many(f"{folder}/{n}" for n in names)]
            assert len(names) <= 4 and sum(sizes) <= 3000, (names, sizes)
            ring = await read_ring(zk, folder)
            assert ring[-1].lines[-1].startswith("line 0299") and ring[-1].end == 300
            assert [c.first for c in ring] == sorted(chunk_first(n) for n in names)

            server.stop()  # ZooKeeper away: logging goes on, lines wait up to the bound, then drop
            await asyncio.wait_for(_until(lambda: not zk.connected.is_set()), 20)
            for i in range(100):
                sink.add(f"away {i:03d} " + "y" * 40)
            kept, dropped = len(sink.pending), sink.pending.dropped
            assert 0 < kept < 100 and kept + dropped == 100
            server.start()
            await asyncio.wait_for(_until(lambda: zk.connected.is_set() and not len(sink.pending)), 30)
            ring = await read_ring(zk, folder)
            after = [c for c in ring if c.first >= 300]
            assert after[0].dropped == dropped and after[0].lines[0].startswith("away 000")
            assert sum(len(c.lines) for c in after) == kept and sum(c.dropped for c in after) == dropped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await zk.close()  # the server and its data are this test's own: nothing else to clean

    try:
        asyncio.run(main())
    finally:
        server.stop()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


async def _with_zk(address: str, work):
    zk = ZK(address, request_timeout=5)
    await zk.start()
    try:
        return await work(zk)
    finally:
        await zk.close()
