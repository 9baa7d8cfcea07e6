"""Dead-node fencing on a real cluster: 3 nodes, each with a simulated BMC (ipmi_sim, real IPMI over
LAN on loopback) whose power-off kills the node's pvcd and stops its libvirtd (its VMs end)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import running_cluster, wait_until
from tests.integration.fencing_support import hosts_of, ipmi, others, truth

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 3, fencing=True)


def node(cluster, name: str) -> dict:
    return next(n for n in cluster.pvc_json("node", "list") if n["name"] == name)


def test_dead_node_is_fenced_and_its_vms_run_elsewhere_exactly_once(cluster):
    victim = others(cluster)[0]
    vms = ["fence-a", "fence-b"]
    for vm in vms:
        cluster.define(vm, node=victim, start=True)
    # An autostart VM too big for the survivors while their fillers run: left displaced by the recovery.
    survivors = [n["name"] for n in cluster.pvc_json("node", "list") if n["name"] != victim]
    cluster.define("fence-big", node=victim, memory_mib=2500, start=True, extra=("--autostart",))
    for i, name in enumerate(survivors):
        cluster.define(f"fence-fill{i}", node=name, memory_mib=2500, start=True)
    assert truth(cluster)[victim] >= set(vms)

    cluster.dev.stop_node(victim, signal.SIGKILL)  # the daemon dies; the host and its VMs keep running
    seen_twice: list = []

    def recovered() -> bool:
        for vm in vms:
            if len(hosts_of(cluster, vm)) > 1:
                seen_twice.append((vm, truth(cluster)))
        if node(cluster, victim)["daemon_state"] != "fenced":
            return False
        infos = [cluster.vm(vm) for vm in vms]
        return all(i["libvirt_state"] == "running" and i["node"] != victim for i in infos)

    # presence gone after the session timeout (3 s), dead after dead_after (3 s), then fence and start
    wait_until(recovered, timeout=25, interval=0.2)
    assert not seen_twice
    assert "off" in ipmi(cluster, victim, "chassis", "power", "status")
    assert cluster.dev.libvirtd(cluster.dev.node(victim)).pid is None  # powered off: its libvirtd is gone
    for vm in vms:
        info = cluster.vm(vm)
        assert hosts_of(cluster, vm) == [info["node"]]
        assert info["previous_node"] == victim
        assert info["failed_reason"] == f"recovered from fenced node {victim}"
    assert node(cluster, victim)["domain_state"] == "flushed"
    big = cluster.vm("fence-big")
    assert (big["node"], big["state"], big["libvirt_state"]) == (victim, "fail", "shutoff") and big["displaced"]
    assert hosts_of(cluster, "fence-big") == []

    # Room on a survivor again: its ready starts the displaced VM there, taken from the fenced node.
    cluster.pvc("vm", "stop", "fence-fill0", "--wait")
    wait_until(lambda: node(cluster, survivors[0])["memory_allocated_mib"] < 2500, timeout=30)
    cluster.pvc("node", "ready", survivors[0], "--wait")
    wait_until(lambda: hosts_of(cluster, "fence-big") == [survivors[0]], timeout=30)
    big = cluster.vm("fence-big")
    assert (big["node"], big["state"], big["displaced"]) == (survivors[0], "start", "")
    for name in ("fence-big", "fence-fill1"):
        cluster.pvc("vm", "stop", name, "--wait")

    # Power on (libvirtd boots, empty) and start the daemon: it runs again, flushed, and starts none
    # of the VMs that were recovered elsewhere.
    assert "Up/On" in ipmi(cluster, victim, "chassis", "power", "on")
    wait_until(lambda: cluster.dev.libvirtd(cluster.dev.node(victim)).pid, timeout=20)
    cluster.dev.start_node(victim)
    time.sleep(1.5)
    back = node(cluster, victim)
    assert (back["daemon_state"], back["domain_state"]) == ("run", "flushed")
    assert cluster.running_on(victim) == set()
    for vm in vms:
        assert hosts_of(cluster, vm) == [cluster.vm(vm)["node"]] and cluster.vm(vm)["node"] != victim


def test_node_without_ipmi_is_not_fenced_and_its_vms_stay(cluster):
    primary = next(n["name"] for n in cluster.pvc_json("node", "list") if n["coordinator_state"] == "primary")
    name = next(n for n in others(cluster) if node(cluster, n)["domain_state"] == "ready")
    spec = cluster.dev.node(name)
    config = yaml.safe_load(Path(spec.config).read_text())
    del config["fencing"]["ipmi"]
    Path(spec.config).write_text(yaml.safe_dump(config))
    cluster.dev.stop_node(name)
    cluster.dev.start_node(name)
    cluster.define("noipmi", node=name, start=True)

    cluster.dev.stop_node(name, signal.SIGKILL)
    log = Path(cluster.dev.node(primary).pvcd_log)
    wait_until(lambda: "no IPMI configured" in log.read_text() and node(cluster, name)["daemon_state"] == "dead",
               timeout=20, interval=0.2)
    time.sleep(4)  # past a retry: still nothing may move, the VM may well be running there
    info = cluster.vm("noipmi")
    assert (info["node"], info["state"]) == (name, "start")
    assert hosts_of(cluster, "noipmi") == [name]
    assert node(cluster, name)["daemon_state"] == "dead"
    assert "on" in ipmi(cluster, name, "chassis", "power", "status")

    cluster.dev.start_node(name)  # the daemon comes back and adopts its VM: nothing was lost
    assert node(cluster, name)["daemon_state"] == "run"
    assert hosts_of(cluster, "noipmi") == [name]
