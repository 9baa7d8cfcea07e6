"""Typed reads and writes of client networks, leases and reservations (CLI and daemons).

Every change checks the whole request first (``pvc.networks``) and then writes in one ZooKeeper
transaction, so an invalid or conflicting request writes nothing. Network adds and changes also
bump the version of ``/networks`` in that transaction: two concurrent requests cannot both pass
the overlap check against the same picture of the cluster (the second one retries).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from pvc import networks
from pvc.errors import Conflict, NotFound
from pvc.schema import Lease, Network, NodeNetwork, Paths, Reservation
from pvc.zk import ZK, BadVersion, NodeExists, NoNode, NotEmpty

ATTEMPTS = 20


class NetworkView(msgspec.Struct, kw_only=True):
    """A network as `pvc network info -o json` shows it."""

    network: Network
    reservations: list[Reservation]
    leases: list[Lease]


async def list_networks(zk: ZK) -> list[Network]:
    try:
        vnis = await zk.children(Paths.networks)
    except NoNode:
        return []
    values = await zk.get_many(Paths.network(v) for v in vnis)
    return sorted((Network.decode(v) for v in values if v), key=lambda n: n.vni)


async def read_network(zk: ZK, vni: int) -> tuple[Network, int]:
    try:
        data, version = await zk.get(Paths.network(vni))
    except NoNode:
        raise NotFound(f"unknown network {vni}") from None
    return Network.decode(data), version


async def _records(zk: ZK, folder: str, cls: type) -> list[Any]:
    try:
        names = await zk.children(folder)
    except NoNode:
        return []
    values = await zk.get_many(f"{folder}/{n}" for n in names)
    return [cls.decode(v) for v in values if v]


async def list_reservations(zk: ZK, vni: int) -> list[Reservation]:
    return sorted(await _records(zk, Paths.network_reservations(vni), Reservation), key=lambda r: r.mac)


async def list_leases(zk: ZK, vni: int) -> list[Lease]:
    return sorted(await _records(zk, Paths.network_leases(vni), Lease), key=lambda l: l.mac)


async def network_view(zk: ZK, vni: int) -> NetworkView:
    net, _ = await read_network(zk, vni)
    return NetworkView(network=net, reservations=await list_reservations(zk, vni), leases=await list_leases(zk, vni))


async def _networks_version(zk: ZK) -> int:
    return (await zk.get(Paths.networks))[1]


async def add_network(zk: ZK, net: Network) -> Network:
    net = networks.validate_network(net)
    for _ in range(ATTEMPTS):
        version = await _networks_version(zk)
        if await zk.exists(Paths.network(net.vni)):
            raise Conflict(f"VNI {net.vni} is already in use by a network")
        networks.check_against_cluster(net, await list_networks(zk))
        try:
            await zk.multi([
                ("set", Paths.networks, b"", version),
                ("create", Paths.network(net.vni), net.encode()),
                ("create", Paths.network_leases(net.vni), b""),
                ("create", Paths.network_reservations(net.vni), b""),
            ])
            return net
        except BadVersion:
            await asyncio.sleep(0.01)
        except NodeExists:
            raise Conflict(f"VNI {net.vni} is already in use by a network") from None
    raise Conflict("networks are being changed concurrently; try again")


async def modify_network(zk: ZK, vni: int, **changes: Any) -> Network:
    for _ in range(ATTEMPTS):
        version = await _networks_version(zk)
        old, net_version = await read_network(zk, vni)
        new = networks.modify(old, **changes)
        networks.check_against_cluster(new, await list_networks(zk), await list_reservations(zk, vni))
        if new == old:
            return new
        try:
            await zk.multi([
                ("set", Paths.networks, b"", version),
                ("set", Paths.network(vni), new.encode(), net_version),
            ])
            return new
        except BadVersion:
            await asyncio.sleep(0.01)
    raise Conflict(f"network {vni} is being changed concurrently; try again")


async def remove_network(zk: ZK, vni: int) -> Network:
    net, version = await read_network(zk, vni)
    ops: list[tuple] = []
    for folder in (Paths.network_leases(vni), Paths.network_reservations(vni)):
        try:
            ops += [("delete", f"{folder}/{c}") for c in await zk.children(folder)]
        except NoNode:
            continue
        ops.append(("delete", folder))
    ops.append(("delete", Paths.network(vni), version))
    try:
        await zk.multi(ops)
    except (BadVersion, NoNode, NotEmpty):  # a lease or reservation came or went meanwhile
        raise Conflict(f"network {vni} changed while it was being removed; try again") from None
    return net


async def add_reservation(zk: ZK, vni: int, mac: str, ip: str, hostname: str = "") -> Reservation:
    for _ in range(ATTEMPTS):
        net, version = await read_network(zk, vni)
        res = networks.build_reservation(net, mac, ip, hostname)
        res = networks.check_reservation(net, res, await list_reservations(zk, vni))
        try:
            # Re-setting the record with its version: no change to the network slips in meanwhile.
            await zk.multi([
                ("set", Paths.network(vni), net.encode(), version),
                ("create", Paths.network_reservation(vni, res.mac), res.encode()),
            ])
            return res
        except BadVersion:
            await asyncio.sleep(0.01)
        except NodeExists:
            raise Conflict(f"{res.mac} already has a reservation on network {vni}") from None
        except NoNode:  # the reservations folder is missing: make it and try again
            try:
                await zk.create(Paths.network_reservations(vni))
            except NodeExists:
                pass
    raise Conflict(f"network {vni} is being changed concurrently; try again")


async def remove_reservation(zk: ZK, vni: int, mac: str, ip: str = "") -> Reservation:
    await read_network(zk, vni)
    mac = networks.normalize_mac(mac)
    try:
        data, version = await zk.get(Paths.network_reservation(vni, mac))
    except NoNode:
        raise NotFound(f"no reservation for {mac} on network {vni}") from None
    res = Reservation.decode(data)
    if ip and ip.strip() != res.ip:
        raise Conflict(f"{mac} is reserved {res.ip} on network {vni}, not {ip}")
    try:
        await zk.delete(Paths.network_reservation(vni, mac), version)
    except (BadVersion, NoNode):
        raise Conflict(f"the reservation for {mac} changed meanwhile; try again") from None
    return res


async def node_networks(zk: ZK, names: list[str]) -> dict[str, NodeNetwork]:
    values = await zk.get_many(Paths.node_key(n, "network") for n in names)
    return {n: NodeNetwork.decode(v) for n, v in zip(names, values) if v}
