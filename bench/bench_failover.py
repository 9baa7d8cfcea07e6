"""Primary failover: how long after kill -9 of the primary's pvcd another coordinator is primary,
and how long a client on a managed network cannot reach its gateway.

Starts a 3-node dev cluster with each node's networking in its own network namespace (hv1, hv2
coordinators; hv3 a hypervisor), one managed network with DHCP, and a client namespace on hv3 (a
VM's stand-in) that takes a lease with udhcpc. Then, for each round:

- an ICMP pinger inside the client namespace pings the gateway every 20 ms;
- the primary's pvcd is killed with SIGKILL (its teardown guard removes its addresses and dnsmasq);
- failover time = from the kill until another node's coordinator_state is "primary" (seen by a
  ZooKeeper watch from this process); gateway gap = the longest time without a ping reply around
  the kill; DHCP back = until the client's renewal (SIGUSR1 to udhcpc at once after the kill,
  retried) is acknowledged by the new primary;
- the killed node is started again (it rejoins as secondary) before the next round.

Then a few graceful hand-overs (`pvc node primary NODE --wait`) with the same measurements.

    python bench/bench_failover.py [--rounds 5] [--handovers 3] [--workdir DIR]

Defaults: coordinator.election_session_timeout 3 s. The failover time is dominated by ZooKeeper
expiring the dead primary's election session (the timeout, rounded up to its tick), then a watch
round trip and the takeover (addresses, dnsmasq start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GATEWAY = "192.0.2.1"
VNI = 100


# -- the pinger (runs inside the client namespace) -------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def pinger(target: str, interval: float, duration: float) -> None:
    """Echo requests every ``interval`` for ``duration`` seconds; print the reply times (epoch) as JSON."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    replies: list[float] = []
    sent = 0
    start = time.time()
    next_send = start
    while time.time() - start < duration:
        now = time.time()
        if now >= next_send:
            header = struct.pack("!BBHHH", 8, 0, 0, ident, sent & 0xFFFF)
            payload = struct.pack("!d", now)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, sent & 0xFFFF) + payload
            try:
                sock.sendto(packet, (target, 0))
            except OSError:
                pass  # no route / neighbour yet: counts as lost
            sent += 1
            next_send += interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.time()))
        if ready:
            data, _ = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _sum, rid, _seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident:
                replies.append(time.time())
    print(json.dumps({"sent": sent, "replies": replies}))


def gap_around(replies: list[float], t0: float) -> float:
    """The longest silence between replies that contains or follows ``t0``."""
    before = [r for r in replies if r <= t0]
    after = [r for r in replies if r > t0]
    if not after:
        return float("inf")
    points = ([before[-1]] if before else [t0]) + after
    return max(b - a for a, b in zip(points, points[1:]))


# -- the benchmark ---------------------------------------------------------------------------------


class StateWatch:
    """Records when each coordinator's state becomes "primary" (a watch in a thread of its own)."""

    def __init__(self, zookeeper: str, nodes: list[str]) -> None:
        self.zookeeper, self.nodes = zookeeper, nodes
        self.became_primary: dict[str, list[float]] = {n: [] for n in nodes}
        self.states: dict[str, str] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()
        self._ready.wait(10)

    async def _run(self) -> None:
        from pvc.schema import Paths
        from pvc.zk import ZK

        zk = ZK(self.zookeeper, request_timeout=5)
        await zk.start()

        def on(node):
            def cb(data, _v):
                value = (data or b"").decode()
                if value == "primary" and self.states.get(node) != "primary":
                    self.became_primary[node].append(time.time())
                self.states[node] = value
            return cb

        watches = [zk.watch_data(Paths.node_key(n, "coordinator_state"), on(n)) for n in self.nodes]
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        for w in watches:
            w.cancel()
        await zk.close()

    def primary(self) -> str:
        holders = [n for n, s in self.states.items() if s == "primary"]
        return holders[0] if len(holders) == 1 else ""

    def first_primary_after(self, t0: float, timeout: float = 30) -> tuple[str, float]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            times = [(t, n) for n, ts in self.became_primary.items() for t in ts if t > t0]
            if times:
                t, n = min(times)
                return n, t
            time.sleep(0.01)
        raise RuntimeError("no new primary")

    def close(self) -> None:
        self._stop.set()


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--handovers", type=int, default=3)
    parser.add_argument("--workdir")
    parser.add_argument("--pinger", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.02, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pinger:
        pinger(args.pinger, args.interval, args.duration)
        return 0

    from pvc.devcluster.cluster import DevCluster
    from pvc.devcluster.netns import available

    if reason := available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pvc-bench-failover-"))
    dev = DevCluster(workdir)
    dev.up(nodes=3, coordinators=2, networking=True)
    env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper}

    def pvc(*a: str) -> str:
        return subprocess.run(["pvc", *a], env=env, check=True, capture_output=True, text=True).stdout

    udhcpc = None
    watch = StateWatch(dev.state.zookeeper, ["hv1", "hv2"])
    try:
        pvc("network", "add", str(VNI), "--description", "bench", "--domain", "bench.example", "--ipv4",
            "192.0.2.0/24", "--gateway", GATEWAY, "--dhcp", "--dhcp-start", "192.0.2.100", "--dhcp-end",
            "192.0.2.199")
        lab = dev.netns()
        wait(lambda: "vmbr100" in subprocess.run(["ip", "-n", lab.node_ns("hv3"), "link"], capture_output=True,
                                                 text=True).stdout, 15, "the network's bridge on hv3")
        ns = lab.add_client("b1", "hv3", "vmbr100", mac="52:54:00:00:0b:01")
        script = workdir / "udhcpc.sh"
        events = workdir / "udhcpc.events"
        script.write_text('#!/bin/sh\ncase "$1" in bound|renew) ip -4 addr flush dev "$interface"; '
                          'ip addr add "$ip/$mask" dev "$interface"; echo "$1 $(date +%s.%N)" >> ' + str(events) +
                          ';; deconfig) ip -4 addr flush dev "$interface";; esac\n')
        script.chmod(0o755)
        udhcpc = subprocess.Popen(["ip", "netns", "exec", ns, "udhcpc", "-i", "eth0", "-f", "-s", str(script),
                                   "-t", "30", "-T", "1", "-A", "1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait(lambda: events.exists() and "bound" in events.read_text(), 30, "the client's lease")
        wait(watch.primary, 15, "a primary")

        def acks() -> int:
            return events.read_text().count("renew")

        def measure(action, label: str) -> tuple[float, float, float]:
            before = watch.primary()
            ping = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, "--pinger", GATEWAY,
                                     "--duration", "12"], stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)
            renewed = acks()
            t0 = time.time()
            action(before)
            new, t_primary = watch.first_primary_after(t0)
            # DHCP: ask the client to renew until the new primary's dnsmasq acknowledges.
            t_dhcp = None
            deadline = time.time() + 20
            while time.time() < deadline and t_dhcp is None:
                udhcpc.send_signal(signal.SIGUSR1)
                poll_until = time.time() + 0.5
                while time.time() < poll_until:
                    if acks() > renewed:
                        t_dhcp = time.time()
                        break
                    time.sleep(0.01)
            out, _ = ping.communicate(timeout=30)
            result = json.loads(out)
            gap = gap_around(result["replies"], t0)
            print(f"  {label}: {before} -> {new}: primary after {t_primary - t0:.2f} s, gateway gap {gap:.2f} s, "
                  f"DHCP renewal acknowledged after {(t_dhcp - t0) if t_dhcp else float('nan'):.2f} s")
            return t_primary - t0, gap, (t_dhcp - t0) if t_dhcp else float("nan")

        def kill(node: str) -> None:
            dev.stop_node(node, signal.SIGKILL)

        print(f"kill -9 of the primary's pvcd ({args.rounds} rounds; election session timeout 3 s):")
        kills = []
        for i in range(args.rounds):
            victim = watch.primary()
            kills.append(measure(kill, f"round {i + 1}"))
            dev.start_node(victim)
            wait(lambda: watch.states.get(victim) == "secondary", 20, f"{victim} back as secondary")
        print("graceful hand-over (pvc node primary NODE --wait):")
        handovers = []
        for i in range(args.handovers):
            def hand(before: str) -> None:
                pvc("node", "primary", "hv1" if before == "hv2" else "hv2", "--wait")
            handovers.append(measure(hand, f"hand-over {i + 1}"))

        def line(label: str, values: list[float]) -> str:
            return f"{label}: median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={len(values)})"

        print()
        print(line("failover after kill -9, new primary", [k[0] for k in kills]))
        print(line("failover after kill -9, gateway reachability gap", [k[1] for k in kills]))
        print(line("failover after kill -9, DHCP renewal acknowledged", [k[2] for k in kills]))
        if handovers:
            print(line("graceful hand-over, new primary", [h[0] for h in handovers]))
            print(line("graceful hand-over, gateway reachability gap", [h[1] for h in handovers]))
    finally:
        watch.close()
        if udhcpc and udhcpc.poll() is None:
            udhcpc.terminate()
            udhcpc.wait(5)
        dev.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
