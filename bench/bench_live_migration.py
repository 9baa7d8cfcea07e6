"""Live migration through pvc against libvirt alone, on the same pair of libvirtd instances.

Starts a 2-node qemu-mode dev cluster and boots one tiny guest (pvc.devcluster.guest), managed by
pvc. Every leg moves it to the other node, alternately through pvc and through libvirt directly, so
both measure the same guest in the same state:

    pvc:   pvc vm move bench --target <other> --wait
    virsh: virsh -c <here> migrate --live bench <other's migration URI> tcp://127.0.0.1

(after a virsh leg, pvc's daemon notices the domain left and records where it went; the next leg
waits for that, untimed). Each tool moves the guest once in each direction per round, the order
alternating between rounds. Prints the medians and their ratio (aim: pvc / virsh <= 1.10).
Both are wall-clock times of the command as a user runs it (pvc's include its Python start-up).
A ZooKeeper watch on the VM's record splits each pvc leg into: CLI until the request is recorded,
daemons until the record says the VM runs on the target, CLI until it exits.

    python bench/bench_live_migration.py [--rounds 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pvc.devcluster import guest
from pvc.devcluster.cluster import DevCluster


class RecordClock:
    """When a VM's record changed (perf_counter, record), seen by a watch in a background thread."""

    def __init__(self, zookeeper: str, vm: str) -> None:
        self.changes: list[tuple[float, object]] = []
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._watch(zookeeper, vm), self._loop).result(30)

    async def _watch(self, zookeeper: str, vm: str) -> None:
        from pvc import store
        from pvc.schema import Domain, Paths
        from pvc.zk import ZK

        self._zk = ZK(zookeeper)
        await self._zk.start()
        uuid = await store.resolve_domain(self._zk, vm)

        def seen(data: bytes | None, _version: int) -> None:
            if data:
                self.changes.append((time.perf_counter(), Domain.decode(data)))

        self._zk.watch_data(Paths.domain(uuid), seen)

    def split(self, start: float, end: float, target: str) -> tuple[float, float, float]:
        """(CLI until the request is recorded, daemons until done, CLI until exit) of one leg."""
        window = [(t, d) for t, d in self.changes if start <= t <= end]
        requested = next(t for t, d in window if d.state == "migrate")
        done = next(t for t, d in window if d.node == target and d.state == "start" and d.libvirt_state == "running")
        return requested - start, done - requested, end - done


def timed(*cmd: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return elapsed


def wait_ticking(dev: DevCluster, name: str, timeout: float = 90) -> None:
    log = Path(dev.node("hv1").console_log_directory) / f"{name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and guest.TICK in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    sys.exit(f"{name} did not boot within {timeout} s")


def run(rounds: int, workdir: Path) -> None:
    if reason := guest.qemu_missing():
        sys.exit(f"QEMU cannot run here: {reason}")
    dev = DevCluster(workdir)
    dev.up(nodes=2, hypervisor="qemu")
    try:
        env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper}
        pvc = shutil.which("pvc") or "pvc"
        hv1, hv2 = dev.node("hv1"), dev.node("hv2")
        console = hv1.console_log_directory
        (workdir / "bench.xml").write_text(guest.domain_xml("bench", console))
        timed(pvc, "vm", "define", str(workdir / "bench.xml"), "--target", "hv1", env=env)
        timed(pvc, "vm", "start", "bench", "--wait", env=env)
        wait_ticking(dev, "bench")
        clock = RecordClock(dev.state.zookeeper, "bench")
        splits: list[tuple[float, float, float]] = []
        nodes = {"hv1": hv1, "hv2": hv2}
        where = ["hv1"]

        def pvc_leg(target: str) -> float:
            start = time.perf_counter()
            elapsed = timed(pvc, "vm", "move", "bench", "--target", target, "--wait", env=env)
            time.sleep(0.2)  # let the watch deliver the last change
            splits.append(clock.split(start, start + elapsed, target))
            return elapsed

        def virsh_leg(target: str) -> float:
            elapsed = timed("virsh", "-c", nodes[where[0]].libvirt_uri, "migrate", "--live", "bench",
                            nodes[target].migration_uri, "tcp://127.0.0.1")
            deadline = time.monotonic() + 30
            while not any(d.node == target for t, d in clock.changes[-3:]):  # pvc follows it
                if time.monotonic() > deadline:
                    sys.exit("pvc did not follow the virsh migration")
                time.sleep(0.05)
            return elapsed

        legs = {"pvc": pvc_leg, "virsh": virsh_leg}
        times: dict[str, list[float]] = {"pvc": [], "virsh": []}
        for r in range(rounds):
            for tool in (("pvc", "virsh", "virsh", "pvc") if r % 2 == 0 else ("virsh", "pvc", "pvc", "virsh")):
                target = "hv2" if where[0] == "hv1" else "hv1"
                times[tool].append(legs[tool](target))
                where[0] = target
                time.sleep(0.5)
            print(f"round {r + 1}: pvc {times['pvc'][-2]:.2f}/{times['pvc'][-1]:.2f} s, "
                  f"virsh {times['virsh'][-2]:.2f}/{times['virsh'][-1]:.2f} s", flush=True)
        cli_floor = statistics.median(timed(pvc, "vm", "info", "bench", env=env) for _ in range(5))

        pvc_median, virsh_median = statistics.median(times["pvc"]), statistics.median(times["virsh"])
        print(f"\nlive migration of a 128 MiB TCG guest, {rounds} rounds x 2 legs each:")
        print(f"  pvc vm move --wait:              median {pvc_median:.3f} s  "
              f"(min {min(times['pvc']):.3f}, max {max(times['pvc']):.3f})")
        print(f"  virsh migrate --live:            median {virsh_median:.3f} s  "
              f"(min {min(times['virsh']):.3f}, max {max(times['virsh']):.3f})")
        print(f"  ratio of medians pvc / virsh:    {pvc_median / virsh_median:.3f}  (aim <= 1.10)")
        before, daemons, after = (statistics.median(x) for x in zip(*splits))
        print(f"  pvc legs split (medians): CLI to request {before:.3f} s, daemons {daemons:.3f} s, "
              f"CLI after {after:.3f} s")
        print(f"  for scale, `pvc vm info` (CLI start-up + one read): median {cli_floor:.3f} s")
    finally:
        dev.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    if args.workdir:
        run(args.rounds, args.workdir.absolute())
    else:
        with tempfile.TemporaryDirectory(prefix="pvc-bench-") as tmp:
            run(args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
