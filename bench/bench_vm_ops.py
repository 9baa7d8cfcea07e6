"""VM operations on a local 3-node cluster (test driver): start latency, listing, CLI cold start,
and the daemons' footprint with many VMs.

Prints: `pvc vm start` returning -> domain running (p50, p99) with 1,000 VMs defined;
`pvc vm list -o json` wall time at 1,000 and 10,000 VMs; `pvc --help` cold start; pvcd RSS and idle CPU.
Run: python -m bench.bench_vm_ops [--rounds N] [--big 10000]
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

from bench.common import LifecycleEvents, cluster, define_bulk, summary


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--big", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvc-bench-") as workdir:
        dev = cluster(workdir)
        try:
            env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper}
            nodes = [n.name for n in dev.state.nodes]
            names = [f"b{i:05d}" for i in range(1000)]
            t = time.perf_counter()
            asyncio.run(define_bulk(dev.state.zookeeper, names, nodes))
            print(f"defined 1,000 VMs in {time.perf_counter() - t:.2f} s")

            cold = [timed(["pvc", "--help"], env) * 1000 for _ in range(10)]
            print(summary("CLI cold start (pvc --help)", cold))

            events = LifecycleEvents({n.name: n.libvirt_uri for n in dev.state.nodes})
            latencies = []
            cli = []
            for name in names[: args.rounds]:
                start = time.perf_counter()
                subprocess.run(["pvc", "vm", "start", name], env=env, check=True, stdout=subprocess.DEVNULL)
                returned = time.perf_counter()
                running = events.wait(name, libvirt.VIR_DOMAIN_EVENT_STARTED)
                cli.append((returned - start) * 1000)
                latencies.append((running - returned) * 1000)
            events.close()
            print(summary("`pvc vm start` returning -> domain running", latencies))
            print(summary("`pvc vm start` command wall time", cli))

            # Footprint with 1,000 VMs in the cluster (100 running), idle.
            time.sleep(3)
            pids = [n.pvcd_pid for n in dev.state.nodes]
            before = [cpu_seconds(p) for p in pids]
            time.sleep(20)
            idle = [(cpu_seconds(p) - b) / 20 * 100 for p, b in zip(pids, before)]
            print(f"pvcd idle CPU with 1,000 VMs: {', '.join(f'{c:.2f}%' for c in idle)} of a core; "
                  f"RSS {', '.join(f'{rss_mib(p):.0f}' for p in pids)} MiB")

            lists = [timed(["pvc", "vm", "list", "-o", "json"], env) for _ in range(5)]
            print(f"`pvc vm list -o json` at 1,000 VMs: median {statistics.median(lists):.2f} s")

            more = [f"c{i:05d}" for i in range(args.big - 1000)]
            t = time.perf_counter()
            asyncio.run(define_bulk(dev.state.zookeeper, more, nodes))
            print(f"defined {len(more):,} more VMs in {time.perf_counter() - t:.1f} s")
            lists = [timed(["pvc", "vm", "list", "-o", "json"], env) for _ in range(5)]
            print(f"`pvc vm list -o json` at {args.big:,} VMs: median {statistics.median(lists):.2f} s, "
                  f"max {max(lists):.2f} s")
            time.sleep(3)
            before = [cpu_seconds(p) for p in pids]
            time.sleep(10)
            idle = [(cpu_seconds(p) - b) / 10 * 100 for p, b in zip(pids, before)]
            print(f"pvcd idle CPU with {args.big:,} VMs: {', '.join(f'{c:.2f}%' for c in idle)}; "
                  f"RSS {', '.join(f'{rss_mib(p):.0f}' for p in pids)} MiB")
        finally:
            dev.down()


if __name__ == "__main__":
    main()
