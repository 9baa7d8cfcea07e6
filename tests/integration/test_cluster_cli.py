"""`pvc cluster status|config`, and the cluster default selector used by placement."""

from __future__ import annotations

from tests.conftest import domain_xml, wait_until


def test_status_counts(cluster):
    cluster.define("cs1", node="hv1", start=True)
    cluster.define("cs2", node="hv2")
    status = cluster.pvc_json("cluster", "status")
    assert status["nodes"] == 3 and status["nodes_by_daemon_state"] == {"run": 3}
    assert status["vms"] >= 2 and status["vms_by_state"]["start"] >= 1 and status["vms_by_state"]["stop"] >= 1
    assert status["settings"]["migration_selector"] == "mem"
    assert "primary node:" in cluster.pvc("cluster", "status").stdout


def test_config_sets_the_default_selector(cluster):
    assert cluster.pvc_json("cluster", "config")["migration_selector"] == "mem"
    refused = cluster.pvc("cluster", "config", "--migration-selector", "bogus", check=False)
    assert refused.returncode != 0 and "unknown selector" in refused.stderr
    assert cluster.pvc_json("cluster", "config")["migration_selector"] == "mem"
    cluster.pvc("cluster", "config", "--migration-selector", "vms", "--maintenance")
    settings = cluster.pvc_json("cluster", "config")
    assert settings == {"migration_selector": "vms", "maintenance": True}
    try:
        # With "vms" the node running the fewest VMs gets a new one: load hv1 and hv2 first.
        for i, node in enumerate(["hv1", "hv1", "hv2", "hv2"]):
            cluster.define(f"busy{i}", node=node, start=True)
        # Placement reads the keepalives: wait until they agree with libvirt.
        wait_until(lambda: all(n["domains_count"] == len(cluster.running_on(n["name"]))
                               for n in cluster.pvc_json("node", "list")))
        on = {n["name"]: n["domains_count"] for n in cluster.pvc_json("node", "list")}
        fewest = min(sorted(on), key=lambda n: on[n])
        cluster.tmp.joinpath("placed.xml").write_text(domain_xml("placed-by-default"))
        cluster.pvc("vm", "define", str(cluster.tmp / "placed.xml"))
        assert cluster.vm("placed-by-default")["node"] == fewest
    finally:
        cluster.pvc("cluster", "config", "--migration-selector", "mem", "--no-maintenance")
