"""FRR's own checker (``vtysh --dryrun``) accepts what pvc renders, in every shape the cluster
state can give it; and rejects a broken file (so the check is real)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pvc.frr_config import FrrInputs, render
from pvc.networks import build_network

VTYSH = shutil.which("vtysh")
pytestmark = pytest.mark.skipif(not VTYSH, reason="FRR (vtysh) is not installed")

NETS = [
    build_network(100, description="web", ipv4_network="192.0.2.0/24", ipv4_gateway="192.0.2.1",
                  ipv6_network="2001:db8:0:1::/64", ipv6_gateway="2001:db8:0:1::1"),
    build_network(101, description="db", ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1"),
    build_network(42, type="bridged", description="vlan"),
]


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "frr.conf"
    path.write_text(text)
    return subprocess.run([VTYSH, "--dryrun", "-f", str(path)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("shape", ["alone", "cluster", "upstream", "no-router-id"])
def test_rendered_configs_are_valid(tmp_path, shape):
    inputs = dict(node="hv1", router_id="198.18.0.11", asn=65500, coordinators={"hv1": "198.18.0.11"},
                  hypervisors={})
    if shape in ("cluster", "upstream", "no-router-id"):
        inputs.update(coordinators={"hv1": "198.18.0.11", "hv2": "198.18.0.12", "hv3": "198.18.0.13"},
                      hypervisors={"hv4": "198.18.0.14", "hv5": "198.18.0.15"}, networks=NETS)
    if shape == "upstream":
        inputs.update(upstream_peers=["198.18.1.1", "2001:db8:ffff::1"], upstream_asn=64512)
    if shape == "no-router-id":
        inputs.update(router_id="", asn=4200000000)
    proc = check(tmp_path, render(FrrInputs(**inputs)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checker_rejects_nonsense(tmp_path):
    text = render(FrrInputs(node="hv1", router_id="198.18.0.11", asn=65500, coordinators={}, hypervisors={}))
    assert check(tmp_path, text.replace("advertise-all-vni", "advertise-every-vni")).returncode != 0
