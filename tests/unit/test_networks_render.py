"""Rendering for client networks, pure: dnsmasq's config, hosts file, lease lines; FRR's config."""

from __future__ import annotations

from pvc import dnsmasq_config as dc
from pvc.frr_config import FrrInputs, render
from pvc.networks import build_network
from pvc.schema import Lease, Reservation

NET = build_network(100, description="web", domain="web.example", ipv4_network="192.0.2.0/24",
                    ipv4_gateway="192.0.2.1", dhcp4=True, dhcp4_start="192.0.2.100", dhcp4_end="192.0.2.199",
                    ipv6_network="2001:db8:0:1::/64", ipv6_gateway="2001:db8:0:1::1")
FILES = dc.files_for("/run/pvc", 100)


def test_dnsmasq_conf():
    conf = dc.render_conf(NET, FILES, lease_time=600, dns_servers=["198.51.100.53"], user="nobody")
    lines = conf.splitlines()
    for expected in ["interface=vmbr100", "bind-dynamic", "leasefile-ro", "dhcp-authoritative",
                     "dhcp-script=/run/pvc/dnsmasq-100-lease-hook", "dhcp-hostsfile=/run/pvc/dnsmasq-100.hosts",
                     "pid-file=/run/pvc/dnsmasq-100.pid", "domain=web.example", "local=/web.example/",
                     "dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,600",
                     "dhcp-option=option:router,192.0.2.1", "dhcp-option=option:dns-server,192.0.2.1",
                     "server=198.51.100.53", "enable-ra", "dhcp-range=2001:db8:0:1::,ra-stateless,64,600",
                     "dhcp-option=option6:dns-server,[2001:db8:0:1::1]", "user=nobody", "no-resolv"]:
        assert expected in lines, expected
    assert lines[0].startswith("# pvc network 100")


def test_dnsmasq_conf_without_range_serves_reservations_only():
    net = build_network(7, description="static", ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1")
    conf = dc.render_conf(net, dc.files_for("/r", 7))
    assert "dhcp-range=198.51.100.0,static,255.255.255.0,3600" in conf.splitlines()
    assert "domain=" not in conf and "enable-ra" not in conf


def test_hosts_and_leases():
    hosts = dc.render_hosts([Reservation(mac="52:54:00:00:00:02", ip="192.0.2.11"),
                             Reservation(mac="52:54:00:00:00:01", ip="192.0.2.10", hostname="db1")])
    assert hosts == "52:54:00:00:00:01,192.0.2.10,db1\n52:54:00:00:00:02,192.0.2.11\n"
    leases = dc.render_leases([Lease(mac="52:54:00:00:00:09", ip="192.0.2.150", hostname="c1", expiry=1700000000),
                               Lease(mac="52:54:00:00:00:08", ip="192.0.2.120")])
    assert leases == ("0 52:54:00:00:00:08 192.0.2.120 * *\n"
                      "1700000000 52:54:00:00:00:09 192.0.2.150 c1 *\n")


def test_lease_from_script():
    env = {"DNSMASQ_LEASE_EXPIRES": "1700000600", "DNSMASQ_CLIENT_ID": "01:52:54:00:00:00:09"}
    lease = dc.lease_from_script("add", "52:54:00:00:00:09", "192.0.2.150", "Client1", env)
    assert lease == Lease(mac="52:54:00:00:00:09", ip="192.0.2.150", hostname="client1", expiry=1700000600,
                          client_id="01:52:54:00:00:00:09")
    assert dc.lease_from_script("old", "52:54:00:00:00:09", "192.0.2.150", "", {}).expiry == 0
    assert dc.lease_from_script("del", "52:54:00:00:00:09", "192.0.2.150", "", {}) is None
    assert dc.lease_from_script("add", "00:01:02", "2001:db8::5", "", {}) is None  # DHCPv6: not ours
    assert dc.lease_from_script("tftp", "1", "2", "", {}) is None


def test_hook_script_quotes():
    hook = dc.render_hook("/opt/my python/bin/python3", "pvc:p a$s@127.0.0.1:2181", 100)
    assert hook.startswith("#!/bin/sh\n")
    assert "export PVC_ZOOKEEPER='pvc:p a$s@127.0.0.1:2181'\n" in hook  # the credential: not on a command line
    assert "exec '/opt/my python/bin/python3' -m pvc.daemon.lease_hook --vni 100 \"$@\"" in hook


def frr_inputs(**kw) -> FrrInputs:
    base = dict(node="hv1", router_id="198.18.0.11", asn=65500,
                coordinators={"hv1": "198.18.0.11", "hv2": "198.18.0.12"},
                hypervisors={"hv3": "198.18.0.13", "hv4": ""}, networks=[NET])
    base.update(kw)
    return FrrInputs(**base)


def test_frr_render():
    text = render(frr_inputs())
    lines = [line.strip() for line in text.splitlines()]
    assert "router bgp 65500" in lines and "bgp router-id 198.18.0.11" in lines
    assert "neighbor 198.18.0.12 peer-group coordinators" in lines
    assert "neighbor 198.18.0.13 peer-group hypervisors" in lines
    assert "neighbor 198.18.0.11 peer-group coordinators" not in lines  # not ourselves
    assert not any("hv4" in line for line in lines)  # no address known yet
    assert "advertise-all-vni" in lines and "neighbor hypervisors route-reflector-client" in lines
    assert "neighbor upstream activate" not in lines
    up = render(frr_inputs(upstream_peers=["198.18.1.1"], upstream_asn=64512))
    ulines = [line.strip() for line in up.splitlines()]
    assert "neighbor upstream remote-as 64512" in ulines
    assert "network 192.0.2.0/24" in ulines and "network 2001:db8:0:1::/64" in ulines
    # Deterministic: the same state renders the same text (no reload without a change).
    assert render(frr_inputs()) == text
