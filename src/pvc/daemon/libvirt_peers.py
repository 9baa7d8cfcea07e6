"""Where a domain really runs, asked of the nodes' own libvirt (never of a record): the one way
pvc checks other nodes, used to follow a VM moved behind pvc's back, to tell two copies from a
move, to confirm a live migration's outcome and before fencing recovery starts anything.

Each node is reached through its published ``migration_uri``; every call is bounded in time and
runs off the event loop (a libvirt connection blocks).
"""

from __future__ import annotations

import asyncio

from pvc import store
from pvc.libvirt_host import LibvirtError, LibvirtHost
from pvc.zk import ZK

PEER_TIMEOUT = 10.0


async def active_uuids(uri: str) -> set[str]:
    """Every domain running (or paused) on the libvirt at ``uri``; LibvirtError if unreachable."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(LibvirtHost.remote_active_uuids, uri), PEER_TIMEOUT)
    except asyncio.TimeoutError:
        raise LibvirtError(f"{uri} did not answer within {PEER_TIMEOUT:g} s") from None


async def runs(uri: str, uuid: str) -> bool:
    return uuid in await active_uuids(uri)


async def where_running(zk: ZK, uuids: set[str], exclude: set[str] = frozenset(), log=None) -> dict[str, str]:
    """uuid -> the first node (by name) whose libvirt runs it, among the nodes not excluded.
    An unreachable node is skipped (and logged): it cannot be a placement target either."""
    found: dict[str, str] = {}
    if not uuids:
        return found
    for node in await store.list_nodes(zk):
        if node.name in exclude or not node.migration_uri:
            continue
        try:
            active = await active_uuids(node.migration_uri)
        except LibvirtError as exc:
            if log:
                log.warning("peer_libvirt_unreachable", peer=node.name, error=str(exc))
            continue
        for uuid in active & uuids:
            found.setdefault(uuid, node.name)
    return found
