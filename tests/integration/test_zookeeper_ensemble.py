"""ZooKeeper as in production: a 3-server ensemble on the coordinators. A daemon keeps its session
through the loss of any one server; losing quorum pauses work, regaining it resumes; restarting the
whole ensemble heals without an operator. Faults go through the devcluster's fault verbs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pvc.devcluster.proc import is_running
from pvc.schema import Paths
from pvc.zk import ZK
from tests.conftest import wait_until


@pytest.fixture(autouse=True)
def _all_servers_back(cluster):
    yield
    if any(not is_running(z.pid) for z in cluster.dev.state.zookeeper_servers):
        cluster.dev.start_zookeeper()
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=30)


class StateRecorder:
    """Every value a node's daemon_state takes and the session owning its `alive` node, seen by a
    client of its own (watches, not polling) while faults happen."""

    def __init__(self, cluster, node: str) -> None:
        self.zookeeper, self.node = cluster.zookeeper, node
        self.states: list[str] = []
        self.owners: set[int] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        zk = ZK(self.zookeeper, request_timeout=10)
        await zk.start()
        try:
            zk.watch_data(Paths.node_key(self.node, "daemon_state"),
                          lambda data, _v: self.states.append((data or b"").decode()))
            zk.watch_data(Paths.node_key(self.node, "alive"), lambda data, _v: self._alive(zk, data))
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await zk.close()

    async def _alive(self, zk: ZK, data) -> None:
        if data is None:
            self.owners.add(0)
        else:
            self.owners.add((await zk.stat(Paths.node_key(self.node, "alive"))).ephemeral_owner)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30)
        wait_until(lambda: self.states and self.owners, timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def test_losing_the_server_a_daemon_uses_changes_nothing(cluster):
    """kill -9 of the server hv1's daemon is connected to: it moves to another server in the same
    session (daemon_state stays run, its `alive` node keeps its owner) and a `vm start --wait`
    issued meanwhile works."""
    cluster.define("ens1", node="hv1")
    victim = cluster.dev.zookeeper_server_of("hv1")
    assert victim is not None
    pid = cluster.dev.node("hv1").pvcd_pid
    with StateRecorder(cluster, "hv1") as seen:
        cluster.dev.kill_zookeeper(victim)
        cluster.pvc("vm", "start", "ens1", "--wait", timeout=60)
        wait_until(lambda: cluster.dev.zookeeper_server_of("hv1") not in (None, victim), timeout=20)
    assert cluster.where_running("ens1") == ["hv1"]
    assert seen.states == ["run"], seen.states
    assert len(seen.owners) == 1 and 0 not in seen.owners, seen.owners
    assert cluster.dev.node("hv1").pvcd_pid == pid and is_running(pid)
    assert "zookeeper_session_renewed" not in open(cluster.dev.node("hv1").pvcd_log).read()
    cluster.dev.start_zookeeper(victim)
    cluster.pvc("vm", "stop", "ens1", "--wait")


def test_every_server_in_turn(cluster):
    """Each server of the ensemble (leader and followers alike) killed and started again in turn:
    no daemon loses its session."""
    logs = {n: open(cluster.dev.node(n).pvcd_log).read().count("zookeeper_session_renewed") for n in cluster.nodes}
    for index in cluster.dev.zookeeper_indexes:
        cluster.dev.kill_zookeeper(index)
        assert [n["daemon_state"] for n in cluster.pvc_json("node", "list")] == ["run"] * len(cluster.nodes)
        cluster.dev.start_zookeeper(index)
    after = {n: open(cluster.dev.node(n).pvcd_log).read().count("zookeeper_session_renewed") for n in cluster.nodes}
    assert after == logs


def test_cli_with_a_frozen_server(cluster):
    """A server that accepts connections but never answers (SIGSTOP: the kernel still accepts) does
    not hold the CLI: it gives up on that server and uses another."""
    import os
    import signal

    pid = cluster.dev.zookeeper_spec(1).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(6):  # aiozk picks the first server at random
            assert len(cluster.pvc_json("node", "list")) == len(cluster.nodes)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_quorum_lost_then_regained(cluster):
    """Two of three servers gone (longer than the session timeout): nothing can be read or
    written, the CLI says so in one line; once a quorum is back the daemons carry on (same
    processes, same sessions: without a quorum no session expires) and work resumes."""
    cluster.define("ens2", node="hv2")
    pids = {n.name: n.pvcd_pid for n in cluster.dev.state.nodes}
    renewed = {n: open(cluster.dev.node(n).pvcd_log).read().count("zookeeper_session_renewed") for n in pids}
    first, second, _ = cluster.dev.zookeeper_indexes
    cluster.dev.kill_zookeeper(first)
    cluster.dev.kill_zookeeper(second)
    refused = cluster.pvc("--timeout", "2", "vm", "start", "ens2", check=False)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "is a majority of the ensemble running?" in refused.stderr
    import time

    time.sleep(4)  # past the 3 s session timeout the devcluster configures
    cluster.dev.start_zookeeper(first)  # a quorum again
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=30)
    cluster.pvc("vm", "start", "ens2", "--wait", timeout=60)
    assert cluster.where_running("ens2") == ["hv2"]
    cluster.dev.start_zookeeper(second)
    assert {n.name: n.pvcd_pid for n in cluster.dev.state.nodes} == pids
    assert all(is_running(p) for p in pids.values())
    assert {n: open(cluster.dev.node(n).pvcd_log).read().count("zookeeper_session_renewed") for n in pids} == renewed
    cluster.pvc("vm", "stop", "ens2", "--wait")


def test_whole_ensemble_killed_and_restarted_heals(cluster):
    cluster.define("ens3", node="hv3")
    pids = {n.name: n.pvcd_pid for n in cluster.dev.state.nodes}
    for index in cluster.dev.zookeeper_indexes:
        cluster.dev.kill_zookeeper(index)
    cluster.dev.start_zookeeper()
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=30)
    cluster.pvc("vm", "start", "ens3", "--wait", timeout=60)
    assert cluster.where_running("ens3") == ["hv3"]
    assert all(is_running(p) for p in pids.values())
    cluster.pvc("vm", "stop", "ens3", "--wait")
