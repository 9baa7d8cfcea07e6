"""The console-log tailer: each VM running on this node has its serial log tailed into ZooKeeper.

A residency hook of the hypervisor role (``vm_here`` / ``vm_gone``). For each resident VM one task
(owned by the role's TaskGroup) tails ``<console_log.directory>/<vm name>.log`` into a
``ConsoleBuffer`` (the pure core in ``pvc.console_log`` decides; this module does the I/O) and writes
the buffer to ``/domains/<uuid>/console_log`` when it changed. The task wakes:

- at once when inotify reports a change in the console directory (one inotify instance per node,
  watching the directory, so a file that does not exist yet, or is rotated or replaced, is seen too;
  a missing directory is watched again once it exists);
- every ``console_log.interval`` seconds at the latest while inotify does not watch the directory (no
  directory yet, no inotify); while it does, every ``WATCHED_INTERVAL`` seconds only, as a safety net
  (a node with hundreds of quiet VMs would otherwise wake each of them twice a second for nothing);
- when a write held back by the budget may go. Reads are coalesced: a guest printing continuously
  is read at most once per ``MIN_CHECK_GAP`` (unless a write is due).

Reads are plain ``os.pread`` of bounded chunks of a local file (page-cache copies of microseconds,
cheaper than the thread hop aiofiles would add), with a yield to the loop between chunks, and at
most ``MAX_BACKLOG`` bytes per check: a larger backlog (a daemon that was down for hours, a guest
printing faster than anyone can read) is skipped, with a line in the log saying how many bytes. The
file stays open between checks: when the path is renamed away or replaced (rotation), the rest of
the old file is read before the new one; a truncated file (append='off') is read again from 0.

Writes are deltas (``pvc.console_log.Ring`` decides, docs/schema.md "Console logs" has the layout):
each creates one chunk znode under ``/domains/<uuid>/console_log`` with the lines that are new since the
previous write, and deletes in the same transaction the chunks that scrolled out of the buffer (every
``MERGE_AFTER`` writes it merges the small chunks into one). They go only when the buffer changed, and
within a ``WriteBudget``: at most 20 writes and about 1 MiB a second per VM (a quiet VM's first writes
go at once). ``vm_gone`` (a stop, or before a migration hands the VM over) reads the file to its end
and writes a final time.

One writer per VM. The chunk numbers are the fence: a write creates chunk ``next`` and fails if it
exists, so a second writer makes this one stop, never clobber. A tailer's first write also sets the
head (compare-and-set on the version it loaded), converting a format-1 buffer in the same
transaction. A write whose outcome is unknown (ZooKeeper did not answer in time) is sent again
unchanged; if it had landed, the chunk is there with the same bytes, and that counts as written.

Where reading starts. Each chunk carries its writer's *file mark*: the inode and offset its buffer
reflects and a CRC of the bytes just before that offset; the head keeps the last mark of every other
node that tailed the VM (a tailer copies the previous writer's last mark into it). On ``vm_here`` a
mark whose inode matches the file and whose CRC matches the bytes now there means the file is the same
one, grown since: reading continues at the mark (a restarted pvcd reads exactly what it had not written
yet; a VM back on a node it ran on before with append='on' skips the old part; on nodes that share one
log file the furthest mark wins). A file no mark matches (new, truncated by append='off', rotated) was
written since the VM came here and is read from its start (its last ``MAX_BACKLOG`` bytes at most).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import time
import zlib
from pathlib import Path

import msgspec

from pvc.console_log import (
    FORMAT,
    MAX_BYTES,
    ConsoleBuffer,
    FileCursor,
    FileMark,
    Head,
    LineDecoder,
    Ring,
    RingWrite,
    Stored,
    WriteBudget,
    chunk_number,
    read_stored,
    stored_log,
)
from pvc.errors import Unavailable
from pvc.schema import Domain, Paths
from pvc.zk import BadVersion, NodeExists, NoNode

MIN_CHECK_GAP = 0.02  # seconds: reads of one busy file are coalesced into at most 50 a second
MIN_WRITE_INTERVAL = 0.05  # seconds of write credit a write costs at least (at most 20 writes a second)
WRITE_BYTES_PER_SECOND = 1024 * 1024  # a large record costs size / rate seconds (bytes/s per VM bounded)
WRITE_BURST = 0.2  # seconds of credit a quiet VM saves up (a few writes at once after a pause)
MAX_BACKLOG = 1024 * 1024  # most bytes one check reads; an older backlog is skipped (and said so)
FINGERPRINT = 128  # bytes before a mark's offset covered by its CRC
MARKS_BUDGET = 4096  # most bytes of file marks the head keeps
MAX_MARKS = 16  # most file marks kept (one per node, most recent last)
FINAL_FLUSH_TIMEOUT = 10.0  # seconds vm_gone may spend on the last read and write
WATCHED_INTERVAL = 5.0  # seconds between checks of a file while inotify watches its directory


_encoder = msgspec.json.Encoder()


def carried_marks(files: list[FileMark], last: FileMark | None, node: str) -> list[FileMark]:
    """The head's marks as a new writer (``node``) stores them: the previous writer's last mark
    replaces its older one, most recent last, within MAX_MARKS and MARKS_BUDGET."""
    marks = [m for m in files if last is None or m.node != last.node] + ([last] if last else [])
    marks = marks[-MAX_MARKS:]
    while len(marks) > 1 and len(_encoder.encode(marks)) > MARKS_BUDGET - 16:
        marks.pop(0)
    return marks


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _fingerprint_at(path: Path, inode: int, offset: int) -> tuple[int, bytes] | None:
    """CRC and bytes of the FINGERPRINT bytes before ``offset`` in the file, if it is ``inode``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_ino != inode or st.st_size < offset or not stat.S_ISREG(st.st_mode):
            return None
        start = max(0, offset - FINGERPRINT)
        data = os.pread(fd, offset - start, start)
        return zlib.crc32(data), data
    finally:
        os.close(fd)


_DONE, _RETRY, _STOP = object(), object(), object()


class ConsoleTailer:
    """The residency hook: one tailing task per VM resident on this node."""

    def __init__(self, role) -> None:
        ctx = role.ctx
        self.role = role
        self.zk = ctx.zk
        self.node = ctx.node
        cfg = ctx.config.console_log
        self.directory = Path(cfg.directory)
        self.max_lines = cfg.lines
        self.interval = cfg.interval
        self.log = ctx.log.bind(component="console_log")
        self._tails: dict[str, _Tail] = {}
        self._by_file: dict[str, _Tail] = {}
        self._notifier: asyncio.Task | None = None
        self.watching = False  # inotify watches the directory: changes wake the tails

    # -- residency hooks -----------------------------------------------------------------------

    async def vm_here(self, dom: Domain) -> None:
        if dom.uuid in self._tails:
            return
        tail = _Tail(self, dom.uuid, dom.name)
        self._tails[dom.uuid] = tail
        self._by_file[tail.path.name] = tail
        tg = self.role.tasks  # the hypervisor role's TaskGroup owns (and at shutdown cancels) them
        if self._notifier is None:
            self._notifier = tg.create_task(self._watch_directory(), name="console-log-inotify")
        tail.task = tg.create_task(tail.run(), name=f"console-log:{dom.name}")

    async def vm_gone(self, uuid: str) -> None:
        tail = self._tails.pop(uuid, None)
        if tail is None:
            return
        if self._by_file.get(tail.path.name) is tail:
            del self._by_file[tail.path.name]
        tail.stopping = True
        tail.wake.set()
        if tail.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(tail.task), FINAL_FLUSH_TIMEOUT + 1)
        except asyncio.TimeoutError:
            tail.task.cancel()
            self.log.warning("console_log_final_flush_timeout", vm=tail.name)

    # -- the change signal ---------------------------------------------------------------------

    async def _watch_directory(self) -> None:
        """Wake the tail of whichever file inotify reports; re-arm when the directory comes or goes."""
        from asyncinotify import Inotify, Mask

        mask = (Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.ATTRIB
                | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR)
        gone = Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.UNMOUNT
        reported = None
        while True:
            try:
                with Inotify() as inotify:
                    inotify.add_watch(self.directory, mask)
                    if reported is not False:
                        self.log.info("console_log_watching", directory=str(self.directory))
                    reported = False
                    self.watching = True
                    self._wake_all()  # whatever changed before the watch existed
                    async for event in inotify:
                        if event.mask & Mask.Q_OVERFLOW:
                            self._wake_all()
                            continue
                        if event.name is not None:
                            tail = self._by_file.get(str(event.name))
                            if tail is not None:
                                tail.wake.set()
                        if event.mask & gone:
                            break
            except OSError as exc:
                if reported is not True:
                    self.log.warning("console_log_directory_unavailable", directory=str(self.directory),
                                     error=exc.strerror or str(exc), fallback=f"checking every {self.interval:g} s")
                    reported = True
            except Exception:  # never take the role down; the interval check still runs
                self.log.exception("console_log_inotify_failed")
            finally:
                self.watching = False
            self._wake_all()  # back to checking every interval from now
            await asyncio.sleep(max(self.interval, 1.0))

    def _wake_all(self) -> None:
        for tail in self._tails.values():
            tail.wake.set()


class _Tail:
    """One VM's file -> buffer -> ZooKeeper loop."""

    def __init__(self, tailer: ConsoleTailer, uuid: str, name: str) -> None:
        self.tailer = tailer
        self.zk = tailer.zk
        self.uuid, self.name = uuid, name
        self.path = tailer.directory / f"{name}.log"
        self.key = Paths.domain_console_log(uuid)
        self.log = tailer.log.bind(vm=name)
        self.wake = asyncio.Event()
        self.wake.set()  # the first check at once (a restarted daemon may have lines to catch up on)
        self.stopping = False
        self.task: asyncio.Task | None = None
        self.buffer: ConsoleBuffer | None = None
        self.decoder = LineDecoder()
        self.cursor = FileCursor()
        self.budget = WriteBudget(MIN_WRITE_INTERVAL, WRITE_BYTES_PER_SECOND, WRITE_BURST)
        self.ring = Ring()
        self.head: Head | None = None  # to store with the first write (then None); marks carried
        self.head_version: int | None = None  # the head's version as loaded; None: the key was missing
        self.pending: tuple[RingWrite, list[tuple]] | None = None  # sent, outcome unknown: resent as is
        self.recent = b""  # last FINGERPRINT bytes consumed from the current file
        self.written: FileMark | None = None  # our mark as of the last write
        self._last_check = 0.0
        self._problem = ""  # last file problem logged (logged once until it changes)
        self.fd: int | None = None  # the log file, open between checks
        self._failing = False  # writes are failing (ZooKeeper unavailable)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._load():
                return
            while not self.stopping:
                await self._wait()
                if self.stopping:
                    break
                self._last_check = time.monotonic()
                await self._check()
                if self._due() and self.budget.delay(time.monotonic()) == 0:
                    if await self._write() is _STOP:
                        return
            await self._final()
        except asyncio.CancelledError:
            raise
        except Exception:  # one VM's log must never take the node down
            self.log.exception("console_log_tail_failed")
        finally:
            self._close()

    async def _wait(self) -> None:
        """Until woken (inotify, vm_gone), the next check is due, or a coalesced write may go."""
        timeout = WATCHED_INTERVAL if self.tailer.watching else self.tailer.interval
        if self._due():
            timeout = min(timeout, self.budget.delay(time.monotonic()))
        if timeout > 0 and not self.wake.is_set():
            timer = asyncio.get_running_loop().call_later(timeout, self.wake.set)
            try:
                await self.wake.wait()
            finally:
                timer.cancel()
        self.wake.clear()
        if self.stopping or (self._due() and self.budget.delay(time.monotonic()) == 0):
            return  # a write is due: no further delay
        # A guest printing continuously wakes us on every write: read in batches instead.
        gap = self._last_check + MIN_CHECK_GAP - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
            self.wake.clear()

    def _due(self) -> bool:
        """A write is wanted: the buffer changed, or a write's outcome is still unknown."""
        return self.buffer.dirty or self.pending is not None

    def _unsaved(self) -> bool:
        return self._due() or self.written != self._mark()

    async def _final(self) -> None:
        """vm_gone: read to the end, then write whatever the last write did not carry."""
        deadline = time.monotonic() + FINAL_FLUSH_TIMEOUT
        await self._check()
        while self._unsaved():
            result = await self._write()
            if result is _STOP:
                return
            if result is _RETRY:
                if time.monotonic() > deadline:
                    self.log.warning("console_log_final_flush_failed")
                    return
                await asyncio.sleep(0.2)
        self.log.info("console_log_stopped", next_line=self.buffer.end)

    # -- ZooKeeper -----------------------------------------------------------------------------

    async def _load(self) -> bool:
        """Read the stored buffer (numbering and history continue) and choose where reading starts."""
        delay = 0.1
        while True:
            try:
                stored, stale = await self._read()
                break
            except Unavailable as exc:
                if self.stopping:
                    self.log.warning("console_log_not_loaded", error=str(exc))
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        head = stored.head or Head()
        newest = stored.chunks[-1][1] if stored.chunks else None
        last = newest.mark if newest else None
        log = stored_log(stored)
        self.buffer = ConsoleBuffer(self.tailer.max_lines, MAX_BYTES, state=log)
        self.ring = Ring(stored.chunks, stale=stale)
        self.head = Head(format=FORMAT, files=carried_marks(head.files, last, self.tailer.node))
        self.head_version = stored.version if stored.head is not None else None
        self.written = last if last and last.node == self.tailer.node else None
        self._choose_start(head.files + ([last] if last else []))
        self.log.info("console_log_tailing", file=str(self.path), lines=len(log.lines), next_line=log.end,
                      offset=self.cursor.offset, format=head.format, chunks=len(stored.chunks))
        return True

    async def _read(self) -> tuple[Stored, list[int]]:
        """The stored buffer, and the chunks under a format-1 head: an older pvcd (a cluster
        mid-upgrade) wrote its whole buffer over a converted one; the conversion deletes them."""
        stored = await read_stored(self.zk, self.uuid)
        if stored.head is None or stored.head.format >= FORMAT:
            return stored, []
        try:
            return stored, [n for name in await self.zk.children(self.key) if (n := chunk_number(name))]
        except NoNode:
            return stored, []

    def _choose_start(self, marks: list[FileMark]) -> None:
        """Continue at the furthest mark that still describes the file; else read it from its start."""
        st = _stat(self.path)
        if st is None:
            return
        best: tuple[FileMark, bytes] | None = None
        for mark in marks:
            if mark.inode != st.st_ino or mark.offset > st.st_size:
                continue
            if best is not None and best[0].offset >= mark.offset:
                continue
            found = _fingerprint_at(self.path, mark.inode, mark.offset)
            if found is not None and found[0] == mark.crc:
                best = (mark, found[1])
        if best is not None:
            self.cursor = FileCursor(best[0].inode, best[0].offset)
            self.recent = best[1]

    def _mark(self) -> FileMark | None:
        if self.cursor.inode is None:
            return None
        return FileMark(self.tailer.node, self.cursor.inode, self.cursor.offset, zlib.crc32(self.recent))

    def _plan(self) -> tuple[RingWrite, list[tuple]]:
        """The next write and its transaction: the new chunk first (its existence is the fence)."""
        write = self.ring.plan(self.buffer, self._mark())
        self.buffer.dirty = False
        ops: list[tuple] = [("create", f"{self.key}/{write.n}", write.data)]
        ops += [("delete", f"{self.key}/{n}") for n in write.delete]
        if self.head is not None:  # this tailer's first write: the head, converted, marks carried
            head = self.head.encode()
            if self.head_version is None:
                ops.insert(0, ("create", self.key, head))
            else:
                ops.append(("set", self.key, head, self.head_version))
        return write, ops

    async def _write(self) -> object:
        """Write what is new: _DONE, _RETRY (ZooKeeper unavailable: sent again later, unchanged) or
        _STOP (the key is gone, or another node writes this VM's log now)."""
        if self.pending is None:
            self.pending = self._plan()
        write, ops = self.pending
        self.budget.spend(time.monotonic(), len(write.data))  # failed attempts count too: no hammering
        try:
            await self.zk.multi(ops)
        except Unavailable as exc:
            if not self._failing:  # once per outage, not per attempt
                self._failing = True
                self.log.warning("console_log_write_failed", error=str(exc))
            return _RETRY
        except NodeExists:
            return await self._landed(write)
        except BadVersion:
            self.log.warning("console_log_written_elsewhere_stopping", reason="the head changed")
            return _STOP
        except NoNode:
            self.log.info("console_log_key_gone")  # the VM was undefined (or another writer deleted)
            return _STOP
        return self._done(write)

    def _done(self, write: RingWrite) -> object:
        self.ring.applied(write)
        self.pending, self.head, self.written = None, None, write.chunk.mark
        if self._failing:
            self._failing = False
            self.log.info("console_log_write_recovered")
        return _DONE

    async def _landed(self, write: RingWrite) -> object:
        """The chunk exists: either our own earlier attempt did land (the same bytes: done), or another
        node writes this VM's log now (stop: never two writers)."""
        try:
            data, _ = await self.zk.get(f"{self.key}/{write.n}")
        except NoNode:
            return _STOP
        except Unavailable:
            return _RETRY
        if data == write.data:
            return self._done(write)
        self.log.warning("console_log_written_elsewhere_stopping", chunk=write.n)
        return _STOP

    # -- the file ------------------------------------------------------------------------------

    def _trouble(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            if problem:
                self.log.warning("console_log_file_unreadable", file=str(self.path), error=problem)

    def _restart_line(self) -> None:
        """The file was truncated or replaced: an unterminated last line of the old file is a line."""
        self.decoder.reset()
        if self.buffer.partial:
            self.buffer.feed_text("\n")

    async def _check(self) -> None:
        """Read what the file gained since the last check (bounded), into the buffer.

        The file stays open between checks: when the path is renamed away or replaced (rotation),
        what the old file still held is read before the new file is opened."""
        if self.fd is not None:
            try:
                path_inode = os.stat(self.path).st_ino
            except OSError:
                path_inode = None
            st = os.fstat(self.fd)
            await self._drain(self.fd, st)
            if path_inode == st.st_ino:
                return
            self._close()  # rotated, replaced or removed: on to the file now at the path, if any
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._trouble(exc.strerror or str(exc))
                return
            if self.cursor.inode is not None:
                self.cursor.plan(None)
                self.recent = b""
            self._trouble("")
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._trouble("not a regular file")
            return
        self._trouble("")
        self.fd = fd
        await self._drain(fd, st)

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def _drain(self, fd: int, st: os.stat_result) -> None:
        """Read the open file up to the size it had at ``st`` (at most MAX_BACKLOG bytes of it)."""
        size = (st.st_ino, st.st_size)
        inode, offset = self.cursor.inode, self.cursor.offset
        plan = self.cursor.plan(size)
        if self.cursor.inode != inode or self.cursor.offset < offset:
            self.recent = b""
        if plan is None:
            return
        if plan.reset:
            self._restart_line()
        resync = False
        if st.st_size - plan.offset > MAX_BACKLOG:
            skipped = st.st_size - MAX_BACKLOG - plan.offset
            self.cursor.offset = st.st_size - MAX_BACKLOG
            self.recent = b""
            self._restart_line()
            self.buffer.feed_text(f"[pvc: {skipped} bytes of console output skipped]\n")
            self.log.warning("console_log_backlog_skipped", bytes=skipped)
            resync = True  # resume at the next line start
            plan = self.cursor.plan(size)
        while plan is not None:
            data = os.pread(fd, plan.length, plan.offset)
            self.cursor.consumed(len(data))
            self.recent = (self.recent + data)[-FINGERPRINT:]
            text = data
            if resync:
                cut = data.find(b"\n")
                text, resync = (b"", True) if cut < 0 else (data[cut + 1:], False)
            self.buffer.feed_text(self.decoder.decode(text))
            if len(data) < plan.length:
                break  # shrank under us: the next check sees why
            plan = self.cursor.plan(size)
            if plan is not None:
                await asyncio.sleep(0)  # let the loop breathe between chunks
