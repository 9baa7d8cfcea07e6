"""Node flush and ready, one at a time across the cluster, under the flush lock.

Shaped like a logical unit: the request names the operation; the lock (``/locks/flush``, FIFO,
ephemeral) is taken before anything moves; the plan comes from the pure ``flush_plan``; then each
VM's intent is written and its outcome awaited by watch. The node's own hypervisor role and its
peers carry out the migrations; this module only decides, asks and reports.

A newer request (ready during a flush) cancels the running one cleanly: no new VM is sent away,
the ones in flight finish, and the new operation runs under the lock already held. If the
session ends, the lock is gone with it: the operation stops and is re-queued once a new session
exists; the node stays in ``flush`` (visible) until it completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec

from pvc import autostart, events, store, vm_outcomes, vm_states
from pvc.daemon.context import DaemonContext
from pvc.errors import PvcError, Unavailable
from pvc.flush_plan import Move, dispatch, unsettled
from pvc.ops.flush import plan_of
from pvc.schema import (
    Domain,
    FailedVM,
    FlushProgress,
    FlushRequest,
    LockEntry,
    MovedVM,
    Paths,
)
from pvc.zk_lock import QueueLock

FINAL = ("done", "cancelled")
RECHECK = 2.0  # seconds: how soon a move held back by others' migrations or nodes' figures is looked at again


class NodeOperations:
    def __init__(self, ctx: DaemonContext, hypervisor) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.hv = hypervisor
        self.me = ctx.node
        self.log = ctx.log.bind(role="flush")
        self.request: FlushRequest | None = None
        self._request_changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._progress: FlushProgress | None = None

    def _key(self, key: str) -> str:
        return Paths.node_key(self.me, key)

    # -- wiring --------------------------------------------------------------------------------

    async def run(self) -> None:
        self.zk.on_session_lost(self._session_lost)
        data = await self.zk.get_data(self._key("flush_progress"))
        self._progress = FlushProgress.decode(data) if data else None
        self.zk.watch_data(self._key("flush_request"), self._on_request)
        while True:
            await self._request_changed.wait()
            self._request_changed.clear()
            req = self.request
            if req is None or (self._progress and self._progress.id == req.id and self._progress.status in FINAL):
                continue
            # While it runs, the operation itself notices newer requests (_until_newer).
            self._task = asyncio.create_task(self._process(), name="flush")
            try:
                await self._task
            except asyncio.CancelledError:
                if not self._task.cancelled():
                    raise
                await self.zk.connected.wait()
                self._request_changed.set()  # session renewed: run what is still pending
            except (Unavailable, PvcError) as exc:
                self.log.warning("flush_retry", error=str(exc))
                await asyncio.sleep(1)
                self._request_changed.set()

    def _on_request(self, data: bytes | None, _version: int) -> None:
        if data:
            try:
                self.request = FlushRequest.decode(data)
            except msgspec.DecodeError:
                self.log.error("bad_flush_request")
                return
            self._request_changed.set()

    def _session_lost(self) -> None:
        if self._task and not self._task.done():
            self.log.warning("flush_lock_lost_with_session")
            self._task.cancel()

    # -- the operation -------------------------------------------------------------------------

    async def _process(self) -> None:
        req = self.request
        lock = QueueLock(self.zk, Paths.flush_lock, LockEntry(node=self.me, op=req.op, id=req.id).encode())
        await lock.enqueue()
        try:
            # Only once enqueued: a CLI that reads "queued" finds this request's place in the queue.
            await self._begin(req, "queued")
            while not await self._until_newer(lock.acquire(), req):
                await self._report(status="cancelled", message=f"superseded by a {self.request.op} request")
                req = self.request
                await lock.update(LockEntry(node=self.me, op=req.op, id=req.id).encode())
                await self._begin(req, "queued")
            while True:
                await self._report(status="running", started=time.time())  # when the lock was taken
                cancel = asyncio.Event()
                run = asyncio.create_task(self._execute(req, cancel))
                if await self._until_newer(run, req, cancel):
                    break
                # Say so at once; the VMs in flight finish (their outcome is no longer reported).
                await self._report(status="cancelled", message=f"cancelled by a {self.request.op} request")
                req = self.request
                await lock.update(LockEntry(node=self.me, op=req.op, id=req.id).encode())
                await self._begin(req, "running")
                await run
        finally:
            await asyncio.shield(self._release(lock))

    async def _release(self, lock: QueueLock) -> None:
        try:
            await lock.release()
        except (Unavailable, PvcError):
            pass  # the session is gone: so is the lock entry

    async def _until_newer(self, work, req: FlushRequest, cancel: asyncio.Event | None = None) -> bool:
        """Run ``work`` until it ends (True) or a newer request arrives (False). With ``cancel``,
        the work is asked to wind down (the caller awaits it); without, it is cancelled."""
        task = work if isinstance(work, asyncio.Task) else asyncio.ensure_future(work)
        while not task.done():
            self._request_changed.clear()
            if self.request.id != req.id:
                if cancel is None:
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                else:
                    cancel.set()
                return False
            changed = asyncio.ensure_future(self._request_changed.wait())
            await asyncio.wait([task, changed], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        task.result()
        return True

    async def _publish_keepalive(self) -> None:
        if self.ctx.services.presence is not None:
            await self.ctx.services.presence.publish()  # (never raises: a failed write is logged)

    async def _begin(self, req: FlushRequest, status: str) -> None:
        await self.zk.put(self._key("domain_state"), b"flush" if req.op == "flush" else b"unflush")
        self._progress = FlushProgress(id=req.id, op=req.op, status=status)
        await self._write_progress()

    async def _report(self, **changes) -> None:
        self._progress = msgspec.structs.replace(self._progress, **changes)
        await self._write_progress()

    async def _write_progress(self) -> None:
        await self.zk.put(self._key("flush_progress"), self._progress.encode())

    async def _execute(self, req: FlushRequest, cancel: asyncio.Event) -> None:
        log = self.log.bind(op=req.op, id=req.id)
        await self.hv.synced.wait()  # the node's own VMs are known (autostart at the end reads them)
        storage = self.ctx.services.storage
        if req.op == "ready" and storage is not None:
            # A ready right after the daemon (re)started: whether VMs with RBD disks may come home
            # is this node's first Ceph check; plan once it is published (bounded: a Ceph that does
            # not answer is what the check then reports).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(storage.checked.wait(), storage.cfg.check_timeout + 5)
        started = time.monotonic()
        # This node's own figures as they are now, not as its last keepalive had them (a VM stopped
        # just before a ready would still count against it for up to a keepalive).
        await self._publish_keepalive()
        # The same plan as the preview (`pvc node flush --dry-run`), from every VM record.
        domains = await store.list_domains(self.zk)
        pending = await plan_of(self.zk, self.me, req.op, domains)
        limit = max(1, self.ctx.config.vm.flush_concurrency)
        await self._report(total=len(pending), concurrency=limit)  # planned
        log.info("node_operation_started", vms=len(pending), concurrency=limit)
        await events.try_record(self.zk, self.log, f"{req.op}_started", f"{req.op} of {self.me} started: "
                                f"{len(pending)} VM(s) to move", node=self.me)
        # Other VMs still on their way somewhere when the plan was made: followed until they
        # are, so that their memory and migration slots count meanwhile (flush_plan.committed).
        ours = {m.uuid for m in pending}
        on_the_way = unsettled(domains, await self._nodes())
        others = {d.uuid: d for d in domains if d.uuid not in ours and d.uuid in on_the_way}
        try:
            await self._pace(req, pending, others, limit, cancel)
        except ExceptionGroup as group:
            # A move's failure (ZooKeeper away) is the operation's: run() retries it. Unwrapped, or
            # the group would pass run()'s handlers and end the daemon.
            raise group.exceptions[0] from None
        if cancel.is_set():
            return
        if req.op == "ready":
            await self._autostart()
        await self._publish_keepalive()  # once `--wait` returns, `pvc node list` shows the moves
        await self.zk.put(self._key("domain_state"), b"flushed" if req.op == "flush" else b"ready")
        await self._report(status="done", finished=time.time())
        log.info("node_operation_done", moved=len(self._progress.moved), failed=len(self._progress.failed),
                 seconds=round(time.monotonic() - started, 3))
        failed = len(self._progress.failed)
        await events.try_record(self.zk, self.log, f"{req.op}_finished", f"{req.op} of {self.me} finished: "
                                f"{len(self._progress.moved)} moved, {failed} failed", node=self.me,
                                severity="warning" if failed else "info")

    async def _pace(self, req: FlushRequest, pending: list[Move], others: dict[str, Domain], limit: int,
                    cancel: asyncio.Event) -> None:
        """Follow the plan: start what flush_plan.dispatch allows, as slots and room free up."""
        active: dict[asyncio.Task, Move] = {}
        landed: list[Move] = []  # moved, until their target's keepalive lists them running
        async with asyncio.TaskGroup() as tg:
            while pending or active:
                if pending and not cancel.is_set():
                    nodes = await self._nodes()
                    if others:
                        values = await self.zk.get_many(Paths.domain(u) for u in others)
                        fresh = [Domain.decode(v) for v in values if v]
                        others = {d.uuid: d for d in fresh if d.uuid in unsettled(fresh, nodes)}
                    running = {n.name: n.running for n in nodes}
                    landed = [m for m in landed if m.uuid not in running.get(m.target, ())]
                    step = dispatch(pending, active=list(active.values()), landed=landed,
                                    domains=list(others.values()), nodes=nodes, limit=limit,
                                    home=self.me if req.op == "ready" else "")
                    pending = step.waiting
                    for m in step.unmovable:
                        await self._unmovable(m, req.op)
                    if any(m.live for m in step.start):
                        moving = [*self._progress.moving, *(MovedVM(m.name, m.target) for m in step.start if m.live)]
                        await self._report(moving=moving, peak=max(self._progress.peak, len(moving)))
                    for m in step.start:
                        active[tg.create_task(self._move(m, req.op, cancel))] = m
                if cancel.is_set():
                    pending = []
                if not active:
                    if pending:  # held by migrations of others or by nodes' figures: look again soon
                        waiter = asyncio.ensure_future(cancel.wait())
                        await asyncio.wait([waiter], timeout=RECHECK)
                        waiter.cancel()
                    continue
                # A move of ours ending frees a slot and room; others' changes are seen within RECHECK.
                done, _ = await asyncio.wait(list(active), timeout=RECHECK if pending else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    m = active.pop(task)
                    if task.result() and m.live:
                        landed.append(m)

    async def _nodes(self) -> list:
        return [n.candidate() for n in await store.list_nodes(self.zk)]

    async def _move(self, move: Move, op: str, cancel: asyncio.Event) -> bool:
        """Ask for one move and follow it to its outcome (reported); True if the VM moved."""
        if op == "flush":
            request = lambda d: vm_outcomes.flush_away(d, self.me, move.target)
        else:
            request = lambda d: vm_outcomes.come_home(d, self.me)
            source = await store.get_node(self.zk, move.source) if move.source else None
            if source and source.daemon_state not in ("run", "init"):
                # Only that node's libvirt can say the VM is off or move it: nothing is asked.
                return await self._outcome(move, f"the daemon on node {source.name} is {source.daemon_state}")
        async with self.hv.follow(move.uuid):  # followed until its outcome, wherever it is assigned
            asked = await self._update(move.uuid, request)
            if asked is None:  # changed since the plan (undefined, disabled, moved, busy): nothing asked
                dom = self.hv.records.get(move.uuid)
                why = f"it is now {dom.state} on {dom.node}" if dom else "undefined meanwhile"
                return await self._outcome(move, why, report=not cancel.is_set())
            cfg = self.ctx.config.vm
            # Either way the VM's own node carries it out from libvirt's truth; a node whose daemon is
            # away keeps the request and carries it out when it returns.
            follow = vm_states.migration_outcome if asked.state == "migrate" else vm_states.hand_over_outcome
            outcome = await self.hv.wait_record(move.uuid, lambda d: follow(d, move.target),
                                                timeout=cfg.shutdown_timeout + 120)
            dom = self.hv.records.get(move.uuid)
        if outcome is None:
            error = (f"node {asked.node} has not carried out the request (it stays recorded "
                     f"and is carried out when that node's daemon acts)")
        else:
            error = outcome[1]
        # After a cancel, the progress record belongs to the operation that replaced this one.
        if error:
            return await self._outcome(move, error, report=not cancel.is_set())
        method = dom.last_migration.method if dom and dom.last_migration else ""
        if not cancel.is_set():
            await self._report(moved=[*self._progress.moved, MovedVM(move.name, move.target, method)],
                               moving=[m for m in self._progress.moving if m.name != move.name])
        return True

    async def _outcome(self, move: Move, why: str, report: bool = True) -> bool:
        """A move that did not happen: reported with why; False."""
        if report:
            await self._report(failed=[*self._progress.failed, FailedVM(move.name, why)],
                               moving=[m for m in self._progress.moving if m.name != move.name])
        return False

    async def _unmovable(self, move: Move, op: str) -> None:
        policy = self.ctx.config.vm.flush_unmovable_policy
        reason = move.reason
        if op == "flush" and move.live and policy == "shutdown":
            why = f"flush of {self.me}: {move.reason}"
            await self._update(move.uuid, lambda d: vm_outcomes.shut_down_unmovable(d, self.me, why))
            reason += "; shut down (policy shutdown)"
        elif op == "flush" and move.live:
            reason += "; left running (policy leave)"
        await self._outcome(move, reason)

    async def _autostart(self) -> None:
        """Its own stopped autostart VMs start, and autostart VMs pvc stopped elsewhere for lack of a
        node that fit here (pvc.autostart decides)."""
        starts, skipped = autostart.plan(self.me, await store.list_domains(self.zk), await self._nodes())
        for uuid, change in starts:
            await self._update(uuid, change)
        for why in skipped:
            self.log.info("vm_autostart_skipped", reason=why)

    async def _update(self, uuid: str, change):
        return await self.hv.update(uuid, change)  # None: nothing to change, or undefined meanwhile
