"""pvcd's own log lines in ZooKeeper (`pvc node log`): the pure core of the daemon's sink and the readers.

A node's recent log lines live in a bounded ring of chunks, ``/nodes/<name>/log/<first>``, one chunk per
write, named by the zero-padded sequence number of its first line. The daemon's sink
(``pvc.daemon.log.ZooKeeperSink``) adds every rendered line to a ``Pending`` batch (memory only: the
logging call never waits for ZooKeeper), writes the batch as one new chunk at most every
``FLUSH_INTERVAL`` and then deletes the oldest chunks while the ``Ring`` is over its bounds. A write
costs one create (and about one delete) whatever the ring holds, where rewriting one record (as console
logs do) would cost the whole buffer every time.

While ZooKeeper is away lines wait in the batch up to ``PENDING_BYTES``; lines beyond are dropped and
counted, and the next chunk says how many (``dropped``). Lines are numbered from the ring's first line,
across daemon restarts (the sink continues after the newest chunk), so a follower that sees a gap in
the numbering knows how many lines scrolled out of the ring before it could read them.
"""

from __future__ import annotations

from collections import deque

import msgspec

MAX_LINE_CHARS = 4096  # a longer line (a traceback) is cut
CHUNK_BYTES = 32 * 1024  # most bytes of lines one chunk (one write) takes; the rest waits for the next
PENDING_BYTES = 128 * 1024  # lines held while ZooKeeper is away or slow; beyond, dropped and counted
RING_BYTES = 256 * 1024  # the ring's bound, all chunks together (like a console log's 256 KiB)
RING_CHUNKS = 256  # and at most this many chunks (one multiRead reads them all)
FLUSH_INTERVAL = 0.5  # at most two writes a second per node
_NAME_DIGITS = 12


class NodeLogChunk(msgspec.Struct, kw_only=True):
    """``/nodes/<name>/log/<first>``: some consecutive log lines of the node's pvcd, as rendered for
    stderr. ``dropped``: lines the daemon lost just before ``lines[0]`` (ZooKeeper was away too long,
    or a burst outran the bound); they are not numbered."""

    first: int
    lines: list[str] = []
    dropped: int = 0
    time: float = 0.0

    @property
    def end(self) -> int:
        return self.first + len(self.lines)

    def encode(self) -> bytes:
        return _encoder.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> NodeLogChunk:
        return msgspec.json.decode(data, type=cls)


_encoder = msgspec.json.Encoder()


def chunk_name(first: int) -> str:
    return f"{first:0{_NAME_DIGITS}d}"


def chunk_first(name: str) -> int | None:
    """The sequence number a chunk's name carries; None for a name that is not a chunk's."""
    return int(name) if name.isdigit() else None


def line_size(line: str) -> int:
    """What a line adds to an encoded chunk (its JSON string and a comma)."""
    return len(_encoder.encode(line)) + 1


class Pending:
    """The lines logged and not yet written, oldest first, at most ``max_bytes`` of them."""

    def __init__(self, max_bytes: int = PENDING_BYTES, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self.max_bytes, self.max_line_chars = max_bytes, max_line_chars
        self._lines: deque[tuple[str, int]] = deque()
        self._bytes = 0
        self.dropped = 0  # lines dropped since the last write

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: str) -> None:
        if len(line) > self.max_line_chars:
            line = line[: self.max_line_chars - 1] + "…"
        size = line_size(line)
        if self._bytes + size > self.max_bytes:
            self.dropped += 1
            return
        self._lines.append((line, size))
        self._bytes += size

    def batch(self, first: int, now: float, max_bytes: int = CHUNK_BYTES) -> NodeLogChunk | None:
        """The next chunk to write (the oldest lines, at least one, up to ``max_bytes``), numbered from
        ``first``; None when there is nothing to say. Nothing is removed until ``written``."""
        lines, size = [], 0
        for line, n in self._lines:
            if lines and size + n > max_bytes:
                break
            lines.append(line)
            size += n
        if not lines and not self.dropped:
            return None
        return NodeLogChunk(first=first, lines=lines, dropped=self.dropped, time=now)

    def written(self, chunk: NodeLogChunk) -> None:
        """``chunk`` (from ``batch``) is stored: forget its lines and the drops it reported."""
        for _ in chunk.lines:
            self._bytes -= self._lines.popleft()[1]
        self.dropped -= chunk.dropped


class Ring:
    """The chunks a writer knows are stored, oldest first, as (first, encoded size)."""

    def __init__(self, chunks: list[tuple[int, int]] = (), next_first: int = 0,
                 max_bytes: int = RING_BYTES, max_chunks: int = RING_CHUNKS) -> None:
        self.max_bytes, self.max_chunks = max_bytes, max_chunks
        self.chunks: deque[tuple[int, int]] = deque(sorted(chunks))
        self.bytes = sum(size for _, size in self.chunks)
        self.next_first = next_first  # the sequence number the next line gets

    @classmethod
    def load(cls, stored: dict[str, bytes | None], **bounds) -> Ring:
        """The ring as a (re)starting writer finds it: chunk name -> value (None: gone meanwhile)."""
        chunks, next_first = [], 0
        for name, data in stored.items():
            first = chunk_first(name)
            if first is None or data is None:
                continue
            chunks.append((first, len(data)))
            try:
                next_first = max(next_first, NodeLogChunk.decode(data).end)
            except msgspec.DecodeError:
                next_first = max(next_first, first + 1)
        return cls(chunks, next_first, **bounds)

    def add(self, chunk: NodeLogChunk, size: int) -> None:
        self.chunks.append((chunk.first, size))
        self.bytes += size
        self.next_first = chunk.end

    def trim(self) -> list[int]:
        """The oldest chunks to delete to be within the bounds again (never the newest), forgotten here."""
        gone = []
        while len(self.chunks) > 1 and (len(self.chunks) > self.max_chunks or self.bytes > self.max_bytes):
            first, size = self.chunks.popleft()
            self.bytes -= size
            gone.append(first)
        return gone


def tail(chunks: list[NodeLogChunk], n: int) -> list[NodeLogChunk]:
    """The chunks holding the last ``n`` lines, oldest first, the first one cut to fit (and its
    ``dropped`` kept only if all of its lines are shown)."""
    out: list[NodeLogChunk] = []
    left = n
    for chunk in sorted(chunks, key=lambda c: c.first, reverse=True):
        if left <= 0:
            break
        if len(chunk.lines) <= left:
            out.append(chunk)
            left -= len(chunk.lines)
        else:
            keep = chunk.lines[len(chunk.lines) - left:]
            out.append(NodeLogChunk(first=chunk.end - left, lines=keep, dropped=0, time=chunk.time))
            left = 0
    return out[::-1]


def skipped(upto: int, chunk: NodeLogChunk) -> int:
    """Lines a follower that printed every line before ``upto`` never saw before ``chunk``: the ring
    dropped their chunks before it could read them."""
    return max(0, chunk.first - upto)
