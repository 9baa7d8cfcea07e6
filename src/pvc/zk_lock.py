"""A first-come-first-served lock on ZooKeeper (the standard recipe).

Each contender creates an ephemeral sequential child under the lock path; the lowest sequence
holds the lock; every other contender watches only its predecessor (no herd). A contender whose
session ends loses its child, so a dead holder frees the lock by itself. The child's data says
who it is, so anyone can show the holder and the queue.
"""

from __future__ import annotations

import asyncio

from pvc.zk import ZK, NoNode

PREFIX = "lock-"


def queue_order(children: list[str]) -> list[str]:
    """Contenders by sequence number (the suffix ZooKeeper appends), first = holder."""
    return sorted((c for c in children if c.startswith(PREFIX)), key=lambda c: c[len(PREFIX):])


class QueueLock:
    def __init__(self, zk: ZK, path: str, data: bytes) -> None:
        self.zk = zk
        self.path = path
        self.data = data
        self.name: str | None = None

    async def enqueue(self) -> str:
        created = await self.zk.create(f"{self.path}/{PREFIX}", self.data, ephemeral=True, sequential=True)
        self.name = created.rsplit("/", 1)[1]
        return self.name

    async def update(self, data: bytes) -> None:
        self.data = data
        if self.name:
            await self.zk.set(f"{self.path}/{self.name}", data)

    async def position(self) -> int:
        """0 when holding the lock; N when N contenders are ahead."""
        order = queue_order(await self.zk.children(self.path))
        if self.name not in order:
            raise NoNode(f"{self.path}/{self.name}")  # our session ended: the entry is gone
        return order.index(self.name)

    async def acquire(self) -> None:
        if self.name is None:
            await self.enqueue()
        while True:
            order = queue_order(await self.zk.children(self.path))
            if self.name not in order:
                raise NoNode(f"{self.path}/{self.name}")
            index = order.index(self.name)
            if index == 0:
                return
            gone = asyncio.Event()
            watch = self.zk.watch_data(f"{self.path}/{order[index - 1]}",
                                       lambda data, _v: gone.set() if data is None else None)
            try:
                await gone.wait()
            finally:
                watch.cancel()

    async def release(self) -> None:
        if self.name:
            try:
                await self.zk.delete(f"{self.path}/{self.name}")
            except NoNode:
                pass
            self.name = None
