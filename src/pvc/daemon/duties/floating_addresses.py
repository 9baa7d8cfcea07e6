"""Primary duty: the cluster's floating addresses (``networking.upstream_floating`` and
``networking.cluster_floating``) live on the primary and move with the role."""

from __future__ import annotations

from pvc.daemon.context import DaemonContext
from pvc.daemon.duties.guard import TeardownGuard
from pvc.daemon.netcmd import NetCommands


class FloatingAddressesDuty:
    name = "floating_addresses"

    def __init__(self, ctx: DaemonContext, guard: TeardownGuard) -> None:
        cfg = ctx.config.networking
        self.ctx = ctx
        self.guard = guard
        self.log = ctx.log.bind(role="primary", duty=self.name)
        self.net: NetCommands = ctx.services.shared_netcmd(cfg.netns, self.log)
        self.addresses = [(fa.device, fa.address) for fa in (cfg.upstream_floating, cfg.cluster_floating) if fa.address]

    async def cleanup(self) -> None:
        for device, address in self.addresses:
            await self.net.del_address(device, address)

    async def start(self) -> None:
        self.guard.set(self.name, [self.net.del_address_argv(d, a) for d, a in self.addresses])
        for device, address in self.addresses:
            await self.net.add_address(device, address)
            self.net.announce_soon(device, address.split("/")[0])
            self.log.info("floating_address_added", device=device, address=address)

    async def stop(self) -> None:
        for device, address in self.addresses:
            await self.net.del_address(device, address)
            self.log.info("floating_address_removed", device=device, address=address)
        self.guard.set(self.name, [])
