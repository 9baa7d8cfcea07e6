"""VM disks on RBD, the pure part: ceph.conf monitors, filling a domain XML in for a node, adding and
removing disks, the live diff, and the reconcile step that applies it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pvc.errors import Conflict, InvalidInput
from pvc.reconcile import Step, decide
from pvc.schema import Domain
from pvc.storage import disks
from pvc.storage.model import rbd_volumes_in_xml

SECRET = "6f1c1b5e-0f61-4b43-9d6e-3c1e8a8f0a11"


def dom_xml(*disk_elements: str, extra: str = "") -> str:
    return ("<domain type='kvm'><name>v</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
            "<memory unit='MiB'>64</memory><devices><emulator>/usr/bin/qemu</emulator>"
            + "".join(disk_elements) + extra + "</devices></domain>")


def rbd(ref: str, dev: str, inner: str = "", shareable: bool = False) -> str:
    return (f"<disk type='network' device='disk'><source protocol='rbd' name='{ref}'>{inner}</source>"
            f"<target dev='{dev}' bus='virtio'/>" + ("<shareable/>" if shareable else "") + "</disk>")


FILE_DISK = "<disk type='file' device='disk'><source file='/x.img'/><target dev='vdc' bus='virtio'/></disk>"


# -- ceph.conf ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, monitors", [
    ("mon host = v2:127.0.0.1:40000", [("127.0.0.1", 40000)]),
    ("mon_host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:10.0.0.2:3300,v1:10.0.0.2:6789]",
     [("10.0.0.1", 3300), ("10.0.0.2", 3300)]),
    ("mon host = [v1:10.0.0.1:6789,v2:10.0.0.1:3300],[v2:10.0.0.2:3300]", [("10.0.0.1", 3300), ("10.0.0.2", 3300)]),
    ("mon-host = 10.0.0.1:6789, 10.0.0.2:6789", [("10.0.0.1", 6789), ("10.0.0.2", 6789)]),
    ("mon host = 10.0.0.1 10.0.0.2", [("10.0.0.1", 3300), ("10.0.0.2", 3300)]),
    ("mon host = v1:10.0.0.1:6789", [("10.0.0.1", 6789)]),
    ("mon host = [v2:[fd00::1]:3300,v1:[fd00::1]:6789]", [("fd00::1", 3300)]),
    ("mon host = mon1.example.com:3300", [("mon1.example.com", 3300)]),
    ("mon host = v2:10.0.0.1:3300/0", [("10.0.0.1", 3300)]),
])
def test_mon_hosts(line, monitors):
    conf = f"[global]\nfsid = x\n{line}   # the monitors\npublic addr = 127.0.0.1\n[client]\nkeyring = /k\n"
    assert disks.parse_mon_hosts(conf) == monitors


def test_mon_host_outside_global_is_not_read():
    assert disks.parse_mon_hosts("[global]\nfsid = x\n[mon]\nmon host = 1.2.3.4\n") == []
    assert disks.parse_mon_hosts("") == []


# -- filling in for a node -----------------------------------------------------------------------------


def test_fill_adds_monitors_and_auth_and_keeps_the_rest():
    xml = dom_xml(rbd("vms/root", "vda"), FILE_DISK)
    filled = disks.fill_rbd_disks(xml, [("10.0.0.1", 3300), ("10.0.0.2", 3300)], "admin", SECRET)
    root = ET.fromstring(filled)
    disk = root.find("./devices/disk")
    assert [(h.get("name"), h.get("port")) for h in disk.iterfind("source/host")] == [
        ("10.0.0.1", "3300"), ("10.0.0.2", "3300")]
    auth = disk.find("auth")
    assert auth.get("username") == "admin"
    assert (auth.find("secret").get("type"), auth.find("secret").get("uuid")) == ("ceph", SECRET)
    assert [c.tag for c in disk] == ["auth", "source", "target"]
    assert root.find("./devices/disk[@type='file']/source").get("file") == "/x.img"
    assert rbd_volumes_in_xml(filled) == ["vms/root"]
    assert not disks.needs_filling(filled)
    assert disks.fill_rbd_disks(filled, [("9.9.9.9", 1)], "other", "x") == filled  # idempotent


def test_fill_keeps_what_the_operator_wrote():
    mine = rbd("vms/a", "vda", "<host name='192.168.1.5' port='6789'/>")
    xml = dom_xml(mine.replace("<target", "<auth username='vmuser'><secret type='ceph' uuid='u'/></auth><target"))
    assert not disks.needs_filling(xml)
    assert disks.fill_rbd_disks(xml, [("10.0.0.1", 3300)], "admin", SECRET) == xml
    # Hosts given, auth missing: only the auth is added.
    filled = ET.fromstring(disks.fill_rbd_disks(dom_xml(mine), [("10.0.0.1", 3300)], "admin", SECRET))
    assert [h.get("name") for h in filled.iterfind(".//host")] == ["192.168.1.5"]
    assert filled.find(".//auth").get("username") == "admin"


def test_fill_without_rbd_disks_returns_the_same_string():
    xml = dom_xml(FILE_DISK)
    assert disks.fill_rbd_disks(xml, [], "", "") is xml


def test_fill_refuses_without_monitors_or_secret():
    with pytest.raises(InvalidInput, match="names no monitor"):
        disks.fill_rbd_disks(dom_xml(rbd("vms/a", "vda")), [], "admin", SECRET)
    with pytest.raises(InvalidInput, match="secret_uuid is not set"):
        disks.fill_rbd_disks(dom_xml(rbd("vms/a", "vda")), [("h", 1)], "admin", "")


def test_fill_keeps_the_qemu_namespace_prefix():
    xml = dom_xml(rbd("vms/a", "vda")).replace(
        "<domain type='kvm'>", "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
    ).replace("</devices>", "</devices><qemu:commandline><qemu:arg value='-x'/></qemu:commandline>")
    filled = disks.fill_rbd_disks(xml, [("h", 1)], "admin", SECRET)
    assert "<qemu:commandline>" in filled and "ns0" not in filled


# -- adding and removing ----------------------------------------------------------------------------------


def test_add_disk_picks_the_first_free_target():
    xml = dom_xml(rbd("vms/root", "vda"), FILE_DISK)
    new, target = disks.add_disk(xml, "vms/data")
    assert target == "vdb"
    assert [(d.ref, d.target) for d in disks.rbd_disks(new)] == [("vms/root", "vda"), ("vms/data", "vdb")]
    assert not ET.fromstring(new).findall(".//host")  # pvc fills them in later
    new2, target2 = disks.add_disk(new, "vms/more", shareable=True)
    assert target2 == "vdd" and disks.rbd_disks(new2)[-1].shareable  # vdc is the file disk
    assert disks.add_disk(dom_xml(), "vms/first")[1] == "vda"
    assert disks.add_disk("<domain><name>x</name></domain>", "vms/first")[1] == "vda"  # no <devices> yet


def test_add_disk_refusals():
    xml = dom_xml(rbd("vms/root", "vda"), FILE_DISK)
    with pytest.raises(Conflict, match="already has volume vms/root"):
        disks.add_disk(xml, "vms/root")
    with pytest.raises(Conflict, match="target dev vdc is already used"):
        disks.add_disk(xml, "vms/x", "vdc")
    with pytest.raises(InvalidInput, match="bad target dev"):
        disks.add_disk(xml, "vms/x", "eth0")


def test_remove_disk():
    xml = dom_xml(rbd("vms/root", "vda"), rbd("vms/data", "vdb"), FILE_DISK)
    new = disks.remove_disk(xml, "vms/data")
    assert rbd_volumes_in_xml(new) == ["vms/root"] and "/x.img" in new
    with pytest.raises(Conflict, match="has no volume vms/data"):
        disks.remove_disk(new, "vms/data")


def test_check_disks():
    assert disks.check_disks(dom_xml(FILE_DISK)) == []
    assert [d.ref for d in disks.check_disks(dom_xml(rbd("vms/a", "vda"), rbd("vms/b", "vdb")))] == ["vms/a", "vms/b"]
    with pytest.raises(InvalidInput, match="names volume vms/a twice"):
        disks.check_disks(dom_xml(rbd("vms/a", "vda"), rbd("vms/a", "vdb")))
    with pytest.raises(InvalidInput, match="two disks on target dev vda"):
        disks.check_disks(dom_xml(rbd("vms/a", "vda"), rbd("vms/b", "vda")))
    with pytest.raises(InvalidInput, match="expected POOL/VOLUME"):
        disks.check_disks(dom_xml(rbd("novolume", "vda")))


def test_next_target():
    assert disks.next_target([]) == "vda"
    assert disks.next_target(["vda", "vdb"]) == "vdc"
    assert disks.next_target([f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"]) == "vdaa"


# -- the running domain against its definition -------------------------------------------------------------


def test_disk_changes():
    running = disks.fill_rbd_disks(dom_xml(rbd("vms/root", "vda"), rbd("vms/old", "vdb"), FILE_DISK),
                                   [("h", 1)], "admin", SECRET)
    stored = dom_xml(rbd("vms/root", "vda"), rbd("vms/new", "vdb"), FILE_DISK)
    changes = disks.disk_changes(stored, running)
    assert [r for r, _ in changes.attach] == ["vms/new"] and [r for r, _ in changes.detach] == ["vms/old"]
    detach = ET.fromstring(changes.detach[0][1])
    assert detach.find("target").get("dev") == "vdb" and detach.find("auth") is not None  # as running
    attach = disks.fill_disk_element(changes.attach[0][1], [("h", 1)], "admin", SECRET)
    assert ET.fromstring(attach).find("source/host").get("name") == "h"
    assert not disks.disk_changes(stored, disks.fill_rbd_disks(stored, [("h", 1)], "a", SECRET))
    assert not disks.disk_changes(dom_xml(), dom_xml(FILE_DISK))  # only RBD disks count


def test_decide_updates_disks_of_a_running_vm_only():
    dom = Domain(uuid="u", name="v", node="hv1", state="start", libvirt_state="running", disk_changes=1)
    assert decide(dom, "hv1", running_here=True) is Step.UPDATE_DISKS
    assert decide(Domain(uuid="u", name="v", node="hv1", state="start", libvirt_state="running"),
                  "hv1", running_here=True) is Step.NOTHING
    # Not running yet: started first (from the new XML); the diff after it is then empty.
    assert decide(dom, "hv1", running_here=False) is Step.START
    # Started but not yet recorded running: recorded first.
    assert decide(Domain(uuid="u", name="v", node="hv1", state="start", disk_changes=1), "hv1",
                  running_here=True) is Step.RECORD_RUNNING
    # Another node never touches it; a migration goes first.
    assert decide(dom, "hv2", running_here=False) is Step.NOTHING
    migrating = Domain(uuid="u", name="v", node="hv1", state="migrate", target_node="hv2",
                       libvirt_state="running", disk_changes=1)
    assert decide(migrating, "hv1", running_here=True) is Step.MIGRATE


# -- fencing -------------------------------------------------------------------------------------------------


def test_fence_plan_blocklists_watchers_and_lock_holders_then_breaks_their_locks():
    a, b = "10.0.0.5:0/1234", "10.0.0.5:0/5678"
    statuses = {"vms/root": {"watchers": [{"address": a, "client": 4130, "cookie": 1}]},
                "vms/data": {"watchers": []}, "vms/gone": None}
    locks = {"vms/root": [{"id": "auto 1", "locker": "client.4130", "address": a}],
             "vms/data": [{"id": "auto 9", "locker": "client.4200", "address": b}], "vms/gone": None}
    addrs, to_remove = disks.fence_plan(statuses, locks)
    assert addrs == [a, b]
    assert to_remove == [("vms/root", "auto 1", "client.4130"), ("vms/data", "auto 9", "client.4200")]
    assert disks.fence_plan({"vms/x": {"watchers": []}}, {"vms/x": []}) == ([], [])


@pytest.mark.parametrize("alive, daemon_state, domain_state, blocklisted, due", [
    (True, "run", "ready", ["a"], True),
    (True, "run", "flushed", ["a"], False),  # back, but not yet readied by the operator
    (False, "fenced", "flushed", ["a"], False),
    (True, "init", "ready", ["a"], False),
    (True, "run", "ready", [], False),
])
def test_unblock_due(alive, daemon_state, domain_state, blocklisted, due):
    assert disks.unblock_due(alive, daemon_state, domain_state, blocklisted) is due
