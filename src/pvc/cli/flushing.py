"""`pvc node flush|ready`: request the operation from the node's daemon and, with --wait, follow it.

The request is written to the node; the CLI waits (bounded) until that node's daemon has queued
it under the flush lock, so requests queue in the order they were made. With --wait it then
follows the lock queue and the operation's progress key by watch, never polling domain_state.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib

import typer

from pvc import store
from pvc.cli.waiting import ABSENCE_GRACE
from pvc.errors import Conflict, PvcError, Unavailable
from pvc.schema import FlushProgress, FlushRequest, LockEntry, Paths
from pvc.zk_lock import queue_order

PICKUP_TIMEOUT = 10.0


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


async def request_operation(zk, node: str, op: str, wait: bool) -> int:
    view = await store.get_node(zk, node)
    if view.daemon_state != "run":
        raise Conflict(f"node {node}'s daemon is {view.daemon_state}; a {op} needs it running")
    request = FlushRequest(op=op, id=str(uuidlib.uuid4()), time=time.time())
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    watches = [
        zk.watch_data(Paths.node_key(node, "flush_progress"), lambda d, _v: events.put_nowait(("progress", d))),
        zk.watch_data(Paths.node_key(node, "alive"), lambda d, _v: events.put_nowait(("alive", d))),
    ]
    try:
        # The node is marked at once, so a flush already running elsewhere stops choosing it as a target;
        # in one transaction with the request, or a CLI dying in between would leave it marked for good.
        writes = {"domain_state": b"flush" if op == "flush" else b"unflush", "flush_request": request.encode()}
        await zk.multi([("set", path, data) if await zk.exists(path) else ("create", path, data)
                        for path, data in ((Paths.node_key(node, k), v) for k, v in writes.items())])
        return await _follow(zk, node, op, request.id, wait, events, loop)
    finally:
        for w in watches:
            w.cancel()


async def _follow(zk, node, op, request_id, wait, events, loop) -> int:
    picked_up = False
    deadline = loop.time() + PICKUP_TIMEOUT
    said_lock = ""
    said_start = False
    printed = 0
    failed_printed = 0
    lock_watch = None
    lock_changed = asyncio.Event()
    gone_until = None  # the daemon's presence vanished: stopped, unless it is back by then
    try:
        while True:
            limits = [t for t in (None if picked_up else deadline, gone_until) if t is not None]
            timeout = max(0.0, min(limits) - loop.time()) if limits else None
            try:
                kind, data = await asyncio.wait_for(_next(events, lock_changed), timeout)
            except asyncio.TimeoutError:
                if gone_until is not None and loop.time() >= gone_until:
                    raise PvcError(f"node {node}'s daemon stopped during the {op}; "
                                   "run it again once the node is back") from None
                raise Unavailable(f"node {node}'s daemon did not pick up the {op} request within "
                                  f"{PICKUP_TIMEOUT:g} s; it stays recorded") from None
            if kind == "alive":
                # A daemon renewing its ZooKeeper session is briefly absent (as for `vm --wait`).
                gone_until = loop.time() + ABSENCE_GRACE if data is None else None
                continue
            if kind == "lock" or (kind == "progress" and data):
                progress = await _progress(zk, node)
                if progress and progress.id != request_id and picked_up:
                    # A later request took over (its record replaced ours before we read it).
                    raise PvcError(f"the {op} of node {node} was cancelled by a {progress.op} request")
                if not progress or progress.id != request_id:
                    continue
                if not picked_up:
                    picked_up = True
                    if wait:
                        lock_watch = zk.watch_children(Paths.flush_lock, lambda _c: lock_changed.set())
                if progress.status == "queued":
                    message = describe_queue(await lock_queue(zk), request_id)
                    if message and message != said_lock:
                        typer.echo(("Waiting: " if wait else "Queued: ") + message, err=True)
                        said_lock = message
                    if not wait:
                        return 0
                    continue
                if not wait:
                    typer.echo(f"{'Flushing' if op == 'flush' else 'Readying'} node {node}")
                    return 0
                if not said_start and progress.status == "running" and progress.started:
                    said_start = True
                    typer.echo(f"{'Flushing' if op == 'flush' else 'Readying'} node {node}: {progress.total} VMs", err=True)
                for moved in progress.moved[printed:]:
                    how = METHOD_WORDS.get(moved.method, "")
                    typer.echo(f"  {moved.name} -> {moved.target}" + (f" ({how})" if how else ""))
                printed = len(progress.moved)
                for failed in progress.failed[failed_printed:]:
                    typer.echo(f"  {failed.name}: not moved: {failed.reason}", err=True)
                failed_printed = len(progress.failed)
                if progress.status == "cancelled":
                    raise PvcError(f"the {op} of node {node} was {progress.message or 'cancelled'}")
                if progress.status == "done":
                    if progress.failed:
                        names = ", ".join(f.name for f in progress.failed)
                        raise PvcError(f"node {node} {op} finished, but {len(progress.failed)} VM(s) did not move: {names}")
                    typer.echo(f"Node {node} is {'flushed' if op == 'flush' else 'ready'}{moved_summary(progress)}")
                    return 0
    finally:
        if lock_watch:
            lock_watch.cancel()


# How a VM moved, as the flush progress records it (MovedVM.method).
METHOD_WORDS = {"live": "live", "shutdown": "shut down and restarted there", "off": "was not running"}


def moved_summary(progress) -> str:
    """': 3 VMs moved: 2 live, 1 shut down and restarted there' (nothing when none moved)."""
    if not progress.moved:
        return ""
    from collections import Counter

    counts = Counter(METHOD_WORDS.get(m.method, "moved") for m in progress.moved)
    parts = ", ".join(f"{n} {how}" for how, n in counts.items())
    return f": {len(progress.moved)} VM(s) moved: {parts}"


async def _next(events: asyncio.Queue, lock_changed: asyncio.Event):
    get = asyncio.ensure_future(events.get())
    lock = asyncio.ensure_future(lock_changed.wait())
    done, _ = await asyncio.wait([get, lock], return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        lock.cancel()
        return get.result()
    get.cancel()
    lock_changed.clear()
    return "lock", None


async def _progress(zk, node) -> FlushProgress | None:
    data = await zk.get_data(Paths.node_key(node, "flush_progress"))
    return FlushProgress.decode(data) if data else None
