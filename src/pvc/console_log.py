"""Serial console logs: the pure core of the hypervisor's tailer, the ZooKeeper layout of a VM's
buffer, and the reading API (``read_log``, ``read_lines``, ``follow``) that ``pvc vm log`` and the REST
API print or stream.

The daemon's adapter only does the I/O, once per check (every 0.5 s, sooner on inotify)::

    open the file (or find it missing), fstat the open file
    while plan := cursor.plan((st_ino, st_size) or None):     # one bounded chunk at a time
        data = read plan.length bytes at plan.offset
        if plan.reset: decoder.reset()
        cursor.consumed(len(data)); buffer.feed_text(decoder.decode(data))
        if len(data) < plan.length: break                   # shrank under us: the next check sees why
    if buffer.dirty and budget allows: write ring.plan(buffer, mark) (one transaction)

Every line has an absolute sequence number (``ConsoleLog.first`` + index). In ZooKeeper the buffer is
a ring of *chunks* (``/domains/<uuid>/console_log/<n>``): each write creates one chunk holding only the
lines that are new since the previous write (a delta), and deletes the chunks that scrolled out of the
buffer; every ``MERGE_AFTER`` writes the small chunks are merged into one (so a VM printing a line a
second keeps tens of znodes, not a thousand). A follower reads the chunks numbered above the last it
read and prints the lines numbered from where it stopped: never a line twice, and it knows exactly how
many lines it missed when the ring scrolled past them. docs/schema.md ("Console logs") has the layout.
"""

from __future__ import annotations

import asyncio
import codecs
import re
from collections import deque
from collections.abc import AsyncIterator
from itertools import islice
from typing import NamedTuple

import msgspec

MAX_LINES = 1000  # lines kept per VM (console_log.lines)
MAX_BYTES = 256 * 1024  # bound of one encoded record; ZooKeeper refuses values over ~1 MiB
MAX_LINE_CHARS = 4096  # longer lines are truncated
READ_CHUNK = 256 * 1024  # most bytes one read takes, so a burst cannot blow memory


_encoder = msgspec.json.Encoder()


class _Value(msgspec.Struct):
    """A ZooKeeper value in JSON; an empty value (a key created but never written) is the defaults."""

    def encode(self) -> bytes:
        return _encoder.encode(self)

    @classmethod
    def decode(cls, data: bytes):
        return msgspec.json.decode(data, type=cls) if data else cls()


class ConsoleLog(_Value):
    """The last lines of a VM's serial console, as readers get them (and as format 1 stored them).

    ``first`` is the sequence number of ``lines[0]`` since the buffer began; ``partial`` is the
    unterminated last line (a prompt, a progress bar), not yet part of ``lines``."""

    first: int = 0
    lines: list[str] = []
    partial: str = ""

    @property
    def end(self) -> int:
        """Sequence number the next complete line will get."""
        return self.first + len(self.lines)


# Encoded size of a record with no lines, the widest `first` and an empty partial's quotes left out.
_OVERHEAD = len(ConsoleLog(first=-(2**63)).encode()) - 2


def min_bytes(max_line_chars: int = MAX_LINE_CHARS) -> int:
    """Smallest byte bound that always holds the partial plus the newest line (JSON escapes a
    control character to 6 bytes), so a complete line is never dropped before a write could carry it."""
    return _OVERHEAD + 2 * (6 * max_line_chars + 3)


# ---------------------------------------------------------------------------------------------- decoding

_CSI = r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*"
# OSC, DCS, SOS, PM, APC: a string ended by BEL or ST. A newline or another ESC aborts it, so a
# malformed sequence cannot swallow the rest of the log.
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c\n]*"
_ESCAPE = re.compile(
    _CSI + r"[\x40-\x7e]"
    + "|" + _STRING + r"(?:\x07|\x1b\\|\x9c|(?=[\x1b\n])|\Z)"
    + r"|\x1b[\x20-\x2f]*[\x30-\x7e]"  # charset designations, ESC 7, ESC c, ...
    + r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # any other control but \t \n \r (lone ESC too)
)
# A sequence cut off by the end of a read: kept back and completed by the next read.
_INCOMPLETE = re.compile(rf"(?:{_CSI}|{_STRING}\x1b?|\x1b[\x20-\x2f]*)\Z")
_MAX_ESCAPE = 4096  # longer unfinished sequences are not kept back (bounded memory)


class LineDecoder:
    """Log bytes -> text whose only control characters are ``\\n``, ``\\t`` and ``\\r``.

    UTF-8 is decoded incrementally (a character split across reads survives; invalid bytes become
    U+FFFD) and terminal escape sequences are removed, also when split across reads. ``\\r`` is kept:
    whether it rewinds the line or ends it (``\\r\\n``) depends on what follows, perhaps in a later
    read, so ``ConsoleBuffer`` applies it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget state carried between reads (the file was truncated or replaced)."""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._carry = ""

    def decode(self, data: bytes, final: bool = False) -> str:
        text = self._carry + self._utf8.decode(data, final)
        self._carry = ""
        tail = _INCOMPLETE.search(text, max(0, len(text) - _MAX_ESCAPE))
        if tail:
            self._carry = "" if final else tail.group()
            text = text[: tail.start()]
        return _ESCAPE.sub("", text)


# ---------------------------------------------------------------------------------------------- buffer


def _put(line: str, cr: bool, segment: str, cap: int) -> tuple[str, bool]:
    """Write a segment (no newline) onto the current line like a terminal: text after a ``\\r``
    replaces the line, but only once text follows it, so ``\\r\\n`` ends the line with its text."""
    for i, piece in enumerate(segment.split("\r")):
        cr = cr or i > 0
        if piece:
            line, cr = (piece if cr else line + piece), False
    return line[:cap], cr


class ConsoleBuffer:
    """The last ``max_lines`` lines of one VM's console, numbered, whose encoded ``ConsoleLog`` stays
    within ``max_bytes`` (oldest lines dropped to fit). ``state`` continues a buffer loaded from
    ZooKeeper. ``dirty`` says whether lines or the partial line changed since the last snapshot."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES,
                 state: ConsoleLog | None = None, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        if max_lines < 1 or max_line_chars < 1:
            raise ValueError("max_lines and max_line_chars must be at least 1")
        if max_bytes < min_bytes(max_line_chars):
            raise ValueError(f"max_bytes must be at least {min_bytes(max_line_chars)} "
                             f"for lines of {max_line_chars} characters")
        self.max_lines, self.max_bytes, self.max_line_chars = max_lines, max_bytes, max_line_chars
        state = state or ConsoleLog()
        self._first = state.first
        self._lines: deque[str] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0  # encoded size of the lines, a comma each
        self._partial = state.partial[:max_line_chars]
        self._cr = False  # a \r was seen and no text since
        for line in state.lines:
            self._push(line[:max_line_chars])
        self._fit()
        self.dirty = False

    @property
    def first(self) -> int:
        """Sequence number of the oldest line kept."""
        return self._first

    @property
    def end(self) -> int:
        return self._first + len(self._lines)

    def lines_from(self, start: int) -> list[str]:
        """The kept lines numbered ``start`` and on."""
        return list(islice(self._lines, max(0, start - self._first), None))

    @property
    def partial(self) -> str:
        """The unterminated last line."""
        return self._partial

    def feed_text(self, text: str) -> None:
        """Append text as ``LineDecoder`` returns it."""
        end, partial = self.end, self._partial
        *done, rest = text.split("\n")
        line, cr = self._partial, self._cr
        for segment in done:
            self._push(_put(line, cr, segment, self.max_line_chars)[0])
            line, cr = "", False
        self._partial, self._cr = _put(line, cr, rest, self.max_line_chars)
        self._fit()
        self.dirty = self.dirty or self.end != end or self._partial != partial

    def snapshot(self) -> ConsoleLog:
        self.dirty = False
        return ConsoleLog(self._first, list(self._lines), self._partial)

    def _push(self, line: str) -> None:
        size = len(_encoder.encode(line)) + 1
        self._lines.append(line)
        self._sizes.append(size)
        self._bytes += size
        if len(self._lines) > self.max_lines:
            self._pop()

    def _pop(self) -> None:
        self._lines.popleft()
        self._bytes -= self._sizes.popleft()
        self._first += 1

    def _fit(self) -> None:
        budget = self.max_bytes - _OVERHEAD - len(_encoder.encode(self._partial))
        while self._bytes > budget:
            self._pop()


# ---------------------------------------------------------------------------------------------- tailing


class ReadPlan(NamedTuple):
    offset: int
    length: int
    reset: bool  # the file was truncated, replaced or removed since the last read: reset the decoder


class FileCursor:
    """Where to read a growing log file next. ``plan`` takes the (inode, size) of the file as opened
    (fstat of the open file, so the read sees the same file), or None when it does not exist (yet).

    A new inode (rotated or replaced) or a size below the offset (truncated, e.g. append='off' on a
    start from offline) restarts at 0. To skip what a file already holds (a restarted daemon, a
    migration target), start with ``FileCursor(inode, size)``."""

    def __init__(self, inode: int | None = None, offset: int = 0, chunk: int = READ_CHUNK) -> None:
        self.inode, self.chunk = inode, chunk
        self.offset = offset if inode is not None else 0
        self._reset = False

    def plan(self, stat: tuple[int, int] | None) -> ReadPlan | None:
        """The next chunk to read, or None when there is nothing new."""
        if stat is None:
            self._reset = self._reset or self.inode is not None
            self.inode, self.offset = None, 0
            return None
        inode, size = stat
        if self.inode is None:
            self.inode = inode
        elif inode != self.inode or size < self.offset:
            self.inode, self.offset, self._reset = inode, 0, True
        if size <= self.offset:
            return None
        reset, self._reset = self._reset, False
        return ReadPlan(self.offset, min(self.chunk, size - self.offset), reset)

    def consumed(self, n: int) -> None:
        self.offset += n


# ---------------------------------------------------------------------------------------------- writing


class WriteBudget:
    """When one VM's buffer may be written: a token bucket counted in seconds of credit.

    A write costs ``max(min_interval, size / bytes_per_second)`` seconds; credit accrues at one
    second per second, up to ``burst``; a write may go while the credit is at least
    ``min_interval``. Sustained, that is at most ``1 / min_interval`` writes and
    ``bytes_per_second`` bytes a second per VM (over any window W: at most ``(W + burst) /
    min_interval + 1`` writes). Unlike a fixed spacing a line that comes at about
    the write rate is not held back by the phase of the previous write, and after a quiet spell a
    few writes go at once. ``now`` is a monotonic clock."""

    def __init__(self, min_interval: float = 0.05, bytes_per_second: float = 1024 * 1024,
                 burst: float = 0.2) -> None:
        if min_interval <= 0 or bytes_per_second <= 0 or burst < min_interval:
            raise ValueError("min_interval and bytes_per_second must be positive, burst at least min_interval")
        self.min_interval, self.bytes_per_second, self.burst = min_interval, bytes_per_second, burst
        self._credit, self._at = burst, None

    def credit(self, now: float) -> float:
        if self._at is None:
            return self._credit
        return min(self.burst, self._credit + max(0.0, now - self._at))

    def delay(self, now: float) -> float:
        """Seconds until a write is allowed (0: now)."""
        wait = self.min_interval - self.credit(now)
        return wait if wait > 1e-9 else 0.0  # float rounding must not leave a 1e-15 s wait

    def spend(self, now: float, size: int) -> None:
        """Count a write of ``size`` bytes made at ``now`` (a final flush is counted too)."""
        self._credit = self.credit(now) - max(self.min_interval, size / self.bytes_per_second)
        self._at = now


# ---------------------------------------------------------------------------------------------- layout

FORMAT = 2  # the chunked layout; format 1 (the whole buffer in one value) is read and converted
MERGE_AFTER = 32  # a writer merges its unmerged chunks into one when they would number this many


class FileMark(msgspec.Struct, array_like=True):
    """How far a node's tailer got in its copy of the VM's log file."""

    node: str
    inode: int
    offset: int
    crc: int  # zlib.crc32 of the (up to 128) bytes before offset


class Head(_Value, omit_defaults=True):
    """``/domains/<uuid>/console_log``. Format 2: ``{"format": 2, "files": [...]}``, the lines are in
    its children (``Chunk``). Format 1 (pvc before the chunked layout; an empty value, as ``pvc vm
    define`` creates it, is format 1 too): the whole buffer in ``first``/``lines``/``partial``."""

    format: int = 1
    first: int = 0
    lines: list[str] = []
    partial: str = ""
    files: list[FileMark] = []  # the last file mark of each node that tailed the VM before

    def log(self) -> ConsoleLog:
        return ConsoleLog(self.first, self.lines, self.partial)


class Chunk(_Value, array_like=True):
    """``/domains/<uuid>/console_log/<n>``: lines ``first`` .. ``first + len(lines) - 1``, the partial
    line and the buffer's start (``keep``: older lines scrolled out) as of this write, and how far the
    writer got in its file (``mark``)."""

    first: int
    lines: list[str]
    partial: str
    keep: int
    mark: FileMark | None = None

    @property
    def end(self) -> int:
        return self.first + len(self.lines)


def chunk_number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def assemble(chunks: list[Chunk]) -> ConsoleLog:
    """The buffer that chunks (in number order) hold: the lines from the newest chunk's ``keep`` to its
    end (as far back as they are contiguous), and its partial line. Chunks may overlap (a reader raced
    a merge): a line is identified by its number."""
    if not chunks:
        return ConsoleLog()
    newest = chunks[-1]
    by_number: dict[int, str] = {}
    for chunk in chunks:
        if chunk.end > newest.keep:
            for i, line in enumerate(chunk.lines):
                by_number[chunk.first + i] = line
    start = newest.end
    while start - 1 >= newest.keep and start - 1 in by_number:
        start -= 1
    return ConsoleLog(start, [by_number[i] for i in range(start, newest.end)], newest.partial)


class StoredChunk(NamedTuple):
    n: int
    first: int
    end: int
    fresh: bool  # a delta this writer wrote and may still merge (each line is rewritten at most once)


class RingWrite(NamedTuple):
    """One write, done as one transaction: create chunk ``n``, delete chunks ``delete``."""

    n: int
    chunk: Chunk
    data: bytes
    delete: list[int]
    after: list[StoredChunk]  # the chunks stored once it is done


class Ring:
    """What a VM's writer has stored (the chunks, by number) and what its next write is.

    A write stores the buffer's lines that no chunk holds yet (plus the partial line), as chunk
    ``next``; in the same transaction it deletes the chunks wholly before the buffer's start (they
    scrolled out) and the line-less chunks (a partial line the new chunk supersedes). When this
    writer's unmerged chunks would number ``merge_after``, the write instead holds all their lines plus
    the new ones, and deletes them: a line is written at most twice, and a VM keeps at most about
    ``merge_after + lines / merge_after`` chunks however slowly it prints."""

    def __init__(self, stored: list[tuple[int, Chunk]] = (), merge_after: int = MERGE_AFTER,
                 stale: list[int] = ()) -> None:
        """``stale``: numbers of chunks that are not part of the buffer (left under a format-1 head,
        which an older pvc wrote over a converted one): the first write deletes them."""
        if merge_after < 2:
            raise ValueError("merge_after must be at least 2")
        stored = sorted(stored, key=lambda item: item[0])
        self.merge_after = merge_after
        self.chunks = [StoredChunk(n, c.first, c.end, False) for n, c in stored]
        self.chunks += [StoredChunk(n, 0, 0, False) for n in stale]  # line-less: deleted by the next write
        self.next = max([n for n, _ in stored] + list(stale), default=0) + 1
        # Number of the next line no chunk holds; None: nothing stored in this layout yet (a new VM,
        # or a format-1 buffer being converted): the first write holds the whole buffer.
        self.end: int | None = stored[-1][1].end if stored else None

    def plan(self, buffer: ConsoleBuffer, mark: FileMark | None) -> RingWrite:
        keep, end = buffer.first, buffer.end
        alive = [c for c in self.chunks if c.end > keep and c.end > c.first]
        fresh = [c for c in alive if c.fresh]
        start = keep if self.end is None else max(self.end, keep)
        merge = len(fresh) + 1 >= self.merge_after
        if merge:
            start = max(fresh[0].first, keep)
        chunk = Chunk(start, buffer.lines_from(start), buffer.partial, keep, mark)
        gone = ({c.n for c in self.chunks} - {c.n for c in alive}) | ({c.n for c in fresh} if merge else set())
        after = [c for c in self.chunks if c.n not in gone]
        # The first write (a new buffer, or a format-1 one converted: maybe 1,000 lines) is never merged.
        after.append(StoredChunk(self.next, start, end, not merge and self.end is not None))
        return RingWrite(self.next, chunk, chunk.encode(), sorted(gone), after)

    def applied(self, write: RingWrite) -> None:
        self.chunks, self.next, self.end = write.after, write.n + 1, write.chunk.end


# ---------------------------------------------------------------------------------------------- following


class Lines(NamedTuple):
    """Complete lines, numbered from ``first``, to print in order."""

    first: int
    lines: list[str]


class Partial(NamedTuple):
    """The unterminated last line is now ``text`` (a prompt, a progress bar)."""

    text: str


class Missed(NamedTuple):
    """``count`` lines scrolled out of the buffer before this reader could read them."""

    count: int

    @property
    def text(self) -> str:
        return f"{self.count} line{'s' if self.count != 1 else ''} scrolled out of the buffer before they could be shown"


class Notice(NamedTuple):
    """The VM changed: ``kind`` is following, stopped, starting, moved or undefined (the last one)."""

    kind: str
    text: str


ConsoleEvent = Lines | Partial | Missed | Notice


class FollowState:
    """A follower's position: the number of the next line to print and the last chunk read. Fed the
    chunks numbered above ``last`` in order (or a format-1 record), it says what to print."""

    def __init__(self, log: ConsoleLog, last: int = 0) -> None:
        self.upto, self.last, self.partial = log.end, last, log.partial

    def chunk(self, n: int, chunk: Chunk) -> list[ConsoleEvent]:
        self.last = max(self.last, n)
        events: list[ConsoleEvent] = []
        if chunk.first > self.upto:
            events.append(Missed(chunk.first - self.upto))
            self.upto = chunk.first
        if chunk.end > self.upto:
            events.append(Lines(self.upto, chunk.lines[self.upto - chunk.first:]))
            self.upto = chunk.end
        return events + self._partial(chunk.partial)

    def record(self, log: ConsoleLog) -> list[ConsoleEvent]:
        """A format-1 record (a VM whose buffer was not converted yet)."""
        step = new_lines(self.upto, log)
        events: list[ConsoleEvent] = [Missed(step.skipped)] if step.skipped else []
        if step.lines:
            events.append(Lines(step.next - len(step.lines), step.lines))
        self.upto = step.next
        return events + self._partial(log.partial)

    def _partial(self, text: str) -> list[ConsoleEvent]:
        if text == self.partial:
            return []
        self.partial = text
        return [Partial(text)]


class Follow(NamedTuple):
    lines: list[str]  # to print, in order
    next: int  # sequence number of the next line to print
    skipped: int  # lines the buffer scrolled past before the follower saw them


def tail(log: ConsoleLog, n: int) -> list[str]:
    """The last n complete lines; a follower then goes on from ``log.end``."""
    return log.lines[-n:] if n > 0 else []


def new_lines(printed_upto: int, log: ConsoleLog) -> Follow:
    """What a follower that printed every line before ``printed_upto`` prints from a new version.
    Numbering behind the follower means the buffer was started afresh: print it all."""
    if printed_upto > log.end:
        printed_upto = log.first
    start = max(printed_upto, log.first)
    return Follow(log.lines[start - log.first:], log.end, start - printed_upto)


# ---------------------------------------------------------------------------------------------- reading
# The adapter over ZooKeeper for readers (`pvc vm log`, the REST API): every call is bounded by the
# client's request timeout (pvc.zk).

_READ_ATTEMPTS = 5  # a read that races a merge or an expiry is read again (the writer has moved on)


class Stored(NamedTuple):
    head: Head | None  # None: the key is missing (the VM is undefined)
    version: int | None  # the head's ZooKeeper version (None when missing or not read)
    chunks: list[tuple[int, Chunk]]  # (number, chunk), in number order


async def read_stored(zk, uuid: str, above: int = 0, converted: bool = False,
                      listed: list[str] | None = None) -> Stored:
    """The head and the chunks numbered above ``above``. The head is not read when ``converted``
    (the layout never goes back): then it is reported as format 2. ``listed``: the head's children as
    a watch just delivered them (saves listing them again; listed anew if a chunk went meanwhile)."""
    from pvc.schema import Paths
    from pvc.zk import NoNode

    path = Paths.domain_console_log(uuid)
    for attempt in range(_READ_ATTEMPTS):
        head, version = Head(format=FORMAT), None
        try:
            if not converted:
                data, version = await zk.get(path)
                head = Head.decode(data)
        except NoNode:
            return Stored(None, None, [])
        except (msgspec.DecodeError, msgspec.ValidationError):
            head = Head(format=FORMAT)  # an unreadable head: the chunks still say it all
        if head.format < FORMAT:
            return Stored(head, version, [])  # not converted yet (the first chunk comes with the head)
        try:
            names = listed if listed is not None and attempt == 0 else await zk.children(path)
        except NoNode:
            return Stored(None, None, [])
        numbers = sorted(n for name in names if (n := chunk_number(name)) and n > above)
        values = await zk.get_many(f"{path}/{n}" for n in numbers) if numbers else []
        if None in values and attempt < _READ_ATTEMPTS - 1:
            continue  # deleted since the listing: merged into a newer chunk, or scrolled out
        chunks = []
        for n, value in zip(numbers, values):
            try:
                if value is not None:
                    chunks.append((n, Chunk.decode(value)))
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # never written by pvc: its lines are skipped (and counted as missed)
        return Stored(head, version, chunks)
    raise AssertionError("unreachable")


def stored_log(stored: Stored) -> ConsoleLog:
    """The buffer a read holds, in either layout."""
    if stored.head is not None and stored.head.format < FORMAT:
        return stored.head.log()
    return assemble([chunk for _, chunk in stored.chunks])


async def read_log(zk, uuid: str) -> ConsoleLog:
    """A VM's whole buffer (either layout); an empty log for a VM without one."""
    return stored_log(await read_stored(zk, uuid))


async def read_lines(zk, uuid: str, count: int | None) -> ConsoleLog:
    """The last ``count`` complete lines (all when None) and the partial line."""
    log = await read_log(zk, uuid)
    if count is None:
        return log
    lines = tail(log, count)
    return ConsoleLog(log.end - len(lines), lines, log.partial)


async def follow(zk, uuid: str, backlog: int) -> AsyncIterator[ConsoleEvent]:
    """The last ``backlog`` lines, then every new line as it is stored, in order, each once; ``Missed``
    when the ring scrolled past lines before they were read; ``Partial`` when the unterminated last
    line changes; ``Notice`` when the VM stops, starts or moves (following goes on) and, last, when it
    is undefined. Driven by ZooKeeper watches (the head, its chunk list, the VM record), never a poll.
    Close the iterator (``aclosing``) to stop early."""
    from pvc import store
    from pvc.schema import Domain, Paths

    dom, _ = await store.read_domain(zk, uuid)
    wake = asyncio.Event()
    records: list[bytes | None] = []
    listed: list[list[str] | None] = [None]  # the chunk list as the watch last delivered it

    def vm_changed(data: bytes | None, _version: int) -> None:
        records.append(data)
        wake.set()

    def chunks_changed(children: list[str] | None) -> None:
        listed[0] = children
        wake.set()

    path = Paths.domain_console_log(uuid)
    watches = [  # armed before the first read: nothing stored after it goes unseen
        zk.watch_data(path, lambda _data, _version: wake.set()),
        zk.watch_children(path, chunks_changed),
        zk.watch_data(Paths.domain(uuid), vm_changed),
    ]
    try:
        stored = await read_stored(zk, uuid)
        state = FollowState(log := stored_log(stored), stored.chunks[-1][0] if stored.chunks else 0)
        lines = tail(log, backlog)
        if lines:
            yield Lines(log.end - len(lines), lines)
        where = f"on node {dom.node}" if not _stopped(dom) else f"(not running: {dom.state})"
        yield Notice("following", f"following the console of VM {dom.name} {where}")
        if log.partial:
            yield Partial(log.partial)
        while True:
            await wake.wait()
            wake.clear()
            while records:
                data = records.pop(0)
                if data is None:
                    yield Notice("undefined", f"VM {dom.name} was undefined")
                    return
                try:
                    new = Domain.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                notice = vm_notice(dom, new)
                dom = new
                if notice:
                    yield notice
            converted = state.last > 0
            head, _, chunks = await read_stored(zk, uuid, state.last, converted, listed[0] if converted else None)
            if head is None:
                continue  # the key is gone: the VM is being undefined (the record watch says so)
            events = state.record(head.log()) if head.format < FORMAT else \
                [event for n, chunk in chunks for event in state.chunk(n, chunk)]
            for event in events:
                yield event
    finally:
        for watch in watches:
            watch.cancel()


_STOPPED = ("stop", "disable", "fail")


def _stopped(dom) -> bool:
    return dom.state in _STOPPED


def vm_notice(old, new) -> Notice | None:
    """What a follower is told when the VM record changes."""
    if _stopped(new) and not _stopped(old):
        reason = f": {new.failed_reason}" if new.failed_reason else ""
        return Notice("stopped", f"VM {new.name} stopped ({new.state}{reason}); still following")
    if _stopped(old) and not _stopped(new):
        return Notice("starting", f"VM {new.name} is starting on node {new.node}")
    if new.node != old.node:
        return Notice("moved", f"VM {new.name} moved to node {new.node}")
    return None
