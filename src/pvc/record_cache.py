"""Records in ZooKeeper mirrored in memory by watches, one data watch per record.

Which records are mirrored is the union of named key sets ("sources"): the children of a folder
(``start``: all networks; a node's VM index), and whatever else the owner asks for with ``want``,
``add`` and ``discard`` (the VMs libvirt runs here, a VM followed for a while). A record is read
and decoded only while some source names it, so a process pays only for the records it follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import msgspec

from pvc.zk import ZK, NoNode

K = TypeVar("K")

FOLDER = "folder"  # the source that ``start`` maintains from the folder's children


class RecordCache(Generic[K]):
    def __init__(
        self,
        zk: ZK,
        folder: str,
        *,
        key: Callable[[str], K | None],
        path: Callable[[K], str],
        decode: Callable[[bytes], Any],
        on_change: Callable[[K], None],
        log: Any,
        extra_watches: Callable[[K], list[asyncio.Task]] | None = None,
    ) -> None:
        """``key`` maps a child's name to its key (None: not ours), ``path`` a key to the record's
        path; ``on_change(key)`` runs after every change, removal included (a record no source
        wants any more is removed); ``extra_watches`` starts more watches per record, cancelled
        with it."""
        self.zk = zk
        self.folder = folder
        self._key, self._path, self._decode = key, path, decode
        self._on_change, self._log, self._extra = on_change, log, extra_watches
        self.records: dict[K, Any] = {}
        self.versions: dict[K, int] = {}
        # Set once every child present at the first listing of the folder has been read.
        self.synced = asyncio.Event()
        self._unsynced: set[K] | None = None
        self._sources: dict[str, set[K]] = {}
        self._watches: dict[K, list[asyncio.Task]] = {}
        self._delivered: set[K] = set()  # followed keys whose first read has arrived
        self._arrived: dict[K, asyncio.Event] = {}
        self._folder_watch: asyncio.Task | None = None

    def start(self) -> None:
        self._folder_watch = self.zk.watch_children(self.folder, self._on_list)

    def stop(self) -> None:
        for task in [self._folder_watch, *(t for ts in self._watches.values() for t in ts)]:
            if task:
                task.cancel()
        self._watches.clear()

    # -- what is followed ------------------------------------------------------------------------

    def want(self, source: str, keys: Iterable[K]) -> None:
        """Set the keys ``source`` asks for (replacing what it asked before)."""
        before = self._sources.get(source, set())
        now = set(keys)
        self._sources[source] = now
        for key in before ^ now:
            self._follow_or_drop(key)

    def add(self, source: str, key: K) -> None:
        keys = self._sources.setdefault(source, set())
        if key not in keys:
            keys.add(key)
            self._follow_or_drop(key)

    def discard(self, source: str, key: K) -> None:
        keys = self._sources.get(source)
        if keys and key in keys:
            keys.discard(key)
            self._follow_or_drop(key)

    def follows(self, key: K) -> bool:
        return key in self._watches

    def pending(self, key: K) -> bool:
        """Followed, but its first read has not arrived yet (what the cache says is not yet known)."""
        return key in self._watches and key not in self._delivered

    async def arrived(self, key: K) -> None:
        """Until the first read of a followed key has arrived."""
        if self.pending(key):
            await self._arrived.setdefault(key, asyncio.Event()).wait()

    def _follow_or_drop(self, key: K) -> None:
        wanted = any(key in keys for keys in self._sources.values())
        if wanted and key not in self._watches:
            self._watches[key] = [
                self.zk.watch_data(self._path(key), lambda data, version, k=key: self._on_record(k, data, version)),
                *(self._extra(key) if self._extra else ()),
            ]
        elif not wanted and key in self._watches:
            for task in self._watches.pop(key):
                task.cancel()
            self._forget(key)
            self._delivered.discard(key)
            arrived = self._arrived.pop(key, None)
            if arrived:
                arrived.set()  # nothing will arrive: its waiters see it unfollowed
            self._on_change(key)

    # -- records ---------------------------------------------------------------------------------

    def cached(self, key: K) -> tuple[Any, int] | None:
        record = self.records.get(key)
        return (record, self.versions[key]) if record is not None and key in self.versions else None

    def put(self, key: K, record: Any, version: int) -> None:
        """Take a record this process just wrote (newer than any watch delivery in flight); kept
        only while followed."""
        if key in self._watches:
            self.records[key], self.versions[key] = record, version

    async def refresh(self, batch: int = 500) -> None:
        """Read every followed record again (after a session loss, when watch deliveries may have
        been missed): a version newer than the cached one replaces it."""
        keys = list(self._watches)
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            results = await asyncio.gather(*(self.zk.get(self._path(k)) for k in chunk), return_exceptions=True)
            for key, result in zip(chunk, results):
                if key not in self._watches:
                    continue  # dropped meanwhile
                if isinstance(result, NoNode):
                    self._forget(key)
                    self._on_change(key)
                    continue
                if isinstance(result, BaseException):
                    raise result
                data, version = result
                if version > self.versions.get(key, -1):
                    self._on_record(key, data, version)

    def _on_list(self, children: list[str] | None) -> None:
        current = {k for k in map(self._key, children or ()) if k is not None}
        if self._unsynced is None:
            # Keys another source followed (and read) before this first listing count as read.
            self._unsynced = set(current) - self._delivered
        self.want(FOLDER, current)
        self._check_synced()

    def _forget(self, key: K) -> None:
        self.records.pop(key, None)
        self.versions.pop(key, None)
        if self._unsynced:
            self._unsynced.discard(key)

    def _on_record(self, key: K, data: bytes | None, version: int) -> None:
        if key not in self._watches:
            return  # a delivery racing the watch's cancellation
        self._delivered.add(key)
        arrived = self._arrived.pop(key, None)
        if arrived:
            arrived.set()
        if data is None:
            self._forget(key)
        elif version < self.versions.get(key, -1):
            return  # older than what this process already wrote
        else:
            try:
                self.records[key] = self._decode(data)
                self.versions[key] = version
            except msgspec.DecodeError as exc:
                self._log.error("bad_record", path=self._path(key), error=str(exc))
                return
            if self._unsynced:
                self._unsynced.discard(key)
        self._check_synced()
        self._on_change(key)

    def _check_synced(self) -> None:
        if self._unsynced is not None and not self._unsynced and not self.synced.is_set():
            self.synced.set()
