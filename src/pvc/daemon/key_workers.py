"""One reconcile at a time per key (a VM, a network), with kicks coalesced.

A kick while the key's worker runs means "look again when done": however many kicks arrive, one
more pass follows. Transient errors (the component is away) are retried after ``retry_delay``;
anything else is logged so one key's trouble never takes the daemon down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")


class KeyWorkers(Generic[K]):
    def __init__(self, reconcile: Callable[[K], Awaitable[None]], *, log: Any, name: str,
                 transient: tuple[type[BaseException], ...], retry_delay: float = 0.5) -> None:
        self._reconcile = reconcile
        self._log = log
        self._name = name
        self._transient = transient
        self._retry_delay = retry_delay
        self._dirty: set[K] = set()
        self._workers: dict[K, asyncio.Task] = {}

    def kick(self, key: K) -> None:
        self._dirty.add(key)
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(key), name=f"{self._name}:{key}")

    async def _work(self, key: K) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._reconcile(key)
                except self._transient as exc:
                    self._log.warning(f"{self._name}_retry", key=str(key), error=str(exc) or type(exc).__name__)
                    self._dirty.add(key)
                    await asyncio.sleep(self._retry_delay)
                except Exception:
                    self._log.exception(f"{self._name}_failed", key=str(key))
        finally:
            self._workers.pop(key, None)

    async def settled(self) -> None:
        """Wait until no worker runs."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def cancel(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        self._dirty.clear()
