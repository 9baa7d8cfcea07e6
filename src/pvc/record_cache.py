"""A folder of records in ZooKeeper mirrored in memory by watches (the daemons' view of all VMs,
all networks): one children watch on the folder, one data watch per child."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from pvc.zk import ZK, NoNode

K = TypeVar("K")


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
        path; ``on_change(key)`` runs after every change, removal included; ``extra_watches``
        starts more watches per child, cancelled with it."""
        self.zk = zk
        self.folder = folder
        self._key, self._path, self._decode = key, path, decode
        self._on_change, self._log, self._extra = on_change, log, extra_watches
        self.records: dict[K, Any] = {}
        self.versions: dict[K, int] = {}
        # Set once every child present at the first listing has been read.
        self.synced = asyncio.Event()
        self._unsynced: set[K] | None = None
        self._watches: dict[K, list[asyncio.Task]] = {}
        self._folder_watch: asyncio.Task | None = None

    def start(self) -> None:
        self._folder_watch = self.zk.watch_children(self.folder, self._on_list)

    def stop(self) -> None:
        for task in [self._folder_watch, *(t for ts in self._watches.values() for t in ts)]:
            if task:
                task.cancel()
        self._watches.clear()

    def cached(self, key: K) -> tuple[Any, int] | None:
        record = self.records.get(key)
        return (record, self.versions[key]) if record is not None and key in self.versions else None

    def put(self, key: K, record: Any, version: int) -> None:
        """Take a record this process just wrote (newer than any watch delivery in flight)."""
        self.records[key], self.versions[key] = record, version

    async def refresh(self, batch: int = 500) -> None:
        """Read every known record again (after a session loss, when watch deliveries may have been
        missed): a version newer than the cached one replaces it."""
        keys = list(self._watches)
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            results = await asyncio.gather(*(self.zk.get(self._path(k)) for k in chunk), return_exceptions=True)
            for key, result in zip(chunk, results):
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
            self._unsynced = set(current)
        for key in list(self._watches):
            if key not in current:
                for task in self._watches.pop(key):
                    task.cancel()
                self._forget(key)
                self._on_change(key)
        for key in current - self._watches.keys():
            self._watches[key] = [
                self.zk.watch_data(self._path(key), lambda data, version, k=key: self._on_record(k, data, version)),
                *(self._extra(key) if self._extra else ()),
            ]
        self._check_synced()

    def _forget(self, key: K) -> None:
        self.records.pop(key, None)
        self.versions.pop(key, None)
        if self._unsynced:
            self._unsynced.discard(key)

    def _on_record(self, key: K, data: bytes | None, version: int) -> None:
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
