"""The node log ring's pure core: batching with a bound and a drop count, the ring's bounds, tails."""

from __future__ import annotations

from pvc.node_log import (
    NodeLogChunk,
    Pending,
    Ring,
    chunk_first,
    chunk_name,
    line_size,
    skipped,
    tail,
)


def test_pending_batches_in_order_and_counts_drops() -> None:
    pending = Pending(max_bytes=10 * line_size("line 0"), max_line_chars=20)
    for i in range(15):
        pending.add(f"line {i:x}")
    assert len(pending) == 10 and pending.dropped == 5
    chunk = pending.batch(first=7, now=1.0, max_bytes=4 * line_size("line 0"))
    assert chunk.first == 7 and chunk.lines == ["line 0", "line 1", "line 2", "line 3"] and chunk.dropped == 5
    pending.add("late")  # still full: dropped too, and counted for the next chunk
    pending.written(chunk)
    assert len(pending) == 6 and pending.dropped == 1
    rest = pending.batch(first=chunk.end, now=2.0)
    assert rest.first == 11 and rest.lines[0] == "line 4" and rest.dropped == 1
    pending.written(rest)
    assert pending.batch(first=rest.end, now=3.0) is None


def test_pending_cuts_long_lines_and_always_takes_one() -> None:
    pending = Pending(max_line_chars=8)
    pending.add("x" * 100)
    chunk = pending.batch(first=0, now=0, max_bytes=1)
    assert chunk.lines == ["xxxxxxx…"]


def test_drops_alone_make_a_chunk() -> None:
    pending = Pending(max_bytes=1)
    pending.add("too big for the bound")
    chunk = pending.batch(first=3, now=0)
    assert chunk.lines == [] and chunk.dropped == 1 and chunk.end == 3


def test_ring_trims_oldest_to_bounds_and_keeps_newest() -> None:
    ring = Ring(max_bytes=100, max_chunks=3)
    for first in range(0, 50, 10):
        ring.add(NodeLogChunk(first=first, lines=["x"] * 10), 30)
        gone = ring.trim()
        assert len(ring.chunks) <= 3 and ring.bytes <= 100
    assert [f for f, _ in ring.chunks] == [20, 30, 40] and ring.next_first == 50
    huge = Ring(max_bytes=10)
    huge.add(NodeLogChunk(first=0, lines=["x"]), 50)
    assert huge.trim() == [] and len(huge.chunks) == 1  # the newest stays whatever its size
    assert gone == [10]


def test_ring_load_continues_numbering() -> None:
    stored = {chunk_name(5): NodeLogChunk(first=5, lines=["a", "b"]).encode(),
              chunk_name(0): NodeLogChunk(first=0, lines=["c"] * 5).encode(),
              "junk": b"x", chunk_name(9): None}
    ring = Ring.load(stored)
    assert ring.next_first == 7 and [f for f, _ in ring.chunks] == [0, 5]
    assert chunk_first(chunk_name(123)) == 123 and chunk_first("lock-1") is None


def test_tail_and_skipped() -> None:
    chunks = [NodeLogChunk(first=0, lines=["a", "b", "c"], dropped=2), NodeLogChunk(first=3, lines=["d", "e"], dropped=1)]
    assert [c.lines for c in tail(chunks, 3)] == [["c"], ["d", "e"]]
    assert tail(chunks, 3)[0].first == 2 and tail(chunks, 3)[0].dropped == 0
    assert tail(chunks, 5)[0].dropped == 2 and tail(chunks, 0) == []
    assert skipped(1, chunks[1]) == 2 and skipped(3, chunks[1]) == 0
