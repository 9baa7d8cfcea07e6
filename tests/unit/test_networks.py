"""Client networks, pure core: validation, overlap, reservations, interface plans, config checks."""

from __future__ import annotations

import pytest

from pvc import networks
from pvc.config import parse_config
from pvc.errors import Conflict, InvalidInput
from pvc.networks import build_network, check_against_cluster, check_reservation, modify
from pvc.schema import Network, Reservation


def managed(vni=100, **kw) -> Network:
    base = dict(description="web", ipv4_network="192.0.2.0/24", ipv4_gateway="192.0.2.1", dhcp4=True,
                dhcp4_start="192.0.2.100", dhcp4_end="192.0.2.199")
    base.update(kw)
    return build_network(vni, **base)


def test_valid_managed_network_is_normalised():
    net = managed(domain="Web.Example.", ipv6_network="2001:db8:0:1::/64", ipv6_gateway="2001:db8:0:1:0::1")
    assert net.domain == "web.example"
    assert net.ipv6_gateway == "2001:db8:0:1::1"
    assert networks.gateway_addresses(net) == ["192.0.2.1/24", "2001:db8:0:1::1/64"]
    assert networks.needs_dnsmasq(net)


@pytest.mark.parametrize("kw, message", [
    (dict(ipv4_network="192.0.2.0"), "prefix length"),
    (dict(ipv4_network="192.0.2.5/24"), "host bits"),
    (dict(ipv4_network="300.0.2.0/24"), "not an IPv4 network"),
    (dict(ipv4_network="2001:db8::/64"), "not an IPv4 network"),
    (dict(ipv4_network="192.0.2.0/31"), "too small"),
    (dict(ipv4_gateway="198.51.100.1"), "outside the network"),
    (dict(ipv4_gateway="192.0.2.0"), "network address"),
    (dict(ipv4_gateway="192.0.2.255"), "broadcast"),
    (dict(ipv4_gateway="nonsense"), "not an IPv4 address"),
    (dict(ipv4_gateway=""), "needs a gateway"),
    (dict(dhcp4_start="192.0.3.100"), "outside the network"),
    (dict(dhcp4_end="192.0.2.50"), "starts (192.0.2.100) after it ends"),
    (dict(dhcp4_start="192.0.2.1"), "contains the gateway"),
    (dict(dhcp4_end=""), "--dhcp-start and --dhcp-end"),
    (dict(ipv4_network="", ipv4_gateway="", dhcp4_start="", dhcp4_end=""), "DHCP needs an IPv4 network"),
    (dict(ipv6_network="2001:db8::/64", ipv6_gateway="2001:db9::1"), "outside the network"),
    (dict(ipv6_network="2001:db8::/64"), "needs a gateway"),
    (dict(ipv6_gateway="2001:db8::1"), "--gateway6 needs --ipv6"),
    (dict(domain="bad_domain!"), "not a valid DNS domain"),
    (dict(description=""), "needs a description"),
    (dict(type="routed"), "managed or bridged"),
])
def test_invalid_networks(kw, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        managed(**kw)


@pytest.mark.parametrize("vni", [0, -1, 16_777_216, "abc"])
def test_vni_range(vni):
    with pytest.raises(InvalidInput, match="VNI"):
        managed(vni)


def test_bridged_networks_are_plain_vlans():
    net = build_network(200, type="bridged", description="storage")
    assert not networks.needs_dnsmasq(net) and networks.gateway_addresses(net) == []
    with pytest.raises(InvalidInput, match="VLAN id"):
        build_network(5000, type="bridged", description="x")
    with pytest.raises(InvalidInput, match="plain layer 2"):
        build_network(200, type="bridged", description="x", ipv4_network="192.0.2.0/24", ipv4_gateway="192.0.2.1")


def test_overlaps_are_conflicts():
    a = managed(100)
    b = managed(101, ipv4_network="192.0.2.128/25", ipv4_gateway="192.0.2.129", dhcp4=False,
                dhcp4_start="", dhcp4_end="")
    with pytest.raises(Conflict, match="overlaps 192.0.2.0/24 of network 100"):
        check_against_cluster(b, [a])
    c = managed(102, ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1", dhcp4_start="198.51.100.10",
                dhcp4_end="198.51.100.20", ipv6_network="2001:db8::/48", ipv6_gateway="2001:db8::1")
    d = build_network(103, description="v6", ipv6_network="2001:db8:0:5::/64", ipv6_gateway="2001:db8:0:5::1")
    check_against_cluster(c, [a])
    with pytest.raises(Conflict, match="2001:db8::/48"):
        check_against_cluster(d, [a, c])
    check_against_cluster(a, [a])  # itself (modify) is no conflict


def test_modify():
    net = managed()
    assert modify(net, description="new").description == "new"
    bare = modify(net, ipv4_network="")
    assert not bare.ipv4_gateway and not bare.dhcp4 and not bare.dhcp4_start
    assert not modify(net, dhcp4=False).dhcp4_start
    moved = modify(net, ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1", dhcp4_start="198.51.100.100",
                   dhcp4_end="198.51.100.110")
    assert moved.ipv4_network == "198.51.100.0/24"
    with pytest.raises(InvalidInput, match="outside"):
        modify(net, ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1")  # DHCP range left behind
    with pytest.raises(InvalidInput, match="cannot change"):
        modify(net, type="bridged")
    # A network's reservations must stay inside it.
    res = Reservation(mac="52:54:00:00:00:01", ip="192.0.2.10")
    with pytest.raises(InvalidInput, match="outside"):
        check_against_cluster(moved, [], [res])


def test_reservations():
    net = managed()
    res = networks.build_reservation(net, "52-54-00-AA-BB-CC", "192.0.2.10", "Db1")
    assert res.mac == "52:54:00:aa:bb:cc" and res.hostname == "db1"
    check_reservation(net, res, [])
    for mac in ("52:54:00:aa:bb", "zz:54:00:aa:bb:cc", "01:00:5e:00:00:01"):
        with pytest.raises(InvalidInput):
            networks.build_reservation(net, mac, "192.0.2.10")
    with pytest.raises(InvalidInput, match="one DNS label"):
        networks.build_reservation(net, "52:54:00:aa:bb:cc", "192.0.2.10", "a.b")
    with pytest.raises(InvalidInput, match="outside"):
        check_reservation(net, Reservation(mac=res.mac, ip="198.51.100.3"), [])
    with pytest.raises(InvalidInput, match="gateway"):
        check_reservation(net, Reservation(mac=res.mac, ip="192.0.2.1"), [])
    other = Reservation(mac="52:54:00:00:00:02", ip="192.0.2.10", hostname="x")
    with pytest.raises(Conflict, match="already reserved"):
        check_reservation(net, res, [other])
    with pytest.raises(Conflict, match="already has a reservation"):
        check_reservation(net, res, [Reservation(mac=res.mac, ip="192.0.2.11")])
    with pytest.raises(InvalidInput, match="no IPv4 network"):
        check_reservation(build_network(5, type="bridged", description="b"), res, [])


def test_interface_plans():
    net = managed(4242)
    plan = networks.interface_plan(net, cluster_device="eth0", cluster_address="198.18.0.11", bridge_device="eth1",
                                   flood="evpn", group="239.0.100.1")
    cmds = plan.commands()
    assert cmds[0][:4] == ["link", "add", "vmbr4242", "type"]
    vx = cmds[1]
    assert vx[:6] == ["link", "add", "vxlan4242", "type", "vxlan", "id"] and "nolearning" in vx and "group" not in vx
    mc = networks.interface_plan(net, cluster_device="eth0", cluster_address="", bridge_device="eth1",
                                 flood="multicast", group="239.0.100.1").commands()[1]
    assert mc[-2:] == ["group", "239.0.100.1"] and "dev" in mc
    bridged = networks.interface_plan(build_network(42, type="bridged", description="b"), cluster_device="eth0",
                                      cluster_address="", bridge_device="eth1", flood="evpn", group="")
    assert bridged.link == "eth1.42" and bridged.commands()[1][-4:] == ["type", "vlan", "id", "42"]
    assert networks.vlan_name("enp129s0f1np1", 4000) == "vlan4000"
    assert networks.is_pvc_interface("vmbr12") == 12 and networks.is_pvc_interface("vxlan7") == 7
    assert networks.is_pvc_interface("eth0") is None and networks.is_pvc_interface("vmbrx") is None


def test_networking_config():
    cfg = parse_config("""
networking:
  netns: pvc-hv1
  cluster_device: eth0
  vxlan_flood: multicast
  upstream_floating: {device: eth1, address: 198.18.1.2/24}
  frr: {enabled: true, asn: 65001, upstream_peers: [198.18.1.1], upstream_asn: 64512}
""")
    assert cfg.networking.netns == "pvc-hv1" and cfg.networking.frr.asn == 65001
    assert cfg.coordinator.election_session_timeout == 3.0
    for bad, message in [
        ("networking: {upstream_floating: {device: eth1, address: 198.18.1.2}}", "prefix length"),
        ("networking: {upstream_floating: {address: 198.18.1.2/24}}", "device is needed"),
        ("networking: {cluster_floating: {device: e, address: nope/24}}", "not an address"),
        ("networking: {vxlan_flood: multicast, vxlan_group: 198.18.0.1}", "not a multicast"),
        ("networking: {vxlan_flood: flood}", "vxlan_flood"),
        ("networking: {dns_servers: [x]}", "dns_servers"),
        ("networking: {frr: {upstream_peers: [198.18.1.1]}}", "upstream_asn"),
        ("networking: {dhcp_lease_time: 60}", "at least 120"),
        ("networking: {bogus: 1}", "bogus"),
        ("coordinator: {election_session_timeout: 0}", "election_session_timeout"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            parse_config(bad)
