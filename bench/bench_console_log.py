"""Console logs: how fast a line reaches `pvc vm log -f`, and what tailing costs ZooKeeper and pvcd.

Starts a 1-node dev cluster (libvirt test driver; the benchmark writes the serial log files itself,
as a guest's libvirt would) and prints:

1. latency from a line appended to the log file to the same line printed by `pvc vm log -f` (run as
   a subprocess, as a user runs it): p50 / p99 at a steady 20 lines/s (aim: p99 <= 150 ms), and
   while the VM prints 1,000 lines/s;
2. for one VM printing 1,000 lines/s: ZooKeeper writes per second (the key's version count) and
   bytes per second (each written record's size, seen by a watch; coalesced watch events are
   counted at the size seen);
3. pvcd's CPU (user + system, % of one core, from /proc) with N VMs (default 200) each printing a
   line a second, their buffers full (1,000 lines of 80 characters each, the steady state), against
   the same VMs printing nothing; plus ZooKeeper's writes and bytes per second meanwhile.

    python bench/bench_console_log.py [--vms 200] [--seconds 20] [--workdir DIR]

Every figure depends on the machine and on what else runs on it; quote ratios against
notes/floors.md (a watch round trip is ~1-4 ms there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path

from pvc.devcluster.cluster import DevCluster

LINE = "[{:>12.6f}] bench: {:<8} line {:>8} " + "x" * 30  # ~80 characters, like a kernel message
_PARSE = re.compile(r"bench: (\S+) +line +(\d+)")


def xml(name: str, log_dir: str) -> str:
    return (f"<domain type='test'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>16</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            f"<devices><serial type='pty'><log file='{log_dir}/{name}.log' append='on'/></serial></devices></domain>")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- cluster helpers (in-process: defining 200 VMs through 400 CLI runs would take minutes) ----------


async def _with_zk(zookeeper: str, work):
    from pvc.zk import ZK

    zk = ZK(zookeeper, request_timeout=10)
    await zk.start()
    try:
        return await work(zk)
    finally:
        await zk.close()


def define_and_start(zookeeper: str, names: list[str], log_dir: str, timeout: float = 120) -> dict[str, str]:
    from pvc import store, vm_states
    from pvc.domain_xml import parse_domain_xml

    async def work(zk):
        uuids = {}
        for name in names:
            text = xml(name, log_dir)
            dom = await store.define_domain(zk, parse_domain_xml(text), text, target="hv1", selector="",
                                            node_limit=[], autostart=False, migration_method="")
            uuids[name] = dom.uuid
        for uuid in uuids.values():
            await store.update_domain(zk, uuid, lambda d: vm_states.request(d, "start"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doms = await store.list_domains(zk)
            if sum(d.libvirt_state == "running" for d in doms if d.uuid in uuids.values()) == len(uuids):
                return uuids
            await asyncio.sleep(0.5)
        raise RuntimeError(f"VMs not running within {timeout} s")

    return asyncio.run(_with_zk(zookeeper, work))


def key_versions(zookeeper: str, uuids: list[str]) -> dict[str, tuple[int, int]]:
    """version and size of each VM's console_log key."""
    from pvc.schema import Paths

    async def work(zk):
        out = {}
        for uuid in uuids:
            data, version = await zk.get(Paths.domain_console_log(uuid))
            out[uuid] = (version, len(data))
        return out

    return asyncio.run(_with_zk(zookeeper, work))


class SizeWatch:
    """A watch on one console_log key in a thread of its own: the size of every version it sees."""

    def __init__(self, zookeeper: str, uuid: str) -> None:
        from pvc.schema import Paths

        self.sizes: list[int] = []
        self._stop = threading.Event()
        self._path = Paths.domain_console_log(uuid)
        self._zookeeper = zookeeper
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        async def work(zk):
            task = zk.watch_data(self._path, lambda data, _v: self.sizes.append(len(data or b"")))
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            task.cancel()

        await _with_zk(self._zookeeper, work)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.sizes


# -- measurements ------------------------------------------------------------------------------------


class Follower:
    """`pvc vm log NAME -f --lines 0`; records when each line arrives."""

    def __init__(self, env: dict, name: str) -> None:
        self.proc = subprocess.Popen([shutil.which("pvc") or "pvc", "vm", "log", name, "-f", "--lines", "0"],
                                     env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stderr.readline()
        if "following" not in line:
            raise RuntimeError(f"pvc vm log -f did not start: {line}{self.proc.stderr.read()}")
        self.arrived: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.arrived.put((time.monotonic(), line))

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.wait(timeout=10)


def write_paced(path: Path, tag: str, rate: float, seconds: float) -> dict[int, float]:
    """Append `rate` lines a second for `seconds`; return each line's write time by number."""
    sent: dict[int, float] = {}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            os.write(fd, (LINE.format(now - start, tag, i) + "\n").encode())
            sent[i] = now
    finally:
        os.close(fd)
    return sent


def latencies(follower: Follower, sent: dict[int, float], tag: str, timeout: float = 10) -> tuple[list[float], int]:
    got: list[float] = []
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < len(sent) and time.monotonic() < deadline:
        try:
            when, line = follower.arrived.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        match = _PARSE.search(line)
        if match and match.group(1) == tag:
            seen += 1
            got.append((when - sent[int(match.group(2))]) * 1000)
    return got, len(sent) - seen


def run(vms: int, seconds: float, workdir: Path) -> None:
    dev = DevCluster(workdir)
    dev.up(nodes=1)
    try:
        zookeeper = dev.state.zookeeper
        env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
        node = dev.node("hv1")
        log_dir = Path(node.console_log_directory)
        print(f"dev cluster: 1 node, ZooKeeper {zookeeper}, console logs in {log_dir}", flush=True)

        # 1 + 2: one VM; latency at 20 lines/s, then 1,000 lines/s with writes and bytes counted.
        uuids = define_and_start(zookeeper, ["lat"], str(log_dir))
        uuid = uuids["lat"]
        path = log_dir / "lat.log"
        follower = Follower(env, "lat")
        sent = write_paced(path, "slow", 20, seconds)
        slow, lost_slow = latencies(follower, sent, "slow")

        before = key_versions(zookeeper, [uuid])[uuid]
        watch = SizeWatch(zookeeper, uuid)
        time.sleep(0.5)
        pvcd_cpu = cpu_seconds(node.pvcd_pid)
        t0 = time.monotonic()
        sent = write_paced(path, "fast", 1000, min(seconds, 10))
        fast, lost_fast = latencies(follower, sent, "fast")
        elapsed = time.monotonic() - t0
        pvcd_cpu = cpu_seconds(node.pvcd_pid) - pvcd_cpu
        sizes = watch.stop()
        after = key_versions(zookeeper, [uuid])[uuid]
        follower.stop()
        writes = after[0] - before[0]
        mean_size = statistics.mean(sizes) if sizes else after[1]
        print()
        print("latency, line appended -> printed by `pvc vm log -f` (ms)")
        print(f"  20 lines/s     p50 {percentile(slow, 50):6.1f}   p99 {percentile(slow, 99):6.1f}   "
              f"max {max(slow):6.1f}   ({len(slow)} lines, {lost_slow} not printed)")
        print(f"  1,000 lines/s  p50 {percentile(fast, 50):6.1f}   p99 {percentile(fast, 99):6.1f}   "
              f"max {max(fast):6.1f}   ({len(fast)} lines, {lost_fast} not printed)")
        print()
        print("one VM printing 1,000 lines/s (80-character lines)")
        print(f"  ZooKeeper writes/s   {writes / elapsed:8.1f}")
        print(f"  ZooKeeper bytes/s    {writes * mean_size / elapsed / 1024:8.1f} KiB   "
              f"(record {mean_size / 1024:.1f} KiB on average, {after[1] / 1024:.1f} KiB at the end)")
        print(f"  pvcd CPU             {100 * pvcd_cpu / elapsed:8.1f} % of one core")

        # 3: N VMs, buffers full, one line a second each.
        if vms <= 0:
            return
        names = [f"b{i:03d}" for i in range(vms)]
        for name in names:
            with open(log_dir / f"{name}.log", "w") as fh:
                fh.writelines(LINE.format(0, name, i) + "\n" for i in range(1000))
        print(f"\nstarting {vms} VMs with 1,000 lines in their logs ...", flush=True)
        uuids = define_and_start(zookeeper, names, str(log_dir), timeout=max(120, vms))
        time.sleep(3)  # initial reads and writes settle

        def measure(rate_per_vm: float) -> tuple[float, float, float]:
            before = key_versions(zookeeper, list(uuids.values()))
            cpu = cpu_seconds(node.pvcd_pid)
            zk_cpu = sum(cpu_seconds(z.pid) for z in dev.state.zookeeper_servers)  # the whole ensemble
            start = time.monotonic()
            fds = {n: os.open(log_dir / f"{n}.log", os.O_WRONLY | os.O_APPEND) for n in names}
            try:
                i = 0
                while (now := time.monotonic()) < start + seconds:
                    if rate_per_vm:
                        due = start + i / (rate_per_vm * len(names))
                        if due > now:
                            time.sleep(due - now)
                        name = names[i % len(names)]
                        os.write(fds[name], (LINE.format(now - start, name, 1000 + i) + "\n").encode())
                        i += 1
                    else:
                        time.sleep(0.1)
            finally:
                for fd in fds.values():
                    os.close(fd)
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(node.pvcd_pid) - cpu
            zk_cpu = sum(cpu_seconds(z.pid) for z in dev.state.zookeeper_servers) - zk_cpu
            time.sleep(0.5)
            after = key_versions(zookeeper, list(uuids.values()))
            writes = sum(after[u][0] - before[u][0] for u in after)
            nbytes = sum((after[u][0] - before[u][0]) * after[u][1] for u in after)
            print(f"  pvcd CPU {100 * cpu / elapsed:5.1f} % of one core   ZooKeeper CPU {100 * zk_cpu / elapsed:5.1f} %   "
                  f"ZooKeeper writes/s {writes / elapsed:6.1f}   bytes/s {nbytes / elapsed / 1024 / 1024:6.2f} MiB")
            return cpu / elapsed, writes / elapsed, nbytes / elapsed

        print(f"\n{vms} VMs printing nothing")
        measure(0)
        print(f"{vms} VMs printing a line a second each (buffers full: ~76 KiB records)")
        measure(1)
    finally:
        dev.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pvc-bench-console-"))
    try:
        run(args.vms, args.seconds, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
