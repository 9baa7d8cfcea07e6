"""Console logs by delta: what tailing costs ZooKeeper, and how fast a line reaches `pvc vm log -f`.

Starts a 1-node dev cluster (libvirt test driver; the benchmark writes the serial log files itself,
as a guest's libvirt would) and prints, for

1. one VM printing 1,000 lines/s (80-character lines), and
2. N VMs (default 200) each printing a line a second, their buffers full (1,000 lines each, the
   steady state),

ZooKeeper writes/s (chunks created: every console write creates exactly one chunk znode) and bytes/s
(the data of every chunk created, read by a children watch on every VM as soon as it appears: the
same measure as the earlier "14.9 MiB/s", which was each record's size times its versions; plus the
znode paths of creates and deletes, which a transaction also carries), bytes per console line
against the line's own bytes, the chunks each VM keeps, pvcd's and ZooKeeper's CPU; and the latency
from a line appended to the log file to the same line printed by `pvc vm log -f` (subprocesses, as a
user runs them), p50 / p99.

    python -m bench.bench_console [--vms 200] [--seconds 69] [--workdir DIR]

Every loop is bounded: 10 s for the one VM, --seconds for the N VMs (by default long enough for
every VM's chunks to be merged twice, as at steady state); the whole run takes about 2 minutes. Figures
depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path

from bench.common import pct, with_zk
from pvc.console_log import MERGE_AFTER
from pvc.devcluster.cluster import DevCluster

LINE = "[{:>12.6f}] bench: {:<8} line {:>8} " + "x" * 30  # 80 characters, like a kernel message
LINE_BYTES = 81  # with its newline: what the guest wrote
_PARSE = re.compile(r"bench: (\S+) +line +(\d+)")


def xml(name: str, log_dir: str) -> str:
    return (f"<domain type='test'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>16</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            f"<devices><serial type='pty'><log file='{log_dir}/{name}.log' append='on'/></serial></devices></domain>")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def define_and_start(zookeeper: str, names: list[str], log_dir: str, timeout: float) -> dict[str, str]:
    """In-process through the store code `pvc vm define/start` use (400 CLI runs would take minutes)."""
    from pvc import store, vm_states
    from pvc.domain_xml import parse_domain_xml

    async def work(zk):
        uuids = {}

        async def one(name: str) -> None:
            text = xml(name, log_dir)
            dom = await store.define_domain(zk, parse_domain_xml(text), text, target="hv1", selector="",
                                            node_limit=[], autostart=False, migration_method="")
            await store.update_domain(zk, dom.uuid, lambda d: vm_states.request(d, "start"))
            uuids[name] = dom.uuid

        for i in range(0, len(names), 50):
            await asyncio.gather(*(one(n) for n in names[i:i + 50]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doms = await store.list_domains(zk)
            if sum(d.libvirt_state == "running" for d in doms if d.uuid in uuids.values()) == len(uuids):
                return uuids
            await asyncio.sleep(0.5)
        raise RuntimeError(f"VMs not running within {timeout} s")

    return asyncio.run(with_zk(zookeeper, work))


class ChunkMeter:
    """Every chunk each VM's tailer creates, seen by a children watch per VM (in a thread of its own)
    and read at once: counts creates, their data bytes and the path bytes of creates and deletes."""

    def __init__(self, zookeeper: str, uuids: list[str]) -> None:
        self.writes = self.data_bytes = self.path_bytes = self.unread = 0
        self.kept: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._zookeeper, self._uuids = zookeeper, uuids
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._ready.wait(60)

    def reset(self) -> None:
        with self._lock:
            self.writes = self.data_bytes = self.path_bytes = self.unread = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        with self._lock:
            return self.writes, self.data_bytes, self.path_bytes, self.unread

    async def _run(self) -> None:
        from pvc.console_log import chunk_number
        from pvc.schema import Paths

        async def work(zk):
            seen: dict[str, set[int]] = {}
            last: dict[str, int] = {}
            changed: asyncio.Queue = asyncio.Queue()

            def watch(uuid: str):
                return zk.watch_children(Paths.domain_console_log(uuid), lambda c: changed.put_nowait((uuid, c)))

            watches = [watch(u) for u in self._uuids]

            async def account(batch: dict[str, list[str]]) -> None:
                """One multiRead for the new chunks of every VM whose list changed."""
                news: dict[str, list[int]] = {}
                for uuid, children in batch.items():
                    now = {n for c in children or [] if (n := chunk_number(c))}
                    if uuid not in last:  # the first listing: a baseline
                        seen[uuid], last[uuid] = now, max(now, default=0)
                        continue
                    path = Paths.domain_console_log(uuid)
                    news[uuid] = sorted(n for n in now if n > last[uuid])
                    top = max(now, default=last[uuid])
                    with self._lock:
                        self.writes += max(0, top - last[uuid])  # each write creates the next number
                        self.unread += max(0, top - last[uuid]) - len(news[uuid])
                        self.path_bytes += sum(len(f"{path}/{n}") for n in news[uuid])
                        self.path_bytes += sum(len(f"{path}/{n}") for n in seen[uuid] - now)  # deleted
                        self.kept[uuid] = len(now)
                    seen[uuid], last[uuid] = now, max(last[uuid], top)
                paths = [f"{Paths.domain_console_log(u)}/{n}" for u, ns in news.items() for n in ns]
                values = await zk.get_many(paths) if paths else []
                with self._lock:
                    self.data_bytes += sum(len(v) for v in values if v is not None)
                    self.unread += sum(v is None for v in values)

            async def pump():
                while True:
                    batch = dict([await changed.get()])
                    while not changed.empty():
                        uuid, children = changed.get_nowait()
                        batch[uuid] = children
                    await account(batch)

            task = asyncio.create_task(pump())
            while len(last) < len(self._uuids):
                await asyncio.sleep(0.05)
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            for w in watches:
                w.cancel()

        await with_zk(self._zookeeper, work)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


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

    def latencies(self, sent: dict[tuple[str, int], float], timeout: float = 10) -> tuple[list[float], int]:
        """ms from each sent line (by tag and number) to its arrival; and how many never arrived."""
        got: list[float] = []
        deadline = time.monotonic() + timeout
        want = {key for key in sent}
        while want and time.monotonic() < deadline:
            try:
                when, line = self.arrived.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            match = _PARSE.search(line)
            key = (match.group(1), int(match.group(2))) if match else None
            if key in want:
                want.discard(key)
                got.append((when - sent[key]) * 1000)
        return got, len(want)

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.wait(timeout=10)


def write_paced(log_dir: Path, names: list[str], rate_per_vm: float, seconds: float,
                followed: set[str]) -> tuple[dict[tuple[str, int], float], int]:
    """Append lines round-robin over the VMs, ``rate_per_vm`` a second each, for ``seconds``; the send
    time of each line of the followed VMs by (name, number), and the lines written."""
    sent: dict[tuple[str, int], float] = {}
    fds = {n: os.open(log_dir / f"{n}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for n in names}
    rate = rate_per_vm * len(names)
    total = int(rate * seconds)
    try:
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name, number = names[i % len(names)], 1000 + i // len(names)
            now = time.monotonic()
            os.write(fds[name], (LINE.format(now - start, name, number) + "\n").encode())
            if name in followed:
                sent[(name, number)] = now
    finally:
        for fd in fds.values():
            os.close(fd)
    return sent, total


def measure(dev: DevCluster, env: dict, log_dir: Path, uuids: dict[str, str], rate_per_vm: float,
            seconds: float, follow: list[str], label: str) -> None:
    node = dev.node("hv1")
    meter = ChunkMeter(dev.state.zookeeper, list(uuids.values()))
    followers = {name: Follower(env, name) for name in follow}
    time.sleep(1)
    meter.reset()
    cpu = cpu_seconds(node.pvcd_pid)
    zk_cpu = sum(cpu_seconds(z.pid) for z in dev.state.zookeeper_servers)
    t0 = time.monotonic()
    sent, total = write_paced(log_dir, list(uuids), rate_per_vm, seconds, set(follow))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(node.pvcd_pid) - cpu
    zk_cpu = sum(cpu_seconds(z.pid) for z in dev.state.zookeeper_servers) - zk_cpu
    lat: list[float] = []
    lost = 0
    for name, follower in followers.items():
        got, missing = follower.latencies({k: v for k, v in sent.items() if k[0] == name})
        lat += got
        lost += missing
    counted, deadline = None, time.monotonic() + 15
    while counted != meter.snapshot() and time.monotonic() < deadline:  # the meter catches up
        counted = meter.snapshot()
        time.sleep(1)
    writes, data, paths, unread = meter.snapshot()
    if unread:  # merged away before the meter read them: counted at the mean size of those it read
        data += unread * data // max(1, writes - unread)
    kept = sorted(meter.kept.values()) or [0]
    meter.stop()
    for follower in followers.values():
        follower.stop()
    line_bytes = total * LINE_BYTES
    print(f"\n{label}: {total} lines in {elapsed:.1f} s")
    print(f"  ZooKeeper writes/s       {writes / elapsed:9.1f}   ({unread} chunks deleted before the meter read them: "
          f"counted at the mean size)")
    print(f"  ZooKeeper bytes/s        {data / elapsed / 1024:9.1f} KiB data   "
          f"{(data + paths) / elapsed / 1024:9.1f} KiB with the znode paths")
    print(f"  bytes per console line   {data / line_bytes:9.2f} x the line (data)   "
          f"{(data + paths) / line_bytes:5.2f} x with paths   (lines of {LINE_BYTES} bytes)")
    print(f"  chunks per VM            median {kept[len(kept) // 2]}, most {kept[-1]}")
    print(f"  pvcd CPU {100 * cpu / elapsed:5.1f} % of one core   ZooKeeper CPU {100 * zk_cpu / elapsed:5.1f} %")
    if lat:
        print(f"  `pvc vm log -f` latency  p50 {pct(lat, 50):6.1f} ms   p99 {pct(lat, 99):6.1f} ms   "
              f"max {max(lat):6.1f} ms   ({len(lat)} lines over {len(follow)} followers, {lost} not printed)")


def run(vms: int, seconds: float, workdir: Path) -> None:
    dev = DevCluster(workdir)
    dev.up(nodes=1)
    try:
        zookeeper = dev.state.zookeeper
        env = {**os.environ, "PVC_ZOOKEEPER": zookeeper}
        log_dir = Path(dev.node("hv1").console_log_directory)
        print(f"dev cluster: 1 node, ZooKeeper {zookeeper}, console logs in {log_dir}", flush=True)

        uuids = define_and_start(zookeeper, ["fast"], str(log_dir), timeout=60)
        measure(dev, env, log_dir, uuids, 1000, 10, ["fast"], "one VM printing 1,000 lines/s")

        if vms <= 0:
            return
        names = [f"b{i:03d}" for i in range(vms)]
        for name in names:  # full buffers: the steady state
            with open(log_dir / f"{name}.log", "w") as fh:
                fh.writelines(LINE.format(0, name, i) + "\n" for i in range(1000))
        print(f"\nstarting {vms} VMs with 1,000 lines in their logs ...", flush=True)
        t0 = time.monotonic()
        uuids = define_and_start(zookeeper, names, str(log_dir), timeout=max(120, vms))
        print(f"  running after {time.monotonic() - t0:.0f} s", flush=True)
        time.sleep(3)  # their first writes (the whole file each) settle
        measure(dev, env, log_dir, uuids, 1, seconds, names[:: max(1, vms // 4)][:4],
                f"{vms} VMs printing a line a second each (buffers full)")
    finally:
        dev.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=200)
    # The N-VM phase: long enough for each VM's chunks to be merged twice (the steady state's cost).
    parser.add_argument("--seconds", type=float, default=2 * MERGE_AFTER + 5)
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
