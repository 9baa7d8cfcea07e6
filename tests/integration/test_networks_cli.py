"""`pvc network ...` against a real cluster: records, validation with clear errors, nothing written
on a refused request. (Interfaces, DHCP and DNS: tests/system/test_networks.py.)"""

from __future__ import annotations

import pytest


def add(cluster, vni, *args, check=True):
    return cluster.pvc("network", "add", str(vni), *args, check=check)


WEB = ["--description", "web", "--domain", "web.example", "--ipv4", "192.0.2.0/24", "--gateway", "192.0.2.1",
       "--dhcp", "--dhcp-start", "192.0.2.100", "--dhcp-end", "192.0.2.199"]


def test_add_list_info_modify_remove(cluster):
    assert cluster.pvc_json("network", "list") == []
    out = add(cluster, 100, *WEB, "--ipv6", "2001:db8:0:1::/64", "--gateway6", "2001:db8:0:1::1").stdout
    assert "Added managed network 100" in out
    add(cluster, 42, "--type", "bridged", "--description", "storage")
    nets = cluster.pvc_json("network", "list")
    assert [n["vni"] for n in nets] == [42, 100]
    web = nets[1]
    assert web == {"vni": 100, "type": "managed", "description": "web", "domain": "web.example",
                   "ipv4_network": "192.0.2.0/24", "ipv4_gateway": "192.0.2.1", "dhcp4": True,
                   "dhcp4_start": "192.0.2.100", "dhcp4_end": "192.0.2.199", "ipv6_network": "2001:db8:0:1::/64",
                   "ipv6_gateway": "2001:db8:0:1::1"}
    table = cluster.pvc("network", "list").stdout
    assert "192.0.2.0/24 via 192.0.2.1" in table and "storage" in table
    info = cluster.pvc_json("network", "info", "100")
    assert info["network"]["vni"] == 100 and info["reservations"] == [] and info["leases"] == []
    cluster.pvc("network", "modify", "100", "--description", "web servers", "--no-dhcp")
    web = cluster.pvc_json("network", "info", "100")["network"]
    assert web["description"] == "web servers" and not web["dhcp4"] and web["dhcp4_start"] == ""
    cluster.pvc("network", "modify", "100", "--dhcp", "--dhcp-start", "192.0.2.10", "--dhcp-end", "192.0.2.20")
    assert cluster.pvc_json("network", "info", "100")["network"]["dhcp4_end"] == "192.0.2.20"
    assert "Removed network 42" in cluster.pvc("network", "remove", "42", "--yes").stdout
    assert [n["vni"] for n in cluster.pvc_json("network", "list")] == [100]


@pytest.mark.parametrize("args, message", [
    (["--ipv4", "192.0.2.128/25", "--gateway", "192.0.2.129"], "overlaps 192.0.2.0/24 of network 100"),
    (["--ipv4", "198.51.100.0/24", "--gateway", "203.0.113.1"], "outside the network"),
    (["--ipv4", "198.51.100.0/24", "--gateway", "198.51.100.1", "--dhcp", "--dhcp-start", "198.51.101.1",
      "--dhcp-end", "198.51.101.9"], "outside the network"),
    (["--ipv4", "198.51.100.0/33", "--gateway", "198.51.100.1"], "not an IPv4 network"),
    (["--ipv4", "198.51.100.7/24", "--gateway", "198.51.100.1"], "host bits"),
    (["--ipv4", "198.51.100.0/24"], "needs a gateway"),
    (["--ipv6", "2001:db8:0:1::/80", "--gateway6", "2001:db8:0:1::5"], "overlaps"),
    (["--domain", "-bad-"], "not a valid DNS domain"),
])
def test_refused_networks_write_nothing(cluster, args, message):
    before = cluster.pvc_json("network", "list")
    proc = add(cluster, 300, "--description", "x", *args, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert cluster.pvc_json("network", "list") == before


def test_vni_in_use_and_bad_vnis(cluster):
    proc = add(cluster, 100, "--description", "again", check=False)
    assert proc.returncode == 1 and "VNI 100 is already in use" in proc.stderr
    proc = add(cluster, 16777216, "--description", "big", check=False)
    assert proc.returncode == 1 and "VNI must be between 1 and 16777215" in proc.stderr
    proc = add(cluster, 5000, "--type", "bridged", "--description", "vlan", check=False)
    assert proc.returncode == 1 and "VLAN id" in proc.stderr
    proc = cluster.pvc("network", "info", "999", check=False)
    assert proc.returncode == 1 and "unknown network 999" in proc.stderr
    proc = cluster.pvc("network", "modify", "100", "--gateway", "10.9.9.9", check=False)
    assert proc.returncode == 1 and "outside" in proc.stderr
    assert cluster.pvc_json("network", "info", "100")["network"]["ipv4_gateway"] == "192.0.2.1"


def test_reservations(cluster):
    out = cluster.pvc("network", "dhcp", "add", "100", "52:54:00:AB:CD:01", "192.0.2.50", "--hostname", "db1").stdout
    assert "Reserved 192.0.2.50 for 52:54:00:ab:cd:01" in out
    for args, message in [
        (["52:54:00:ab:cd:02", "192.0.2.50"], "already reserved"),
        (["52:54:00:ab:cd:01", "192.0.2.51"], "already has a reservation"),
        (["52:54:00:ab:cd:03", "198.51.100.5"], "outside the network"),
        (["52:54:00:ab:cd:03", "192.0.2.1"], "gateway"),
        (["not-a-mac", "192.0.2.52"], "not a MAC address"),
    ]:
        proc = cluster.pvc("network", "dhcp", "add", "100", *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr, (args, proc.stderr)
    listing = cluster.pvc_json("network", "dhcp", "list", "100")
    assert listing["reservations"] == [{"mac": "52:54:00:ab:cd:01", "ip": "192.0.2.50", "hostname": "db1"}]
    # A network change that would strand a reservation is refused.
    proc = cluster.pvc("network", "modify", "100", "--ipv4", "198.51.100.0/24", "--gateway", "198.51.100.1",
                       "--no-dhcp", check=False)
    assert proc.returncode == 1 and "192.0.2.50 is outside" in proc.stderr
    proc = cluster.pvc("network", "dhcp", "remove", "100", "52:54:00:ab:cd:01", "192.0.2.99", check=False)
    assert proc.returncode == 1 and "not 192.0.2.99" in proc.stderr
    cluster.pvc("network", "dhcp", "remove", "100", "52:54:00:ab:cd:01")
    assert cluster.pvc_json("network", "dhcp", "list", "100")["reservations"] == []
    proc = cluster.pvc("network", "dhcp", "remove", "100", "52:54:00:ab:cd:01", check=False)
    assert proc.returncode == 1 and "no reservation" in proc.stderr
    # Removing a network removes its reservations and leases with it.
    cluster.pvc("network", "dhcp", "add", "100", "52:54:00:ab:cd:01", "192.0.2.50")
    cluster.pvc("network", "remove", "100", "--yes")
    assert cluster.pvc_json("network", "list") == []
    add(cluster, 100, *WEB)
    assert cluster.pvc_json("network", "dhcp", "list", "100")["reservations"] == []
