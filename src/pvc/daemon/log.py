"""structlog set-up for pvcd: small processors, output only at the edge (stderr, for journald), and a
copy of every line into the node's log ring in ZooKeeper (`pvc node log`, pvc.node_log)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

import structlog

from pvc import node_log


def configure(level: str = "info", fmt: str = "console", sink: ZooKeeperSink | None = None) -> structlog.BoundLogger:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=(lambda *_: _TeeLogger(sys.stderr, sink)) if sink else structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger()


class _TeeLogger(structlog.PrintLogger):
    """Prints the rendered line, and hands it to the sink (memory only: never waits)."""

    def __init__(self, file, sink: ZooKeeperSink) -> None:
        super().__init__(file)
        self._sink = sink

    def msg(self, message: str) -> None:
        super().msg(message)
        self._sink.add(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


MAX_RETRY_DELAY = 10.0  # seconds between attempts while ZooKeeper refuses the writes


class ZooKeeperSink:
    """Writes the daemon's log lines into ``/nodes/<node>/log`` in batches, off the logging path.

    ``add`` (any thread) only appends to a bounded batch; ``run`` writes it as one chunk at most every
    ``interval`` seconds once lines are waiting, and waits while ZooKeeper is disconnected (lines beyond
    the batch's bound are dropped and counted in the next chunk). It never logs: a line about its own
    writes would be one more line to write, for ever. ``failures`` counts writes that did not succeed."""

    def __init__(self, interval: float = node_log.FLUSH_INTERVAL, pending: node_log.Pending | None = None,
                 ring_bounds: dict | None = None) -> None:
        self.interval = interval
        self.pending = pending if pending is not None else node_log.Pending()
        self.ring_bounds = ring_bounds or {}
        self.failures = 0
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._attempt: node_log.NodeLogChunk | None = None  # a create whose outcome is unknown
        self._ring: node_log.Ring | None = None
        self._zk = None
        self._folder = ""

    def add(self, line: str) -> None:
        with self._lock:
            self.pending.add(line)
        loop = self._loop
        if loop is None or self._wake is None:
            return
        try:
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            else:
                loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: the daemon is ending
            pass

    async def run(self, zk, folder: str) -> None:
        """Write batches into ``folder`` (``Paths.node_log(node)``) until cancelled (a task of the
        daemon's task group)."""
        self._zk, self._folder = zk, folder
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._wake = asyncio.Event()
        self._wake.set()  # lines logged before the sink started
        delay = self.interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            if await self.flush():
                delay = self.interval
            else:  # try again once connected, less often while it keeps failing (refused, say)
                self._wake.set()
                await zk.connected.wait()
                delay = min(delay * 2, MAX_RETRY_DELAY)
            await asyncio.sleep(delay)

    async def flush(self) -> bool:
        """Write what is pending now (in chunks); False if ZooKeeper did not take it (kept for later)."""
        zk = self._zk
        if zk is None:
            return False
        while True:
            if not zk.connected.is_set():
                return False
            try:
                if self._ring is None:
                    self._ring = await self._load()
                with self._lock:
                    chunk = self.pending.batch(self._ring.next_first, time.time())
                if chunk is None:
                    return True
                data = chunk.encode()
                self._attempt = chunk
                await self._create(f"{self._folder}/{node_log.chunk_name(chunk.first)}", data)
                self._attempt = None
                with self._lock:
                    self.pending.written(chunk)
                self._ring.add(chunk, len(data))
                for first in self._ring.trim():
                    await self._delete(f"{self._folder}/{node_log.chunk_name(first)}")
            except Exception:  # ZooKeeper away or slow (bounded requests), anything: the daemon goes on
                self.failures += 1
                self._ring = None  # read it again: a create may have been applied after all
                return False

    async def _load(self) -> node_log.Ring:
        from pvc.zk import NoNode

        try:
            names = await self._zk.children(self._folder)
        except NoNode:
            await self._zk.ensure_path(self._folder)
            names = []
        names = [n for n in names if node_log.chunk_first(n) is not None]
        attempt, self._attempt = self._attempt, None
        if attempt is not None and node_log.chunk_name(attempt.first) in names:
            with self._lock:  # that create was applied although its answer was lost
                self.pending.written(attempt)
        values = await self._zk.get_many(f"{self._folder}/{n}" for n in names)
        ring = node_log.Ring.load(dict(zip(names, values)), **self.ring_bounds)
        for first in ring.trim():  # bounds lowered since the last run
            await self._delete(f"{self._folder}/{node_log.chunk_name(first)}")
        return ring

    async def _create(self, path: str, data: bytes) -> None:
        from pvc.zk import NodeExists

        try:
            await self._zk.create(path, data)
        except NodeExists:  # a create retried after a lost answer: ours, applied
            await self._zk.set(path, data)

    async def _delete(self, path: str) -> None:
        from pvc.zk import NoNode

        try:
            await self._zk.delete(path)
        except NoNode:
            pass
