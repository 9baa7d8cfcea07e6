"""Client networks, the pure core: validation, overlap checks, interface plans.

No I/O here. ``pvc network add/modify`` and ``pvc network dhcp add`` build or change records with
these functions and write only what passed; the daemons use the interface plans.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from pvc.errors import Conflict, InvalidInput
from pvc.schema import Lease, Network, Reservation

NETWORK_TYPES = ("managed", "bridged")
VNI_MAX = 16_777_215  # 24 bits
VLAN_MAX = 4094
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
IFNAME_MAX = 15

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# -- names -----------------------------------------------------------------------------------------


def bridge_name(vni: int) -> str:
    return f"vmbr{vni}"


def vxlan_name(vni: int) -> str:
    return f"vxlan{vni}"


def vlan_name(device: str, vni: int) -> str:
    name = f"{device}.{vni}"
    return name if len(name) <= IFNAME_MAX else f"vlan{vni}"


def parse_vni(value: Any) -> int:
    try:
        vni = int(str(value), 10)
    except ValueError:
        raise InvalidInput(f"VNI must be a whole number, got {value!r}") from None
    if not 1 <= vni <= VNI_MAX:
        raise InvalidInput(f"VNI must be between 1 and {VNI_MAX}, got {vni}")
    return vni


# -- addresses -------------------------------------------------------------------------------------


def _network(text: str, version: int, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an IPv{version} network in CIDR form (e.g. "
                           f"{'192.0.2.0/24' if version == 4 else '2001:db8::/64'})") from None
    if "/" not in text:
        raise InvalidInput(f"{what} {text!r} needs a prefix length (e.g. {text}/{24 if version == 4 else 64})")
    if net.version != version:
        raise InvalidInput(f"{what} {text!r} is not an IPv{version} network")
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise InvalidInput(f"{what} {text!r} has host bits set; the network is {net}")
    if version == 4 and net.prefixlen > 30:
        raise InvalidInput(f"{what} {text!r} is too small for a gateway and clients (at most /30)")
    if version == 6 and net.prefixlen > 126:
        raise InvalidInput(f"{what} {text!r} is too small (at most /126)")
    return net


def _address(text: str, version: int, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an IPv{version} address") from None
    if addr.version != version:
        raise InvalidInput(f"{what} {text!r} is not an IPv{version} address")
    return addr


def _host_in(addr, net, what: str) -> None:
    if addr not in net:
        raise InvalidInput(f"{what} {addr} is outside the network {net}")
    if net.version == 4 and addr in (net.network_address, net.broadcast_address):
        raise InvalidInput(f"{what} {addr} is the network's {'network' if addr == net.network_address else 'broadcast'} "
                           f"address, not a host address of {net}")
    if net.version == 6 and addr == net.network_address:
        raise InvalidInput(f"{what} {addr} is the network's subnet-router anycast address, not a host address")


def normalize_mac(mac: str) -> str:
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise InvalidInput(f"{mac!r} is not a MAC address (like 52:54:00:12:34:56)")
    if int(value[:2], 16) & 1:
        raise InvalidInput(f"{mac!r} is a multicast MAC address, not a host's")
    return value


def check_hostname(name: str) -> str:
    if name and not _LABEL.match(name):
        raise InvalidInput(f"hostname {name!r} must be one DNS label: letters, digits and '-', at most 63 characters")
    return name.lower()


def check_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        return ""
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(f"domain {domain!r} is not a valid DNS domain name")
    return domain


# -- networks --------------------------------------------------------------------------------------


def build_network(
    vni: Any,
    *,
    type: str = "managed",
    description: str = "",
    domain: str = "",
    ipv4_network: str = "",
    ipv4_gateway: str = "",
    dhcp4: bool = False,
    dhcp4_start: str = "",
    dhcp4_end: str = "",
    ipv6_network: str = "",
    ipv6_gateway: str = "",
) -> Network:
    """A validated network record (no cluster context: see ``check_against_cluster``)."""
    net = Network(
        vni=parse_vni(vni), type=type, description=description.strip(), domain=domain,
        ipv4_network=ipv4_network.strip(), ipv4_gateway=ipv4_gateway.strip(), dhcp4=dhcp4,
        dhcp4_start=dhcp4_start.strip(), dhcp4_end=dhcp4_end.strip(),
        ipv6_network=ipv6_network.strip(), ipv6_gateway=ipv6_gateway.strip(),
    )
    return validate_network(net)


def validate_network(net: Network) -> Network:
    """Check one record on its own; return it normalised (canonical addresses, lower-case domain)."""
    if net.type not in NETWORK_TYPES:
        raise InvalidInput(f"network type must be managed or bridged, got {net.type!r}")
    parse_vni(net.vni)
    if not net.description:
        raise InvalidInput("a network needs a description")
    if len(net.description) > 256:
        raise InvalidInput("the description is longer than 256 characters")
    changes: dict[str, Any] = {"domain": check_domain(net.domain)}
    if net.type == "bridged":
        if net.vni > VLAN_MAX:
            raise InvalidInput(f"a bridged network's VNI is its VLAN id: between 1 and {VLAN_MAX}, got {net.vni}")
        if any((net.ipv4_network, net.ipv4_gateway, net.dhcp4, net.dhcp4_start, net.dhcp4_end,
                net.ipv6_network, net.ipv6_gateway, net.domain)):
            raise InvalidInput("a bridged network is plain layer 2: it takes no addresses, DHCP or domain "
                               "(use --type managed for those)")
        return msgspec.structs.replace(net, **changes)

    if net.ipv4_gateway and not net.ipv4_network:
        raise InvalidInput("--gateway needs --ipv4")
    if net.ipv4_network:
        v4 = _network(net.ipv4_network, 4, "IPv4 network")
        changes["ipv4_network"] = str(v4)
        if not net.ipv4_gateway:
            raise InvalidInput(f"the IPv4 network {v4} needs a gateway (--gateway)")
        gw = _address(net.ipv4_gateway, 4, "gateway")
        _host_in(gw, v4, "gateway")
        changes["ipv4_gateway"] = str(gw)
    if net.dhcp4:
        if not net.ipv4_network:
            raise InvalidInput("DHCP needs an IPv4 network (--ipv4 and --gateway)")
        if not (net.dhcp4_start and net.dhcp4_end):
            raise InvalidInput("DHCP needs a range (--dhcp-start and --dhcp-end)")
    if net.dhcp4_start or net.dhcp4_end:
        if not net.ipv4_network:
            raise InvalidInput("a DHCP range needs an IPv4 network (--ipv4)")
        if not (net.dhcp4_start and net.dhcp4_end):
            raise InvalidInput("a DHCP range needs both --dhcp-start and --dhcp-end")
        v4 = ipaddress.ip_network(changes["ipv4_network"])
        start = _address(net.dhcp4_start, 4, "DHCP range start")
        end = _address(net.dhcp4_end, 4, "DHCP range end")
        _host_in(start, v4, "DHCP range start")
        _host_in(end, v4, "DHCP range end")
        if start > end:
            raise InvalidInput(f"the DHCP range starts ({start}) after it ends ({end})")
        gw = ipaddress.ip_address(changes["ipv4_gateway"])
        if start <= gw <= end:
            raise InvalidInput(f"the DHCP range {start}-{end} contains the gateway {gw}")
        changes["dhcp4_start"], changes["dhcp4_end"] = str(start), str(end)
    if net.ipv6_gateway and not net.ipv6_network:
        raise InvalidInput("--gateway6 needs --ipv6")
    if net.ipv6_network:
        v6 = _network(net.ipv6_network, 6, "IPv6 network")
        changes["ipv6_network"] = str(v6)
        if not net.ipv6_gateway:
            raise InvalidInput(f"the IPv6 network {v6} needs a gateway (--gateway6)")
        gw6 = _address(net.ipv6_gateway, 6, "IPv6 gateway")
        _host_in(gw6, v6, "IPv6 gateway")
        changes["ipv6_gateway"] = str(gw6)
    return msgspec.structs.replace(net, **changes)


def check_against_cluster(net: Network, others: list[Network], reservations: list[Reservation] = ()) -> None:
    """Conflicts with the other networks (same VNI, overlapping addresses, same VLAN) and with the
    network's own reservations (which must stay inside it)."""
    for other in others:
        if other.vni == net.vni:
            continue
        for field in ("ipv4_network", "ipv6_network"):
            mine, theirs = getattr(net, field), getattr(other, field)
            if mine and theirs and ipaddress.ip_network(mine).overlaps(ipaddress.ip_network(theirs)):
                raise Conflict(f"{mine} overlaps {theirs} of network {other.vni} ({other.description})")
    for res in reservations:
        check_reservation(net, res, [])


def modify(net: Network, **changes: Any) -> Network:
    """Apply the given changes (None = leave alone) and validate the result."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "type" in changes and changes["type"] != net.type:
        raise InvalidInput(f"network {net.vni} is {net.type}; its type cannot change (remove and add it again)")
    if changes.get("ipv4_network") == "":  # removing IPv4 removes what hangs on it
        changes.update(ipv4_gateway="", dhcp4=False, dhcp4_start="", dhcp4_end="")
    if changes.get("ipv6_network") == "":
        changes["ipv6_gateway"] = ""
    if changes.get("dhcp4") is False and "dhcp4_start" not in changes:
        changes.update(dhcp4_start="", dhcp4_end="")
    return validate_network(msgspec.structs.replace(net, **changes))


# -- DHCP ------------------------------------------------------------------------------------------


def build_reservation(net: Network, mac: str, ip: str, hostname: str = "") -> Reservation:
    return Reservation(mac=normalize_mac(mac), ip=ip.strip(), hostname=check_hostname(hostname.strip()))


def check_reservation(net: Network, res: Reservation, existing: list[Reservation]) -> Reservation:
    if net.type != "managed" or not net.ipv4_network:
        raise InvalidInput(f"network {net.vni} has no IPv4 network for DHCP reservations")
    v4 = ipaddress.ip_network(net.ipv4_network)
    addr = _address(res.ip, 4, "reserved address")
    _host_in(addr, v4, "reserved address")
    if str(addr) == net.ipv4_gateway:
        raise InvalidInput(f"{addr} is the gateway of network {net.vni}")
    for other in existing:
        if other.mac == res.mac:
            raise Conflict(f"{res.mac} already has a reservation on network {net.vni} ({other.ip})")
        if other.ip == str(addr):
            raise Conflict(f"{addr} is already reserved for {other.mac} on network {net.vni}")
        if res.hostname and other.hostname == res.hostname:
            raise Conflict(f"hostname {res.hostname} is already reserved for {other.mac} on network {net.vni}")
    return msgspec.structs.replace(res, ip=str(addr))


# -- interfaces ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InterfacePlan:
    """What a node brings up for one network: a bridge and the link that joins it to the others."""

    vni: int
    bridge: str
    link: str  # the VXLAN or VLAN interface, enslaved to the bridge
    kind: str  # vxlan | vlan
    # vxlan: dev, local address, flooding; vlan: parent device
    parent: str
    local: str = ""
    group: str = ""
    mtu: int = 0

    def commands(self) -> list[list[str]]:
        """``ip`` argument lists that create it (each one fails with "exists" when already there)."""
        if self.kind == "vxlan":
            link = ["link", "add", self.link, "type", "vxlan", "id", str(self.vni), "dstport", str(VXLAN_PORT)]
            if self.local:
                link += ["local", self.local]
            if self.parent:
                link += ["dev", self.parent]
            link += ["group", self.group] if self.group else ["nolearning"]
        else:
            link = ["link", "add", "link", self.parent, "name", self.link, "type", "vlan", "id", str(self.vni)]
        bridge = ["link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"]
        if self.mtu:
            bridge += ["mtu", str(self.mtu)]
        return [bridge, link, ["link", "set", self.link, "master", self.bridge],
                ["link", "set", self.link, "up"], ["link", "set", self.bridge, "up"]]


def interface_plan(net: Network, *, cluster_device: str, cluster_address: str, bridge_device: str,
                   flood: str, group: str, mtu: int = 0) -> InterfacePlan:
    if net.type == "managed":
        return InterfacePlan(net.vni, bridge_name(net.vni), vxlan_name(net.vni), "vxlan", cluster_device,
                             local=cluster_address, group=group if flood == "multicast" else "", mtu=mtu)
    return InterfacePlan(net.vni, bridge_name(net.vni), vlan_name(bridge_device, net.vni), "vlan", bridge_device,
                         mtu=mtu)


def is_pvc_interface(name: str) -> int | None:
    """The VNI of a bridge or VXLAN interface pvc made (vmbrN / vxlanN), else None."""
    for prefix in ("vmbr", "vxlan"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


def gateway_addresses(net: Network) -> list[str]:
    """The primary's addresses on the network's bridge, with prefix lengths."""
    out = []
    if net.type == "managed" and net.ipv4_network and net.ipv4_gateway:
        out.append(f"{net.ipv4_gateway}/{ipaddress.ip_network(net.ipv4_network).prefixlen}")
    if net.type == "managed" and net.ipv6_network and net.ipv6_gateway:
        out.append(f"{net.ipv6_gateway}/{ipaddress.ip_network(net.ipv6_network).prefixlen}")
    return out


def needs_dnsmasq(net: Network) -> bool:
    return net.type == "managed" and bool(net.ipv4_gateway or net.ipv6_gateway)


def live_leases(leases: list[Lease], now: float) -> list[Lease]:
    return [lease for lease in leases if lease.expiry == 0 or lease.expiry > now]


# -- configuration ---------------------------------------------------------------------------------


def check_networking_config(cfg: Any, source: str) -> None:
    """Validate the ``networking`` config section (addresses parse, a device for each address)."""
    def bad(message: str) -> None:
        raise InvalidInput(f"config {source}: networking.{message}")

    for key in ("upstream_floating", "cluster_floating"):
        fa = getattr(cfg, key)
        if fa.address:
            try:
                ipaddress.ip_interface(fa.address)
            except ValueError:
                bad(f"{key}.address {fa.address!r} is not an address with a prefix length (like 192.0.2.10/24)")
            if "/" not in fa.address:
                bad(f"{key}.address {fa.address!r} needs a prefix length (like {fa.address}/24)")
            if not fa.device:
                bad(f"{key}.device is needed with {key}.address")
    for key, value in (("cluster_address", cfg.cluster_address), ("vxlan_group", cfg.vxlan_group),
                       ("frr.router_id", cfg.frr.router_id)):
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                bad(f"{key} {value!r} is not an IP address")
    if cfg.vxlan_flood == "multicast" and not ipaddress.ip_address(cfg.vxlan_group).is_multicast:
        bad(f"vxlan_group {cfg.vxlan_group!r} is not a multicast address")
    for server in cfg.dns_servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            bad(f"dns_servers: {server!r} is not an IP address")
    for peer in cfg.frr.upstream_peers:
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            bad(f"frr.upstream_peers: {peer!r} is not an IP address")
    if cfg.frr.upstream_peers and not cfg.frr.upstream_asn:
        bad("frr.upstream_asn is needed with frr.upstream_peers")
    if not 1 <= cfg.frr.asn <= 4_294_967_295:
        bad(f"frr.asn must be between 1 and 4294967295, got {cfg.frr.asn}")
    if cfg.dhcp_lease_time < 120:
        bad(f"dhcp_lease_time must be at least 120 seconds (dnsmasq's minimum), got {cfg.dhcp_lease_time}")
