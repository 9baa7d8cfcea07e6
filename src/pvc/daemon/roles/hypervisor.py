"""The hypervisor role (every node): carry out the VM states assigned to this node.

Each VM record is watched; every change, and every libvirt lifecycle event, "kicks" that VM. A
kicked VM gets one worker at a time running ``VmReconciler.reconcile`` (ask libvirt, decide,
act, record). The write triggers the watch again, so the loop converges on "nothing to do".
This module is the wiring: the record cache, libvirt events, residency hooks, waiting on records.
"""

from __future__ import annotations

import asyncio
import time

from pvc import store
from pvc.daemon.console_tailer import ConsoleTailer
from pvc.daemon.context import DaemonContext
from pvc.daemon.flush import NodeOperations
from pvc.daemon.key_workers import KeyWorkers
from pvc.daemon.vm_reconciler import VmReconciler
from pvc.errors import NotFound, Unavailable
from pvc.libvirt_host import EVENT_CRASHED, EVENT_STOPPED, STOPPED_MIGRATED, LibvirtError, LibvirtHost
from pvc.reconcile import unexpected_stop
from pvc.record_cache import RecordCache
from pvc.schema import Domain, Paths


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
        ctx.services.hypervisor = self
        # Stops pvc itself causes (no "stopped outside pvc" for them), and the unexpected ones
        # libvirt reported, by uuid: (new state, reason), handled first by the VM's next reconcile.
        self.expect_stop: set[str] = set()
        self.unexpected: dict[str, tuple[str, str]] = {}
        self._stopped: dict[str, asyncio.Future] = {}
        self._changed: dict[str, asyncio.Event] = {}
        # Cleared while the ZooKeeper session is lost and until every record was read again after a
        # new one: no VM step acts on a record that may be stale (watch deliveries were missed).
        self.fresh = asyncio.Event()
        self.fresh.set()
        self.zk.on_session_lost(self.fresh.clear)
        self.zk.on_session_renewed(self._refresh)
        self.reconciler = VmReconciler(self)
        self.workers: KeyWorkers[str] = KeyWorkers(self.reconciler.reconcile, log=self.log, name="vm",
                                                   transient=(Unavailable, LibvirtError))
        # Components that follow "this VM is assigned here and runs here" (the console-log tailer):
        # objects with ``async vm_here(dom)`` and ``async vm_gone(uuid)``. vm_gone runs before a
        # migration hands the VM to another node, so the next node continues what this one wrote.
        self.residency_hooks: list = [ConsoleTailer(self)]
        self._here: set[str] = set()
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

    async def _refresh(self) -> None:
        await self.cache.refresh()
        self.fresh.set()
        for uuid in list(self.records):
            self.kick(uuid)

    def on_libvirt_event(self, uuid: str, event: int, detail: int) -> None:
        if event in (EVENT_STOPPED, EVENT_CRASHED):
            waiter = self._stopped.get(uuid)
            if waiter and not waiter.done():
                waiter.set_result(detail)
            if uuid in self.expect_stop:
                self.expect_stop.discard(uuid)
            elif event == EVENT_STOPPED and detail == STOPPED_MIGRATED:
                self.unexpected[uuid] = ("migrated", "migrated outside pvc")
            else:
                dom = self.records.get(uuid)
                if dom and dom.node == self.me and dom.state in ("start", "migrate"):
                    self.unexpected[uuid] = unexpected_stop(2 if event == EVENT_CRASHED else detail)
        self._presence_changed()
        self.kick(uuid)

    def on_libvirt_reconnected(self) -> None:
        # Events were missed while libvirt was away: what vanished meanwhile cannot be told from
        # what a libvirtd restart took with it, so the recorded intent is carried out again.
        self.reconciler.forget_seen()
        for uuid in list(self.records):
            self.kick(uuid)

    def stop_waiter(self, uuid: str) -> asyncio.Future:
        """Resolved by libvirt's next stop event for the VM (its detail)."""
        waiter = self._stopped.get(uuid)
        if waiter is None or waiter.done():
            waiter = self._stopped[uuid] = asyncio.get_running_loop().create_future()
        return waiter

    def drop_stop_waiter(self, uuid: str, waiter: asyncio.Future) -> None:
        if self._stopped.get(uuid) is waiter:
            del self._stopped[uuid]

    def change_event(self, uuid: str) -> asyncio.Event:
        """Set whenever the VM's record changes (a graceful stop watches for an overriding request)."""
        return self._changed.setdefault(uuid, asyncio.Event())

    async def residency(self, dom: Domain | None, uuid: str, running: bool) -> None:
        here = dom is not None and dom.node == self.me and running
        if here and uuid not in self._here:
            self._here.add(uuid)
            for hook in self.residency_hooks:
                await hook.vm_here(dom)
        elif not here and uuid in self._here:
            await self.leaving(uuid)

    async def leaving(self, uuid: str) -> None:
        if uuid in self._here:
            self._here.discard(uuid)
            for hook in self.residency_hooks:
                await hook.vm_gone(uuid)

    def _presence_changed(self) -> None:
        if self.ctx.services.presence:
            self.ctx.services.presence.poke()

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

