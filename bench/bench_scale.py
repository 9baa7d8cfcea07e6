"""Scale: a large local cluster (test driver), many VMs, and what one VM's change costs the nodes it
does not concern.

Prints: `devcluster up` time; `pvc vm start` returning -> domain running (p50, p99) and its wall time;
idle CPU and RSS per pvcd; ZooKeeper watchers of a VM record (= notifications per change of it) and
of everything; CPU per change on the VM's node and on each node it does not concern; `pvc vm list
-o json` time. Never asserts. Sizes are options, every wait is bounded.

Run: python -m bench.bench_scale [--nodes 64] [--vms 10000] [--running 1000] [--rounds 100] [--changes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time

import libvirt
import msgspec

from bench.bench_vm_ops import cpu_seconds, rss_mib, timed
from bench.common import LifecycleEvents, define_bulk, summary, with_zk
from pvc import store
from pvc.devcluster.cluster import DevCluster
from pvc.devcluster.zookeeper_server import four_letter
from pvc.zk import ZK


async def _set_states(zk: ZK, uuids: list[str], state: str, batch: int = 200) -> None:
    async def one(uuid: str) -> None:
        await store.update_domain(zk, uuid, lambda d: msgspec.structs.replace(d, state=state))

    for i in range(0, len(uuids), batch):
        await asyncio.gather(*(one(u) for u in uuids[i:i + batch]))


async def _wait_running(zk: ZK, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    running = 0
    while time.monotonic() < deadline:
        running = sum(d.libvirt_state == "running" for d in await store.list_domains(zk))
        if running >= count:
            break
        await asyncio.sleep(1)
    return running


def _watchers(dev: DevCluster) -> dict[str, int]:
    """Path -> sessions watching it, over every ZooKeeper server (each knows its own clients)."""
    counts: dict[str, int] = {}
    for z in dev.state.zookeeper_servers:
        path = ""
        for line in four_letter(f"127.0.0.1:{z.client_port}", "wchp", timeout=10).splitlines():
            if line.startswith("/"):
                path = line.strip()
                counts.setdefault(path, 0)
            elif line.strip().startswith("0x") and path:
                counts[path] += 1
    return counts


def _cpu(pids: list[int]) -> list[float]:
    return [cpu_seconds(p) for p in pids]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--running", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100, help="`pvc vm start` samples")
    parser.add_argument("--changes", type=int, default=200, help="VM state changes for the per-change cost")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="pvc-bench-scale-")
    print(f"scale bench: {args.nodes} nodes, {args.vms:,} VMs defined, {args.running:,} running, in {workdir}")
    dev = DevCluster(workdir)
    t = time.perf_counter()
    dev.up(nodes=args.nodes)
    print(f"devcluster up --nodes {args.nodes}: {time.perf_counter() - t:.1f} s")
    try:
        zookeeper = dev.state.zookeeper
        env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
        nodes = [n.name for n in dev.state.nodes]
        names = [f"s{i:05d}" for i in range(args.vms)]
        t = time.perf_counter()
        asyncio.run(define_bulk(zookeeper, names, nodes))
        print(f"defined {args.vms:,} VMs in {time.perf_counter() - t:.1f} s")
        doms = asyncio.run(with_zk(zookeeper, store.list_domains))
        by_name = {d.name: d for d in doms}
        t = time.perf_counter()
        first = [by_name[n].uuid for n in names[:args.running]]

        async def start_many(zk: ZK) -> int:
            await _set_states(zk, first, "start")
            return await _wait_running(zk, len(first), timeout=300)

        running = asyncio.run(with_zk(zookeeper, start_many))
        print(f"started {running:,} of {len(first):,} VMs in {time.perf_counter() - t:.1f} s")

        # `pvc vm start` -> running, on VMs spread over every node.
        events = LifecycleEvents({n.name: n.libvirt_uri for n in dev.state.nodes})
        latencies, walls = [], []
        for name in names[args.running:args.running + args.rounds]:
            start = time.perf_counter()
            subprocess.run(["pvc", "vm", "start", name], env=env, check=True, stdout=subprocess.DEVNULL)
            returned = time.perf_counter()
            up = events.wait(name, libvirt.VIR_DOMAIN_EVENT_STARTED, timeout=30)
            walls.append((returned - start) * 1000)
            if up is not None:
                latencies.append((up - start) * 1000)
        events.close()
        print(summary("`pvc vm start` issued -> domain running", latencies))
        print(summary("`pvc vm start` command wall time", walls))

        pids = [n.pvcd_pid for n in dev.state.nodes]
        time.sleep(5)
        before, t = _cpu(pids), time.perf_counter()
        time.sleep(20)
        seconds = time.perf_counter() - t
        idle = [(a - b) / seconds * 100 for a, b in zip(_cpu(pids), before)]
        rss = [rss_mib(p) for p in pids]
        print(f"pvcd idle CPU: mean {statistics.mean(idle):.2f} %, max {max(idle):.2f} % of a core; "
              f"RSS mean {statistics.mean(rss):.0f} MiB, max {max(rss):.0f} MiB")

        watchers = _watchers(dev)
        vm_watchers = [watchers.get(f"/domains/{d.uuid}", 0) for d in doms]
        print(f"ZooKeeper watchers of a VM record (notifications per change): mean "
              f"{statistics.mean(vm_watchers):.2f}, max {max(vm_watchers)}; watched paths in all "
              f"{len(watchers):,}, watches {sum(watchers.values()):,}")

        # Per-change cost: start/stop VMs of the first node only; the others are not concerned.
        mine = [by_name[n].uuid for n in names[args.running + args.rounds:] if by_name[n].node == nodes[0]]
        mine = mine[:max(1, args.changes // 2)]
        others = pids[1:]

        async def versions(zk: ZK) -> int:
            return sum([(await store.read_domain(zk, u))[1] for u in mine])

        versions_before = asyncio.run(with_zk(zookeeper, versions))
        before_all, t = _cpu(pids), time.perf_counter()

        async def churn(zk: ZK) -> None:
            for state in ("start", "stop"):
                await _set_states(zk, mine, state, batch=20)
                await asyncio.sleep(3)  # let the node carry them out

        asyncio.run(with_zk(zookeeper, churn))
        seconds = time.perf_counter() - t
        spent = [a - b for a, b in zip(_cpu(pids), before_all)]
        changes = asyncio.run(with_zk(zookeeper, versions)) - versions_before  # requests and outcomes
        idle_s = [i / 100 * seconds for i in idle]
        involved = (spent[0] - idle_s[0]) / changes * 1000
        uninvolved = [(s - i) / changes * 1000 for s, i in zip(spent[1:], idle_s[1:])]
        print(f"{changes} VM record changes on {nodes[0]} ({2 * len(mine)} start/stop requests and the node's "
              f"outcomes), CPU beyond idle per change: {nodes[0]} {involved:.2f} ms; each of the {len(others)} other nodes mean "
              f"{statistics.mean(uninvolved):.3f} ms, max {max(uninvolved):.3f} ms")

        lists = [timed(["pvc", "vm", "list", "-o", "json"], env) for _ in range(5)]
        print(f"`pvc vm list -o json` at {args.vms:,} VMs: median {statistics.median(lists):.2f} s, "
              f"max {max(lists):.2f} s")
    finally:
        dev.down()


if __name__ == "__main__":
    main()
