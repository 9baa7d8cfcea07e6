"""Node death -> all its VMs running elsewhere, with the default timers and with the fastest safe ones.

A 3-node dev cluster with a simulated BMC per node (`up --fencing`: ipmi_sim on 127.0.0.1, whose
power-off kills the node's pvcd and stops its libvirtd). For each timer profile every node's
config gets the profile's timers and its pvcd is restarted; then, each round:

- ``--vms`` small VMs are defined and started on a node that is not primary;
- that node's pvcd is killed with SIGKILL (t0; the host and its VMs keep running, as after a
  daemon crash or a hung host whose network is cut);
- "all running elsewhere" = the first moment libvirt on the other nodes runs every one of them,
  seen by polling libvirt directly every 20 ms;
- the phases come from the fence record (``/nodes/<n>/fence``): declared dead (``dead_since``),
  power-off confirmed (``fenced_at``);
- the VMs are removed and the node powered on, its pvcd started and readied before the next round.

    python bench/bench_node_death.py [--rounds 5] [--vms 4] [--profiles default,fast] [--workdir DIR]

Prints median and max per profile. Never asserted anywhere; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt
import yaml

# The timers that decide how fast a dead node's VMs come back (docs/operations.md, "Timers").
PROFILES = {
    # The product's defaults (pvc.config).
    "default": {"zookeeper.session_timeout": 5, "keepalive_interval": 5, "fencing.dead_after": 10,
                "fencing.retry_interval": 10},
    # The fastest we call safe: a session survives a 2 s stall of a daemon or a ZooKeeper server
    # failover, and dead_after gives a slow daemon 2 s more to re-register before it is fenced.
    "fast": {"zookeeper.session_timeout": 2, "keepalive_interval": 1, "fencing.dead_after": 2,
             "fencing.retry_interval": 2},
}


def apply_timers(config: dict, timers: dict) -> dict:
    for dotted, value in timers.items():
        section = config
        *path, key = dotted.split(".")
        for part in path:
            section = section.setdefault(part, {})
        section[key] = value
    return config


def xml(name: str) -> str:
    import uuid

    return (f"<domain type='test'><name>{name}</name><uuid>{uuid.uuid4()}</uuid><memory unit='MiB'>16</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


class Bench:
    def __init__(self, dev, args) -> None:
        self.dev, self.args = dev, args
        self.env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper}

    def pvc(self, *a: str) -> str:
        return subprocess.run(["pvc", *a], env=self.env, check=True, capture_output=True, text=True).stdout

    def pvc_json(self, *a: str):
        return json.loads(self.pvc(*a, "-o", "json"))

    def running(self, node: str) -> set[str]:
        spec = self.dev.node(node)
        if not self.dev.libvirtd(spec).pid:
            return set()
        try:
            conn = libvirt.open(spec.libvirt_uri)
        except libvirt.libvirtError:
            return set()
        try:
            return {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        finally:
            conn.close()

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise RuntimeError(f"timed out waiting for {what}")

    def set_timers(self, timers: dict) -> None:
        for spec in self.dev.state.nodes:
            path = Path(spec.config)
            path.write_text(yaml.safe_dump(apply_timers(yaml.safe_load(path.read_text()), timers), sort_keys=False))
        for spec in self.dev.state.nodes:
            self.dev.stop_node(spec.name)
            self.dev.start_node(spec.name)

    def ipmi(self, node: str, *command: str) -> str:
        from pvc.devcluster.bmc import PASSWORD, USERNAME

        port = self.dev.node(node).ipmi_port
        return subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port), "-U",
                               USERNAME, "-P", PASSWORD, *command], capture_output=True, text=True, timeout=30).stdout

    def define(self, names: list[str], node: str) -> None:
        for name in names:
            path = Path(self.dev.workdir) / f"{name}.xml"
            path.write_text(xml(name))
            self.pvc("vm", "define", str(path), "--target", node)
            self.pvc("vm", "start", name)
        self.wait(lambda: set(names) <= self.running(node), 60, "the VMs to run")

    def round(self, i: int) -> tuple[float, float, float]:
        nodes = self.pvc_json("node", "list")
        victim = [n["name"] for n in nodes if n["coordinator_state"] != "primary"][i % 2]
        names = [f"death{i}-{j}" for j in range(self.args.vms)]
        self.define(names, victim)
        survivors = [n for n in self.dev.state.nodes if n.name != victim]
        t0 = time.time()
        self.dev.stop_node(victim, signal.SIGKILL)

        def everywhere_else() -> bool:
            found = set().union(*(self.running(n.name) for n in survivors))
            return set(names) <= found

        self.wait(everywhere_else, 120, "the VMs running elsewhere", interval=0.02)
        t_all = time.time()
        fence = self.pvc_json("node", "info", victim)["fence"] or {}
        total = t_all - t0
        dead, fenced = fence.get("dead_since", 0) - t0, fence.get("fenced_at", 0) - t0
        print(f"  round {i + 1}: {victim} killed -> declared dead {dead:.2f} s, power-off confirmed {fenced:.2f} s, "
              f"all {len(names)} VMs running elsewhere {total:.2f} s", flush=True)
        # Clean up: remove the VMs, power the node on, start its daemon, ready it.
        for name in names:
            self.pvc("vm", "stop", name, "--wait")
            self.pvc("vm", "undefine", name, "--yes")
        spec = self.dev.node(victim)
        self.ipmi(victim, "chassis", "power", "on")
        self.wait(lambda: self.dev.libvirtd(spec).pid, 30, "libvirtd after power-on")
        self.dev.start_node(victim)
        self.pvc("node", "ready", victim, "--wait")
        return total, dead, fenced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--profiles", default="default,fast")
    parser.add_argument("--workdir")
    args = parser.parse_args()

    from pvc.devcluster.cluster import DevCluster

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pvc-bench-death-"))
    dev = DevCluster(workdir)
    dev.up(nodes=3, fencing=True)
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        bench = Bench(dev, args)
        for profile in args.profiles.split(","):
            timers = PROFILES[profile]
            print(f"{profile} timers ({', '.join(f'{k} {v}' for k, v in timers.items())}), {args.rounds} rounds, "
                  f"{args.vms} VMs:", flush=True)
            bench.set_timers(timers)
            results[profile] = [bench.round(i) for i in range(args.rounds)]
    finally:
        dev.down()

    def line(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"

    print()
    for profile, rounds in results.items():
        print(f"{profile}: all VMs running elsewhere: {line([r[0] for r in rounds])} (n={len(rounds)}); "
              f"declared dead: {line([r[1] for r in rounds])}; power-off confirmed: {line([r[2] for r in rounds])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
