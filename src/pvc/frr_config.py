"""FRR configuration for a coordinator (router mode), rendered from the cluster state. Pure.

Every node is an iBGP peer in the cluster's AS on its cluster address; the coordinators reflect
the EVPN routes (type 2 MAC/IP, type 3 flooding lists) of all nodes' VXLAN networks
(``advertise-all-vni`` picks up the kernel's VXLAN devices) and peer with each other for
redundancy. With upstream routers configured, the coordinators announce the managed networks'
prefixes to them; only the primary has a connected route for those prefixes (the gateway
addresses live on it), and FRR announces a ``network`` only while it is in the routing table,
so the announcement follows the primary without a re-render at failover.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pvc.schema import Network


@dataclass(frozen=True)
class FrrInputs:
    node: str
    router_id: str
    asn: int
    coordinators: dict[str, str]  # name -> cluster address (this node included)
    hypervisors: dict[str, str]  # name -> cluster address, the other nodes
    networks: list[Network] = field(default_factory=list)
    upstream_peers: list[str] = field(default_factory=list)
    upstream_asn: int = 0


def render(inputs: FrrInputs) -> str:
    me = inputs.node
    lines = [
        f"! Rendered by pvcd on {me} from the cluster state (router mode); changes are overwritten.",
        "frr defaults datacenter",
        f"hostname {me}",
        "log syslog informational",
        "service integrated-vtysh-config",
        "!",
        f"router bgp {inputs.asn}",
    ]
    if inputs.router_id:
        lines.append(f" bgp router-id {inputs.router_id}")
    lines += [
        " no bgp default ipv4-unicast",
        " neighbor coordinators peer-group",
        f" neighbor coordinators remote-as {inputs.asn}",
        " neighbor coordinators capability extended-nexthop",
        " neighbor hypervisors peer-group",
        f" neighbor hypervisors remote-as {inputs.asn}",
        " neighbor hypervisors capability extended-nexthop",
    ]
    for name, address in sorted(inputs.coordinators.items()):
        if name != me and address:
            lines.append(f" neighbor {address} peer-group coordinators")
            lines.append(f" neighbor {address} description {name}")
    for name, address in sorted(inputs.hypervisors.items()):
        if name != me and address and name not in inputs.coordinators:
            lines.append(f" neighbor {address} peer-group hypervisors")
            lines.append(f" neighbor {address} description {name}")
    if inputs.upstream_peers:
        lines += [" neighbor upstream peer-group", f" neighbor upstream remote-as {inputs.upstream_asn}"]
        lines += [f" neighbor {peer} peer-group upstream" for peer in inputs.upstream_peers]
    managed = sorted((n for n in inputs.networks if n.type == "managed"), key=lambda n: n.vni)
    for family, attr in (("ipv4", "ipv4_network"), ("ipv6", "ipv6_network")):
        prefixes = [getattr(n, attr) for n in managed if getattr(n, attr)]
        if not inputs.upstream_peers:
            continue
        lines += [" !", f" address-family {family} unicast", "  neighbor upstream activate"]
        lines += [f"  network {ipaddress.ip_network(p)}" for p in prefixes]
        lines.append(" exit-address-family")
    lines += [
        " !",
        " address-family l2vpn evpn",
        "  neighbor coordinators activate",
        "  neighbor hypervisors activate",
        "  neighbor hypervisors route-reflector-client",
        "  advertise-all-vni",
    ]
    if managed:
        lines.append("  ! VXLAN networks: " + ", ".join(str(n.vni) for n in managed))
    lines += [" exit-address-family", "exit", "!"]
    return "\n".join(lines) + "\n"
