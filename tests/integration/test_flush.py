"""Node flush and ready under the cluster-wide flush lock, on a real 4-node cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def cluster4(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 4)


def progress(cluster, node: str) -> dict:
    """The node's flush progress record, read as any ZooKeeper client would."""
    import asyncio

    from pvc.schema import Paths
    from pvc.zk import ZK

    async def read():
        zk = ZK(cluster.zookeeper)
        await zk.start()
        try:
            data = await zk.get_data(Paths.node_key(node, "flush_progress"))
            return json.loads(data) if data else {}
        finally:
            await zk.close()

    return asyncio.run(read())


def node_state(cluster, node: str) -> str:
    return cluster.pvc_json("node", "info", node)["domain_state"]


def assert_each_vm_once(cluster, names):
    """libvirt's truth: every VM runs on exactly one node."""
    running = {n: cluster.running_on(n) for n in cluster.nodes}
    for name in names:
        where = [n for n, doms in running.items() if name in doms]
        assert len(where) == 1, (name, where)


def test_flush_and_ready_with_wait(cluster4):
    c = cluster4
    names = c.define_many("fr", 6, "hv1")
    c.define("fr-cold", node="hv1")  # a stopped VM is reassigned too
    proc = c.pvc("node", "flush", "hv1", "--wait")
    for name in names:
        assert f"{name} -> " in proc.stdout
    assert "Node hv1 is flushed" in proc.stdout
    assert node_state(c, "hv1") == "flushed"
    assert c.running_on("hv1") == set()
    for v in c.pvc_json("vm", "list"):
        if v["name"].startswith("fr"):
            assert v["node"] != "hv1" and v["previous_node"] == "hv1"
    assert c.vm("fr-cold")["state"] == "stop"
    assert_each_vm_once(c, names)

    proc = c.pvc("node", "ready", "hv1", "--wait")
    assert "Node hv1 is ready" in proc.stdout
    assert node_state(c, "hv1") == "ready"
    assert set(names) <= c.running_on("hv1")
    for v in c.pvc_json("vm", "list"):
        if v["name"].startswith("fr"):
            assert (v["node"], v["previous_node"]) == ("hv1", "")
    assert_each_vm_once(c, names)


def test_flush_without_wait_returns_at_once(cluster4):
    c = cluster4
    c.define_many("nw", 3, "hv2")
    proc = c.pvc("node", "flush", "hv2")
    assert proc.returncode == 0
    wait_until(lambda: node_state(c, "hv2") == "flushed", timeout=30)
    assert c.running_on("hv2") == set()
    c.pvc("node", "unflush", "hv2", "--wait")  # the alias
    assert node_state(c, "hv2") == "ready"


class HeldLock:
    """Another operation holding the flush lock: a contender of our own, through the same recipe."""

    def __init__(self, cluster):
        import asyncio
        import threading

        from pvc.schema import LockEntry, Paths
        from pvc.zk import ZK
        from pvc.zk_lock import QueueLock

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def take():
            self.zk = ZK(cluster.zookeeper)
            await self.zk.start()
            self.lock = QueueLock(self.zk, Paths.flush_lock, LockEntry(node="maintenance", op="flush", id="t").encode())
            await self.lock.acquire()

        asyncio.run_coroutine_threadsafe(take(), self.loop).result(10)

    def release(self):
        import asyncio

        async def drop():
            await self.lock.release()
            await self.zk.close()

        asyncio.run_coroutine_threadsafe(drop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_queued_flushes_run_in_request_order(cluster4):
    c = cluster4
    groups = {node: c.define_many(f"q{node}-", 12, node) for node in ("hv1", "hv2", "hv3")}
    all_names = [n for g in groups.values() for n in g]
    before = {v["name"]: v["node"] for v in c.pvc_json("vm", "list")}
    held = HeldLock(c)
    try:
        # Requested one after another while the lock is busy: each queues behind the previous.
        outputs = [c.pvc("node", "flush", node) for node in ("hv1", "hv2", "hv3")]
        for i, out in enumerate(outputs):
            assert "the flush lock is held by node maintenance" in out.stderr
            assert f"number {i + 1} in the queue" in out.stderr
        assert all(progress(c, n)["status"] == "queued" for n in ("hv1", "hv2", "hv3"))
    finally:
        held.release()
    for node in ("hv1", "hv2", "hv3"):
        wait_until(lambda n=node: progress(c, n).get("status") == "done", timeout=90)
    runs = [progress(c, n) for n in ("hv1", "hv2", "hv3")]
    # One after another, in request order, never overlapping.
    for earlier, later in zip(runs, runs[1:]):
        assert earlier["finished"] <= later["started"]
    # No VM moved twice: queued nodes are not ready, so everything went to hv4 directly.
    moved = [m["name"] for r in runs for m in r["moved"]]
    assert len(moved) == len(set(moved))
    assert set(moved) == {name for name, node in before.items() if node in ("hv1", "hv2", "hv3")}
    assert all(m["target"] == "hv4" for r in runs for m in r["moved"])
    assert set(all_names) <= c.running_on("hv4")
    assert_each_vm_once(c, all_names)
    for node in ("hv1", "hv2", "hv3"):
        c.pvc("node", "ready", node, "--wait")
    assert_each_vm_once(c, all_names)
    for node, names in groups.items():
        assert set(names) <= c.running_on(node)


def test_flushes_requested_at_once_all_complete(cluster4):
    c = cluster4
    names = [n for node in ("hv1", "hv2") for n in c.define_many(f"at{node}-", 8, node)]
    procs = [subprocess.Popen(["pvc", "node", "flush", node, "--wait"], env=c.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for node in ("hv1", "hv2")]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    a, b = sorted((progress(c, n) for n in ("hv1", "hv2")), key=lambda r: r["started"])
    assert a["finished"] <= b["started"]
    assert c.running_on("hv1") == c.running_on("hv2") == set()
    assert_each_vm_once(c, names)
    for node in ("hv1", "hv2"):
        c.pvc("node", "ready", node, "--wait")
    assert_each_vm_once(c, names)


def test_wait_reports_the_lock_and_follows(cluster4):
    c = cluster4
    c.define_many("lk1-", 40, "hv1")
    c.define_many("lk2-", 2, "hv2")
    held = HeldLock(c)
    first = subprocess.Popen(["pvc", "node", "flush", "hv1", "--wait"], env=c.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: progress(c, "hv1").get("status") == "queued", timeout=30)
    second = subprocess.Popen(["pvc", "node", "flush", "hv2", "--wait"], env=c.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: progress(c, "hv2").get("status") == "queued", timeout=30)
    time.sleep(0.5)
    held.release()
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    # Told who holds the lock and where it stands, and again as the queue moved.
    assert "Waiting: the flush lock is held by node maintenance (flush); this request is number 1" in err1
    assert "Waiting: the flush lock is held by node maintenance (flush); this request is number 2" in err2
    assert "Waiting: the flush lock is held by node hv1 (flush); this request is number 1" in err2
    # Then followed the flush VM by VM.
    assert "lk1-000 -> " in out1 and "Node hv1 is flushed" in out1
    assert "lk2-000 -> " in out2 and "Node hv2 is flushed" in out2
    assert progress(c, "hv1")["finished"] <= progress(c, "hv2")["started"]
    for node in ("hv1", "hv2"):
        c.pvc("node", "ready", node, "--wait")


def request_now(cluster, node: str, op: str) -> None:
    """Ask for a flush or ready through the operations layer in this process (no CLI start-up)."""
    import asyncio

    from pvc.ops import registry
    from pvc.ops.flush import FlushParams
    from pvc.zk import ZK

    async def ask():
        zk = ZK(cluster.zookeeper)
        await zk.start()
        try:
            await registry.call(registry.Context(zk), "flush.start" if op == "flush" else "flush.ready",
                                FlushParams(node=node))
        finally:
            await zk.close()

    asyncio.run(ask())


class Frozen:
    """Pause some nodes' daemons (SIGSTOP) for less than the session timeout: a migration to them
    stays in flight, which holds a flush at a known point."""

    def __init__(self, cluster, nodes):
        self.dev, self.nodes = cluster.dev, nodes

    def __enter__(self):
        for node in self.nodes:
            self.dev.freeze_node(node)
        return self

    def __exit__(self, *exc):
        for node in self.nodes:
            self.dev.thaw_node(node)


def test_ready_during_flush_cancels_it(cluster4):
    c = cluster4
    names = c.define_many("cx", 10, "hv3")
    base = len(c.running_on("hv3"))
    # Queued behind a held lock first: the flush starts the moment the lock is released, well
    # within the paused daemons' session timeout (a CLI starting up may take longer on a busy host).
    held = HeldLock(c)
    flushing = subprocess.Popen(["pvc", "node", "flush", "hv3", "--wait"], env=c.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: progress(c, "hv3").get("status") == "queued", timeout=30)
    with Frozen(c, ["hv1", "hv2", "hv4"]):
        held.release()
        # The first VM has left hv3 and waits for its (paused) target: the flush is mid-way.
        wait_until(lambda: progress(c, "hv3").get("status") == "running" and len(c.running_on("hv3")) < base)
        request_now(c, "hv3", "ready")
    ready = c.pvc("node", "ready", "hv3", "--wait", timeout=120)
    assert "Node hv3 is ready" in ready.stdout
    out, err = flushing.communicate(timeout=60)
    assert flushing.returncode != 0 and "cancelled by a ready request" in err
    assert node_state(c, "hv3") == "ready"
    # The flush stopped after the VM in flight: the rest never left. Everything is home, once.
    assert set(names) <= c.running_on("hv3")
    assert_each_vm_once(c, names)
    assert all(c.vm(n)["previous_node"] == "" for n in names)


def test_kill9_of_flushing_daemon_frees_the_lock(cluster4):
    c = cluster4
    names = c.define_many("kd", 10, "hv1")
    others = c.define_many("ko", 2, "hv2")
    base = len(c.running_on("hv1"))
    with Frozen(c, ["hv3", "hv4"]):
        c.pvc("node", "flush", "hv1")
        wait_until(lambda: progress(c, "hv1").get("status") == "running" and len(c.running_on("hv1")) < base)
        c.pvc("node", "flush", "hv2")  # queued behind hv1
        c.dev.stop_node("hv1", signal.SIGKILL)
    # hv1's session ends, its lock entry goes, and the queued flush proceeds.
    wait_until(lambda: progress(c, "hv2").get("status") == "done", timeout=60)
    assert not progress(c, "hv2")["failed"]
    assert not c.running_on("hv2") & set(others)
    # The half-flushed node is visible as such.
    assert node_state(c, "hv1") == "flush"
    assert progress(c, "hv1")["status"] == "running"
    # Nothing runs twice, nothing is lost.
    every = {v["name"]: v for v in c.pvc_json("vm", "list")}
    assert set(names + others) <= set(every)
    assert_each_vm_once(c, [n for n in names if every[n]["state"] != "migrate"])
    # Restarted, hv1 finishes the flush it was asked for.
    c.dev.start_node("hv1")
    wait_until(lambda: progress(c, "hv1").get("status") == "done", timeout=90)
    assert node_state(c, "hv1") == "flushed"
    assert c.running_on("hv1") == set()
    assert_each_vm_once(c, names + others)


def test_flush_refusals(cluster4):
    c = cluster4
    proc = c.pvc("node", "flush", "nosuch", check=False)
    assert proc.returncode != 0 and "unknown node" in proc.stderr
    c.dev.stop_node("hv4", signal.SIGTERM)
    try:
        proc = c.pvc("node", "flush", "hv4", check=False)
        assert proc.returncode != 0 and "needs it running" in proc.stderr
    finally:
        c.dev.start_node("hv4")


def test_unmovable_vm_is_named(tmp_path_factory):
    """A VM that fits nowhere (policy leave): the flush completes and names it, exit non-zero."""
    for c in running_cluster(tmp_path_factory, 2):
        c.define("big", node="hv1", memory_mib=3000, start=True)
        c.define("bigger", node="hv2", memory_mib=3000, start=True)
        proc = c.pvc("node", "flush", "hv1", "--wait", check=False)
        assert proc.returncode != 0
        assert "big: not moved" in proc.stderr and "left running" in proc.stderr
        assert "1 VM did not move: big" in proc.stderr
        assert c.where_running("big") == ["hv1"]


def test_disabled_vms_stay_out_of_flush_and_ready_and_the_summary_says_how_vms_moved(cluster4):
    c = cluster4
    c.define("dis-off", node="hv2", start=True)
    c.pvc("vm", "disable", "dis-off", "--wait")
    c.define("dis-run", node="hv2", start=True)
    c.define("dis-cold", node="hv2")
    proc = c.pvc("node", "flush", "hv2", "--wait")
    assert "dis-off" not in proc.stdout
    assert "dis-run -> " in proc.stdout and "(shut down and restarted there)" in proc.stdout
    assert "dis-cold -> " in proc.stdout and "(was not running)" in proc.stdout
    assert "1 shut down and restarted there" in proc.stdout and "1 was not running" in proc.stdout
    info = c.vm("dis-off")
    assert (info["node"], info["state"], info["previous_node"]) == ("hv2", "disable", "")
    proc = c.pvc("node", "ready", "hv2", "--wait")
    assert "dis-off" not in proc.stdout
    assert c.vm("dis-off")["node"] == "hv2"
    assert c.vm("dis-run")["node"] == "hv2" and c.where_running("dis-run") == ["hv2"]
    for name in ("dis-run",):
        c.pvc("vm", "stop", name, "--wait")


def test_dry_run_shows_the_plan_that_a_flush_at_concurrency_3_then_follows(cluster4):
    c = cluster4
    c.dev.restart_node_with("hv4", "vm", flush_concurrency=3)
    names = c.define_many("cc", 5, "hv4", memory_mib=400)
    c.define_many("zz-big", 1, "hv4", memory_mib=2900)  # fits on no other node (3072 MiB each)
    big = "zz-big000"
    before = {v["name"]: v["node"] for v in c.pvc_json("vm", "list")}

    # The preview changes nothing and says where each VM goes and why, and what cannot move.
    table = c.pvc("node", "flush", "hv4", "--dry-run")
    assert "3 migrations at once" in table.stdout and "1 cannot move" in table.stdout
    plan = c.pvc_json("node", "flush", "hv4", "--dry-run")
    moves = {m["vm"]: m for m in plan["moves"]}
    # (hv4 may hold VMs of earlier tests too: the plan covers them as well.)
    assert {*names, big} <= set(moves) and plan["concurrency"] == 3
    assert all(moves[n]["target"] not in ("", "hv4") and moves[n]["selector"] == "mem"
               and moves[n]["available_mib"] >= 400 for n in names)
    assert moves[big]["target"] == "" and "not enough free memory" in moves[big]["reason"]
    assert moves[big]["outcome"] == "left running"
    assert {v["name"]: v["node"] for v in c.pvc_json("vm", "list")} == before
    assert node_state(c, "hv4") == "ready" and {*names, big} <= c.running_on("hv4")

    # The flush follows that very plan, VM by VM, three at a time at most.
    proc = c.pvc("node", "flush", "hv4", "--wait", check=False)
    assert proc.returncode != 0 and f"{big}: not moved: no eligible target node" in proc.stderr
    assert "left running (policy leave)" in proc.stderr
    for name, move in moves.items():
        if move["target"]:
            assert f"{name} -> {move['target']} (" in proc.stdout
    record = progress(c, "hv4")
    assert record["concurrency"] == 3 and 1 < record["peak"] <= 3 and record["moving"] == []
    # No node holds more than it has.
    for n in c.pvc_json("node", "list"):
        assert n["memory_allocated_mib"] <= n["memory_total_mib"], n
    assert c.where_running(big) == ["hv4"]
    assert_each_vm_once(c, names)

    c.pvc("vm", "stop", big, "--wait")
    c.pvc("node", "ready", "hv4", "--wait")
    assert set(names) <= c.running_on("hv4")
