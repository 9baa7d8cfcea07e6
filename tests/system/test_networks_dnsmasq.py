"""dnsmasq's own checker (``dnsmasq --test``) accepts every configuration pvc renders."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pvc import dnsmasq_config as dc
from pvc.networks import build_network

DNSMASQ = shutil.which("dnsmasq")
pytestmark = pytest.mark.skipif(not DNSMASQ, reason="dnsmasq is not installed")

SHAPES = {
    "dhcp+dns+ipv6": dict(domain="web.example", ipv4_network="192.0.2.0/24", ipv4_gateway="192.0.2.1", dhcp4=True,
                          dhcp4_start="192.0.2.100", dhcp4_end="192.0.2.199", ipv6_network="2001:db8:0:1::/64",
                          ipv6_gateway="2001:db8:0:1::1"),
    "reservations only": dict(ipv4_network="198.51.100.0/25", ipv4_gateway="198.51.100.126"),
    "ipv6 only": dict(domain="v6.example", ipv6_network="2001:db8:0:2::/64", ipv6_gateway="2001:db8:0:2::1"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_rendered_dnsmasq_configs_are_valid(tmp_path, shape):
    net = build_network(100, description=f"test {shape}", **SHAPES[shape])
    files = dc.files_for(str(tmp_path), 100)
    (tmp_path / "dnsmasq-100.hosts").write_text("52:54:00:00:00:01,198.51.100.5,db1\n")
    conf = dc.render_conf(net, files, lease_time=600, dns_servers=["198.51.100.53"], user="root")
    (tmp_path / "dnsmasq-100.conf").write_text(conf)
    proc = subprocess.run([DNSMASQ, "--test", f"--conf-file={files.conf}"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "syntax check OK" in proc.stderr + proc.stdout, proc.stderr
