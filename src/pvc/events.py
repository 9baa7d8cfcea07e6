"""The cluster's event log in ZooKeeper: ``/events/e-<seq>``, one small record each, the newest
``KEPT`` kept (whoever writes every ``PRUNE_EVERY``-th event trims the oldest).

Sequential znodes give one cluster-wide order without a lock; a follower watches the folder's
children and reads only the entries it has not seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from pvc.errors import PvcError
from pvc.schema import Event, Paths
from pvc.zk import ZK, NoNode

KEPT = 1000
PRUNE_EVERY = 100
PREFIX = "e-"


def _seq(child: str) -> int:
    return int(child.rsplit("-", 1)[1])


async def record(zk: ZK, kind: str, message: str, *, severity: str = "info", node: str = "", vm: str = "",
                 **audit) -> int:
    """Append an event; returns its sequence number. ``audit``: an operation's actor, operation,
    args and result (see ``schema.Event``)."""
    data = Event(time=time.time(), kind=kind, severity=severity, node=node, vm=vm, message=message, **audit).encode()
    try:
        path = await zk.create(f"{Paths.events}/{PREFIX}", data, sequential=True)
    except NoNode:  # a cluster initialised before the event log existed
        await zk.ensure_path(Paths.events)
        path = await zk.create(f"{Paths.events}/{PREFIX}", data, sequential=True)
    seq = _seq(path)
    if seq % PRUNE_EVERY == 0:
        await prune(zk)
    return seq


async def try_record(zk: ZK, log, kind: str, message: str, **kw) -> None:
    """For daemons: an event that cannot be written is logged, never fatal to the work at hand."""
    try:
        await record(zk, kind, message, **kw)
    except PvcError as exc:
        log.warning("event_not_recorded", kind=kind, error=str(exc))


async def prune(zk: ZK, kept: int = KEPT) -> None:
    children = sorted(await zk.children(Paths.events), key=_seq)
    for child in children[:-kept] if kept else children:
        try:
            await zk.delete(f"{Paths.events}/{child}")
        except NoNode:
            pass  # another writer trimmed it


async def recent(zk: ZK, count: int, after: int = -1) -> list[tuple[int, Event]]:
    """The newest ``count`` events after sequence ``after``, oldest first."""
    try:
        children = await zk.children(Paths.events)
    except NoNode:
        return []
    seqs = sorted(s for s in map(_seq, children) if s > after)[-count:] if count else []
    values = await zk.get_many(f"{Paths.events}/{PREFIX}{s:010d}" for s in seqs)
    return [(s, Event.decode(v)) for s, v in zip(seqs, values) if v]


async def follow(zk: ZK, backlog: int, keep: Callable[[Event], bool] = lambda _e: True) -> AsyncIterator[Event]:
    """The last ``backlog`` events ``keep`` accepts, then each new one it accepts as it is written."""
    changed = asyncio.Event()
    watch = zk.watch_children(Paths.events, lambda _children: changed.set())
    try:
        logged = await recent(zk, KEPT)
        last = logged[-1][0] if logged else -1
        for _, event in [(s, e) for s, e in logged if keep(e)][-backlog:] if backlog else []:
            yield event
        while True:
            await changed.wait()
            changed.clear()
            for seq, event in await recent(zk, KEPT, after=last):
                last = seq
                if keep(event):
                    yield event
    finally:
        watch.cancel()
