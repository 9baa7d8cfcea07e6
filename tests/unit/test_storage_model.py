"""Storage's pure part (pvc.storage.model): sizes, names, RBD disks in domain XML, reading the Ceph
CLIs' JSON; and placement with storage (pvc.placement)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.errors import Conflict, InvalidInput
from pvc.placement import Candidate, choose_node, refusal
from pvc.storage.model import (
    check_name, check_pgs, check_replicas, format_size, parse_pools, parse_size, parse_snapshots, parse_status,
    parse_volumes, rbd_volumes_in_xml, split_volume_ref,
)


@pytest.mark.parametrize("text, size", [
    ("10G", 10 << 30), ("512M", 512 << 20), ("512m", 512 << 20), ("1T", 1 << 40), ("4K", 4096),
    ("4096", 4096), ("1.5G", 3 << 29), ("10GiB", 10 << 30), ("10GB", 10 << 30), (" 2 G ", 2 << 30),
    ("512B", 512), ("1P", 1 << 50),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, why", [
    ("", "expected a number"), ("G", "expected a number"), ("10X", "expected a number"), ("-1G", "expected a number"),
    ("1e3", "expected a number"), ("0", "greater than 0"), ("0G", "greater than 0"), ("100", "multiple of 512"),
    ("1.3K", "whole number of bytes"), ("2P", "larger than 1P"), ("10 G B", "expected a number"),
])
def test_bad_sizes(text, why):
    with pytest.raises(InvalidInput, match=why):
        parse_size(text)


@given(st.integers(min_value=1, max_value=1 << 41))
def test_format_size_round_trips_whole_units(n):
    size = n * 512
    text = format_size(size)
    if "." not in text:  # whole units read back exactly
        assert parse_size(text) == size


@pytest.mark.parametrize("size, text", [(10 << 30, "10G"), (512 << 20, "512M"), (3 << 29, "1.5G"), (100, "100B")])
def test_format_size(size, text):
    assert format_size(size) == text


@pytest.mark.parametrize("name", ["vms", "a", "disk-1", "disk_1.img", "A" * 100, "0start"])
def test_good_names(name):
    assert check_name("volume", name) == name


@pytest.mark.parametrize("name", ["", "a/b", "a@b", "a b", "-x", ".x", "_x", "A" * 101, "é", "a\nb", "a:b"])
def test_bad_names(name):
    with pytest.raises(InvalidInput, match="bad volume name"):
        check_name("volume", name)


def test_pgs_and_replicas():
    assert check_pgs(8) == 8 and check_pgs(1) == 1 and check_pgs(32768) == 32768
    for bad in (0, 3, 12, 65536, -8):
        with pytest.raises(InvalidInput, match="power of two"):
            check_pgs(bad)
    assert check_replicas(1) == 1 and check_replicas(3) == 3
    for bad in (0, 11, -1):
        with pytest.raises(InvalidInput, match="replicas"):
            check_replicas(bad)


def test_split_volume_ref():
    assert split_volume_ref("vms/disk1") == ("vms", "disk1")
    for bad in ("vms", "vms/", "/disk", "vms/a/b"):
        with pytest.raises(InvalidInput):
            split_volume_ref(bad)


def disk(name, type="network", protocol="rbd"):
    return (f"<disk type='{type}' device='disk'><source protocol='{protocol}' name='{name}'/>"
            "<target dev='vda' bus='virtio'/></disk>")


def test_rbd_volumes_in_xml():
    xml = (f"<domain><name>x</name><devices>{disk('vms/a')}{disk('vms/b')}{disk('vms/a')}"
           f"{disk('iqn.x/1', protocol='iscsi')}<disk type='file'><source file='/rbd/x'/></disk>"
           f"{disk('vms/c@snap')}</devices></domain>")
    assert rbd_volumes_in_xml(xml) == ["vms/a", "vms/b", "vms/c"]
    assert rbd_volumes_in_xml("<domain><devices/></domain>") == []
    assert rbd_volumes_in_xml("<domain rbd") == []  # unparseable: no volumes (the define refuses it anyway)


STATUS = {"health": {"status": "HEALTH_WARN", "checks": {"OSD_DOWN": {"summary": {"message": "1 osds down"}}}},
          "osdmap": {"num_osds": 2, "num_up_osds": 1, "num_in_osds": 2},
          "pgmap": {"num_pools": 3, "bytes_used": 10, "bytes_avail": 90, "bytes_total": 100}}
OSD_DF = {"nodes": [{"id": 0, "name": "osd.0", "type": "osd", "kb": 4, "kb_used": 1, "utilization": 25.123,
                     "pgs": 9, "status": "up"},
                    {"id": 1, "name": "osd.1", "type": "osd", "kb": 4, "kb_used": 0, "utilization": 0, "pgs": 0,
                     "status": "down"}]}


def test_parse_status():
    st_ = parse_status(STATUS, OSD_DF)
    assert st_.health == "HEALTH_WARN" and st_.checks == ["OSD_DOWN: 1 osds down"]
    assert (st_.bytes_total, st_.bytes_used, st_.bytes_avail, st_.pools) == (100, 10, 90, 3)
    assert (st_.osds_total, st_.osds_up, st_.osds_in) == (2, 1, 2)
    assert [(o.name, o.up, o.size_bytes, o.used_bytes, o.utilization) for o in st_.osds] == [
        ("osd.0", True, 4096, 1024, 25.12), ("osd.1", False, 4096, 0, 0.0)]


def test_parse_pools_volumes_snapshots():
    detail = [{"pool_name": "vms", "pg_num": 8, "size": 3}, {"pool_name": "other", "pg_num": 8, "size": 1}]
    df = {"pools": [{"name": "vms", "stats": {"stored": 1234}}]}
    pools = parse_pools(detail, df, {"vms": ["a", "b"]})
    assert [(p.name, p.pgs, p.replicas, p.stored_bytes, p.volumes) for p in pools] == [("vms", 8, 3, 1234, ["a", "b"])]
    listing = [{"image": "b", "size": 2}, {"image": "a", "size": 1}, {"image": "a", "snapshot": "s1", "size": 1}]
    vols = parse_volumes("vms", listing, {"vms/a": "vm1"})
    assert [(v.name, v.size_bytes, v.used_by, v.snapshots) for v in vols] == [("a", 1, "vm1", ["s1"]), ("b", 2, None, [])]
    snaps = parse_snapshots([{"id": 5, "name": "late", "size": 1, "protected": "true", "timestamp": "t2"},
                             {"id": 4, "name": "early", "size": 1, "protected": "false", "timestamp": "t1"}])
    assert [(s.name, s.protected) for s in snaps] == [("early", False), ("late", True)]


def node(name, storage_ok=False, **kw):
    return Candidate(name=name, daemon_state="run", domain_state="ready", memory_total_mib=8192,
                     memory_free_mib=8192, memory_allocated_mib=kw.get("allocated", 0), vcpus_allocated=0,
                     load=0.0, domains_count=0, storage_ok=storage_ok)


def test_placement_needs_storage():
    nodes = [node("hv1", allocated=4000, storage_ok=True), node("hv2")]
    assert choose_node(nodes, selector="mem", memory_mib=64) == "hv2"  # no disks: storage does not matter
    assert choose_node(nodes, selector="mem", memory_mib=64, needs_storage=True) == "hv1"
    assert "cannot reach Ceph" in refusal(nodes[1], 64, needs_storage=True)
    assert refusal(nodes[0], 64, needs_storage=True) == ""
    with pytest.raises(Conflict, match="cannot reach Ceph"):
        choose_node(nodes, selector="mem", memory_mib=64, target="hv2", needs_storage=True)
    with pytest.raises(Conflict, match="reaching Ceph storage"):
        choose_node(nodes, selector="mem", memory_mib=64, exclude="hv1", needs_storage=True)


def test_flush_and_recovery_plans_need_storage():
    from pvc.fencing import recovery_plan
    from pvc.flush_plan import plan_flush
    from pvc.schema import Domain

    nodes = [node("hv2", allocated=4000, storage_ok=True), node("hv3")]
    doms = [Domain(uuid="u-rbd", name="a-rbd", state="start", node="hv1", memory_mib=64),
            Domain(uuid="u-plain", name="b-plain", state="start", node="hv1", memory_mib=64)]
    moves = {m.name: m.target for m in plan_flush(doms, "hv1", nodes, "mem", needs_storage=frozenset({"u-rbd"}))}
    assert moves == {"a-rbd": "hv2", "b-plain": "hv3"}
    # Nobody reaches Ceph: the RBD VM has nowhere to go, with the reason.
    blind = [node("hv2"), node("hv3")]
    (m,) = [m for m in plan_flush(doms, "hv1", blind, "mem", needs_storage=frozenset({"u-rbd"})) if m.name == "a-rbd"]
    assert m.target == "" and "reaching Ceph storage" in m.reason
    plan = recovery_plan("hv1", doms, nodes, "mem", needs_storage=frozenset({"u-rbd"}))
    assert plan["u-rbd"]["node"] == "hv2" and plan["u-plain"]["node"] == "hv3"
    plan = recovery_plan("hv1", doms, blind, "mem", needs_storage=frozenset({"u-rbd"}))
    assert plan["u-rbd"]["state"] == "fail" and "reaching Ceph storage" in plan["u-rbd"]["failed_reason"]
