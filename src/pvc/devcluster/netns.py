"""Network namespaces for a local cluster: each node's networking in a namespace of its own.

    fabric namespace  pvc<tag>-fab: bridges "cluster" and "upstream" (the switches)
    node namespaces   pvc<tag>-<node>: eth0 on "cluster" (198.18.0.0/24, VXLAN underlay),
                                       eth1 on "upstream" (198.18.1.0/24, bridged networks' VLANs)
    client namespaces pvc<tag>-c<n>: eth0, the other end plugged into a node's network bridge,
                                     standing in for a VM's interface

Addresses come from 198.18.0.0/15 (reserved for benchmarking) and stay inside these namespaces:
nothing here routes to the host or beyond. Each pvcd runs in the host namespace and is told
(``networking.netns``) to run its network commands inside its node's namespace.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLUSTER_NET = "198.18.0"
UPSTREAM_NET = "198.18.1"
CLUSTER_FLOATING = f"{CLUSTER_NET}.2/24"
UPSTREAM_FLOATING = f"{UPSTREAM_NET}.2/24"
VXLAN_GROUP = "239.0.100.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def tag_for(workdir: str | Path) -> str:
    return hashlib.sha1(str(Path(workdir).absolute()).encode()).hexdigest()[:6]


def available() -> str:
    """Why namespaces cannot be made here ("" if they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "dnsmasq"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    return ""


@dataclass
class NetnsLab:
    tag: str

    @property
    def fabric(self) -> str:
        return f"pvc{self.tag}-fab"

    def node_ns(self, node: str) -> str:
        return f"pvc{self.tag}-{node}"

    def client_ns(self, name: str) -> str:
        return f"pvc{self.tag}-c{name}"

    @staticmethod
    def cluster_address(index: int) -> str:
        return f"{CLUSTER_NET}.{10 + index}"

    @staticmethod
    def upstream_address(index: int) -> str:
        return f"{UPSTREAM_NET}.{10 + index}"

    # -- building ----------------------------------------------------------------------------------

    def create(self, nodes: list[str]) -> None:
        self.destroy()
        _ip("netns", "add", self.fabric)
        for bridge in ("cluster", "upstream"):
            _ip("-n", self.fabric, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0",
                "mcast_snooping", "0")
            _ip("-n", self.fabric, "link", "set", bridge, "up")
        for i, node in enumerate(nodes, start=1):
            ns = self.node_ns(node)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            for dev, peer, bridge, address in (("eth0", f"c{i}", "cluster", self.cluster_address(i)),
                                               ("eth1", f"u{i}", "upstream", self.upstream_address(i))):
                _ip("-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", self.fabric)
                _ip("-n", self.fabric, "link", "set", peer, "master", bridge, "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")

    def networking_config(self, node: str, run_directory: str, frr_file: str) -> dict:
        """The ``networking`` section of that node's pvcd.yaml."""
        return {
            "enabled": True,
            "netns": self.node_ns(node),
            "cluster_device": "eth0",
            "bridge_device": "eth1",
            "vxlan_flood": "multicast",
            "vxlan_group": VXLAN_GROUP,
            "upstream_floating": {"device": "eth1", "address": UPSTREAM_FLOATING},
            "cluster_floating": {"device": "eth0", "address": CLUSTER_FLOATING},
            # The run directory lives under the (private) work directory: dnsmasq keeps root.
            "dnsmasq_user": "root",
            "dhcp_lease_time": 600,
            "run_directory": run_directory,
            "frr": {"enabled": True, "config_file": frr_file, "reload_command": []},
        }

    def namespaces(self) -> list[str]:
        out = _ip("netns", "list", check=False).stdout
        prefix = f"pvc{self.tag}-"
        return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]

    def destroy(self) -> None:
        """Stop what still runs inside our namespaces (by pid), then delete them."""
        for ns in self.namespaces():
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            deadline = time.monotonic() + 5
            while _ip("netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
                time.sleep(0.05)
            _ip("netns", "del", ns, check=False)

    # -- test clients (stand-ins for VMs) ----------------------------------------------------------

    def add_client(self, name: str, node: str, bridge: str, mac: str = "") -> str:
        """A namespace whose eth0 is plugged into ``bridge`` on ``node``; returns the namespace."""
        ns = self.client_ns(name)
        port = f"vm{name}"[:15]
        _ip("netns", "del", ns, check=False)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.node_ns(node), "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        if mac:
            _ip("-n", ns, "link", "set", "eth0", "address", mac)
        _ip("-n", self.node_ns(node), "link", "set", port, "master", bridge, "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def isolate(self, node: str) -> None:
        """Cut a node off the network (its links down): a node failure, as its peers see it."""
        for dev in ("eth0", "eth1"):
            _ip("-n", self.node_ns(node), "link", "set", dev, "down", check=False)

    def reconnect(self, node: str) -> None:
        for dev in ("eth0", "eth1"):
            _ip("-n", self.node_ns(node), "link", "set", dev, "up", check=False)
