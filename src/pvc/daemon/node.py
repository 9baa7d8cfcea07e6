"""This node's presence in the cluster: registration, daemon_state and the keepalive."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time

from pvc import __version__
from pvc.daemon.context import DaemonContext
from pvc.errors import PvcError
from pvc.schema import IpmiInfo, Keepalive, NodeInfo, Paths


# pvcd's exit status when it finds, on getting a new ZooKeeper session, that its node was fenced.
EXIT_FENCED = 75


class NodePresence:
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.daemon_state = "init"
        self._poked = asyncio.Event()

    def _key(self, key: str) -> str:
        return Paths.node_key(self.ctx.node, key)

    async def register(self) -> None:
        cfg, zk = self.ctx.config, self.ctx.zk
        info = NodeInfo(
            name=self.ctx.node,
            daemon_mode="coordinator" if cfg.is_coordinator else "hypervisor",
            libvirt_uri=cfg.libvirt.uri,
            migration_uri=cfg.libvirt.migration_uri,
            migration_address=cfg.libvirt.migration_address,
            console_log_directory=cfg.console_log.directory,
            pvc_version=__version__,
            cpu_count=os.cpu_count() or 0,
            arch=platform.machine(),
            kernel=platform.release(),
            flush_concurrency=cfg.vm.flush_concurrency,
            flush_unmovable_policy=cfg.vm.flush_unmovable_policy,
        )
        await zk.ensure_path(Paths.node(self.ctx.node))
        await zk.set(Paths.node(self.ctx.node), info.encode())
        ipmi = cfg.fencing.ipmi  # the primary powers this node off with it when it dies (docs/operations.md)
        await zk.put(self._key("ipmi"), IpmiInfo(hostname=ipmi.hostname, port=ipmi.port, username=ipmi.username,
                                                 password=ipmi.password, cipher_suite=ipmi.cipher_suite).encode())
        await zk.create_owned(self._key("alive"), str(os.getpid()).encode())
        await self.set_state("init")
        if await zk.get_data(self._key("domain_state")) is None:
            await zk.put(self._key("domain_state"), b"ready")
        if not cfg.is_coordinator:  # a coordinator's state belongs to its coordinator role
            await zk.put(self._key("coordinator_state"), b"client")
        zk.on_session_renewed(self._reassert)

    async def _reassert(self) -> None:
        # Whoever noticed our session end may have marked us dead; we are back. But if we were
        # fenced meanwhile (declared powered off: our VMs may already run elsewhere), all this
        # daemon believes is stale and acting on it could start a second copy of a VM: exit at once,
        # touching nothing (no state write, no VM). No fence can land after this read: our `alive`
        # key is already re-created, and every fencing write fails while it exists.
        if await self.ctx.zk.get_data(self._key("daemon_state")) == b"fenced":
            hint = ("this node was declared powered off while its daemon was cut off from ZooKeeper and its VMs "
                    "were recovered elsewhere; the daemon exits touching nothing: check the host (its VMs may "
                    "run twice), then start pvcd")
            # No event-log write either: awaiting it would let other tasks act on the stale view.
            self.ctx.log.critical("fenced_while_away", exit_status=EXIT_FENCED, hint=hint)
            sys.stderr.flush()
            os._exit(EXIT_FENCED)  # not restarted by pvcd.service (RestartPreventExitStatus)
        await self.ctx.zk.put(self._key("daemon_state"), self.daemon_state.encode())

    async def set_state(self, state: str) -> None:
        self.daemon_state = state
        await self.ctx.zk.put(self._key("daemon_state"), state.encode())
        self.ctx.log.info("daemon_state", state=state)

    async def leave(self) -> None:
        await self.set_state("stop")
        await self.ctx.zk.release_owned(self._key("alive"))

    def poke(self) -> None:
        """Ask for a keepalive soon (running domains changed): placement reads these figures."""
        self._poked.set()

    def stats(self) -> Keepalive:
        host = self.ctx.host
        hs = host.stats()
        active = host.running_uuids()
        hv = self.ctx.services.hypervisor
        records = hv.records if hv else {}
        mine = [records[u] for u in active if u in records]
        return Keepalive(
            time=time.time(),
            memory_total_mib=hs.memory_total_mib,
            memory_free_mib=hs.memory_free_mib,
            memory_used_mib=hs.memory_total_mib - hs.memory_free_mib,
            memory_allocated_mib=sum(d.memory_mib for d in mine),
            vcpus_total=hs.cpus,
            vcpus_allocated=sum(d.vcpus for d in mine),
            load=round(os.getloadavg()[0], 2),
            domains_count=len(active),
            running_domains=sorted(active),
            storage=self.ctx.services.storage.state if self.ctx.services.storage else "",
        )

    async def publish(self) -> None:
        """Write the keepalive now: placement reads these figures."""
        try:
            await self.ctx.zk.put(self._key("keepalive"), self.stats().encode())
        except (PvcError, Exception) as exc:  # a missed keepalive must never stop the daemon
            self.ctx.log.warning("keepalive_failed", error=str(exc) or type(exc).__name__)

    async def keepalive_loop(self) -> None:
        interval = self.ctx.config.keepalive_interval
        while True:
            await self.publish()
            self._poked.clear()
            try:
                await asyncio.wait_for(self._poked.wait(), interval)
                await asyncio.sleep(0.25)  # coalesce a burst of changes (a flush) into one write
            except asyncio.TimeoutError:
                pass
