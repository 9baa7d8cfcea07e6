"""Serial console logs: the pure core of the hypervisor's tailer and of ``pvc vm log -f``.

The daemon's adapter only does the I/O, once per check (every 0.5 s, sooner on inotify)::

    open the file (or find it missing), fstat the open file
    while plan := cursor.plan((st_ino, st_size) or None):     # one bounded chunk at a time
        data = read plan.length bytes at plan.offset
        if plan.reset: decoder.reset()
        cursor.consumed(len(data)); buffer.feed_text(decoder.decode(data))
        if len(data) < plan.length: break                   # shrank under us: the next check sees why
    if buffer.dirty and limiter.allow(now): write buffer.snapshot().encode()

Every line has an absolute sequence number (``ConsoleLog.first`` + index), so a follower diffs two
versions by number (``new_lines``), never by guessing where they overlap, and knows exactly how many lines
it missed when the buffer scrolled past them. A migration target (or a restarted daemon) loads the record
from ZooKeeper into ``ConsoleBuffer(state=...)`` and the numbering goes on.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from typing import NamedTuple

import msgspec

MAX_LINES = 1000  # lines kept per VM (console_log.lines)
MAX_BYTES = 256 * 1024  # bound of one encoded record; ZooKeeper refuses values over ~1 MiB
MAX_LINE_CHARS = 4096  # longer lines are truncated
READ_CHUNK = 256 * 1024  # most bytes one read takes, so a burst cannot blow memory
WRITE_INTERVAL = 0.25  # at most 4 ZooKeeper writes per VM per second


class ConsoleLog(msgspec.Struct):
    """``/domains/<uuid>/console_log``: the last lines of a VM's serial console.

    ``first`` is the sequence number of ``lines[0]`` since the buffer began; ``partial`` is the
    unterminated last line (a prompt, a progress bar), not yet part of ``lines``."""

    first: int = 0
    lines: list[str] = []
    partial: str = ""

    @property
    def end(self) -> int:
        """Sequence number the next complete line will get."""
        return self.first + len(self.lines)

    def encode(self) -> bytes:
        return _encoder.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> ConsoleLog:
        """An empty key (created but never written) is an empty log."""
        return msgspec.json.decode(data, type=cls) if data else cls()


_encoder = msgspec.json.Encoder()
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
    def end(self) -> int:
        return self._first + len(self._lines)

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
    min_interval + 1`` writes). Unlike a fixed spacing (``WriteLimiter``) a line that comes at about
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


# ---------------------------------------------------------------------------------------------- following


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
