"""Flush speed by `vm.flush_concurrency`, and how soon a queued flush starts after the one before.

1. Test driver (every migration takes the shutdown path, as the test driver cannot migrate): a local
   3-node cluster, hv1 holding ``--vms`` running VMs (1 MiB each), flushed with `pvc node flush --wait`
   at each concurrency of ``--concurrency`` and readied again (at the same concurrency); plus one
   flush of hv1 with a flush of hv2 queued behind it (the gap between them).
2. ``--qemu``: a 2-node qemu-mode cluster, two real tiny guests (pvc.devcluster.guest, 128 MiB, TCG)
   on hv1 migrating live, flushed and readied at each concurrency of ``--qemu-concurrency``.

Prints wall time (CLI included), time under the flush lock (the daemon's progress record) and the
most migrations in flight at once (``peak``). Nothing is asserted.

    python -m bench.bench_flush [--vms 200] [--concurrency 1,4,8] [--qemu] [--qemu-concurrency 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path


from bench.common import define_bulk
from pvc.devcluster.cluster import DevCluster
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


def running(dev: DevCluster, node: str) -> int:
    out = subprocess.run(["virsh", "-c", dev.node(node).libvirt_uri, "list", "--name"], capture_output=True,
                         text=True, check=False).stdout
    return len([line for line in out.splitlines() if line.strip()])


def wait_running(dev: DevCluster, node: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while running(dev, node) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not reach {count} running VMs within {timeout:g} s")
        time.sleep(0.2)


def operation(env: dict, zookeeper: str, op: str, node: str, log: str = "") -> tuple[float, dict]:
    """`pvc node <op> NODE --wait`: (wall seconds, the progress record). On a failure, the warnings and
    errors of the node's pvcd log (``log``) are printed too: the cluster is gone after the run."""
    start = time.perf_counter()
    proc = subprocess.run(["pvc", "node", op, node, "--wait"], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    wall = time.perf_counter() - start
    record = progress(zookeeper, node)
    if proc.returncode != 0:
        print(f"  ! pvc node {op} {node} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        if log and os.path.exists(log):
            lines = [line for line in Path(log).read_text(errors="replace").splitlines()
                     if "[warning" in line or "[error" in line or "Traceback" in line]
            print("\n".join(f"    {line[:240]}" for line in lines[-20:]))
    return wall, record


def report(label: str, wall: float, record: dict, vms: int) -> None:
    if record.get("finished"):
        inside = record["finished"] - record.get("started", 0)
        lock = f"under the lock {inside:6.2f} s ({inside / max(vms, 1) * 1000:5.1f} ms per VM)"
    else:
        lock = f"not finished ({record.get('status', 'no progress record')})"
    print(f"  {label:<34} wall {wall:6.2f} s, {lock}, peak {record.get('peak', 0)} at once, "
          f"{len(record.get('moved', []))} moved, {len(record.get('failed', []))} not moved", flush=True)


def by_concurrency(dev: DevCluster, levels: list[int], vms: int) -> None:
    zookeeper = dev.state.zookeeper
    env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
    for n in levels:
        dev.restart_node_with("hv1", "vm", flush_concurrency=n)
        log = dev.node("hv1").pvcd_log
        report(f"flush, concurrency {n}:", *operation(env, zookeeper, "flush", "hv1", log), vms)
        report(f"ready, concurrency {n}:", *operation(env, zookeeper, "ready", "hv1", log), vms)


def test_driver(args, workdir: str) -> None:
    dev = DevCluster(workdir)
    dev.up(nodes=3)
    try:
        zookeeper = dev.state.zookeeper
        asyncio.run(define_bulk(zookeeper, [f"f{i:03d}" for i in range(args.vms)], ["hv1"], start=True))
        asyncio.run(define_bulk(zookeeper, [f"g{i:03d}" for i in range(10)], ["hv2"], start=True))
        wait_running(dev, "hv1", args.vms)
        print(f"test driver, 3 nodes, hv1 holding {args.vms} running VMs:")
        by_concurrency(dev, args.concurrency, args.vms)
        # A second flush queued behind the first: how soon it starts once the first ends.
        env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
        first = subprocess.Popen(["pvc", "node", "flush", "hv1", "--wait"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        subprocess.run(["pvc", "node", "flush", "hv2"], env=env, check=True, capture_output=True)
        first.wait()
        for _ in range(600):
            if progress(zookeeper, "hv2").get("status") == "done":
                break
            time.sleep(0.1)
        p1, p2 = progress(zookeeper, "hv1"), progress(zookeeper, "hv2")
        print(f"  queued second flush starts after the first ends: {(p2['started'] - p1['finished']) * 1000:.1f} ms")
    finally:
        dev.down()


def qemu(args, workdir: str) -> None:
    from pvc.devcluster import guest

    if reason := guest.qemu_missing():
        print(f"qemu part skipped: {reason}")
        return
    dev = DevCluster(workdir)
    dev.up(nodes=2, hypervisor="qemu")
    try:
        zookeeper = dev.state.zookeeper
        env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
        console = dev.node("hv1").console_log_directory
        names = ["q1", "q2"]
        for name in names:
            path = Path(workdir) / f"{name}.xml"
            path.write_text(guest.domain_xml(name, console))
            subprocess.run(["pvc", "vm", "define", str(path), "--target", "hv1"], env=env, check=True,
                           capture_output=True)
            subprocess.run(["pvc", "vm", "start", name, "--wait"], env=env, check=True, capture_output=True,
                           timeout=300)
        for name in names:  # booted: its console ticks
            log = Path(console) / f"{name}.log"
            deadline = time.monotonic() + 180
            while not (log.exists() and guest.TICK in log.read_text(errors="replace")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not boot")
                time.sleep(0.5)
        print("qemu (TCG), 2 nodes, hv1 holding 2 running 128 MiB guests (live migration):")
        by_concurrency(dev, args.qemu_concurrency, len(names))
    finally:
        dev.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--qemu", action="store_true", help="also flush two real QEMU guests")
    parser.add_argument("--qemu-concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--no-test-driver", action="store_true")
    args = parser.parse_args()
    if not args.no_test_driver:
        with tempfile.TemporaryDirectory(prefix="pvc-bench-") as tmp:
            test_driver(args, tmp)
    if args.qemu:
        with tempfile.TemporaryDirectory(prefix="pvc-bench-") as tmp:
            qemu(args, tmp)


if __name__ == "__main__":
    main()
