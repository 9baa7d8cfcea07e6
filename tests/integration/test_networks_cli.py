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
    assert "192.0.2.0/24" in table and "via" not in table and "storage" in table
    assert "192.0.2.0/24 via 192.0.2.1" in cluster.pvc("network", "list", "-o", "wide").stdout
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


def test_every_table_fits_80_columns(cluster):
    """Issue 12, "output that fits": each list command's default table, with realistic values (16-character
    names, a VM, a DHCP reservation, a token), stays within 80 columns when piped with COLUMNS=80 and has
    no escape codes; -o wide shows the full UUID, -o name one name a line, -o yaml the JSON document."""
    import json
    import shutil
    import subprocess

    import yaml

    env = {**cluster.env, "COLUMNS": "80", "XDG_CONFIG_HOME": str(cluster.tmp / "xdg")}

    def pvc(*args):
        proc = subprocess.run([shutil.which("pvc") or "pvc", *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    add(cluster, 150, "--description", "customer-backend", "--domain", "backend.example.com", "--ipv4",
        "198.51.100.0/24", "--gateway", "198.51.100.1", "--dhcp", "--dhcp-start", "198.51.100.100", "--dhcp-end",
        "198.51.100.199", "--ipv6", "2001:db8:150::/64", "--gateway6", "2001:db8:150::1")
    cluster.pvc("network", "dhcp", "add", "150", "52:54:00:12:34:56", "198.51.100.10", "--hostname", "database-replica")
    vm = cluster.define("web-frontend-016", memory_mib=512)
    cluster.pvc("token", "add", "monitoring-ro-01", "--read-only")
    try:
        tables = {args: pvc(*args) for args in [
            ("vm", "list"), ("node", "list"), ("network", "list"), ("network", "dhcp", "list", "150"),
            ("token", "list"), ("connection", "list"), ("cluster", "status"), ("vm", "info", vm["name"]),
            ("node", "info", cluster.nodes[0]), ("network", "info", "150")]}
        for args, text in tables.items():
            assert "\x1b" not in text, args
            if "info" not in args:  # info lines are as long as their values (paths); tables must fit
                assert all(len(line) <= 80 for line in text.splitlines()), (args, text)
        assert vm["uuid"][:8] in tables["vm", "list"] and vm["uuid"] not in tables["vm", "list"]
        assert vm["uuid"] in pvc("vm", "list", "-o", "wide")
        assert "database-replica" in tables["network", "dhcp", "list", "150"]
        assert pvc("vm", "list", "-o", "name").splitlines() == [v["name"] for v in cluster.pvc_json("vm", "list")]
        assert pvc("node", "list", "-o", "name").splitlines() == cluster.nodes
        assert "monitoring-ro-01" in pvc("token", "list", "-o", "name").splitlines()
        assert pvc("vm", "info", vm["name"], "-o", "name") == f"{vm['name']}\n"
        for args in [("vm", "list"), ("vm", "info", vm["name"]), ("network", "dhcp", "list", "150"), ("token", "list")]:
            assert yaml.safe_load(pvc(*args, "-o", "yaml")) == json.loads(pvc(*args, "-o", "json")), args
        node_info = ("node", "info", cluster.nodes[0])  # keepalive time and load move between the two reads
        assert yaml.safe_load(pvc(*node_info, "-o", "yaml")).keys() == json.loads(pvc(*node_info, "-o", "json")).keys()
        # Aligned key/value lines: every value starts in the same column.
        starts = {line.index(":") + len(line[line.index(":") + 1:]) - len(line[line.index(":") + 1:].lstrip())
                  for line in tables["vm", "info", vm["name"]].splitlines()}
        assert len(starts) == 1, starts
    finally:
        cluster.pvc("token", "remove", "monitoring-ro-01", "--yes")
        cluster.pvc("vm", "undefine", vm["name"], "--yes")
        cluster.pvc("network", "remove", "150", "--yes")
