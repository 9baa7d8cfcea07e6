"""`pvc vm log` on a real guest: its serial console, followed from boot and across a live migration."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

import pytest

from pvc.devcluster.guest import TICK

pytestmark = pytest.mark.system

_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")  # printk's timestamp: the guest kernel itself wrote it


class Follower:
    """`pvc vm log NAME -f` running in the background; its lines collected as they come."""

    def __init__(self, cluster, name: str) -> None:
        self.proc = subprocess.Popen(["pvc", "vm", "log", name, "-f"], env=cluster.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"`pvc vm log -f` did not print it within {timeout} s; "
                                     f"last lines: {self.lines[-5:]}") from None
            if line is None:
                raise AssertionError(f"`pvc vm log -f` exited ({self.proc.wait()}): {self.proc.stderr.read()}")
            self.lines.append(line)

    @property
    def ticks(self) -> list[int]:
        return [int(line.rpartition(TICK)[2]) for line in self.lines if TICK in line]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_log_follow_prints_the_boot_and_keeps_printing_across_live_migration(qemu_cluster):
    c = qemu_cluster
    c.define_guest("logvm", "hv1")
    c.pvc("vm", "start", "logvm")  # no --wait: follow it while it boots
    follower = Follower(c, "logvm")
    try:
        follower.wait_for(lambda lines: any(t >= 3 for t in follower.ticks))
        assert any(_KERNEL_LINE.match(line) for line in follower.lines), follower.lines[:20]
        console = {line.rstrip("\r") for line in c.console("logvm").splitlines()}
        assert set(follower.lines) <= console  # the real console, nothing else

        c.pvc("vm", "migrate", "logvm", "--target", "hv2", "--wait")
        assert c.vm("logvm")["node"] == "hv2"
        migrated_at = follower.ticks[-1]
        follower.wait_for(lambda lines: follower.ticks[-1] >= migrated_at + 5)
        ticks = follower.ticks
        # Every line once, in order, across the move: the follow did not restart or skip.
        assert ticks == list(range(ticks[0], ticks[-1] + 1)), ticks
        c.assert_one_continuous_boot("logvm")
    finally:
        follower.stop()

    out = c.pvc("vm", "log", "logvm", "--lines", "3").stdout.splitlines()
    assert len(out) == 3 and all(TICK in line for line in out), out
