"""The console-log tailer's pure parts: the write budget and the file marks it carries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.console_log import FORMAT, FileMark, Head, WriteBudget
from pvc.daemon.console_tailer import MARKS_BUDGET, MAX_MARKS, carried_marks


def test_a_quiet_vm_writes_at_once_and_a_few_times_in_a_row():
    budget = WriteBudget(min_interval=0.05, bytes_per_second=1e6, burst=0.2)
    now = 100.0
    for _ in range(4):  # 0.2 s of credit, 0.05 s a write
        assert budget.delay(now) == 0
        budget.spend(now, 100)
    assert budget.delay(now) == pytest.approx(0.05)
    assert budget.delay(now + 0.05) == 0


def test_a_line_at_the_write_rate_is_never_held_back():
    """With a fixed spacing a stream at exactly the write rate locks into a constant lag; with
    credit it does not."""
    budget = WriteBudget(min_interval=0.05, bytes_per_second=1e9, burst=0.2)
    t = 0.0
    for i in range(200):
        arrival = i * 0.05 + (0.003 if i % 2 else 0.0)  # jitter
        t = max(t, arrival)
        assert budget.delay(t) == 0, i
        budget.spend(t, 1000)


def test_large_records_are_written_less_often():
    budget = WriteBudget(min_interval=0.05, bytes_per_second=1024 * 1024, burst=0.2)
    budget.spend(0.0, 256 * 1024)  # costs 0.25 s
    assert budget.delay(0.0) == pytest.approx(0.1)


@given(st.lists(st.tuples(st.floats(0.0, 0.3), st.integers(0, 300_000)), min_size=1, max_size=400))
def test_writes_and_bytes_per_second_stay_bounded(steps):
    """Whatever the timing and sizes, writing whenever allowed never exceeds the bounds."""
    min_interval, rate, burst = 0.05, 1024 * 1024, 0.2
    budget = WriteBudget(min_interval, rate, burst)
    now, writes = 0.0, []
    for gap, size in steps:
        now += gap
        now += budget.delay(now)
        assert budget.delay(now) == 0
        budget.spend(now, size)
        writes.append((now, size))
    for start, _ in writes:
        window = [(t, s) for t, s in writes if start <= t < start + 1.0]
        assert len(window) <= (1.0 + burst) / min_interval + 1
        assert sum(s for _, s in window[:-1]) <= (1.0 + burst) * rate  # plus the last record


def test_a_new_writer_carries_the_previous_writers_last_mark():
    older = [FileMark("hv1", 12, 340, 99), FileMark("hv2", 7, 10, 1)]
    last = FileMark("hv1", 12, 900, 5)  # hv1 wrote the newest chunk after its mark in the head
    assert carried_marks(older, last, "hv3") == [FileMark("hv2", 7, 10, 1), last]
    assert carried_marks(older, None, "hv3") == older
    head = Head(format=FORMAT, files=carried_marks(older, last, "hv3"))
    assert Head.decode(head.encode()) == head


def test_marks_fit_their_budget():
    marks = [FileMark(f"{i:0>63}", 2**63 - 1, 2**63 - 1, 2**32 - 1) for i in range(2 * MAX_MARKS)]
    kept = carried_marks(marks, marks[-1], "hv1")
    assert kept[-1] == marks[-1] and len(kept) <= MAX_MARKS
    assert len(Head(format=FORMAT, files=kept).encode()) <= MARKS_BUDGET
