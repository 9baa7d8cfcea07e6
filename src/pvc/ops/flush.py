"""Node flush and ready (``flush.*``): the request protocol, the preview and the progress stream.

A flush or ready is carried out by the node's own daemon (pvc.daemon.flush) under the cluster-wide
FIFO flush lock. ``flush.start``/``flush.ready`` write the request and return once that daemon has
queued it (so requests queue in the order they were made); ``flush.progress`` follows the node's
progress record and the lock queue by watch, one typed item per step; ``flush.plan`` is the
preview: ``plan_of`` below, which the daemon itself calls when it takes the lock.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid as uuidlib
from collections.abc import AsyncIterator

import msgspec

from pvc import store
from pvc.errors import Conflict, NotFound, PvcError, Unavailable
from pvc.flush_plan import Move, plan_flush, plan_ready
from pvc.ops.node import NodeRef
from pvc.ops.registry import Context, operation
from pvc.schema import (
    Domain,
    FailedVM,
    FlushProgress,
    FlushRequest,
    LockEntry,
    MovedVM,
    NodeInfo,
    Paths,
)
from pvc.zk_lock import queue_order

PICKUP_TIMEOUT = 10.0
ABSENCE_GRACE = 3.0  # a daemon renewing its ZooKeeper session is briefly absent (as for `vm --wait`)


# -- the plan (shared with the daemon) ------------------------------------------------------------------


async def plan_of(zk, node: str, op: str, domains: list[Domain] | None = None) -> list[Move]:
    """The moves a flush (or ready) of ``node`` makes from the cluster as it is now: the daemon
    calls this when it takes the lock, the preview calls it too, so the preview is the plan.
    ``domains``: every VM record (read here when not given)."""
    from pvc.storage.ops import rbd_vm_uuids

    domains = await store.list_domains(zk) if domains is None else domains
    nodes = [n.candidate() for n in await store.list_nodes(zk)]
    if op == "flush":
        mine = [d.uuid for d in domains if d.node == node]
        return plan_flush(domains, node, nodes, await store.default_selector(zk),
                          needs_storage=await rbd_vm_uuids(zk, mine))
    coming = [d.uuid for d in domains if d.previous_node == node and d.node != node]
    return plan_ready(domains, node, nodes, needs_storage=await rbd_vm_uuids(zk, coming))


class PlannedMove(msgspec.Struct, kw_only=True):
    vm: str
    uuid: str
    running: bool  # migrates (true) or is handed over once confirmed off (false)
    target: str  # "" when it cannot move
    memory_mib: int  # what it takes on the target (0 when not running)
    selector: str = ""  # how the target was chosen
    available_mib: int = 0  # the target's memory available before this VM (after those before it)
    reason: str = ""  # why it cannot move
    outcome: str = ""  # what the flush does with it when it cannot move (the node's unmovable policy)


class FlushPlan(msgspec.Struct, kw_only=True):
    node: str
    op: str  # flush
    concurrency: int  # migrations at once (the node's vm.flush_concurrency; 0: not published)
    unmovable_policy: str  # leave | shutdown ("" if the node's daemon has not published it)
    moves: list[PlannedMove]


async def _running_daemon(zk, node: str, op: str):
    view = await store.get_node(zk, node)
    if view.daemon_state != "run":
        raise Conflict(f"node {node}'s daemon is {view.daemon_state}; a {op} needs it running")
    return view


@operation("flush.plan", "GET", "/node/{node}/flush-plan")
async def flush_plan(ctx: Context, params: NodeRef) -> FlushPlan:
    """Preview a flush: where each VM would go and why, and which cannot move and why (changes nothing)."""
    await _running_daemon(ctx.zk, params.node, "flush")
    info_data = await ctx.zk.get_data(Paths.node(params.node))
    info = NodeInfo.decode(info_data) if info_data else NodeInfo(name=params.node)
    moves = []
    for m in await plan_of(ctx.zk, params.node, "flush"):
        outcome = ""
        if not m.target:
            policy = info.flush_unmovable_policy
            outcome = ("shut down" if m.live and policy == "shutdown" else
                       "left running" if m.live and policy == "leave" else "stays" if not m.live else "")
        moves.append(PlannedMove(vm=m.name, uuid=m.uuid, running=m.live, target=m.target, memory_mib=m.memory_mib,
                                 selector=m.selector if m.target else "", available_mib=m.available_mib,
                                 reason=m.reason, outcome=outcome))
    return FlushPlan(node=params.node, op="flush", concurrency=info.flush_concurrency,
                     unmovable_policy=info.flush_unmovable_policy, moves=moves)


# -- asking for a flush or ready --------------------------------------------------------------------------


class FlushParams(msgspec.Struct, kw_only=True):
    node: str
    wait: bool = False  # return once it is done (or cancelled), not once it is queued


class FlushResult(msgspec.Struct, kw_only=True):
    node: str
    op: str  # flush | ready
    id: str  # the request's id (follow it with flush.progress)
    status: str  # queued | running | done | cancelled
    queue: str = ""  # who holds the flush lock and this request's place behind it ("" when it runs)
    total: int = 0
    moved: list[MovedVM] = []
    failed: list[FailedVM] = []
    message: str = ""


@operation("flush.start", "POST", "/node/{node}/flush")
async def flush(ctx: Context, params: FlushParams) -> FlushResult:
    """Flush a node: migrate every VM away under the cluster-wide flush lock (queued behind others)."""
    return await _request(ctx.zk, params.node, "flush", params.wait)


@operation("flush.ready", "POST", "/node/{node}/ready")
async def ready(ctx: Context, params: FlushParams) -> FlushResult:
    """Return a node to service: bring back every VM whose previous_node it is (cancels its running flush)."""
    return await _request(ctx.zk, params.node, "ready", params.wait)


async def _request(zk, node: str, op: str, wait: bool) -> FlushResult:
    await _running_daemon(zk, node, op)
    request = FlushRequest(op=op, id=str(uuidlib.uuid4()), time=time.time())
    async with _Watch(zk, node) as watch:
        # The node is marked at once, so a flush already running elsewhere stops choosing it as a target;
        # in one transaction with the request, or a client dying in between would leave it marked for good.
        writes = {"domain_state": b"flush" if op == "flush" else b"unflush", "flush_request": request.encode()}
        await zk.multi([("set", path, data) if await zk.exists(path) else ("create", path, data)
                        for path, data in ((Paths.node_key(node, k), v) for k, v in writes.items())])
        progress = await watch.picked_up(request.id, op)
        result = FlushResult(node=node, op=op, id=request.id, status=progress.status)
        if progress.status == "queued":
            result.queue = describe_queue(await lock_queue(zk), request.id)
    if not wait:
        return result
    last = None
    async for last in follow(zk, node, request.id):
        pass
    final = await read_progress(zk, node)
    if final is None or final.id != request.id:  # replaced by a later request
        return FlushResult(node=node, op=op, id=request.id, status="cancelled", message=last.message)
    return FlushResult(node=node, op=op, id=request.id, status=final.status, total=final.total,
                       moved=final.moved, failed=final.failed, message=final.message)


# -- following it -----------------------------------------------------------------------------------------


class ProgressParams(msgspec.Struct, kw_only=True):
    node: str
    id: str = ""  # the request to follow ("" : the node's latest)


class FlushEvent(msgspec.Struct, kw_only=True):
    """One step of a flush or ready. ``kind``: ``queued`` (``message``: who holds the lock and our
    place), ``started`` (``total`` VMs), ``moving`` (``name`` -> ``target``), ``moved`` (with
    ``method``: live | shutdown (restarted there) | off (was not running)), ``failed`` (``reason``),
    and last ``done`` or ``cancelled`` (``message``)."""

    kind: str
    node: str
    op: str
    id: str
    name: str = ""
    target: str = ""
    method: str = ""
    reason: str = ""
    message: str = ""
    total: int = 0


@operation("flush.progress", "GET", "/node/{node}/flush-progress", stream=True)
async def progress(ctx: Context, params: ProgressParams) -> AsyncIterator[FlushEvent]:
    """Follow a flush or ready step by step until it is done or cancelled."""
    request_id = params.id
    if not request_id:
        current = await read_progress(ctx.zk, params.node)
        if current is None:
            await store.get_node(ctx.zk, params.node)  # unknown node: say so
            raise NotFound(f"node {params.node} has had no flush or ready to follow")
        request_id = current.id
    async for event in follow(ctx.zk, params.node, request_id):
        yield event


async def follow(zk, node: str, request_id: str) -> AsyncIterator[FlushEvent]:
    """The steps of request ``request_id`` as the daemon records them (by watch; never polled)."""
    async with _Watch(zk, node, lock=True) as watch:
        said_queue, started, moving = "", False, set()
        moved = failed = 0
        while True:
            p = await read_progress(zk, node)
            if p is None or p.id != request_id:
                asked = await zk.get_data(Paths.node_key(node, "flush_request"))
                if asked and FlushRequest.decode(asked).id == request_id:
                    await watch.next()  # not picked up yet
                    continue
                if p is None:
                    raise NotFound(f"node {node} has no flush or ready {request_id}")
                # A later request took over (its record replaced ours).
                yield FlushEvent(kind="cancelled", node=node, op=p.op, id=request_id,
                                 message=f"cancelled by a {p.op} request")
                return
            event = functools.partial(FlushEvent, node=node, op=p.op, id=request_id)
            if p.status == "queued":
                message = describe_queue(await lock_queue(zk), request_id)
                if message and message != said_queue:
                    said_queue = message
                    yield event(kind="queued", message=message)
            if not started and p.status != "queued" and p.concurrency:  # planned (concurrency is set with total)
                started = True
                yield event(kind="started", total=p.total)
            for m in p.moving:
                if m.name not in moving:
                    moving.add(m.name)
                    yield event(kind="moving", name=m.name, target=m.target)
            for m in p.moved[moved:]:
                yield event(kind="moved", name=m.name, target=m.target, method=m.method)
            moved = len(p.moved)
            for f in p.failed[failed:]:
                yield event(kind="failed", name=f.name, reason=f.reason)
            failed = len(p.failed)
            if p.status in ("done", "cancelled"):
                yield event(kind=p.status, message=p.message, total=p.total)
                return
            await watch.next()


class _Watch:
    """Watches on a node's progress record, its daemon's presence and (``lock``) the lock queue:
    ``next()`` returns at the next change; a daemon gone for longer than a session renewal
    raises; ``picked_up`` waits (bounded) until the daemon has taken a request."""

    def __init__(self, zk, node: str, lock: bool = False) -> None:
        self.zk, self.node, self.lock = zk, node, lock
        self.changed = asyncio.Event()
        self.gone_since: float | None = None
        self.watches: list = []

    async def __aenter__(self):
        def poke(*_args) -> None:
            self.changed.set()

        def alive(data, _version) -> None:
            self.gone_since = time.monotonic() if data is None else None
            self.changed.set()

        self.watches = [self.zk.watch_data(Paths.node_key(self.node, "flush_progress"), poke),
                        self.zk.watch_data(Paths.node_key(self.node, "alive"), alive)]
        if self.lock:
            self.watches.append(self.zk.watch_children(Paths.flush_lock, poke))
        return self

    async def __aexit__(self, *exc) -> None:
        for w in self.watches:
            w.cancel()

    async def next(self, deadline: float | None = None) -> None:
        """Until something changed; TimeoutError at ``deadline`` (monotonic)."""
        while True:
            limits = [t for t in (deadline, self.gone_since and self.gone_since + ABSENCE_GRACE) if t]
            timeout = max(0.0, min(limits) - time.monotonic()) if limits else None
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
                self.changed.clear()
                return
            except TimeoutError:
                if self.gone_since is not None and time.monotonic() >= self.gone_since + ABSENCE_GRACE:
                    raise PvcError(f"node {self.node}'s daemon stopped meanwhile; "
                                   "run it again once the node is back") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                # else: the daemon is back (its alive key returned) or not gone long enough yet

    async def picked_up(self, request_id: str, op: str) -> FlushProgress:
        deadline = time.monotonic() + PICKUP_TIMEOUT
        while True:
            p = await read_progress(self.zk, self.node)
            if p is not None and p.id == request_id:
                return p
            try:
                await self.next(deadline)
            except TimeoutError:
                raise Unavailable(f"node {self.node}'s daemon did not pick up the {op} request within "
                                  f"{PICKUP_TIMEOUT:g} s; it stays recorded") from None


async def read_progress(zk, node: str) -> FlushProgress | None:
    data = await zk.get_data(Paths.node_key(node, "flush_progress"))
    return FlushProgress.decode(data) if data else None


async def lock_queue(zk) -> list[LockEntry]:
    names = queue_order(await zk.children(Paths.flush_lock))
    values = await zk.get_many(f"{Paths.flush_lock}/{n}" for n in names)
    return [LockEntry.decode(v) for v in values if v]


def describe_queue(queue: list[LockEntry], request_id: str) -> str:
    ids = [e.id for e in queue]
    if request_id not in ids or ids.index(request_id) == 0:
        return ""
    holder = queue[0]
    position = ids.index(request_id)
    return (f"the flush lock is held by node {holder.node} ({holder.op}); "
            f"this request is number {position} in the queue behind it")
