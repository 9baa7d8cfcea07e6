"""The hypervisor role (every node): carry out the VM states assigned to this node.

The records of the VMs that concern this node are watched: those its index names
(``/node_domains/<node>``: assigned here, moving or handed over here, a copy seen here; see
pvc.domain_index), those libvirt runs here, and those followed for a while (a flush's moves).
Other nodes' VMs cost this daemon nothing. Every change, and every libvirt lifecycle event,
"kicks" that VM. A kicked VM gets one worker at a time running ``VmReconciler.reconcile`` (ask
libvirt, decide, act, record). The write triggers the watch again, so the loop converges on
"nothing to do". This module is the wiring: the record cache, libvirt events, residency hooks,
waiting on records.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from pvc.zk import NodeExists

# Record-cache sources besides the node's index folder.
RUNNING = "libvirt"  # domains libvirt runs here (a copy assigned elsewhere must be seen)
FOLLOWED = "followed"  # VMs a component follows for a while (``follow``)
# How long ``follow`` waits for a record's first read before going on without it.
FOLLOW_READ_TIMEOUT = 10.0


class HypervisorRole:
    name = "hypervisor"

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.host: LibvirtHost = ctx.host
        self.me = ctx.node
        self.log = ctx.log.bind(role="hypervisor")
        self.cache: RecordCache[str] = RecordCache(
            self.zk, Paths.node_domains_of(self.me), key=lambda child: child, path=Paths.domain,
            decode=Domain.decode, on_change=self._on_change, log=self.log,
        )
        # The records of the VMs that concern this node (not every VM: ``all_records`` reads those).
        self.records: dict[str, Domain] = self.cache.records
        # Set once every VM of the node's index has been read.
        self.synced = self.cache.synced
        self._followers: dict[str, int] = {}
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
            await self._create_index_folder()
            self._follow_running()
            self.cache.start()
            try:
                await NodeOperations(self.ctx, self).run()
            finally:
                self.cache.stop()
                await self.workers.cancel()

    async def _create_index_folder(self) -> None:
        # Defines and moves to this node write entries into it; their transaction needs it to exist
        # (they create it themselves otherwise, at the cost of a retry).
        try:
            await self.zk.create(Paths.node_domains_of(self.me), b"")
        except NodeExists:
            pass
        except Unavailable as exc:  # the folder's watch waits for it meanwhile
            self.log.warning("index_folder_not_created", error=str(exc))

    def _follow_running(self) -> None:
        try:
            self.cache.want(RUNNING, self.host.running_uuids())
        except (LibvirtError, Unavailable) as exc:
            self.log.warning("libvirt_list_failed", error=str(exc))  # again at the reconnect

    def note_running(self, uuid: str) -> None:
        """Libvirt runs it here: follow its record, whichever node it is assigned to."""
        self.cache.add(RUNNING, uuid)

    async def all_records(self) -> list[Domain]:
        """Every VM's record, read now (a flush plan: ready brings home VMs assigned elsewhere)."""
        return await store.list_domains(self.zk)

    async def current(self, uuid: str) -> Domain | None:
        """The VM's record: the cached one while it is followed and read, else read now."""
        if self.cache.follows(uuid) and not self.cache.pending(uuid):
            return self.records.get(uuid)
        try:
            return (await store.read_domain(self.zk, uuid))[0]
        except NotFound:
            return None

    @contextlib.asynccontextmanager
    async def follow(self, uuid: str):
        """Keep a VM's record in ``records`` (watched) inside this block, whichever node it concerns
        (a flush follows each VM it moves away until it arrives)."""
        self._followers[uuid] = self._followers.get(uuid, 0) + 1
        self.cache.add(FOLLOWED, uuid)
        try:
            try:
                await asyncio.wait_for(self.cache.arrived(uuid), FOLLOW_READ_TIMEOUT)
            except asyncio.TimeoutError:
                pass  # ZooKeeper away: the record arrives later, by the watch
            yield
        finally:
            self._followers[uuid] -= 1
            if not self._followers[uuid]:
                del self._followers[uuid]
                self.cache.discard(FOLLOWED, uuid)

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
            self.cache.discard(RUNNING, uuid)
        else:
            self.note_running(uuid)  # started here (or changed while running)
        self._presence_changed()
        self.kick(uuid)

    def on_libvirt_reconnected(self) -> None:
        # Events were missed while libvirt was away: what vanished meanwhile cannot be told from
        # what a libvirtd restart took with it, so the recorded intent is carried out again.
        self.reconciler.forget_seen()
        self._follow_running()
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
        async with self.follow(uuid):  # it may leave this node's index on the way (moved away)
            return await self._wait_record(uuid, outcome, time.monotonic() + timeout)

    async def _wait_record(self, uuid: str, outcome, deadline: float) -> tuple[bool, str] | None:
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

