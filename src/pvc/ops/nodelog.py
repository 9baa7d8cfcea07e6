"""Node log operations (``nodelog.*``): a node's recent pvcd log lines from its ring in ZooKeeper
(pvc.node_log), read once or followed by a children watch on the ring."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec

from pvc import node_log
from pvc.errors import InvalidInput, NotFound
from pvc.node_log import NodeLogChunk
from pvc.ops.registry import Context, operation
from pvc.schema import Paths
from pvc.zk import NoNode

DEFAULT_LINES = 50


class NodeLogQuery(msgspec.Struct, kw_only=True):
    node: str
    lines: int = DEFAULT_LINES  # the last N lines (then, following, every new one)


async def _check(ctx: Context, params: NodeLogQuery) -> None:
    if params.lines < 0:
        raise InvalidInput(f"lines must be 0 or more, not {params.lines}")
    if "/" in params.node or not params.node or not await ctx.zk.exists(Paths.node(params.node)):
        raise NotFound(f"unknown node {params.node!r}")


async def read_ring(zk, folder: str, names: list[str] | None = None) -> list[NodeLogChunk]:
    """The chunks of the ring ``folder`` (those of ``names``, else all), oldest first; unreadable or
    vanished ones left out."""
    if names is None:
        try:
            names = await zk.children(folder)
        except NoNode:
            return []
    names = sorted((n for n in names if node_log.chunk_first(n) is not None), key=node_log.chunk_first)
    chunks = []
    for data in await zk.get_many(f"{folder}/{n}" for n in names):
        try:
            if data:
                chunks.append(NodeLogChunk.decode(data))
        except msgspec.DecodeError:
            pass
    return chunks


@operation("nodelog.read", "GET", "/node/{node}/log")
async def read(ctx: Context, params: NodeLogQuery) -> list[NodeLogChunk]:
    """A node's last pvcd log lines, in chunks (each says how many lines were dropped before it)."""
    await _check(ctx, params)
    return node_log.tail(await read_ring(ctx.zk, Paths.node_log(params.node), None), params.lines)


@operation("nodelog.follow", "GET", "/node/{node}/log/follow", stream=True)
async def follow(ctx: Context, params: NodeLogQuery) -> AsyncIterator[NodeLogChunk]:
    """A node's last pvcd log lines, then each new chunk as the node writes it (a watch on the ring)."""
    await _check(ctx, params)
    changed: asyncio.Queue[list[str] | None] = asyncio.Queue()
    watch = ctx.zk.watch_children(Paths.node_log(params.node), changed.put_nowait)
    upto: int | None = None  # the number of the next line to give
    try:
        while True:
            names = await changed.get()
            while not changed.empty():  # only the newest listing matters
                names = changed.get_nowait()
            if upto is None:
                chunks = await read_ring(ctx.zk, Paths.node_log(params.node), names or [])
                upto = chunks[-1].end if chunks else 0
                chunks = node_log.tail(chunks, params.lines)
            else:
                new = [n for n in names or () if (node_log.chunk_first(n) if n.isdigit() else -1) >= upto]
                chunks = await read_ring(ctx.zk, Paths.node_log(params.node), new) if new else []
            for chunk in chunks:
                upto = max(upto, chunk.end)
                yield chunk
    finally:
        watch.cancel()
