"""Coordinators on a real cluster (3 coordinators, real ZooKeeper, real pvcd processes): one primary,
graceful hand-overs, failover after kill -9 and SIGTERM, never two primaries."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from pvc.election import PRIMARY_HOLDING, single_holder
from pvc.schema import Paths
from pvc.zk import ZK
from tests.conftest import wait_until


def states(cluster) -> dict[str, str]:
    return {n["name"]: n["coordinator_state"] for n in cluster.pvc_json("node", "list")}


def primary_of(cluster) -> str:
    holders = [n for n, s in states(cluster).items() if s == "primary"]
    assert len(holders) <= 1, holders
    return holders[0] if holders else ""


class Observer:
    """Watches every coordinator's state key from outside and records each combination it sees."""

    def __init__(self, zookeeper: str, nodes: list[str]) -> None:
        self.zookeeper, self.nodes = zookeeper, nodes
        self.current: dict[str, str] = {}
        self.violations: list[dict[str, str]] = []
        self.changes = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        zk = ZK(self.zookeeper, request_timeout=5)
        await zk.start()

        def on(node):
            def cb(data, _v):
                self.current[node] = (data or b"").decode()
                self.changes += 1
                if not single_holder(self.current):
                    self.violations.append(dict(self.current))
            return cb

        watches = [zk.watch_data(Paths.node_key(n, "coordinator_state"), on(n)) for n in self.nodes]
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        for w in watches:
            w.cancel()
        await zk.close()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


_LINE = re.compile(r"^(\S+)Z \[\w+\s*\] (\w+)")


def duty_intervals(cluster) -> list[tuple[float, float, str]]:
    """From the daemons' logs: when each node held the duties (takeover start to relinquish end; a
    daemon killed while primary held them until its last line, its guard removed them at its death)."""
    intervals = []
    for node in cluster.dev.state.nodes:
        start = last = None
        for line in Path(node.pvcd_log).read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            t = datetime.fromisoformat(m.group(1)).timestamp()
            event = m.group(2)
            # A new daemon's first lines (metrics server, then state init): the previous one died.
            new_daemon = event == "metrics_listening" or (event == "daemon_state" and "state=init" in line)
            if new_daemon and start is not None:
                intervals.append((start, last, node.name))  # a new daemon: the previous one died
                start = None
            if event == "primary_takeover_started":
                start = t
            elif event == "primary_relinquish_done" and start is not None:
                intervals.append((start, t, node.name))
                start = None
            last = t
        if start is not None:
            intervals.append((start, float("inf"), node.name))
    return sorted(intervals)


def test_one_primary_shown_by_node_list(cluster):
    wait_until(lambda: primary_of(cluster), timeout=15)
    s = states(cluster)
    assert sorted(s.values()) == ["primary", "secondary", "secondary"]
    nodes = cluster.pvc_json("node", "list")
    assert all(n["daemon_mode"] == "coordinator" for n in nodes)
    table = cluster.pvc("node", "list").stdout
    assert "COORDINATOR" in table and "primary" in table


def test_many_handovers_never_two_primaries(cluster):
    wait_until(lambda: primary_of(cluster), timeout=15)
    with Observer(cluster.zookeeper, cluster.nodes) as observer:
        first = primary_of(cluster)
        order = [n for n in cluster.nodes if n != first] * 3 + [first]
        for target in order:
            out = cluster.pvc("node", "primary", target, "--wait").stdout
            assert f"Node {target} is primary" in out
            assert primary_of(cluster) == target
        # secondary: the role goes to someone else
        out = cluster.pvc("node", "secondary", first, "--wait").stdout
        assert f"Node {first} is secondary" in out
        now = primary_of(cluster)
        assert now and now != first
        assert "already secondary" in cluster.pvc("node", "secondary", first).stdout
        assert "already primary" in cluster.pvc("node", "primary", now).stdout
    assert observer.violations == []
    assert observer.changes >= 2 * len(order)
    intervals = duty_intervals(cluster)
    for (s1, e1, n1), (s2, _e2, n2) in zip(intervals, intervals[1:]):
        assert e1 <= s2, f"{n1} held the duties until {e1}, {n2} took over at {s2}"


def test_cli_refuses_what_cannot_be(cluster):
    bad = cluster.pvc("node", "primary", "hv9", check=False)
    assert bad.returncode != 0 and "unknown node" in bad.stderr


def test_kill9_primary_is_replaced(cluster):
    wait_until(lambda: primary_of(cluster), timeout=15)
    old = primary_of(cluster)
    with Observer(cluster.zookeeper, cluster.nodes) as observer:
        t0 = time.monotonic()
        cluster.dev.stop_node(old, signal.SIGKILL)
        new = wait_until(lambda: (p := primary_of(cluster)) and p != old and p, timeout=20)
        elapsed = time.monotonic() - t0
        assert new != old
        # The dead node no longer shows as holding the role.
        assert states(cluster)[old] not in PRIMARY_HOLDING
        cluster.dev.start_node(old)
        wait_until(lambda: states(cluster)[old] == "secondary", timeout=15)
        assert primary_of(cluster) == new  # a returning node does not take the role back
    assert observer.violations == []
    print(f"failover after kill -9: {elapsed:.2f} s")


def test_sigterm_primary_hands_over_at_once(cluster):
    wait_until(lambda: primary_of(cluster), timeout=15)
    old = primary_of(cluster)
    t0 = time.monotonic()
    cluster.dev.stop_node(old, signal.SIGTERM)
    new = wait_until(lambda: (p := primary_of(cluster)) and p != old and p, timeout=10)
    assert time.monotonic() - t0 < 10
    assert states(cluster)[old] == "secondary"
    cluster.dev.start_node(old)
    # The handover request machinery still works with the returning node.
    cluster.pvc("node", "primary", old, "--wait")
    assert primary_of(cluster) == old
    assert new != old


def test_pvc_node_primary_wait_fails_cleanly_when_target_dies(cluster):
    wait_until(lambda: primary_of(cluster), timeout=15)
    current = primary_of(cluster)
    target = next(n for n in cluster.nodes if n != current)
    cluster.dev.stop_node(target, signal.SIGTERM)
    refused = cluster.pvc("node", "primary", target, check=False)
    assert refused.returncode != 0 and "stop" in refused.stderr
    cluster.dev.start_node(target)
    wait_until(lambda: states(cluster)[target] == "secondary", timeout=15)


def test_primary_stops_duties_while_zookeeper_does_not_answer(cluster):
    """ZooKeeper (every server of the ensemble) frozen (SIGSTOP) for 2 s: the primary cannot vouch for its session, so it stops its
    duties within a third of the election session timeout; afterwards there is one primary again."""
    import os

    wait_until(lambda: primary_of(cluster), timeout=15)
    old = primary_of(cluster)
    log = Path(cluster.dev.node(old).pvcd_log)
    relinquished = log.read_text().count("primary_relinquish_started")
    zk_pids = [z.pid for z in cluster.dev.state.zookeeper_servers]
    frozen = time.monotonic()
    for zk_pid in zk_pids:
        os.kill(zk_pid, signal.SIGSTOP)
    try:
        wait_until(lambda: log.read_text().count("primary_relinquish_started") > relinquished, timeout=1.9,
                   interval=0.02)
    finally:
        time.sleep(max(0.0, 2.0 - (time.monotonic() - frozen)))
        for zk_pid in zk_pids:
            os.kill(zk_pid, signal.SIGCONT)
    assert "healthy=False" in log.read_text().rsplit("primary_relinquish_started", 1)[1].splitlines()[0]
    wait_until(lambda: primary_of(cluster), timeout=20)
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=20)
    intervals = duty_intervals(cluster)
    for (s1, e1, n1), (s2, _e2, n2) in zip(intervals, intervals[1:]):
        assert e1 <= s2, f"{n1} held the duties until {e1}, {n2} took over at {s2}"


@pytest.fixture(autouse=True)
def _no_stray_requests(cluster):
    yield
    # Every test leaves no pending hand-over behind.
    async def read():
        zk = ZK(cluster.zookeeper, request_timeout=5)
        await zk.start()
        try:
            return await zk.get_data(Paths.primary_handover)
        finally:
            await zk.close()

    wait_until(lambda: asyncio.run(read()) in (b"", None), timeout=15)
