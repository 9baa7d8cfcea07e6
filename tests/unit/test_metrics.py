"""pvc.daemon.metrics without I/O: figures to metric families, the operations observer, the config key."""

from __future__ import annotations

import asyncio

import pytest

from pvc.config import DaemonConfig, parse_config
from pvc.daemon.context import DaemonContext
from pvc.daemon.metrics import (
    ClusterView,
    DaemonMetrics,
    HostReading,
    NodeView,
    cluster_families,
    node_families,
    vm_families,
)
from pvc.errors import Forbidden, InvalidInput
from pvc.libvirt_host import DomainStats, HostStats, LibvirtHost
from pvc.ops import registry
from pvc.schema import Domain, FenceState
from pvc.zk import ZK


def samples(families) -> dict[tuple, float]:
    return {(s.name, *sorted(s.labels.items())): s.value for f in families for s in f.samples}


def test_node_figures_count_only_what_runs_here():
    records = {
        "u1": Domain(uuid="u1", name="a", state="start", node="hv1", memory_mib=100, vcpus=2),
        "u2": Domain(uuid="u2", name="b", state="stop", node="hv1", memory_mib=50, vcpus=1),
        "u3": Domain(uuid="u3", name="c", state="start", node="hv2", memory_mib=10, vcpus=4),
        "u4": Domain(uuid="u4", name="d", state="weird", node="hv1"),  # a state this version does not know
    }
    # libvirt runs a (known) and x (no pvc record): x counts as running but allocates nothing known.
    reading = HostReading(HostStats(memory_total_mib=1024, memory_free_mib=512, cpus=8),
                          [DomainStats("u1", "a", "running", 2, 5.5, 100 * 2**20),
                           DomainStats("ux", "x", "paused", 1, 1.0, 2**20)], {"u1": 42})
    view = NodeView(node="hv1", daemon_state="run", primary=False, load1=0.5, records=records, reading=reading)
    s = samples(node_families(view) + vm_families(view))
    assert s[("pvc_node_vms", ("node", "hv1"), ("state", "start"))] == 1
    assert s[("pvc_node_vms", ("node", "hv1"), ("state", "stop"))] == 1
    assert s[("pvc_node_vms", ("node", "hv1"), ("state", "weird"))] == 1
    assert s[("pvc_node_vms", ("node", "hv1"), ("state", "fail"))] == 0
    assert s[("pvc_node_memory_allocated_bytes", ("node", "hv1"))] == 100 * 2**20
    assert s[("pvc_node_vcpus_allocated", ("node", "hv1"))] == 2
    assert s[("pvc_node_domains_running", ("node", "hv1"))] == 2
    assert s[("pvc_node_daemon_state", ("node", "hv1"), ("state", "run"))] == 1
    assert s[("pvc_vm_cpu_seconds_total", ("node", "hv1"), ("vm", "a"))] == 5.5
    assert s[("pvc_vm_info", ("libvirt_state", "paused"), ("node", "hv1"), ("state", ""), ("uuid", "ux"),
              ("vm", "x"))] == 1
    assert s[("pvc_vm_console_log_bytes", ("node", "hv1"), ("vm", "a"))] == 42
    assert ("pvc_vm_console_log_bytes", ("node", "hv1"), ("vm", "x")) not in s  # no log file: no series

    # libvirt silent, records not read yet: only what is known is said.
    blind = NodeView(node="hv1", daemon_state="init", primary=False, load1=0.5, records=None, reading=None)
    s = samples(node_families(blind) + vm_families(blind))
    assert s[("pvc_node_libvirt_up", ("node", "hv1"))] == 0
    assert not [k for k in s if k[0] in ("pvc_node_vms", "pvc_node_memory_total_bytes", "pvc_vm_info")]


def test_cluster_figures():
    view = ClusterView(vm_states=["start", "fail"], node_daemon_states=["run", "run", "dead"], node_domain_states=["ready", "flush", "ready"],
                       fences=[FenceState(), FenceState(status="failed", attempts=3), FenceState(status="fenced", attempts=2)],
                       flush_queue=2)
    s = samples(cluster_families(view))
    assert s[("pvc_cluster_nodes", ("daemon_state", "run"))] == 2
    assert s[("pvc_cluster_nodes", ("daemon_state", "dead"))] == 1
    assert s[("pvc_cluster_nodes_domain_state", ("domain_state", "flush"))] == 1
    assert s[("pvc_cluster_vms", ("state", "fail"))] == 1
    assert s[("pvc_cluster_fence_nodes", ("status", "failed"))] == 1
    assert s[("pvc_cluster_fence_nodes", ("status", "fenced"))] == 1
    assert s[("pvc_cluster_fence_failed_attempts",)] == 3
    assert s[("pvc_cluster_flush_queue_length",)] == 2
    # ZooKeeper did not answer: a 0 saying so, and no figures.
    assert samples(cluster_families(ClusterView(ok=False))) == {("pvc_cluster_figures_ok",): 0}


def test_operations_are_counted_by_result():
    async def main():
        ctx = DaemonContext(config=DaemonConfig(), zk=ZK("127.0.0.1:2181"), host=LibvirtHost("test:///default", print),
                            log=None)
        metrics = DaemonMetrics(ctx)
        metrics.attach()
        try:
            with pytest.raises(Forbidden):  # refused before any I/O
                await registry.call(registry.Context(zk=None, read_only=True), "cluster.set", None)
        finally:
            metrics.detach()
        assert metrics.on_operation not in registry.observers and ctx.zk.observe_request is None
        return metrics.registry.get_sample_value("pvc_operations_total",
                                                 {"operation": "cluster.set", "result": "Forbidden"})

    assert asyncio.run(main()) == 1


@pytest.mark.parametrize("listen", ["8080", "localhost:", "::1:9100", "host:70000"])
def test_bad_metrics_listen_is_refused(listen):
    with pytest.raises(InvalidInput, match="metrics.listen"):
        parse_config(f"metrics: {{listen: '{listen}'}}")
    assert parse_config("metrics: {listen: '[::1]:9100'}").metrics.listen == "[::1]:9100"
