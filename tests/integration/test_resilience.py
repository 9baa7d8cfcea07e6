"""The daemon against failures: kill -9 and restart, ZooKeeper restarts, session loss."""

from __future__ import annotations

import signal
import time

from tests.conftest import wait_until


def test_pvcd_kill9_and_restart_adopts_running_vms(cluster):
    for name in ("adopt1", "adopt2"):
        cluster.define(name, node="hv2")
        cluster.pvc("vm", "start", name, "--wait")
    domids = {n: cluster.virsh("hv2", "domid", n).stdout.strip() for n in ("adopt1", "adopt2")}

    cluster.dev.stop_node("hv2", signal.SIGKILL)
    # The VMs keep running without their daemon, and the cluster sees the daemon as dead.
    assert {"adopt1", "adopt2"} <= cluster.running_on("hv2")
    wait_until(lambda: cluster.pvc_json("node", "info", "hv2")["daemon_state"] == "dead", timeout=15)
    # A request made meanwhile is refused by --wait with the reason, but recorded.
    late = cluster.pvc("vm", "stop", "adopt2", "--wait", check=False)
    assert late.returncode != 0 and "not running" in late.stderr

    cluster.dev.start_node("hv2")
    # Adopted, not restarted: the same libvirt domain ids.
    assert cluster.virsh("hv2", "domid", "adopt1").stdout.strip() == domids["adopt1"]
    assert cluster.vm("adopt1")["state"] == "start"
    # The request recorded while the daemon was down is carried out.
    wait_until(lambda: cluster.where_running("adopt2") == [])
    wait_until(lambda: cluster.vm("adopt2")["libvirt_state"] == "shutoff")
    # And the adopted VM is under control again.
    cluster.pvc("vm", "stop", "adopt1", "--wait")
    assert cluster.where_running("adopt1") == []


def test_sigterm_leaves_vms_running(cluster):
    cluster.define("calm", node="hv3")
    cluster.pvc("vm", "start", "calm", "--wait")
    cluster.dev.stop_node("hv3", signal.SIGTERM)
    assert cluster.pvc_json("node", "info", "hv3")["daemon_state"] == "stop"
    assert "calm" in cluster.running_on("hv3")
    assert cluster.vm("calm")["state"] == "start"
    cluster.dev.start_node("hv3")
    cluster.pvc("vm", "shutdown", "calm", "--wait")
    assert cluster.where_running("calm") == []


def test_zookeeper_restart_is_survived(cluster):
    cluster.define("zkr", node="hv1")
    pids = {n.name: n.pvcd_pid for n in cluster.dev.state.nodes}
    cluster.dev.restart_zookeeper()  # the whole ensemble
    # Daemons stay up and keep (or re-establish) their registration.
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=20)
    from pvc.devcluster.proc import is_running

    assert all(is_running(pid) for pid in pids.values())
    cluster.pvc("vm", "start", "zkr", "--wait", timeout=30)
    assert cluster.where_running("zkr") == ["hv1"]


def test_zookeeper_down_for_a_while(cluster):
    cluster.define("zkdown", node="hv1")
    cluster.dev.stop_zookeeper()  # the whole ensemble
    time.sleep(4.5)  # longer than the 3 s session timeout the devcluster configures
    cluster.dev.start_zookeeper()
    wait_until(lambda: all(n["daemon_state"] == "run" for n in cluster.pvc_json("node", "list")), timeout=30)
    cluster.pvc("vm", "start", "zkdown", "--wait", timeout=30)
    assert cluster.where_running("zkdown") == ["hv1"]


def test_session_expiry_reregisters_presence(cluster):
    """A daemon frozen past its session timeout loses its session: its ephemeral presence
    vanishes. Once it runs again it must notice, take a new session and re-create what it owned,
    and its watches must work again."""
    cluster.define("sess", node="hv3")
    cluster.dev.freeze_node("hv3")
    try:
        wait_until(lambda: cluster.pvc_json("node", "info", "hv3")["daemon_state"] == "dead", timeout=15)
    finally:
        cluster.dev.thaw_node("hv3")
    wait_until(lambda: cluster.pvc_json("node", "info", "hv3")["daemon_state"] == "run", timeout=15)
    cluster.pvc("vm", "start", "sess", "--wait", timeout=30)
    assert cluster.where_running("sess") == ["hv3"]
    # The watches were re-armed too: a VM killed behind pvc's back is still noticed.
    cluster.virsh("hv3", "destroy", "sess")
    wait_until(lambda: cluster.vm("sess")["state"] == "stop", timeout=3)
    log = open(cluster.dev.node("hv3").pvcd_log).read()
    assert "zookeeper_session_renewed" in log


def test_libvirtd_restart_is_survived(cluster):
    """libvirtd goes away and comes back (the test driver forgets its domains, like a host whose
    hypervisor restarted): the daemon reconnects, re-reads libvirt's truth and carries out the
    recorded intent again: VMs meant to run run once more, stopped ones stay stopped."""
    cluster.define("lv-on", node="hv1", start=True)
    cluster.define("lv-off", node="hv1")
    pvcd_pid = cluster.dev.node("hv1").pvcd_pid
    cluster.dev.kill_libvirtd("hv1")
    cluster.dev.start_libvirtd("hv1")
    wait_until(lambda: "lv-on" in cluster.running_on("hv1"), timeout=20)
    assert cluster.where_running("lv-on") == ["hv1"]
    assert "lv-off" not in cluster.running_on("hv1")
    from pvc.devcluster.proc import is_running

    assert is_running(pvcd_pid)
    log = open(cluster.dev.node("hv1").pvcd_log).read()
    assert "libvirt_reconnected" in log
    cluster.pvc("vm", "stop", "lv-on", "--wait")
    assert cluster.where_running("lv-on") == []
