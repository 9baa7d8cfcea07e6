"""Every VM verb of the CLI against a real 3-node cluster; libvirt's truth checked with virsh."""

from __future__ import annotations


from tests.conftest import domain_xml, wait_until


def test_node_list_and_info(cluster):
    nodes = cluster.pvc_json("node", "list")
    assert [n["name"] for n in nodes] == ["hv1", "hv2", "hv3"]
    for n in nodes:
        assert n["daemon_state"] == "run"
        assert n["domain_state"] == "ready"
        assert n["daemon_mode"] == "coordinator"
        assert n["memory_total_mib"] > 0
        for field in ("coordinator_state", "domains_count", "memory_free_mib", "memory_allocated_mib",
                      "vcpus_allocated", "load"):
            assert field in n
    info = cluster.pvc_json("node", "info", "hv2")
    assert info["name"] == "hv2"
    table = cluster.pvc("node", "list").stdout
    assert "hv1" in table and "run" in table


def test_define_places_by_target_and_selector(cluster):
    on_hv3 = cluster.define("placed-target", node="hv3")
    assert on_hv3["node"] == "hv3" and on_hv3["state"] == "stop"
    # With "vms" every node has the fewest VMs by turns; ties go by name.
    cluster.tmp.joinpath("sel.xml").write_text(domain_xml("placed-selector"))
    cluster.pvc("vm", "define", str(cluster.tmp / "sel.xml"), "--selector", "vms")
    assert cluster.vm("placed-selector")["node"] in cluster.nodes
    assert "placed-target" not in cluster.running_on("hv3")


def test_start_stop_shutdown_restart_disable(cluster):
    vm = cluster.define("life1", node="hv2", memory_mib=128, vcpus=2)
    out = cluster.pvc("vm", "start", "life1", "--wait").stdout
    assert "running" in out
    assert cluster.where_running("life1") == ["hv2"]
    info = cluster.vm("life1")
    assert (info["state"], info["libvirt_state"], info["node"]) == ("start", "running", "hv2")
    assert info["memory_mib"] == 128 and info["vcpus"] == 2 and info["uuid"] == vm["uuid"]

    cluster.pvc("vm", "shutdown", "life1", "--wait")
    assert cluster.where_running("life1") == []
    assert cluster.vm("life1")["state"] == "stop"

    cluster.pvc("vm", "start", vm["uuid"], "--wait")  # by UUID
    dom_id = cluster.virsh("hv2", "domid", "life1").stdout.strip()
    cluster.pvc("vm", "restart", "life1", "--wait")
    assert cluster.where_running("life1") == ["hv2"]
    assert cluster.virsh("hv2", "domid", "life1").stdout.strip() != dom_id  # a new domain: really restarted
    assert cluster.vm("life1")["state"] == "start"

    cluster.pvc("vm", "stop", "life1", "--wait")
    assert cluster.where_running("life1") == []
    info = cluster.vm("life1")
    assert (info["state"], info["libvirt_state"]) == ("stop", "shutoff")

    cluster.pvc("vm", "start", "life1", "--wait")
    cluster.pvc("vm", "disable", "life1", "--wait")
    assert cluster.where_running("life1") == []
    assert cluster.vm("life1")["state"] == "disable"


def test_start_without_wait_reaches_running(cluster):
    cluster.define("nowait", node="hv1")
    out = cluster.pvc("vm", "start", "nowait").stdout
    assert "start" in out
    wait_until(lambda: cluster.where_running("nowait") == ["hv1"])
    wait_until(lambda: cluster.vm("nowait")["libvirt_state"] == "running")


def test_list_filters_and_json_fields(cluster):
    cluster.define("filt-a", node="hv1")
    cluster.define("filt-b", node="hv3")
    cluster.pvc("vm", "start", "filt-b", "--wait")
    on_hv3 = {v["name"] for v in cluster.pvc_json("vm", "list", "--node", "hv3")}
    assert "filt-b" in on_hv3 and "filt-a" not in on_hv3
    started = {v["name"] for v in cluster.pvc_json("vm", "list", "--state", "start")}
    assert "filt-b" in started and "filt-a" not in started
    every = cluster.pvc_json("vm", "list")
    for v in every:
        for field in ("name", "uuid", "state", "node", "previous_node", "failed_reason", "memory_mib", "vcpus"):
            assert field in v
    table = cluster.pvc("vm", "list").stdout
    assert "filt-a" in table and "\x1b[" not in table  # no colour when piped


def test_dump_modify_undefine(cluster):
    vm = cluster.define("mod1", node="hv1")
    dumped = cluster.pvc("vm", "dump", "mod1").stdout
    assert "<name>mod1</name>" in dumped and vm["uuid"] in dumped

    new = cluster.tmp / "mod1-new.xml"
    new.write_text(domain_xml("mod1-renamed", uuid=vm["uuid"], memory_mib=512, vcpus=4))
    cluster.pvc("vm", "modify", "mod1", str(new))
    info = cluster.vm("mod1-renamed")
    assert (info["memory_mib"], info["vcpus"], info["uuid"]) == (512, 4, vm["uuid"])
    assert cluster.pvc("vm", "info", "mod1", check=False).returncode != 0
    assert "<vcpu>4</vcpu>" in cluster.pvc("vm", "dump", "mod1-renamed").stdout

    # The modified XML is what the next start uses.
    cluster.pvc("vm", "start", "mod1-renamed", "--wait")
    assert "mod1-renamed" in cluster.running_on("hv1")
    refused = cluster.pvc("vm", "undefine", "mod1-renamed", "--yes", check=False)
    assert refused.returncode != 0 and "stop it" in refused.stderr
    cluster.pvc("vm", "stop", "mod1-renamed", "--wait")
    cluster.pvc("vm", "undefine", "mod1-renamed", "--yes")
    assert all(v["name"] != "mod1-renamed" for v in cluster.pvc_json("vm", "list"))
    # The name is free again.
    cluster.define("mod1-renamed", node="hv2")


def test_vm_destroyed_behind_pvcs_back_is_noticed(cluster):
    cluster.define("victim", node="hv3")
    cluster.pvc("vm", "start", "victim", "--wait")
    cluster.virsh("hv3", "destroy", "victim")
    info = wait_until(lambda: (v := cluster.vm("victim"))["state"] == "stop" and v, timeout=1.5)
    assert info["libvirt_state"] == "shutoff"
    assert "destroyed outside pvc" in info["failed_reason"]
    assert cluster.where_running("victim") == []  # not restarted behind the operator's back
    cluster.pvc("vm", "start", "victim", "--wait")
    assert cluster.vm("victim")["failed_reason"] == ""


def test_keepalive_reports_running_domains(cluster):
    cluster.define("counted", node="hv2", memory_mib=100, vcpus=3)
    cluster.pvc("vm", "start", "counted", "--wait")
    uuid = cluster.vm("counted")["uuid"]
    node = wait_until(lambda: (n := cluster.pvc_json("node", "info", "hv2")) and uuid in n["running_domains"] and n)
    assert node["memory_allocated_mib"] >= 100
    assert node["vcpus_allocated"] >= 3
    assert node["domains_count"] == len(cluster.running_on("hv2"))
