"""What the fencing tests share: libvirt's truth on every node, and a node's BMC over IPMI."""

from __future__ import annotations

import subprocess
import time

from pvc.devcluster.bmc import PASSWORD, USERNAME


def others(cluster) -> list[str]:
    """The nodes that are not primary (killing the primary works too, but adds an election's delay)."""
    return [n["name"] for n in cluster.pvc_json("node", "list") if n["coordinator_state"] != "primary"]


def truth(cluster) -> dict[str, set[str]]:
    """libvirt's truth on every node whose libvirtd is up (a powered-off node runs nothing)."""
    found = {}
    for n in cluster.nodes:
        for attempt in range(3):  # a libvirtd being powered off refuses connections before it exits
            proc = cluster.virsh(n, "list", "--name", check=False)
            if proc.returncode == 0:
                found[n] = {line.strip() for line in proc.stdout.splitlines() if line.strip()}
                break
            if not cluster.dev.libvirtd(cluster.dev.node(n)).pid:
                break
            if attempt == 2:
                raise AssertionError(f"virsh on {n}: {proc.stderr.strip()}")
            time.sleep(0.5)
    return found


def hosts_of(cluster, vm: str) -> list[str]:
    return [n for n, names in truth(cluster).items() if vm in names]


def ipmi(cluster, name: str, *command: str) -> str:
    port = cluster.dev.node(name).ipmi_port
    return subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port), "-U", USERNAME,
                           "-P", PASSWORD, *command], capture_output=True, text=True, timeout=30).stdout
