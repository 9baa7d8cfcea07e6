"""Primary duty: the managed client networks' gateway addresses, DHCP and DNS.

For every managed network the primary puts the gateway addresses on the network's bridge and runs
one dnsmasq (DHCP range, reservations, DNS for the network's domain; leases in ZooKeeper through
the lease hook). Networks, their changes and their reservations are followed by watches; each
network is reconciled by one worker at a time. ``stop`` takes it all down again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys


from pvc import networks
from pvc.daemon.context import DaemonContext
from pvc.daemon.dnsmasq import Dnsmasq, stale_pids
from pvc.daemon.duties.guard import TeardownGuard
from pvc.daemon.key_workers import KeyWorkers
from pvc.daemon.netcmd import NetCommands
from pvc.dnsmasq_config import files_for, render_conf, render_hook, render_hosts
from pvc.errors import PvcError
from pvc import network_store
from pvc.record_cache import RecordCache
from pvc.schema import Network, Paths
from pvc.zk import connection_string


class ClientNetworksDuty:
    name = "client_networks"

    def __init__(self, ctx: DaemonContext, guard: TeardownGuard) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.networking
        self.zk = ctx.zk
        self.guard = guard
        self.log = ctx.log.bind(role="primary", duty=self.name)
        self.net: NetCommands = ctx.services.shared_netcmd(self.cfg.netns, self.log)
        self.cache = self._new_cache()
        self.records: dict[int, Network] = self.cache.records
        self.applied: dict[int, list[str]] = {}  # vni -> gateway addresses we put on its bridge
        self.dnsmasq: dict[int, Dnsmasq] = {}
        self.ensured: dict[int, networks.InterfacePlan] = {}
        self.workers: KeyWorkers[int] = KeyWorkers(self._reconcile, log=self.log, name="client_network",
                                                   transient=(PvcError, OSError), retry_delay=1)

    def _new_cache(self) -> RecordCache[int]:
        return RecordCache(
            self.zk, Paths.networks, key=lambda c: int(c) if c.isdigit() else None, path=Paths.network,
            decode=Network.decode, on_change=self.kick, log=self.log,
            extra_watches=lambda vni: [
                self.zk.watch_children(Paths.network_reservations(vni), lambda _c: self.kick(vni))],
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        for pid in stale_pids(self.cfg.run_directory):
            self.log.warning("stale_dnsmasq_stopped", pid=pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            nets = await network_store.list_networks(self.zk)
        except PvcError:
            return
        for net in nets:
            for addr in networks.gateway_addresses(net):
                await self.net.del_address(networks.bridge_name(net.vni), addr)

    async def start(self) -> None:
        self.cache = self._new_cache()
        self.records = self.cache.records
        self.cache.start()
        # The role is "primary" once the networks known now are served (bounded: a broken
        # network must not hold the takeover up).
        try:
            await asyncio.wait_for(self.cache.synced.wait(), 10)
            await asyncio.wait_for(self.workers.settled(), 20)
        except asyncio.TimeoutError:
            self.log.warning("client_networks_slow_to_start")

    async def stop(self) -> None:
        self.cache.stop()
        await self.workers.cancel()
        for vni in list(self.dnsmasq):
            await self._stop_dnsmasq(vni)
        for vni in list(self.applied):
            await self._set_addresses(vni, [])
        self.records.clear()
        self.ensured.clear()

    def kick(self, vni: int) -> None:
        self.workers.kick(vni)

    # -- doing -------------------------------------------------------------------------------------

    async def _reconcile(self, vni: int) -> None:
        net = self.records.get(vni)
        if net is None or net.type != "managed":
            self.ensured.pop(vni, None)
            await self._stop_dnsmasq(vni)
            await self._set_addresses(vni, [])
            return
        cfg = self.cfg
        cluster_address = cfg.cluster_address or (await self.net.first_ipv4(cfg.cluster_device)
                                                  if cfg.cluster_device else "")
        plan = networks.interface_plan(net, cluster_device=cfg.cluster_device, cluster_address=cluster_address,
                                       bridge_device=cfg.bridge_device, flood=cfg.vxlan_flood,
                                       group=cfg.vxlan_group, mtu=cfg.mtu)
        if self.ensured.get(vni) != plan:
            # Normally the networking role made them already; a takeover right at start may be first.
            await self.net.ensure_interfaces(plan)
            self.ensured[vni] = plan
        await self._set_addresses(vni, networks.gateway_addresses(net))
        if networks.needs_dnsmasq(net):
            reservations = await network_store.list_reservations(self.zk, vni)
            files = files_for(cfg.run_directory, vni)
            conf = render_conf(net, files, lease_time=cfg.dhcp_lease_time, dns_servers=cfg.dns_servers,
                               user=cfg.dnsmasq_user)
            zookeeper = connection_string(self.ctx.config.zookeeper.hosts, self.ctx.config.zookeeper.auth)
            hook = render_hook(sys.executable, zookeeper, vni,
                               netns_of=f"/proc/{os.getpid()}/ns/net" if cfg.netns else "")
            instance = self.dnsmasq.get(vni)
            if instance is None:
                instance = self.dnsmasq[vni] = Dnsmasq(vni, files, self.net, self.log,
                                                      on_pid=lambda pid, n=vni: self._guard_pid(n, pid))
            await instance.apply(conf, render_hosts(reservations), hook)
        else:
            await self._stop_dnsmasq(vni)

    async def _set_addresses(self, vni: int, wanted: list[str]) -> None:
        bridge = networks.bridge_name(vni)
        have = self.applied.get(vni, [])
        for addr in have:
            if addr not in wanted:
                await self.net.del_address(bridge, addr)
                self.log.info("gateway_removed", vni=vni, address=addr)
        # Register the teardown before adding: a crash in between must not leave an address behind.
        self.guard.set(f"gateway-{vni}", [self.net.del_address_argv(bridge, a) for a in sorted(set(have) | set(wanted))])
        for addr in wanted:
            if addr not in have:
                await self.net.add_address(bridge, addr)
                self.net.announce_soon(bridge, addr.split("/")[0])
                self.log.info("gateway_added", vni=vni, address=addr)
        if wanted:
            self.applied[vni] = list(wanted)
        else:
            self.applied.pop(vni, None)
        self.guard.set(f"gateway-{vni}", [self.net.del_address_argv(bridge, a) for a in wanted])

    def _guard_pid(self, vni: int, pid: int | None) -> None:
        self.guard.set(f"dnsmasq-{vni}", [["kill", "-TERM", str(pid)]] if pid else [])

    async def _stop_dnsmasq(self, vni: int) -> None:
        instance = self.dnsmasq.pop(vni, None)
        if instance:
            await instance.stop()
