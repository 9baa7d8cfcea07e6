"""The console-log core: decoding, buffering, tailing, the ring of chunks and following it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc.console_log import (
    FORMAT,
    MAX_BYTES,
    MAX_LINE_CHARS,
    Chunk,
    ConsoleBuffer,
    ConsoleLog,
    FileCursor,
    FileMark,
    FollowState,
    Head,
    LineDecoder,
    Lines,
    Missed,
    Partial,
    ReadPlan,
    Ring,
    assemble,
    min_bytes,
    new_lines,
    tail,
)

CAP = 12  # line length cap in the property tests, so small byte bounds are legal
ESCAPES = [
    "\x1b[31m", "\x1b[0m", "\x1b[2J", "\x1b[?25l", "\x1b[1;24r", "\x1b[38;5;196m", "\x1b[K",
    "\x1b]0;title\x07", "\x1b]8;;http://h/x\x1b\\", "\x1bP1$r\x1b\\", "\x1b(B", "\x1b7", "\x1bc", "\x1b=",
    "\x9b1m",  # 8-bit CSI (as a Unicode C1 character)
]
# Printable text: no C0/C1 controls, no surrogates; multibyte and astral characters included.
text_chars = st.characters(blacklist_categories=("Cs", "Cc"))


def run(chunks: list[bytes], buffer: ConsoleBuffer | None = None, decoder: LineDecoder | None = None):
    buffer = buffer or ConsoleBuffer()
    decoder = decoder or LineDecoder()
    for chunk in chunks:
        buffer.feed_text(decoder.decode(chunk))
    return buffer.snapshot()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


@st.composite
def rendered_line(draw, content: str) -> str:
    """The line as a guest prints it: escape sequences anywhere, progress-bar rewrites before it."""
    inserts = draw(st.lists(st.tuples(st.integers(0, len(content)), st.sampled_from(ESCAPES)), max_size=3))
    out, at = "", 0
    for to, escape in sorted(inserts):
        out, at = out + content[at:to] + escape, to
    out += content[at:]
    if content and draw(st.booleans()):
        rewrites = draw(st.lists(st.text(text_chars, max_size=6), min_size=1, max_size=3))
        out = "".join(r + "\r" for r in rewrites) + out
    return out


@st.composite
def console_streams(draw):
    lines = draw(st.lists(st.text(text_chars, max_size=CAP), max_size=40))
    partial = draw(st.text(text_chars, max_size=CAP))
    raw = [
        (draw(rendered_line(line)) + draw(st.sampled_from(["\n", "\r\n", "\r\r\n"]))).encode()
        for line in lines
    ]
    tail_raw = draw(rendered_line(partial)).encode()
    return lines, partial, raw, tail_raw


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    if draw(st.integers(0, 4)) == 0:
        return bytewise(data)  # every split point: inside characters, \r\n and escapes
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=30))) | {0, len(data)})
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def follow(snapshots: list[ConsoleLog], sees: list[bool], keep_up: bool) -> list[str | None]:
    """Print what a follower prints; None where it was told lines were skipped. A follower that
    keeps up never passes over a version whose successor scrolled past its unprinted lines."""
    out: list[str | None] = []
    upto = snapshots[0].first
    for i, snap in enumerate(snapshots):
        must = i == len(snapshots) - 1 or (keep_up and snapshots[i + 1].first > upto)
        if must or sees[i]:
            lines, upto, skipped = new_lines(upto, snap)
            out += [None] * skipped + lines
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.data(), stream=console_streams(), max_lines=st.integers(1, 8),
       extra_bytes=st.integers(0, 300), keep_up=st.booleans())
def test_follower_sees_the_exact_line_stream(data, stream, max_lines, extra_bytes, keep_up):
    lines, partial, raw, tail_raw = stream
    max_bytes = min_bytes(CAP) + extra_bytes
    # The VM migrates (the buffer goes through ZooKeeper to another node) at some line boundary.
    moved = data.draw(st.integers(0, len(raw)))
    buffer = ConsoleBuffer(max_lines, max_bytes, max_line_chars=CAP)
    decoder = LineDecoder()
    snapshots = [buffer.snapshot()]
    for part, migrate in ((b"".join(raw[:moved]), True), (b"".join(raw[moved:]) + tail_raw, False)):
        for chunk in data.draw(chunked(part)):
            buffer.feed_text(decoder.decode(chunk))
            snapshots.append(buffer.snapshot())
        if migrate:
            loaded = ConsoleLog.decode(buffer.snapshot().encode())
            buffer, decoder = ConsoleBuffer(max_lines, max_bytes, loaded, max_line_chars=CAP), LineDecoder()
            assert buffer.snapshot() == snapshots[-1]

    for snap in snapshots:
        assert len(snap.encode()) <= max_bytes and len(snap.lines) <= max_lines
    assert snapshots[-1].end == len(lines)
    assert snapshots[-1].partial == partial

    sees = data.draw(st.lists(st.booleans(), min_size=len(snapshots), max_size=len(snapshots)))
    out = follow(snapshots, sees, keep_up)
    assert len(out) == len(lines)
    assert all(got is None or got == want for got, want in zip(out, lines))
    if keep_up:
        # Only lines that no version ever held are reported skipped.
        never_held = {k for k in range(len(lines)) if not any(s.first <= k < s.end for s in snapshots)}
        assert {k for k, got in enumerate(out) if got is None} == never_held
        if all(b.end - a.end <= 1 for a, b in zip(snapshots, snapshots[1:])):
            assert out == lines


def test_slow_follower_is_told_how_many_lines_scrolled_away():
    buffer = ConsoleBuffer(max_lines=5)
    buffer.feed_text("l0\nl1\nl2\n")
    first = buffer.snapshot()
    buffer.feed_text("".join(f"l{i}\n" for i in range(3, 13)))
    second = buffer.snapshot()
    assert (second.first, second.end) == (8, 13)

    lines, upto, skipped = new_lines(0, first)
    assert (lines, upto, skipped) == (["l0", "l1", "l2"], 3, 0)
    lines, upto, skipped = new_lines(upto, second)
    assert (lines, upto, skipped) == ([f"l{i}" for i in range(8, 13)], 13, 5)
    assert new_lines(upto, second) == ([], 13, 0)  # the same version again prints nothing


def test_follower_restarts_on_a_buffer_started_afresh():
    assert new_lines(50, ConsoleLog(first=0, lines=["a", "b"])) == (["a", "b"], 2, 0)


def test_tail():
    log = ConsoleLog(first=7, lines=["a", "b", "c"])
    assert tail(log, 2) == ["b", "c"]
    assert tail(log, 10) == ["a", "b", "c"]
    assert tail(log, 0) == []
    assert log.end == 10


def test_migration_continues_numbering_and_partial_line():
    old = ConsoleBuffer(max_lines=4)
    old.feed_text("".join(f"l{i}\n" for i in range(6)) + "login: ")
    stored = old.snapshot().encode()
    upto = new_lines(0, ConsoleLog.decode(stored)).next

    new = ConsoleBuffer(max_lines=4, state=ConsoleLog.decode(stored))
    assert not new.dirty
    new.feed_text("root\nl7\n")
    log = new.snapshot()
    assert (log.first, log.lines, log.partial) == (4, ["l4", "l5", "login: root", "l7"], "")
    assert new_lines(upto, log) == (["login: root", "l7"], 8, 0)


def test_loading_into_smaller_bounds_keeps_numbering():
    stored = ConsoleLog(first=100, lines=[f"l{i}" for i in range(10)])
    log = ConsoleBuffer(max_lines=3, state=stored).snapshot()
    assert (log.first, log.lines) == (107, ["l7", "l8", "l9"])


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(st.sampled_from('a"\\\t\u00e9\u20ac\U0001f600\ufffd'), max_size=CAP), max_size=60),
       partial=st.text(st.sampled_from("x\U0001f600\""), max_size=30), extra=st.integers(0, 400))
def test_byte_bound_holds_and_keeps_the_newest_lines(lines, partial, extra):
    max_bytes = min_bytes(CAP) + extra
    buffer = ConsoleBuffer(max_lines=1000, max_bytes=max_bytes, max_line_chars=CAP)
    for i, line in enumerate(lines):
        buffer.feed_text(line + "\n")
        log = buffer.snapshot()
        assert len(log.encode()) <= max_bytes
        assert log.end == i + 1 and log.lines == lines[log.first:i + 1]
        assert log.lines[-1] == line  # the newest line always fits
    buffer.feed_text(partial)
    log = buffer.snapshot()
    assert len(log.encode()) <= max_bytes and log.partial == partial[:CAP]


def test_default_bounds_fit_zookeeper():
    assert MAX_BYTES == 256 * 1024 and min_bytes(MAX_LINE_CHARS) < MAX_BYTES < 1024 * 1024
    buffer = ConsoleBuffer()
    for _ in range(1000):
        buffer.feed_text("\U0001f600" * 5000 + "\n")  # 20 KB lines, truncated to 4096 characters
    log = buffer.snapshot()
    assert len(log.encode()) <= MAX_BYTES
    assert all(len(line) == MAX_LINE_CHARS for line in log.lines)
    assert log.end == 1000 and len(log.lines) < 1000  # the byte bound, not the line count, dropped them


def test_too_small_byte_bound_is_refused():
    with pytest.raises(ValueError):
        ConsoleBuffer(max_bytes=min_bytes(MAX_LINE_CHARS) - 1)


def test_long_lines_and_partials_are_truncated():
    buffer = ConsoleBuffer(max_line_chars=CAP, max_bytes=min_bytes(CAP))
    buffer.feed_text("x" * 50)
    buffer.feed_text("y" * 50)
    assert buffer.snapshot().partial == "x" * CAP
    buffer.feed_text("\nshort\n")
    assert buffer.snapshot().lines == ["x" * CAP, "short"]


def test_invalid_utf8_becomes_replacement_without_losing_lines():
    log = run([b"ok\n\xff\xfe bad\n\xc3(next\n", b"\xe2\x82", b"\n", b"fine\n"])
    assert log.lines == ["ok", "\ufffd\ufffd bad", "\ufffd(next", "\ufffd", "fine"]


def test_multibyte_characters_split_across_reads():
    text = "é€😀 ok\n"
    assert run(bytewise(text.encode())).lines == ["é€😀 ok"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_escape_sequences_are_removed_even_when_split(escape):
    data = f"a{escape}b{escape}\n".encode()
    assert run([data]).lines == ["ab"]
    assert run(bytewise(data)).lines == ["ab"]


def test_malformed_escapes_do_not_swallow_the_log():
    # An OSC cut off by a newline, then one that never ends: the output after them still shows.
    log = run([b"\x1b]0;never ended\nnext\n", b"\x1b]" + b"x" * 10_000, b"\nafter\n", b"\x1b\n", b"\x1b[\n"])
    assert log.lines[:2] == ["", "next"]
    assert "after" in log.lines
    assert all("\x1b" not in line for line in log.lines)


def test_other_control_characters_are_removed_tabs_kept():
    assert run([b"a\x00\x07\x08\x7f\tb\n"]).lines == ["a\tb"]


@pytest.mark.parametrize("chunks, lines, partial", [
    ([b"a\r\nb\r\n"], ["a", "b"], ""),
    ([b"a\r", b"\nb\r", b"\r\n"], ["a", "b"], ""),  # \r\n split across reads
    ([b"10%\r20%\r30%\n"], ["30%"], ""),
    ([b"10%\r", b"20%"], [], "20%"),
    ([b"100%\r"], [], "100%"),  # the terminal still shows it until something overwrites it
    ([b"100%\r", b"\x1b[K", b"done\n"], ["done"], ""),
    ([b"abc\r\rx\n"], ["x"], ""),
])
def test_carriage_returns(chunks, lines, partial):
    log = run(chunks)
    assert (log.lines, log.partial) == (lines, partial)


def test_final_decode_flushes_incomplete_input():
    decoder = LineDecoder()
    assert decoder.decode(b"a\xc3") == "a"
    assert decoder.decode(b"\x1b[3", final=True) == "\ufffd"


def test_dirty_only_on_change():
    buffer = ConsoleBuffer()
    assert not buffer.dirty
    buffer.feed_text("")
    assert not buffer.dirty
    buffer.feed_text("50%")
    assert buffer.dirty
    buffer.snapshot()
    assert not buffer.dirty
    buffer.feed_text("\r50%")  # a progress bar redrawn with the same text
    assert not buffer.dirty
    buffer.feed_text("\n")
    assert buffer.dirty


def test_console_log_encoding():
    log = ConsoleLog(first=3, lines=["a", "é\"x"], partial="p")
    assert ConsoleLog.decode(log.encode()) == log
    assert ConsoleLog.decode(b"") == ConsoleLog()


class FakeFile:
    """A log file as the cursor sees it: an inode and contents, or absent."""

    def __init__(self) -> None:
        self.inode, self.data = 0, None

    def create(self) -> None:
        self.inode, self.data = self.inode + 1, b""

    def stat(self) -> tuple[int, int] | None:
        return None if self.data is None else (self.inode, len(self.data))


def check(cursor: FileCursor, file: FakeFile, decoder: LineDecoder | None = None) -> list[ReadPlan]:
    """The adapter's loop; returns the plans it followed."""
    plans = []
    while (plan := cursor.plan(file.stat())) is not None:
        plans.append(plan)
        data = file.data[plan.offset:plan.offset + plan.length]
        if plan.reset and decoder:
            decoder.reset()
        cursor.consumed(len(data))
        if len(data) < plan.length:
            break
    return plans


def test_cursor_waits_for_a_missing_file_then_reads_in_bounded_chunks():
    file, cursor = FakeFile(), FileCursor(chunk=4)
    assert check(cursor, file) == []
    file.create()
    assert check(cursor, file) == []
    file.data = b"0123456789"
    assert check(cursor, file) == [ReadPlan(0, 4, False), ReadPlan(4, 4, False), ReadPlan(8, 2, False)]
    file.data += b"ab"
    assert check(cursor, file) == [ReadPlan(10, 2, False)]
    assert check(cursor, file) == []


def test_cursor_restarts_on_truncation():
    file, cursor = FakeFile(), FileCursor()
    file.create()
    file.data = b"old boot\n"
    check(cursor, file)
    file.data = b"new\n"  # append='off': truncated when the VM starts from offline
    assert check(cursor, file) == [ReadPlan(0, 4, True)]
    file.data = b""
    assert check(cursor, file) == []
    file.data = b"again"
    assert check(cursor, file) == [ReadPlan(0, 5, True)]  # the reset is reported with the next read


def test_cursor_restarts_on_rotation_and_recreation():
    file, cursor = FakeFile(), FileCursor()
    file.create()
    file.data = b"12345"
    check(cursor, file)
    file.create()
    file.data = b"a much longer replacement"  # new inode, bigger than the offset
    assert check(cursor, file) == [ReadPlan(0, 25, True)]
    file.data = None  # removed
    assert check(cursor, file) == []
    file.create()
    file.data = b"xy"
    assert check(cursor, file) == [ReadPlan(0, 2, True)]


def test_cursor_can_start_at_the_end():
    cursor = FileCursor(inode=7, offset=100)
    assert cursor.plan((7, 100)) is None
    assert cursor.plan((7, 130)) == ReadPlan(100, 30, False)
    assert FileCursor(inode=7, offset=100).plan((8, 130)) == ReadPlan(0, 130, True)


def test_cursor_short_read_resumes_where_it_stopped():
    cursor = FileCursor(chunk=10)
    assert cursor.plan((1, 10)) == ReadPlan(0, 10, False)
    cursor.consumed(6)  # the read returned fewer bytes than planned
    assert cursor.plan((1, 10)) == ReadPlan(6, 4, False)


@settings(max_examples=200, deadline=None)
@given(appends=st.lists(st.binary(max_size=40), max_size=20), chunk=st.integers(1, 16), data=st.data())
def test_tailing_a_growing_file_reads_every_byte_once(appends, chunk, data):
    file, cursor = FakeFile(), FileCursor(chunk=chunk)
    file.create()
    read = b""
    for piece in appends:
        file.data += piece
        if data.draw(st.booleans()):
            for plan in check(cursor, file):
                assert 0 < plan.length <= chunk and not plan.reset
                read += file.data[plan.offset:plan.offset + plan.length]
    for plan in check(cursor, file):
        read += file.data[plan.offset:plan.offset + plan.length]
    assert read == file.data


def test_decoder_reset_forgets_a_sequence_cut_by_truncation():
    file, cursor, decoder = FakeFile(), FileCursor(), LineDecoder()
    file.create()
    file.data = b"x\x1b]0;title"
    out = ""
    for plan in check(cursor, file, decoder):
        out += decoder.decode(file.data[plan.offset:plan.offset + plan.length])
    file.data = b"fresh\n"
    for plan in check(cursor, file, decoder):
        out += decoder.decode(file.data[plan.offset:plan.offset + plan.length])
    assert out == "xfresh\n"




# ---------------------------------------------------------------------------------------------- the ring


class Store:
    """The chunks as ZooKeeper holds them after each transaction (a RingWrite applied atomically)."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.written = 0  # bytes of chunk data written

    def apply(self, ring: Ring, write) -> None:
        assert write.n not in self.chunks  # the fence: a chunk number is created once
        for n in write.delete:
            del self.chunks[n]
        self.chunks[write.n] = write.data
        self.written += len(write.data)
        ring.applied(write)

    def decoded(self, above: int = 0) -> list[tuple[int, Chunk]]:
        return [(n, Chunk.decode(d)) for n, d in sorted(self.chunks.items()) if n > above]

    def log(self) -> ConsoleLog:
        return assemble([c for _, c in self.decoded()])


def expand(events) -> list[str | None]:
    out: list[str | None] = []
    for event in events:
        if isinstance(event, Missed):
            out += [None] * event.count
        elif isinstance(event, Lines):
            out += event.lines
    return out


@settings(max_examples=100, deadline=None)
@given(data=st.data(), max_lines=st.integers(1, 40), merge_after=st.integers(2, 6))
def test_ring_followers_print_every_line_once_in_order(data, max_lines, merge_after):
    """A writer stores deltas (restarting now and then, as after a migration or a daemon restart); the
    stored buffer is always the writer's; followers print each line once, in order, and are told the
    count of exactly the lines that scrolled out before they read them."""
    store, ring = Store(), Ring(merge_after=merge_after)
    buffer = ConsoleBuffer(max_lines)
    followers = [(FollowState(ConsoleLog()), []) for _ in range(3)]  # the last keeps up after each write
    sent: list[str] = []
    ever_stored: set[int] = set()
    for step in range(data.draw(st.integers(0, 40))):
        new = [f"l{len(sent) + i}" for i in range(data.draw(st.integers(0, max_lines + 3)))]
        sent += new
        partial = data.draw(st.sampled_from(["", "login: ", "50%"]))
        buffer.feed_text("\r" + "".join(f"{line}\n" for line in new) + partial)  # \r: over the last partial
        if data.draw(st.booleans()):
            store.apply(ring, ring.plan(buffer, None))
            log = store.log()
            assert (log.first, log.lines, log.partial) == (buffer.first, buffer.lines_from(0), buffer.partial)
            ever_stored |= set(range(log.first, log.end))
            if data.draw(st.integers(0, 5)) == 0:  # a new writer (another node, or pvcd restarted)
                ring = Ring(store.decoded(), merge_after=merge_after)
                buffer = ConsoleBuffer(max_lines, state=store.log())
        for i, (state, out) in enumerate(followers):
            if i == 2 or data.draw(st.booleans()):
                out += expand(e for n, c in store.decoded(state.last) for e in state.chunk(n, c))
    for state, out in followers:
        out += expand(e for n, c in store.decoded(state.last) for e in state.chunk(n, c))
        end = store.log().end
        assert len(out) == end
        assert all(got is None or got == want for got, want in zip(out, sent))
    # The follower that read after every write missed only lines never stored at all.
    keeping_up = followers[2][1]
    assert {k for k, got in enumerate(keeping_up) if got is None} == set(range(len(keeping_up))) - ever_stored


def test_a_follower_racing_a_merge_neither_repeats_nor_misses():
    store, ring, buffer = Store(), Ring(merge_after=3), ConsoleBuffer(100)
    for i in range(3):  # the first chunk (the whole buffer as it was) is never merged
        buffer.feed_text(f"l{i}\n")
        store.apply(ring, ring.plan(buffer, None))
    state = FollowState(ConsoleLog())
    listed = store.decoded()  # the follower lists chunks 1 to 3 and reads 1 and 2 ...
    out = expand(state.chunk(*listed[0]) + state.chunk(*listed[1]))
    buffer.feed_text("l3\n")
    write = ring.plan(buffer, None)
    assert write.delete == [2, 3] and write.chunk.first == 1  # ... the writer merges 2 and 3 into 4
    store.apply(ring, write)
    out += expand(e for n, c in store.decoded(state.last) for e in state.chunk(n, c))  # 3 is gone: re-listed
    assert out == ["l0", "l1", "l2", "l3"]


def test_a_slow_follower_is_told_how_many_lines_it_missed():
    store, ring, buffer = Store(), Ring(), ConsoleBuffer(5)
    state = FollowState(ConsoleLog())
    buffer.feed_text("a\nb\n")
    store.apply(ring, ring.plan(buffer, None))
    assert expand(e for n, c in store.decoded(state.last) for e in state.chunk(n, c)) == ["a", "b"]
    for i in range(4):
        buffer.feed_text(f"x{i}\ny{i}\n")
        store.apply(ring, ring.plan(buffer, None))
    events = [e for n, c in store.decoded(state.last) for e in state.chunk(n, c)]
    # The chunk of x1 and y1 is still stored (y1 is in the buffer): the follower gets x1 too.
    assert events[0] == Missed(2) and Missed(2).text == "2 lines scrolled out of the buffer before they could be shown"
    assert expand(events) == [None] * 2 + ["x1", "y1", "x2", "y2", "x3", "y3"]
    assert len(store.chunks) == 3  # the chunks wholly out of the buffer were deleted
    assert store.log() == ConsoleLog(5, ["y1", "x2", "y2", "x3", "y3"])  # the buffer shows console_log.lines


def test_one_line_a_second_costs_under_three_times_its_bytes_and_keeps_few_chunks():
    store, ring, buffer = Store(), Ring(), ConsoleBuffer(1000)
    mark = FileMark("hv1", 1835121, 0, 0)
    line = "[ 1234.567890] bench: b001     line  1000000 " + "x" * 34  # 80 characters, like the bench
    for i in range(3000):  # fill the buffer first: the steady state
        buffer.feed_text(line + "\n")
        mark = FileMark("hv1", 1835121, mark.offset + 81, 2918221014)
        store.apply(ring, ring.plan(buffer, mark))
        if i == 1999:
            before = store.written
    per_line = (store.written - before) / 1000
    assert per_line <= 3 * 81, per_line
    assert len(store.chunks) <= 32 + 1000 // 31 + 2
    log = store.log()
    assert log.end == 3000 and len(log.lines) == 1000


def test_partial_line_updates_keep_one_chunk():
    store, ring, buffer = Store(), Ring(), ConsoleBuffer(10)
    buffer.feed_text("boot\n")
    store.apply(ring, ring.plan(buffer, None))
    for pct in range(0, 100, 10):
        buffer.feed_text(f"\r{pct}%")
        store.apply(ring, ring.plan(buffer, None))
    assert len(store.chunks) == 2 and store.log().partial == "90%"
    buffer.feed_text("\rdone\n")
    store.apply(ring, ring.plan(buffer, None))
    assert store.log().lines == ["boot", "done"] and len(store.chunks) == 2


def test_a_format_one_buffer_is_converted_with_its_numbering():
    old = ConsoleLog(first=40, lines=["a", "b"], partial="p").encode()
    head = Head.decode(old)
    assert head.format == 1 and head.log() == ConsoleLog(40, ["a", "b"], "p")
    assert Head.decode(b"") == Head()
    buffer, ring, store = ConsoleBuffer(10, state=head.log()), Ring(), Store()
    state = FollowState(head.log())
    buffer.feed_text("q\n")
    store.apply(ring, ring.plan(buffer, None))
    assert store.log() == ConsoleLog(40, ["a", "b", "pq"], "")
    assert expand(e for n, c in store.decoded() for e in state.chunk(n, c)) == ["pq"]
    new = Head(format=FORMAT, files=[FileMark("hv1", 1, 2, 3)])
    assert Head.decode(new.encode()) == new and b"lines" not in new.encode()


def test_follow_state_on_a_format_one_record():
    state = FollowState(ConsoleLog(0, ["a"]))
    events = state.record(ConsoleLog(5, ["f", "g"], "x"))
    assert events == [Missed(4), Lines(5, ["f", "g"]), Partial("x")]
    assert state.record(ConsoleLog(5, ["f", "g"], "x")) == []


def test_chunks_left_under_a_format_one_head_are_deleted_by_the_conversion():
    """An older pvcd (mid-upgrade) wrote a whole buffer over a converted head: its chunks are stale."""
    ring, buffer = Ring(stale=[7, 3]), ConsoleBuffer(10, state=ConsoleLog(0, ["a"]))
    write = ring.plan(buffer, None)
    assert (write.n, write.delete, write.chunk.lines) == (8, [3, 7], ["a"])
