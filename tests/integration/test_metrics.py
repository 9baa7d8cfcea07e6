"""pvcd's /metrics (docs/metrics.md) on a real local cluster: what each node says about itself and
its VMs, what only the primary says about the cluster, and that the figures follow changes
(a VM stopped, libvirt gone, ZooKeeper restarted)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_cluster, wait_until

MIB = 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 2)


def scrape(cluster, node: str) -> dict[tuple, float]:
    """{(sample name, (label, value), ...): value} of one node's /metrics."""
    url = next(n["metrics_url"] for n in cluster.dev.info() if n["name"] == node)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, *sorted(labels.items())))


def names(samples: dict) -> set[str]:
    return {key[0] for key in samples}


def vms(samples: dict) -> set[str]:
    """The VMs a node's pvc_vm_info lists."""
    return {dict(key[1:])["vm"] for key in samples if key[0] == "pvc_vm_info"}


def test_node_vm_and_cluster_figures(cluster):
    cluster.define("idle", node="hv1")  # defined, stopped
    cluster.define("mvm", node="hv2", memory_mib=96, vcpus=3, start=True)
    console = Path(cluster.dev.node("hv2").console_log_directory, "mvm.log")
    console.write_bytes(b"x" * 1234)

    hv1, hv2 = scrape(cluster, "hv1"), scrape(cluster, "hv2")
    # Each node about itself: the VM runs on hv2 and is counted there only.
    assert value(hv2, "pvc_node_vms", node="hv2", state="start") == 1
    assert value(hv1, "pvc_node_vms", node="hv1", state="start") == 0
    assert value(hv1, "pvc_node_vms", node="hv1", state="stop") == 1
    # What libvirt runs, as libvirt says (the test driver may bring back its built-in domain "test").
    assert "mvm" in cluster.running_on("hv2")
    assert value(hv2, "pvc_node_domains_running", node="hv2") == len(cluster.running_on("hv2"))
    assert value(hv2, "pvc_node_memory_allocated_bytes", node="hv2") == 96 * MIB
    assert value(hv2, "pvc_node_vcpus_allocated", node="hv2") == 3
    assert value(hv1, "pvc_node_vcpus_allocated", node="hv1") == 0
    assert value(hv2, "pvc_node_memory_total_bytes", node="hv2") > value(hv2, "pvc_node_memory_free_bytes", node="hv2")
    assert value(hv2, "pvc_node_daemon_state", node="hv2", state="run") == 1
    # ... and about the VMs it runs, from libvirt.
    uuid = cluster.vm("mvm")["uuid"]
    assert value(hv2, "pvc_vm_info", node="hv2", vm="mvm", uuid=uuid, state="start", libvirt_state="running") == 1
    assert value(hv2, "pvc_vm_vcpus", node="hv2", vm="mvm") == 3
    assert value(hv2, "pvc_vm_memory_bytes", node="hv2", vm="mvm") == 96 * MIB
    assert value(hv2, "pvc_vm_cpu_seconds_total", node="hv2", vm="mvm") > 0
    assert value(hv2, "pvc_vm_console_log_bytes", node="hv2", vm="mvm") == 1234
    assert vms(hv1) == cluster.running_on("hv1") and "idle" not in vms(hv1)
    # ZooKeeper requests are timed.
    assert value(hv1, "pvc_zookeeper_request_seconds_count") > 0
    assert value(hv1, "pvc_zookeeper_connected") == 1

    # Exactly one node is primary, and only it gives the cluster-wide figures.
    primary, other = (hv1, hv2) if value(hv1, "pvc_node_primary", node="hv1") == 1 else (hv2, hv1)
    assert value(other, "pvc_node_primary", node="hv2" if other is hv2 else "hv1") == 0
    assert not any(n.startswith("pvc_cluster_") for n in names(other))
    assert value(primary, "pvc_cluster_figures_ok") == 1
    assert value(primary, "pvc_cluster_vms", state="start") == 1
    assert value(primary, "pvc_cluster_vms", state="stop") == 1
    assert value(primary, "pvc_cluster_nodes", daemon_state="run") == 2
    assert value(primary, "pvc_cluster_nodes_domain_state", domain_state="ready") == 2
    assert value(primary, "pvc_cluster_flush_queue_length") == 0
    assert value(primary, "pvc_cluster_fence_nodes", status="fenced") == 0

    # A change shows at the next scrape.
    cluster.pvc("vm", "stop", "mvm", "--wait")
    hv2 = scrape(cluster, "hv2")
    assert vms(hv2) == cluster.running_on("hv2") and "mvm" not in vms(hv2)
    assert value(hv2, "pvc_node_vms", node="hv2", state="stop") == 1
    assert value(hv2, "pvc_node_memory_allocated_bytes", node="hv2") == 0


def test_api_operations_are_counted(cluster):
    """Operations the REST API ran on a node, by name and result, on that node only."""
    node = cluster.dev.info()[1]
    for path in ("/vm", "/vm", "/vm/no-such-vm"):
        request = urllib.request.Request(f"{node['api_url']}/api/v1{path}",
                                         headers={"Authorization": f"Bearer {node['api_token']}"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    samples = scrape(cluster, node["name"])
    assert value(samples, "pvc_operations_total", operation="vm.list", result="ok") == 2
    assert value(samples, "pvc_operations_total", operation="vm.info", result="NotFound") == 1
    assert "pvc_operations_total" not in names(scrape(cluster, cluster.dev.info()[0]["name"]))


def test_libvirt_gone_and_zookeeper_restart(cluster):
    # libvirt away: the scrape still answers, saying so, without the figures it could not read.
    cluster.dev.kill_libvirtd("hv1")
    try:
        hv1 = scrape(cluster, "hv1")
        assert value(hv1, "pvc_node_libvirt_up", node="hv1") == 0
        assert "pvc_node_memory_total_bytes" not in names(hv1)
        assert value(hv1, "pvc_node_daemon_state", node="hv1", state="run") == 1
    finally:
        cluster.dev.start_libvirtd("hv1")
    wait_until(lambda: value(scrape(cluster, "hv1"), "pvc_node_libvirt_up", node="hv1") == 1, timeout=15)

    # A ZooKeeper restart: each daemon counts its reconnection (session kept or renewed).
    def reconnects(samples: dict) -> float:
        return sum(value(samples, "pvc_zookeeper_reconnects_total", session=k) for k in ("kept", "new"))

    before = reconnects(scrape(cluster, "hv2"))
    cluster.dev.restart_zookeeper()
    wait_until(lambda: reconnects(s := scrape(cluster, "hv2")) > before
               and value(s, "pvc_zookeeper_connected") == 1, timeout=30, interval=0.2)
