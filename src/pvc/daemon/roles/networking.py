"""The networking role (every node with ``networking.enabled``): each client network's interfaces.

For every network the node has a bridge ``vmbr<vni>`` (where VMs' interfaces go) joined to the
other nodes by a VXLAN interface ``vxlan<vni>`` on the cluster device (managed networks) or by the
VLAN ``<vni>`` of the bridge device (bridged networks). They are created when a network appears
and removed when it goes, and interfaces of networks that no longer exist are removed at start.
The node also publishes its cluster address (``/nodes/<name>/network``), which FRR peers with.
Addresses on the bridges are the primary's business (``duties/client_networks.py``).
"""

from __future__ import annotations

import asyncio


from pvc import networks
from pvc.daemon.context import DaemonContext
from pvc.daemon.netcmd import NetCommands
from pvc.daemon.key_workers import KeyWorkers
from pvc.errors import PvcError
from pvc.record_cache import RecordCache
from pvc.schema import Network, NodeNetwork, Paths


def _vni(child: str) -> int | None:
    return int(child) if child.isdigit() else None


class NetworkingRole:
    name = "networking"

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.cfg = ctx.config.networking
        self.log = ctx.log.bind(role="networking")
        self.net: NetCommands = ctx.services.shared_netcmd(self.cfg.netns, self.log)
        self.cache: RecordCache[int] = RecordCache(
            self.zk, Paths.networks, key=_vni, path=Paths.network, decode=Network.decode,
            on_change=self.kick, log=self.log,
        )
        self.records: dict[int, Network] = self.cache.records
        self.present: dict[int, networks.InterfacePlan] = {}
        self.cluster_address = ""
        self.workers: KeyWorkers[int] = KeyWorkers(self._reconcile, log=self.log, name="network_interfaces",
                                                   transient=(PvcError,), retry_delay=1)
        ctx.services.networking = self

    async def run(self) -> None:
        await self._publish_facts()
        self.cache.start()
        try:
            await self.cache.synced.wait()
            await self._sweep(set(self.records))
            await asyncio.Event().wait()
        finally:
            self.cache.stop()
            await self.workers.cancel()
            # Interfaces stay when the daemon stops: VMs on this node keep their network.

    async def _publish_facts(self) -> None:
        delay = 0.5
        while True:
            try:
                self.cluster_address = self.cfg.cluster_address or (
                    await self.net.first_ipv4(self.cfg.cluster_device) if self.cfg.cluster_device else "")
                facts = NodeNetwork(cluster_address=self.cluster_address, netns=self.cfg.netns)
                await self.zk.put(Paths.node_key(self.ctx.node, "network"), facts.encode())
                return
            except PvcError as exc:
                self.log.warning("network_facts_retry", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _sweep(self, current: set[int]) -> None:
        """Remove pvc's interfaces of networks removed while this daemon was not running."""
        try:
            links = await self.net.links()
        except PvcError as exc:
            self.log.warning("network_sweep_failed", error=str(exc))
            return
        for name in links:
            vni = networks.is_pvc_interface(name)
            if vni is None and self.cfg.bridge_device:
                prefix = f"{self.cfg.bridge_device}."
                for candidate in (prefix, "vlan"):
                    if name.startswith(candidate) and name[len(candidate):].isdigit():
                        vni = int(name[len(candidate):])
            if vni is not None and vni not in current and vni not in self.records:
                self.log.info("stale_network_interface_removed", interface=name)
                await self.net.remove_interfaces(name)

    def kick(self, vni: int) -> None:
        self.workers.kick(vni)

    def plan(self, net: Network) -> networks.InterfacePlan:
        cfg = self.cfg
        return networks.interface_plan(net, cluster_device=cfg.cluster_device, cluster_address=self.cluster_address,
                                       bridge_device=cfg.bridge_device, flood=cfg.vxlan_flood, group=cfg.vxlan_group,
                                       mtu=cfg.mtu)

    async def _reconcile(self, vni: int) -> None:
        net = self.records.get(vni)
        old = self.present.get(vni)
        want = self.plan(net) if net else None
        if old and old != want:
            await self.net.remove_interfaces(old.link, old.bridge)
            self.present.pop(vni, None)
            self.log.info("network_interfaces_removed", vni=vni, bridge=old.bridge)
        if want is None:
            if old is None:  # not made by this daemon, but possibly by an earlier one
                names = [networks.vxlan_name(vni), networks.bridge_name(vni)]
                if self.cfg.bridge_device and vni <= networks.VLAN_MAX:
                    names.insert(0, networks.vlan_name(self.cfg.bridge_device, vni))
                await self.net.remove_interfaces(*names)
            return
        await self.net.ensure_interfaces(want)
        if old != want:
            self.present[vni] = want
            self.log.info("network_interfaces_up", vni=vni, bridge=want.bridge, link=want.link)
