"""What /metrics costs pvcd: idle CPU and RSS with metrics off, on but not scraped, and scraped every
second (Prometheus' default is 15 s); how long a scrape takes, on the primary (whose cluster-wide figures
come from a reading of every VM record's state, reused for a while: pvc.daemon.metrics) and on another
node; and what one such reading costs.

Local 3-node cluster (test driver) with --vms VMs defined, --running of them running.
Run: python -m bench.bench_metrics [--vms 1000] [--running 100] [--seconds 30] [--settle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.bench_vm_ops import cpu_seconds, rss_mib
from bench.common import cluster, define_bulk, pct
from pvc import store
from pvc.zk import ZK


def scrape(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def footprint(dev, seconds: float, urls: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """{node: (CPU % of a core over ``seconds``, RSS MiB)}, scraping ``urls`` once a second meanwhile."""
    pids = {n.name: n.pvcd_pid for n in dev.state.nodes}
    before, start = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    while time.monotonic() - start < seconds:
        for url in urls or ():
            scrape(url)
        time.sleep(1 - (time.monotonic() - start) % 1)
    took = time.monotonic() - start
    return {n: ((cpu_seconds(p) - before[n]) / took * 100, rss_mib(p)) for n, p in pids.items()}


def show(label: str, figures: dict[str, tuple[float, float]], primary: str) -> None:
    parts = [f"{n}{'*' if n == primary else ''} {cpu:.2f} % / {rss:.0f} MiB" for n, (cpu, rss) in figures.items()]
    print(f"{label}: " + ", ".join(parts))


def set_metrics(dev, on: bool) -> None:
    """Rewrite each node's config with or without metrics.listen and restart its pvcd."""
    for node in dev.state.nodes:
        path = Path(node.config)
        config = yaml.safe_load(path.read_text())
        config.pop("metrics", None)
        if on:
            config["metrics"] = {"listen": f"127.0.0.1:{node.metrics_port}"}
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        dev.stop_node(node.name)
        dev.start_node(node.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--settle", type=float, default=30, help="seconds after a restart before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvc-bench-metrics-") as workdir:
        dev = cluster(workdir)
        try:
            nodes = [n.name for n in dev.state.nodes]
            names = [f"m{i:05d}" for i in range(args.vms)]
            asyncio.run(define_bulk(dev.state.zookeeper, names[: args.running], nodes, start=True))
            asyncio.run(define_bulk(dev.state.zookeeper, names[args.running:], nodes))

            async def primary_and_running() -> tuple[str, int]:
                zk = ZK(dev.state.zookeeper, request_timeout=30)
                await zk.start()
                try:
                    primary = (await zk.get_data("/config/primary_node") or b"").decode()
                    running = sum(d.libvirt_state == "running" for d in await store.list_domains(zk))
                    return primary, running
                finally:
                    await zk.close()

            deadline = time.monotonic() + 120
            while (found := asyncio.run(primary_and_running()))[1] < args.running and time.monotonic() < deadline:
                time.sleep(1)
            primary = found[0]
            print(f"{args.vms} VMs defined, {found[1]} running, 3 nodes; primary {primary} (marked *); "
                  f"CPU % of one core / RSS over {args.seconds:g} s")
            urls = {n["name"]: n["metrics_url"] for n in dev.info()}
            time.sleep(args.settle)
            show("metrics on, not scraped", footprint(dev, args.seconds), primary)
            show("metrics on, every node scraped every 1 s", footprint(dev, args.seconds, list(urls.values())), primary)
            other = next(n for n in nodes if n != primary)
            for node in (primary, other):
                times = [scrape(urls[node]) for _ in range(50)]
                size = len(urllib.request.urlopen(urls[node], timeout=10).read())
                print(f"scrape of {node}{' (primary)' if node == primary else ''}: p50 {statistics.median(times):.1f} ms, "
                      f"p99 {pct(times, 99):.1f} ms, max {max(times):.1f} ms (first {times[0]:.1f} ms), {size:,} bytes")
            async def cluster_reading() -> tuple[float, float]:
                from pvc.daemon.metrics import _read_cluster_from

                zk = ZK(dev.state.zookeeper, request_timeout=30)
                await zk.start()
                try:
                    wall, cpu = time.perf_counter(), time.process_time()
                    await _read_cluster_from(zk)
                    return time.perf_counter() - wall, time.process_time() - cpu
                finally:
                    await zk.close()

            readings = [asyncio.run(cluster_reading()) for _ in range(5)]
            print(f"the primary's cluster reading (same code, in this process; 5 runs): wall p50 "
                  f"{statistics.median(r[0] for r in readings) * 1000:.0f} ms, CPU p50 "
                  f"{statistics.median(r[1] for r in readings) * 1000:.0f} ms")
            set_metrics(dev, False)
            time.sleep(args.settle)
            primary = asyncio.run(primary_and_running())[0]
            show("metrics off (pvcd restarted)", footprint(dev, args.seconds), primary)
            set_metrics(dev, True)
            time.sleep(args.settle)
            primary = asyncio.run(primary_and_running())[0]
            show("metrics on again (pvcd restarted), not scraped", footprint(dev, args.seconds), primary)
        finally:
            dev.down()


if __name__ == "__main__":
    main()
