"""Live migration of real guests between libvirtd instances: migrate/unmigrate, flush/ready.

"Live" is checked on the guest's own console: one boot, ticks 1, 2, 3... without a gap or a
restart, while libvirt runs it on exactly the node pvc names.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def guests(qemu_cluster):
    """The module's guests, booted together: "mig" for migrate, two on hv3 for its flush."""
    qemu_cluster.boot(mig="hv1", flush1="hv3", flush2="hv3")
    return qemu_cluster


def test_migrate_then_unmigrate_keeps_the_guest_running(guests):
    c = guests
    before = c.wait_ticks("mig", 2)[-1]

    c.pvc("vm", "migrate", "mig", "--target", "hv2", "--wait")
    vm = c.assert_matches_libvirt("mig")
    assert (vm["node"], vm["previous_node"], vm["state"]) == ("hv2", "hv1", "start")
    after = c.wait_ticks("mig", before + 2)[-1]  # still ticking, now on hv2
    c.assert_one_continuous_boot("mig")

    c.pvc("vm", "unmigrate", "mig", "--wait")
    vm = c.assert_matches_libvirt("mig")
    assert (vm["node"], vm["previous_node"], vm["state"]) == ("hv1", "", "start")
    c.wait_ticks("mig", after + 2)
    c.assert_one_continuous_boot("mig")


def test_flush_moves_every_guest_live_and_ready_brings_them_back(guests):
    c, guests = guests, ["flush1", "flush2"]
    last = {name: c.wait_ticks(name, 2)[-1] for name in guests}

    c.pvc("node", "flush", "hv3", "--wait", timeout=180)
    assert c.pvc_json("node", "info", "hv3")["domain_state"] == "flushed"
    assert not c.running_on("hv3") & set(guests)
    for name in guests:
        vm = c.assert_matches_libvirt(name)
        assert vm["node"] != "hv3" and vm["previous_node"] == "hv3"
        last[name] = c.wait_ticks(name, last[name] + 1)[-1]
        c.assert_one_continuous_boot(name)

    c.pvc("node", "ready", "hv3", "--wait", timeout=180)
    assert c.pvc_json("node", "info", "hv3")["domain_state"] == "ready"
    for name in guests:
        vm = c.assert_matches_libvirt(name)
        assert (vm["node"], vm["previous_node"]) == ("hv3", "")
        c.wait_ticks(name, last[name] + 1)
        c.assert_one_continuous_boot(name)


def test_virsh_migrate_behind_pvcs_back_is_followed_not_doubled(guests):
    """An operator live-migrates with virsh directly: the source daemon sees the domain leave,
    asks the peers' libvirt where it went and records that node, instead of starting a second
    copy to honour state "start"."""
    from tests.conftest import wait_until

    c = guests
    vm = c.vm("mig")
    source = vm["node"]
    dest = "hv2" if source != "hv2" else "hv3"
    before = c.wait_ticks("mig", 1)[-1]
    c.virsh(source, "migrate", "--live", "mig", c.dev.node(dest).migration_uri, "tcp://127.0.0.1")
    wait_until(lambda: c.vm("mig")["node"] == dest, timeout=30)
    vm = c.assert_matches_libvirt("mig")
    assert "migrated outside pvc" in vm["failed_reason"]
    c.wait_ticks("mig", before + 2)
    assert c.where_running("mig") == [dest]
    c.assert_one_continuous_boot("mig")
    c.pvc("vm", "migrate", "mig", "--target", source, "--force", "--wait")
    assert c.where_running("mig") == [source]
