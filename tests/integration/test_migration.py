"""Migrate, forced migrate, unmigrate, move, and every refusal (test driver: the shutdown path)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until


def test_migrate_records_previous_node_and_unmigrate_returns(cluster):
    cluster.define("mig1", node="hv1", start=True)
    out = cluster.pvc("vm", "migrate", "mig1", "--target", "hv2", "--wait").stdout
    assert "running on hv2" in out
    info = cluster.vm("mig1")
    assert (info["node"], info["previous_node"], info["state"], info["libvirt_state"]) == ("hv2", "hv1", "start", "running")
    assert cluster.where_running("mig1") == ["hv2"]

    refused = cluster.pvc("vm", "migrate", "mig1", "--target", "hv3", check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert cluster.vm("mig1")["node"] == "hv2"

    # A forced migrate keeps the VM's home.
    cluster.pvc("vm", "migrate", "mig1", "--target", "hv3", "--force", "--wait")
    info = cluster.vm("mig1")
    assert (info["node"], info["previous_node"]) == ("hv3", "hv1")
    assert cluster.where_running("mig1") == ["hv3"]

    cluster.pvc("vm", "unmigrate", "mig1", "--wait")
    info = cluster.vm("mig1")
    assert (info["node"], info["previous_node"], info["libvirt_state"]) == ("hv1", "", "running")
    assert cluster.where_running("mig1") == ["hv1"]
    refused = cluster.pvc("vm", "unmigrate", "mig1", check=False)
    assert refused.returncode != 0 and "no previous node" in refused.stderr


def test_move_clears_previous_node(cluster):
    cluster.define("mv1", node="hv1", start=True)
    cluster.pvc("vm", "migrate", "mv1", "--target", "hv2", "--wait")
    cluster.pvc("vm", "move", "mv1", "--target", "hv3", "--wait")
    info = cluster.vm("mv1")
    assert (info["node"], info["previous_node"]) == ("hv3", "")
    assert cluster.where_running("mv1") == ["hv3"]


def test_migrate_without_target_uses_selector(cluster):
    cluster.define("sel1", node="hv1", start=True)
    cluster.pvc("vm", "migrate", "sel1", "--selector", "vms", "--wait")
    info = cluster.vm("sel1")
    assert info["node"] in ("hv2", "hv3") and info["previous_node"] == "hv1"
    assert cluster.where_running("sel1") == [info["node"]]


def test_stopped_vm_is_handed_over_without_starting(cluster):
    cluster.define("cold1", node="hv1")
    out = cluster.pvc("vm", "migrate", "cold1", "--target", "hv2", "--wait").stdout
    assert "moved from hv1 to hv2 (hv1's libvirt confirmed it off)" in out
    info = cluster.vm("cold1")
    assert (info["node"], info["previous_node"], info["state"]) == ("hv2", "hv1", "stop")
    assert cluster.where_running("cold1") == []
    cluster.pvc("vm", "start", "cold1", "--wait")
    assert cluster.where_running("cold1") == ["hv2"]


def test_node_limit_honoured(cluster):
    cluster.define("lim1", node="hv1", start=True, extra=("--node-limit", "hv1,hv3"))
    cluster.pvc("vm", "migrate", "lim1", "--wait")
    assert cluster.vm("lim1")["node"] == "hv3"


@pytest.fixture
def victim(cluster):
    name = "refuse1"
    if not any(v["name"] == name for v in cluster.pvc_json("vm", "list")):
        cluster.define(name, node="hv1", start=True, memory_mib=256)
    return name


@pytest.mark.parametrize(
    "args, message",
    [
        (("--target", "hv1"), "already on node hv1"),
        (("--target", "nosuch"), "unknown node"),
        (("--selector", "bogus"), "unknown selector"),
    ],
)
def test_migration_refusals(cluster, victim, args, message):
    before = cluster.vm(victim)
    proc = cluster.pvc("vm", "migrate", victim, *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert cluster.vm(victim) == before
    assert cluster.where_running(victim) == ["hv1"]


def test_refused_when_target_lacks_memory(cluster):
    # The test driver's hosts have 3072 MiB.
    cluster.define("huge", node="hv1", memory_mib=4000)
    cluster.pvc("vm", "start", "huge", "--wait")
    before = cluster.vm("huge")
    proc = cluster.pvc("vm", "migrate", "huge", "--target", "hv2", check=False)
    assert proc.returncode != 0 and "not enough free memory" in proc.stderr
    proc = cluster.pvc("vm", "migrate", "huge", check=False)
    assert proc.returncode != 0 and "no eligible target" in proc.stderr
    assert cluster.vm("huge") == before
    cluster.pvc("vm", "stop", "huge", "--wait")


def test_refused_when_target_not_ready(cluster, victim):
    cluster.pvc("node", "flush", "hv3", "--wait")
    try:
        proc = cluster.pvc("vm", "migrate", victim, "--target", "hv3", check=False)
        assert proc.returncode != 0 and "not ready" in proc.stderr
    finally:
        cluster.pvc("node", "ready", "hv3", "--wait")
    import signal

    cluster.dev.stop_node("hv2", signal.SIGTERM)
    try:
        proc = cluster.pvc("vm", "migrate", victim, "--target", "hv2", check=False)
        assert proc.returncode != 0 and "not running" in proc.stderr
    finally:
        cluster.dev.start_node("hv2")
    assert cluster.vm(victim)["node"] == "hv1"


def test_migration_fallback_never_runs_twice(cluster):
    """On the test driver live migration is impossible: pvc falls back to shutdown + start.
    libvirt's own lifecycle events, watched on both nodes, show the VM stopped on the source
    before it started on the target."""
    import threading
    import time

    import libvirt

    cluster.define("once", node="hv1", start=True)
    libvirt.virEventRegisterDefaultImpl()
    events = []
    conns = {}
    for node in ("hv1", "hv2"):
        conn = libvirt.open(cluster.dev.node(node).libvirt_uri)
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, dom, event, _d, node: events.append((time.monotonic(), node, event)) if dom.name() == "once" else None,
            node)
        conns[node] = conn
    stop = threading.Event()
    pump = threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(stop.is_set, True)], daemon=True)
    pump.start()
    try:
        cluster.pvc("vm", "migrate", "once", "--target", "hv2", "--wait")
        wait_until(lambda: any(e[1] == "hv2" and e[2] == libvirt.VIR_DOMAIN_EVENT_STARTED for e in events))
    finally:
        stop.set()
        for conn in conns.values():
            conn.close()
    stopped_on_source = [t for t, n, e in events if n == "hv1" and e == libvirt.VIR_DOMAIN_EVENT_STOPPED]
    started_on_target = [t for t, n, e in events if n == "hv2" and e == libvirt.VIR_DOMAIN_EVENT_STARTED]
    assert stopped_on_source and started_on_target
    assert stopped_on_source[0] < started_on_target[0]
    assert cluster.where_running("once") == ["hv2"]
    log = open(cluster.dev.node("hv1").pvcd_log).read()
    assert "vm_live_migration_failed" in log  # it tried live first, through the published URI


def test_a_fallback_is_said_not_dressed_as_success(cluster):
    # The test driver cannot live-migrate: method "any" (the default) falls back, and says so.
    cluster.define("fb1", node="hv1", start=True)
    out = cluster.pvc("vm", "migrate", "fb1", "--target", "hv2", "--wait").stdout
    assert "shutdown migration" in out and "live migration failed" in out
    info = cluster.vm("fb1")
    assert info["last_migration"]["method"] == "shutdown"
    assert (info["last_migration"]["source"], info["last_migration"]["target"]) == ("hv1", "hv2")
    assert "live migration failed" in info["note"]
    assert "shutdown hv1 -> hv2" in cluster.pvc("vm", "info", "fb1").stdout
    cluster.pvc("vm", "stop", "fb1", "--wait")


def test_method_live_never_falls_back(cluster):
    cluster.define("lv1", node="hv1", start=True, extra=("--migration-method", "live"))
    proc = cluster.pvc("vm", "migrate", "lv1", "--target", "hv2", "--wait", check=False)
    assert proc.returncode != 0 and "did not move" in proc.stderr and "method live" in proc.stderr
    info = cluster.vm("lv1")
    assert (info["state"], info["node"], info["previous_node"], info["libvirt_state"]) == ("start", "hv1", "", "running")
    assert cluster.where_running("lv1") == ["hv1"]  # never stopped
    cluster.pvc("vm", "stop", "lv1", "--wait")


def test_unknown_migration_method_is_refused(cluster):
    path = cluster.tmp / "badmethod.xml"
    from tests.conftest import domain_xml

    path.write_text(domain_xml("badmethod"))
    proc = cluster.pvc("vm", "define", str(path), "--migration-method", "teleport", check=False)
    assert proc.returncode != 0 and "any, live, shutdown" in proc.stderr
    assert all(v["name"] != "badmethod" for v in cluster.pvc_json("vm", "list"))
