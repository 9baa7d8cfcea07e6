"""Client network operations (``network.*``): networks, their DHCP leases and reservations.

The rules are in pvc.networks (pure) and the transactions in pvc.network_store; here each
request becomes one operation.
"""

from __future__ import annotations

import msgspec

from pvc import network_store
from pvc.network_store import NetworkView
from pvc.ops.common import NoParams
from pvc.ops.registry import Context, operation
from pvc.schema import Lease, Network, Reservation


class NetworkRef(msgspec.Struct, kw_only=True):
    vni: int


@operation("network.list", "GET", "/network")
async def list_networks(ctx: Context, params: NoParams) -> list[Network]:
    """List client networks."""
    return await network_store.list_networks(ctx.zk)


@operation("network.info", "GET", "/network/{vni}")
async def info(ctx: Context, params: NetworkRef) -> NetworkView:
    """One network with its reservations and leases."""
    return await network_store.network_view(ctx.zk, params.vni)


@operation("network.add", "POST", "/network")
async def add(ctx: Context, params: Network) -> Network:
    """Add a client network (the body is the network record)."""
    return await network_store.add_network(ctx.zk, params)


class NetworkChanges(msgspec.Struct, kw_only=True):
    """Fields left null stay as they are; "" removes an optional one."""

    vni: int
    description: str | None = None
    domain: str | None = None
    ipv4_network: str | None = None  # "" removes IPv4 (gateway and DHCP too)
    ipv4_gateway: str | None = None
    dhcp4: bool | None = None
    dhcp4_start: str | None = None
    dhcp4_end: str | None = None
    ipv6_network: str | None = None  # "" removes IPv6
    ipv6_gateway: str | None = None


@operation("network.modify", "PATCH", "/network/{vni}")
async def modify(ctx: Context, params: NetworkChanges) -> Network:
    """Change a network (fields not given stay as they are)."""
    changes = msgspec.structs.asdict(params)
    return await network_store.modify_network(ctx.zk, changes.pop("vni"), **changes)


@operation("network.remove", "DELETE", "/network/{vni}")
async def remove(ctx: Context, params: NetworkRef) -> Network:
    """Remove a network (every node removes its interfaces; the primary stops its DHCP and DNS)."""
    return await network_store.remove_network(ctx.zk, params.vni)


class Dhcp(msgspec.Struct, kw_only=True):
    leases: list[Lease]
    reservations: list[Reservation]


@operation("network.dhcp_list", "GET", "/network/{vni}/dhcp")
async def dhcp_list(ctx: Context, params: NetworkRef) -> Dhcp:
    """A network's DHCP leases and reservations."""
    view = await network_store.network_view(ctx.zk, params.vni)
    return Dhcp(leases=view.leases, reservations=view.reservations)


class ReservationParams(msgspec.Struct, kw_only=True):
    vni: int
    mac: str
    ip: str
    hostname: str = ""


@operation("network.dhcp_add", "POST", "/network/{vni}/dhcp")
async def dhcp_add(ctx: Context, params: ReservationParams) -> Reservation:
    """Reserve an address for a MAC address."""
    return await network_store.add_reservation(ctx.zk, params.vni, params.mac, params.ip, params.hostname)


class ReservationRef(msgspec.Struct, kw_only=True):
    vni: int
    mac: str
    ip: str = ""  # the reserved address, checked when given


@operation("network.dhcp_remove", "DELETE", "/network/{vni}/dhcp/{mac}")
async def dhcp_remove(ctx: Context, params: ReservationRef) -> Reservation:
    """Remove a reservation."""
    return await network_store.remove_reservation(ctx.zk, params.vni, params.mac, params.ip)
