"""Client networks with real processes in network namespaces: each node's networking in its own
namespace (VXLAN over a shared "cluster" bridge), real dnsmasq run by the primary, and client
namespaces (stand-ins for VMs) that take leases with busybox's udhcpc and resolve names through
the network's DNS. Kill the primary: the other coordinator takes over, the gateway, DHCP and DNS
come back, the client renews its lease.

3 nodes: hv1 and hv2 are coordinators, hv3 is a plain hypervisor hosting the clients.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pvc.devcluster.cluster import DevCluster
from pvc.devcluster.netns import CLUSTER_FLOATING, UPSTREAM_FLOATING, available
from tests.conftest import Cluster, wait_until

VNI = 100
GATEWAY = "192.0.2.1"
DOMAIN = "web.example"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script: configure eth0, record what the server said.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    echo "$1 ip=$ip router=$router dns=$dns domain=$domain serverid=$serverid" >> "$0.log"
    ;;
esac
exit 0
"""


class Client:
    """A namespace plugged into a network bridge on a node, running udhcpc (a VM's stand-in)."""

    def __init__(self, cluster: "NetCluster", name: str, node: str, mac: str) -> None:
        self.name = name
        self.ns = cluster.dev.netns().add_client(name, node, f"vmbr{VNI}", mac=mac)
        self.script = cluster.tmp / f"udhcpc-{name}.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        self.log = Path(f"{self.script}.log")
        self.proc: subprocess.Popen | None = None

    def exec(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True, timeout=timeout)

    def start_dhcp(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "udhcpc", "-i", "eth0", "-f", "-s", str(self.script),
             "-x", f"hostname:{self.name}", "-t", "20", "-T", "1", "-A", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def lease(self, kind: str = "") -> dict[str, str]:
        for line in reversed(self.events()):
            if not kind or line.startswith(kind):
                return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        return {}

    def renew(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def ping(self, address: str, count: int = 1) -> bool:
        return self.exec("busybox", "ping", "-c", str(count), "-W", "1", address).returncode == 0

    def resolve(self, name: str, server: str = GATEWAY) -> str:
        out = self.exec("busybox", "nslookup", name, server).stdout
        answers = out.split(f"Name:\t{name}", 1)
        if len(answers) < 2:
            return ""
        for line in answers[1].splitlines():
            if line.startswith("Address:"):
                return line.split()[-1]
        return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NetCluster(Cluster):
    def ns_ip(self, node: str, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.dev.netns().node_ns(node), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def addresses(self, node: str, dev: str) -> list[str]:
        out = self.ns_ip(node, "-j", "addr", "show", "dev", dev)
        return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out or "[]") for a in link["addr_info"]
                if a.get("scope") == "global"]

    def links(self, node: str) -> set[str]:
        return {link["ifname"] for link in json.loads(self.ns_ip(node, "-j", "link", "show") or "[]")}

    def states(self) -> dict[str, str]:
        return {n["name"]: n["coordinator_state"] for n in self.pvc_json("node", "list")}

    def primary(self) -> str:
        holders = [n for n, s in self.states().items() if s == "primary"]
        assert len(holders) <= 1, holders
        return holders[0] if holders else ""

    def vlan_supported(self) -> bool:
        fabric = self.dev.netns().fabric
        probe = subprocess.run(["ip", "-n", fabric, "link", "add", "link", "cluster", "name", "probe.1", "type",
                                "vlan", "id", "1"], capture_output=True)
        subprocess.run(["ip", "-n", fabric, "link", "del", "probe.1"], capture_output=True)
        return probe.returncode == 0

    def dnsmasq_pids(self, node: str) -> list[str]:
        return subprocess.run(["ip", "netns", "pids", self.dev.netns().node_ns(node)], capture_output=True,
                              text=True).stdout.split()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    reason = available() or ("" if shutil.which("udhcpc") and shutil.which("busybox") else "udhcpc/busybox missing")
    if reason:
        pytest.skip(f"network namespaces cannot be tested here: {reason}")
    workdir = tmp_path_factory.mktemp("netcluster")
    dev = DevCluster(workdir)
    dev.up(nodes=3, coordinators=2, networking=True)
    cluster = NetCluster(dev, workdir)
    clients: list[Client] = []
    cluster.clients = clients
    try:
        yield cluster
    finally:
        for c in clients:
            c.stop()
        dev.down()


def client(net: NetCluster, name: str, node: str = "hv3", mac: str = "") -> Client:
    c = Client(net, name, node, mac or f"52:54:00:00:01:{len(net.clients) + 1:02x}")
    net.clients.append(c)
    return c


def test_coordinators_and_floating_addresses(net):
    wait_until(net.primary, timeout=15)
    states = net.states()
    assert states["hv3"] == "client" and sorted([states["hv1"], states["hv2"]]) == ["primary", "secondary"]
    primary = net.primary()
    other = "hv2" if primary == "hv1" else "hv1"
    assert CLUSTER_FLOATING in net.addresses(primary, "eth0")
    assert UPSTREAM_FLOATING in net.addresses(primary, "eth1")
    assert CLUSTER_FLOATING not in net.addresses(other, "eth0")


def test_network_interfaces_on_every_node(net):
    net.pvc("network", "add", str(VNI), "--description", "web", "--domain", DOMAIN, "--ipv4", "192.0.2.0/24",
            "--gateway", GATEWAY, "--dhcp", "--dhcp-start", "192.0.2.100", "--dhcp-end", "192.0.2.199",
            "--ipv6", "2001:db8:0:1::/64", "--gateway6", "2001:db8:0:1::1")
    net.pvc("network", "add", "42", "--type", "bridged", "--description", "storage vlan")
    # Some kernels (e.g. microVMs) are built without 802.1Q: the VLAN then cannot exist.
    vlan = {"eth1.42"} if net.vlan_supported() else set()
    for node in net.nodes:
        wait_until(lambda: {f"vmbr{VNI}", f"vxlan{VNI}", "vmbr42", *vlan} <= net.links(node), timeout=15)
    primary = net.primary()
    wait_until(lambda: f"{GATEWAY}/24" in net.addresses(primary, f"vmbr{VNI}"), timeout=15)
    assert "2001:db8:0:1::1/64" in net.addresses(primary, f"vmbr{VNI}")
    # Only the primary has addresses in the client network (no SLAAC from its own advertisements).
    for node in net.nodes:
        if node != primary:
            assert net.addresses(node, f"vmbr{VNI}") == []
    # The bridged network is plain layer 2: no addresses, no DHCP.
    assert net.addresses(primary, "vmbr42") == []
    net.pvc("network", "remove", "42", "--yes")
    for node in net.nodes:
        wait_until(lambda: not {"vmbr42", "eth1.42"} & net.links(node), timeout=15)


def test_dhcp_lease_and_dns(net):
    c1 = client(net, "client1")
    c1.start_dhcp()
    wait_until(lambda: c1.lease("bound"), timeout=30, interval=0.2)
    lease = c1.lease("bound")
    assert lease["router"] == GATEWAY and lease["dns"] == GATEWAY and lease["domain"] == DOMAIN
    assert 100 <= int(lease["ip"].rsplit(".", 1)[1]) <= 199
    assert c1.ping(GATEWAY)
    assert c1.resolve(f"client1.{DOMAIN}") == lease["ip"]
    # The lease hook recorded it in ZooKeeper.
    leases = wait_until(lambda: net.pvc_json("network", "dhcp", "list", str(VNI))["leases"], timeout=15)
    assert [(l["mac"], l["ip"], l["hostname"]) for l in leases] == [("52:54:00:00:01:01", lease["ip"], "client1")]


def test_reservation(net):
    run = Path(net.dev.node(net.primary()).config).parent / "run"
    reads = (run / f"dnsmasq-{VNI}.log").read_text().count(f"read {run}/dnsmasq-{VNI}.hosts")
    net.pvc("network", "dhcp", "add", str(VNI), "52:54:00:00:02:01", "192.0.2.50", "--hostname", "db1")
    # The primary applies it (hosts file, SIGHUP: dnsmasq reads it again) moments after the CLI returns.
    wait_until(lambda: (run / f"dnsmasq-{VNI}.log").read_text().count(f"read {run}/dnsmasq-{VNI}.hosts") > reads,
               timeout=10)
    assert "52:54:00:00:02:01,192.0.2.50,db1" in (run / f"dnsmasq-{VNI}.hosts").read_text()
    c2 = client(net, "client2", mac="52:54:00:00:02:01")
    c2.start_dhcp()
    wait_until(lambda: c2.lease("bound"), timeout=30, interval=0.2)
    assert c2.lease("bound")["ip"] == "192.0.2.50"
    assert c2.resolve(f"db1.{DOMAIN}") == "192.0.2.50"
    table = net.pvc("network", "dhcp", "list", str(VNI)).stdout
    assert "reservation" in table and "db1" in table
    c2.stop()


def test_kill9_primary_gateway_dhcp_and_dns_come_back(net):
    c1 = net.clients[0]
    before = c1.lease("bound")["ip"]
    old = net.primary()
    new = "hv2" if old == "hv1" else "hv1"
    t0 = time.monotonic()
    net.dev.stop_node(old, signal.SIGKILL)
    # The dead daemon's guard took its addresses and its dnsmasq away.
    wait_until(lambda: net.addresses(old, f"vmbr{VNI}") == [], timeout=10)
    wait_until(lambda: net.primary() == new, timeout=20)
    wait_until(lambda: f"{GATEWAY}/24" in net.addresses(new, f"vmbr{VNI}"), timeout=10)
    assert CLUSTER_FLOATING in net.addresses(new, "eth0") and CLUSTER_FLOATING not in net.addresses(old, "eth0")
    wait_until(lambda: c1.ping(GATEWAY), timeout=15)
    elapsed = time.monotonic() - t0
    # The client renews with the new primary's dnsmasq, which knows its lease.
    renewals = len([e for e in c1.events() if e.startswith("renew")])
    c1.renew()
    wait_until(lambda: len([e for e in c1.events() if e.startswith("renew")]) > renewals, timeout=20, interval=0.2)
    assert c1.lease("renew")["ip"] == before
    assert c1.resolve(f"client1.{DOMAIN}") == before
    # The old node comes back as a secondary with no client-network addresses.
    net.dev.start_node(old)
    wait_until(lambda: net.states()[old] == "secondary", timeout=15)
    assert net.addresses(old, f"vmbr{VNI}") == [] and net.primary() == new
    print(f"gateway back {elapsed:.2f} s after kill -9")


def test_graceful_handover_moves_the_gateway(net):
    c1 = net.clients[0]
    current = net.primary()
    target = "hv2" if current == "hv1" else "hv1"
    net.pvc("node", "primary", target, "--wait")
    assert net.addresses(current, f"vmbr{VNI}") == []
    assert f"{GATEWAY}/24" in net.addresses(target, f"vmbr{VNI}")
    wait_until(lambda: c1.ping(GATEWAY), timeout=15)
    renewals = len([e for e in c1.events() if e.startswith("renew")])
    c1.renew()
    wait_until(lambda: len([e for e in c1.events() if e.startswith("renew")]) > renewals, timeout=20, interval=0.2)
    assert c1.resolve(f"client1.{DOMAIN}") == c1.lease()["ip"]


def test_frr_config_rendered_and_valid(net):
    vtysh = shutil.which("vtysh")
    for node in ("hv1", "hv2"):
        path = Path(net.dev.node(node).config).parent / "frr" / "frr.conf"
        wait_until(path.exists, timeout=15)
        wait_until(lambda: f"networks: {VNI}" in path.read_text(), timeout=15)
        text = path.read_text()
        assert "advertise-all-vni" in text and "router bgp 65500" in text
        others = {"hv1": "198.18.0.11", "hv2": "198.18.0.12", "hv3": "198.18.0.13"}
        others.pop(node)
        for address in others.values():
            assert f"neighbor {address} peer-group" in text
        if vtysh:
            check = subprocess.run([vtysh, "--dryrun", "-f", str(path)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
    assert not (Path(net.dev.node("hv3").config).parent / "frr" / "frr.conf").exists()  # not a coordinator


def test_network_removal_stops_everything(net):
    primary = net.primary()
    for c in net.clients:
        c.stop()
    net.pvc("network", "remove", str(VNI), "--yes")
    for node in net.nodes:
        wait_until(lambda: not {f"vmbr{VNI}", f"vxlan{VNI}"} & net.links(node), timeout=15)
    run = Path(net.dev.node(primary).config).parent / "run"
    wait_until(lambda: not (run / f"dnsmasq-{VNI}.pid").exists(), timeout=10)
    assert net.pvc_json("network", "list") == []
