"""The hypervisor role (every node): carry out the VM states assigned to this node.

Each VM record is watched; every change, and every libvirt lifecycle event, "kicks" that VM. A
kicked VM gets one worker at a time that asks libvirt for the truth, lets the pure
``reconcile.decide`` pick the next step, executes it and records the outcome with a versioned
write. The write triggers the watch again, so the loop converges on "nothing to do".
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from pvc import fencing, store
from pvc.daemon.console_tailer import ConsoleTailer
from pvc.daemon.context import DaemonContext
from pvc.daemon.flush import NodeOperations
from pvc.daemon.key_workers import KeyWorkers
from pvc.errors import NotFound, PvcError, Unavailable
from pvc.libvirt_host import EVENT_CRASHED, EVENT_STOPPED, STOPPED_MIGRATED, LibvirtError, LibvirtHost
from pvc.reconcile import Step, decide, unexpected_stop
from pvc.record_cache import RecordCache
from pvc.schema import Domain, NodeInfo, Paths
from pvc.zk import NoNode


def _replace(dom: Domain, **changes) -> Domain:
    return msgspec.structs.replace(dom, **changes)


class HypervisorRole:
    name = "hypervisor"

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.host: LibvirtHost = ctx.host
        self.me = ctx.node
        self.log = ctx.log.bind(role="hypervisor")
        self.cache: RecordCache[str] = RecordCache(
            self.zk, Paths.domains, key=lambda child: child, path=Paths.domain, decode=Domain.decode,
            on_change=self._on_change, log=self.log,
        )
        self.records: dict[str, Domain] = self.cache.records
        # Set once every VM record has been read: decisions about all VMs (flush plans) wait for it.
        self.synced = self.cache.synced
        ctx.services["domains"] = self.records
        ctx.services["hypervisor"] = self
        self.workers: KeyWorkers[str] = KeyWorkers(self._reconcile, log=self.log, name="vm",
                                                   transient=(Unavailable, LibvirtError))
        self._expect_stop: set[str] = set()
        self._unexpected: dict[str, tuple[str, str]] = {}
        self._stopped: dict[str, asyncio.Future] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._foreign_logged: set[str] = set()
        # Components that follow "this VM is assigned here and runs here" (the console-log tailer):
        # objects with ``async vm_here(dom)`` and ``async vm_gone(uuid)``. vm_gone runs before a
        # migration hands the VM to another node, so the next node continues what this one wrote.
        self.residency_hooks: list = [ConsoleTailer(self)]
        self._here: set[str] = set()
        self._no_live_migration: set[str] = set()  # target URIs this libvirt cannot migrate to at all
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self.tasks: asyncio.TaskGroup | None = None

    # -- wiring --------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self.tasks = tg  # owns (and at shutdown cancels) the tasks of components such as the tailer
            self.cache.start()
            try:
                await NodeOperations(self.ctx, self).run()
            finally:
                self.cache.stop()
                await self.workers.cancel()

    def on_libvirt_event(self, uuid: str, event: int, detail: int) -> None:
        if event in (EVENT_STOPPED, EVENT_CRASHED):
            waiter = self._stopped.get(uuid)
            if waiter and not waiter.done():
                waiter.set_result(detail)
            if uuid in self._expect_stop:
                self._expect_stop.discard(uuid)
            elif event == EVENT_STOPPED and detail == STOPPED_MIGRATED:
                self._unexpected[uuid] = ("migrated", "migrated outside pvc")
            else:
                dom = self.records.get(uuid)
                if dom and dom.node == self.me and dom.state in ("start", "migrate"):
                    self._unexpected[uuid] = unexpected_stop(2 if event == EVENT_CRASHED else detail)
        self._presence_changed()
        self.kick(uuid)

    def on_libvirt_reconnected(self) -> None:
        for uuid in list(self.records):
            self.kick(uuid)

    async def _residency(self, dom: Domain | None, uuid: str, running: bool) -> None:
        here = dom is not None and dom.node == self.me and running
        if here and uuid not in self._here:
            self._here.add(uuid)
            for hook in self.residency_hooks:
                await hook.vm_here(dom)
        elif not here and uuid in self._here:
            await self._leaving(uuid)

    async def _leaving(self, uuid: str) -> None:
        if uuid in self._here:
            self._here.discard(uuid)
            for hook in self.residency_hooks:
                await hook.vm_gone(uuid)

    def _presence_changed(self) -> None:
        presence = self.ctx.services.get("presence")
        if presence:
            presence.poke()

    def _on_change(self, uuid: str) -> None:
        for waiter in self._waiters.pop(uuid, ()):
            if not waiter.done():
                waiter.set_result(None)
        event = self._changed.get(uuid)
        if event:
            event.set()
        self.kick(uuid)

    async def wait_record(self, uuid: str, outcome, timeout: float) -> tuple[bool, str] | None:
        """Wait (by watch) until ``outcome(record)`` says finished; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = outcome(self.records.get(uuid))
            if result[0]:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(uuid, set()).add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return None

    def kick(self, uuid: str) -> None:
        self.workers.kick(uuid)

    # -- deciding ------------------------------------------------------------------------------

    async def _reconcile(self, uuid: str) -> None:
        if uuid in self._unexpected:
            state, reason = self._unexpected.pop(uuid)
            await self._record_unexpected_stop(uuid, state, reason)
        dom = self.records.get(uuid)
        running = self.host.is_running(uuid)
        await self._residency(dom, uuid, running)
        if dom is None:
            return
        step = decide(dom, self.me, running)
        if step is Step.NOTHING:
            return
        log = self.log.bind(vm=dom.name, step=step.value)
        if step is Step.FOREIGN:
            if uuid not in self._foreign_logged:
                self._foreign_logged.add(uuid)
                log.warning("vm_running_here_but_assigned_elsewhere", assigned=dom.node)
            return
        log.info("vm_step", state=dom.state)
        await getattr(self, f"_do_{step.value}")(dom)

    async def update(self, uuid: str, change) -> Domain | None:
        """A versioned write starting from the watch cache; the cache takes the result at once."""
        try:
            result = await store.update_domain(self.zk, uuid, change, known=self.cache.cached(uuid))
        except NotFound:
            return None
        if result is None:
            return None
        self.cache.put(uuid, *result)
        return result[0]

    async def _record_unexpected_stop(self, uuid: str, state: str, reason: str) -> None:
        self.log.warning("vm_stopped_unexpectedly", vm=uuid, reason=reason)
        if state == "migrated":
            # Someone ran `virsh migrate` behind pvc's back: find where it runs now, or this node
            # would start a second copy to honour state "start".
            found = await self._find_elsewhere(uuid)
            if found:
                await self.update(uuid, lambda d: _replace(d, node=found, failed_reason=reason, target_node="",
                                                           libvirt_state="running")
                                  if d.node == self.me and not self.host.is_running(uuid) else None)
                return
            state, reason = "stop", "migrated outside pvc to a node pvc does not know"

        def change(d: Domain) -> Domain | None:
            if d.node != self.me or d.state not in ("start", "migrate") or self.host.is_running(uuid):
                return None
            return _replace(d, state=state, failed_reason=reason, libvirt_state="shutoff", target_node="")

        await self.update(uuid, change)

    # -- steps ---------------------------------------------------------------------------------

    async def _do_start(self, dom: Domain) -> None:
        try:
            xml = await store.read_xml(self.zk, dom.uuid)
            # QEMU takes seconds to start or kill a guest: off the loop, or ZooKeeper sessions expire.
            await asyncio.to_thread(self.host.start, xml)
        except (LibvirtError, PvcError, OSError) as exc:
            if isinstance(exc, Unavailable):
                raise
            reason = f"start failed on {self.me}: {exc}"
            self.log.error("vm_start_failed", vm=dom.name, error=str(exc))
            await self.update(dom.uuid, lambda d: _replace(d, state="fail", failed_reason=reason, libvirt_state="shutoff")
                               if d.node == self.me and d.state in ("start", "restart", "migrate") else None)
            return
        await self._do_record_running(dom)

    async def _do_record_running(self, dom: Domain) -> None:
        def change(d: Domain) -> Domain | None:
            if d.node != self.me or d.state not in ("start", "restart", "migrate"):
                return None
            # A recovery note (pvc.fencing) stays visible after the start; any other reason is cleared.
            note = d.failed_reason if fencing.is_recovery_note(d.failed_reason) else ""
            return _replace(d, state="start", libvirt_state=self.host.state(d.uuid), failed_reason=note, target_node="")

        await self.update(dom.uuid, change)

    async def _do_record_stopped(self, dom: Domain) -> None:
        def change(d: Domain) -> Domain | None:
            if d.node != self.me or self.host.is_running(d.uuid):
                return None
            return _replace(d, state="stop" if d.state == "shutdown" else d.state, libvirt_state="shutoff")

        await self.update(dom.uuid, change)

    async def _do_destroy(self, dom: Domain) -> None:
        self._expect_stop.add(dom.uuid)
        await asyncio.to_thread(self.host.destroy, dom.uuid)
        await self._do_record_stopped(dom)

    async def _graceful_stop(self, dom: Domain, still_wanted) -> bool:
        """Shut the guest down; apply the timeout policy. False if it is left running.

        Returns early (forcing it off) when the operator changes the request meanwhile to stop."""
        cfg = self.ctx.config.vm
        uuid = dom.uuid
        stopped = asyncio.get_running_loop().create_future()
        self._stopped[uuid] = stopped
        changed = self._changed.setdefault(uuid, asyncio.Event())
        self._expect_stop.add(uuid)
        deadline = time.monotonic() + cfg.shutdown_timeout
        try:
            self.host.shutdown(uuid)
            while self.host.is_running(uuid):
                changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait_changed = asyncio.ensure_future(changed.wait())
                await asyncio.wait([stopped, wait_changed], timeout=min(remaining, 1.0),
                                   return_when=asyncio.FIRST_COMPLETED)
                wait_changed.cancel()
                if not still_wanted(self.records.get(uuid)):
                    self.log.info("vm_shutdown_overridden", vm=dom.name)
                    await asyncio.to_thread(self.host.destroy, uuid)
            if not self.host.is_running(uuid):
                return True
            if cfg.shutdown_timeout_policy == "stop":
                self.log.warning("vm_shutdown_timeout_forcing_off", vm=dom.name, timeout=cfg.shutdown_timeout)
                await asyncio.to_thread(self.host.destroy, uuid)
                return True
            self._expect_stop.discard(uuid)
            reason = f"shutdown timed out after {cfg.shutdown_timeout:g} s; left running (policy abort)"
            self.log.warning("vm_shutdown_timeout_left_running", vm=dom.name)
            await self.update(uuid, lambda d: _replace(d, state="start", failed_reason=reason, target_node="")
                               if d.node == self.me else None)
            return False
        finally:
            self._stopped.pop(uuid, None)

    async def _do_shutdown(self, dom: Domain) -> None:
        if await self._graceful_stop(dom, lambda d: d is not None and d.state == "shutdown"):
            await self._do_record_stopped(dom)

    async def _do_disable(self, dom: Domain) -> None:
        if await self._graceful_stop(dom, lambda d: d is not None and d.state == "disable"):
            await self._do_record_stopped(dom)

    async def _do_restart(self, dom: Domain) -> None:
        if await self._graceful_stop(dom, lambda d: d is not None and d.state == "restart"):
            current = self.records.get(dom.uuid)
            if current and current.state == "restart" and current.node == self.me:
                await self._do_start(current)

    async def _do_hand_over(self, dom: Domain) -> None:
        """The VM is off here: reassign it; the target's daemon starts it."""
        await self._leaving(dom.uuid)
        await self.update(dom.uuid, lambda d: _replace(d, node=d.target_node, target_node="", state="start",
                                                        libvirt_state="shutoff")
                           if d.node == self.me and d.state == "migrate" and d.target_node else None)

    async def _do_migrate(self, dom: Domain) -> None:
        target = await self.target_info(dom.target_node)
        if ((dom.migration_method or "live") == "live" and target and target.migration_uri
                and target.migration_uri not in self._no_live_migration):
            if await self._migrate_live(dom, target):
                return
        await self._migrate_by_shutdown(dom)

    async def _migrate_live(self, dom: Domain, target: NodeInfo) -> bool:
        """Try a live migration; whatever happens, ask libvirt where the domain runs before writing."""
        uuid = dom.uuid
        self._expect_stop.add(uuid)
        try:
            await self.host.migrate_live(uuid, target.migration_uri, target.migration_address)
        except LibvirtError as exc:
            self.log.info("vm_live_migration_failed", vm=dom.name, target=target.name, error=str(exc))
            if exc.unsupported:
                self._no_live_migration.add(target.migration_uri)
        if self.host.is_running(uuid):
            self._expect_stop.discard(uuid)
            return False  # still here: fall back to a shutdown migration
        # Gone from here: a live migration that reported failure may still have completed.
        there = await asyncio.to_thread(LibvirtHost.remote_is_running, target.migration_uri, uuid)
        await self._leaving(uuid)
        if there:
            await self.update(uuid, lambda d: _replace(d, node=target.name, target_node="", state="start",
                                                        libvirt_state="running", failed_reason="")
                               if d.node == self.me else None)
        else:
            reason = f"lost during migration to {target.name}: running on neither node"
            await self.update(uuid, lambda d: _replace(d, state="fail", target_node="", failed_reason=reason,
                                                        libvirt_state="shutoff") if d.node == self.me else None)
        return True

    async def _migrate_by_shutdown(self, dom: Domain) -> bool:
        """Clean shutdown here, then hand over: the target's daemon starts it. Never runs twice:
        the record names the target only once libvirt here says the domain is off."""
        wanted = lambda d: d is not None and d.state == "migrate" and d.target_node == dom.target_node  # noqa: E731
        if not await self._graceful_stop(dom, wanted):
            return False
        await self._do_hand_over(dom)
        return True

    async def _find_elsewhere(self, uuid: str) -> str:
        """The peer whose libvirt runs the domain, asked directly ("" if none does)."""
        for name in await store.node_names(self.zk):
            info = await self.target_info(name) if name != self.me else None
            if info and info.migration_uri:
                try:
                    if await asyncio.to_thread(LibvirtHost.remote_is_running, info.migration_uri, uuid):
                        return name
                except LibvirtError:
                    continue
        return ""

    async def target_info(self, node: str) -> NodeInfo | None:
        try:
            data, _ = await self.zk.get(Paths.node(node))
            return NodeInfo.decode(data)
        except NoNode:
            return None
