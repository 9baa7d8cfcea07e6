"""ZooKeeper server loss: how long a client request stalls when the server it is connected to dies.

Starts a local cluster with a 3-server ensemble (3 coordinators, `python -m pvc.devcluster up`).
For each round a client of its own (pvc's ZooKeeper adapter, the daemon's settings: session timeout
3 s, request timeout 5 s), connected to a follower in odd rounds and to the leader in even ones, writes
one key every 5 ms; the server it is connected to is killed with SIGKILL (`zookeeper kill INDEX`), and
the stall is the longest request around the kill (issued from 0.5 s before to 3 s after it); the
server is started again before the next round. Killing the leader costs a leader election. Also printed: whether the session (and the daemons' sessions) survived, requests
lost, how long a CLI command takes with server 1 dead or frozen, and how long pvcd takes to exit on SIGTERM
during a ZooKeeper outage and with its libvirtd gone (the bound is 2 s).

    python -m bench.bench_zookeeper_failover [--rounds 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pvc.devcluster.cluster import DevCluster
from pvc.devcluster.proc import is_running
from pvc.devcluster.zookeeper_server import four_letter
from pvc.zk import ZK


def mode(dev: DevCluster, index: int) -> str:
    out = four_letter(f"127.0.0.1:{dev.zookeeper_spec(index).client_port}", "srvr")
    return next((line.split(": ")[1] for line in out.splitlines() if line.startswith("Mode:")), "?")


async def client_on(dev: DevCluster, role: str) -> tuple[ZK, int]:
    """A client (the daemon's settings) connected to a server in ``role`` (aiozk picks one at random)."""
    for _ in range(30):
        zk = ZK(dev.state.zookeeper, session_timeout=3, request_timeout=5)
        await zk.start()
        port = zk._client.session.conn.port  # the server this client talks to
        index = next(z.index for z in dev.state.zookeeper_servers if z.client_port == port)
        if mode(dev, index) == role:
            return zk, index
        await zk.close()
    raise RuntimeError(f"no client landed on the {role}")


async def one_round(dev: DevCluster, role: str) -> tuple[float, bool, int, int]:
    """Kill the server a writing client is connected to: (longest request around it, session
    kept, requests failed, requests done)."""
    zk, index = await client_on(dev, role)
    session = zk.session_id
    await zk.put("/bench-failover", b"")
    done: list[tuple[float, float]] = []  # (issued, answered)
    failed = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal failed
        i = 0
        while not stop.is_set():
            issued = time.monotonic()
            try:
                await zk.set("/bench-failover", str(i).encode())
                done.append((issued, time.monotonic()))
            except Exception:
                failed += 1
            i += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        await asyncio.to_thread(dev.kill_zookeeper, index)
        await asyncio.sleep(3)
    finally:
        stop.set()
        await task
    stall = max(answered - issued for issued, answered in done if killed - 0.5 <= issued <= killed + 3)
    kept = zk.session_id == session
    await zk.close()
    await asyncio.to_thread(dev.start_zookeeper, index)
    return stall, kept, failed, len(done) + failed


async def stall_rounds(dev: DevCluster, rounds: int) -> None:
    stalls: dict[str, list[float]] = {"leader": [], "follower": []}
    kept_all, failed_all, total = True, 0, 0
    for r in range(rounds):
        role = "leader" if r % 2 else "follower"
        stall, kept, failed, n = await one_round(dev, role)
        stalls[role].append(stall)
        kept_all, failed_all, total = kept_all and kept, failed_all + failed, total + n
        print(f"  round {r + 1}: killed the client's server ({role}): longest request {stall * 1000:7.1f} ms, "
              f"session kept {kept}, failed {failed}")
    print(f"client sessions kept: {kept_all}; requests failed: {failed_all} of {total}")
    every = [s for v in stalls.values() for s in v]
    print(f"stall, all rounds:  median {statistics.median(every) * 1000:.1f} ms, max {max(every) * 1000:.1f} ms "
          f"({len(every)} rounds)")
    for role, values in stalls.items():
        if values:
            print(f"stall, {role:9s} killed: median {statistics.median(values) * 1000:.1f} ms, "
                  f"max {max(values) * 1000:.1f} ms ({len(values)} rounds)")


def cli_seconds(dev: DevCluster, times: int = 9) -> str:
    env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper}
    out = []
    for _ in range(times):
        start = time.monotonic()
        subprocess.run(["pvc", "node", "list"], env=env, check=True, capture_output=True)
        out.append(time.monotonic() - start)
    return f"median {statistics.median(out) * 1000:.0f} ms, max {max(out) * 1000:.0f} ms ({times} runs)"


def sigterm_seconds(dev: DevCluster, node: str) -> float:
    pid = dev.node(node).pvcd_pid
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while is_running(pid):  # a zombie counts as gone
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    dev.stop_node(node)  # bookkeeping: it is gone already
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pvc-bench-zk-"))
    dev = DevCluster(workdir)
    dev.up(nodes=3)
    try:
        renewed = {n: Path(dev.node(n).pvcd_log).read_text().count("zookeeper_session_renewed") for n in ("hv1", "hv2", "hv3")}
        print(f"ensemble {dev.state.zookeeper}, {args.rounds} rounds")
        asyncio.run(stall_rounds(dev, args.rounds))
        after = {n: Path(dev.node(n).pvcd_log).read_text().count("zookeeper_session_renewed") for n in renewed}
        print(f"daemon sessions renewed during the rounds: {sum(after.values()) - sum(renewed.values())}")

        print(f"`pvc node list`, all servers up:  {cli_seconds(dev)}")
        dev.kill_zookeeper(1)
        print(f"`pvc node list`, server 1 dead:   {cli_seconds(dev)}")
        dev.start_zookeeper(1)
        os.kill(dev.zookeeper_spec(1).pid, signal.SIGSTOP)  # accepts connections, never answers
        try:
            print(f"`pvc node list`, server 1 frozen: {cli_seconds(dev)}")
        finally:
            os.kill(dev.zookeeper_spec(1).pid, signal.SIGCONT)

        dev.stop_zookeeper()
        time.sleep(1)
        print(f"pvcd exit after SIGTERM, ZooKeeper down:  {sigterm_seconds(dev, 'hv3') * 1000:.0f} ms")
        dev.start_node("hv3", wait=False)
        time.sleep(2)  # waiting for ZooKeeper at start-up
        print(f"pvcd exit after SIGTERM, at start-up with ZooKeeper down: {sigterm_seconds(dev, 'hv3') * 1000:.0f} ms")
        dev.start_zookeeper()
        dev.start_node("hv3")
        dev.kill_libvirtd("hv2")
        time.sleep(1)
        print(f"pvcd exit after SIGTERM, libvirtd gone:    {sigterm_seconds(dev, 'hv2') * 1000:.0f} ms")
        print(f"pvcd exit after SIGTERM, healthy:          {sigterm_seconds(dev, 'hv1') * 1000:.0f} ms")
    finally:
        dev.down()


if __name__ == "__main__":
    main()
