"""Flush of a node holding 100 running VMs (local 3-node cluster, test driver: every migration takes the
shutdown path), and how soon a queued second flush starts after the first ends.

Run: python -m bench.bench_flush [--vms 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time

from bench.common import cluster, define_bulk
from pvc.schema import Paths
from pvc.zk import ZK


def progress(zookeeper: str, node: str) -> dict:
    async def read():
        zk = ZK(zookeeper)
        await zk.start()
        try:
            return json.loads(await zk.get_data(Paths.node_key(node, "flush_progress")) or b"{}")
        finally:
            await zk.close()

    return asyncio.run(read())


def wait_running(dev, node: str, count: int) -> None:
    uri = dev.node(node).libvirt_uri
    for _ in range(600):
        out = subprocess.run(["virsh", "-c", uri, "list", "--name"], capture_output=True, text=True).stdout
        if len([line for line in out.splitlines() if line.strip()]) >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{node} did not reach {count} running VMs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvc-bench-") as workdir:
        dev = cluster(workdir, nodes=3)
        try:
            zkaddr = dev.state.zookeeper
            env = {**os.environ, "PVC_ZOOKEEPER": zkaddr}
            asyncio.run(define_bulk(zkaddr, [f"f{i:03d}" for i in range(args.vms)], ["hv1"], start=True))
            asyncio.run(define_bulk(zkaddr, [f"g{i:03d}" for i in range(10)], ["hv2"], start=True))
            wait_running(dev, "hv1", args.vms)
            wall, inside, gaps = [], [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                first = subprocess.Popen(["pvc", "node", "flush", "hv1", "--wait"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)
                subprocess.run(["pvc", "node", "flush", "hv2"], env=env, check=True, capture_output=True)
                first.wait()
                wall.append(time.perf_counter() - start)
                for _ in range(300):
                    if progress(zkaddr, "hv2").get("status") == "done":
                        break
                    time.sleep(0.05)
                p1, p2 = progress(zkaddr, "hv1"), progress(zkaddr, "hv2")
                inside.append(p1["finished"] - p1["started"])
                gaps.append((p2["started"] - p1["finished"]) * 1000)
                for node in ("hv1", "hv2"):
                    subprocess.run(["pvc", "node", "ready", node, "--wait"], env=env, check=True, capture_output=True)
            print(f"flush of {args.vms} running VMs (`pvc node flush --wait`, wall): "
                  f"median {statistics.median(wall):.2f} s over {args.rounds} rounds (min {min(wall):.2f}, max {max(wall):.2f})")
            print(f"  under the lock: median {statistics.median(inside):.2f} s, "
                  f"{statistics.median(inside) / args.vms * 1000:.1f} ms per VM")
            print(f"queued second flush starts after the first ends: median {statistics.median(gaps):.1f} ms, "
                  f"max {max(gaps):.1f} ms")
        finally:
            dev.down()


if __name__ == "__main__":
    main()
