"""VM disks on RBD volumes against a real Ceph cluster and real pvcd/libvirtd nodes (libvirt's test
driver, which takes a network disk in a domain XML): the node fills in monitors and auth at start,
`pvc vm dump` keeps what the operator wrote, `pvc vm volume add|remove`, `pvc vm info`'s volumes,
`pvc vm undefine --delete-volumes`, and each refusal (one `error:` line, nothing written).
Nothing is mocked. (Live attach/detach on a running QEMU guest: tests/system/test_storage_disks.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from pvc.devcluster.cluster import DevCluster
from tests.conftest import Cluster, wait_until

POOL = "vdisks"
# Simulated BMCs (ipmi_sim) for the fencing test, where ipmi_sim and ipmitool are installed.


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vmdisks")
    dev = DevCluster(workdir)
    dev.up(nodes=2, storage="ceph", fencing=True, timeout=120)
    try:
        cluster = Cluster(dev, workdir)
        info = dev.info()[0]
        cluster.env.update(PVC_CEPH_CONF=info["ceph_conf"], PVC_CEPH_KEYRING=info["ceph_keyring"])
        cluster.pvc("storage", "pool", "add", POOL, "--pgs", "8", "--replicas", "1", timeout=180)
        for name in ("root1", "data1", "data2", "shared", "spare"):
            cluster.pvc("storage", "volume", "add", POOL, name, "64M")
        wait_until(lambda: all(n["storage"] == "ok" for n in cluster.pvc_json("node", "list")), timeout=60)
        yield cluster
    finally:
        dev.down()


def vm_xml(name: str, *disks: str, shareable: bool = False, uuid: str = "") -> str:
    elements = "".join(
        f"<disk type='network' device='disk'><source protocol='rbd' name='{ref}'/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/>{'<shareable/>' if shareable else ''}</disk>"
        for i, ref in enumerate(disks))
    return (f"<domain type='test'><name>{name}</name><uuid>{uuid or uuidlib.uuid4()}</uuid><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>{elements}</devices></domain>")


def define(dc: Cluster, name: str, *disks: str, node: str = "hv1", check: bool = True, shareable: bool = False):
    path = dc.tmp / f"{name}.xml"
    path.write_text(vm_xml(name, *disks, shareable=shareable))
    return dc.pvc("vm", "define", str(path), "--target", node, check=check)


def refused(dc: Cluster, *args: str, match: str) -> None:
    proc = dc.pvc(*args, check=False, timeout=120)
    assert proc.returncode != 0, (args, proc.stdout)
    assert proc.stderr.startswith("error: ") and match in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def running_disks(dc: Cluster, node: str, name: str) -> dict[str, ET.Element]:
    root = ET.fromstring(dc.virsh(node, "dumpxml", name).stdout)
    return {d.find("source").get("name"): d for d in root.iterfind("./devices/disk")
            if d.find("source") is not None and d.find("source").get("protocol") == "rbd"}


def test_a_node_fills_in_monitors_and_auth_and_dump_keeps_the_definition(dc):
    ceph = dc.dev.ceph()
    define(dc, "d1", f"{POOL}/root1")
    vm = dc.vm("d1")
    assert vm["volumes"] == [f"{POOL}/root1"] and vm["disk_changes"] == 0
    assert "volumes:" in dc.pvc("vm", "info", "d1").stdout
    assert "<host" not in dc.pvc("vm", "dump", "d1").stdout
    dc.pvc("vm", "start", "d1", "--wait")
    disk = running_disks(dc, "hv1", "d1")[f"{POOL}/root1"]
    assert [(h.get("name"), h.get("port")) for h in disk.iterfind("source/host")] == [("127.0.0.1", str(ceph.port))]
    assert disk.find("auth").get("username") == "admin"
    assert disk.find("auth/secret").get("uuid") == ceph.secret_uuid
    dump = dc.pvc("vm", "dump", "d1").stdout
    assert "<host" not in dump and "<auth" not in dump  # what the operator wrote
    # The test driver cannot live-migrate: pvc shuts it down and starts it on hv2, which fills in too.
    dc.pvc("vm", "migrate", "d1", "--target", "hv2", "--wait")
    assert dc.where_running("d1") == ["hv2"]
    assert running_disks(dc, "hv2", "d1")[f"{POOL}/root1"].find("auth/secret").get("uuid") == ceph.secret_uuid
    dc.pvc("vm", "stop", "d1", "--wait")


def test_refusals_write_nothing(dc):
    before = {v["name"] for v in dc.pvc_json("vm", "list")}
    for args, match in [
        ((f"{POOL}/nope",), f"volume {POOL}/nope: it does not exist"),
        (("gonepool/root1",), "volume gonepool/root1: its pool is gone"),
        ((f"{POOL}/root1",), "volume vdisks/root1 is already used by VM d1"),  # d1 has it
        ((f"{POOL}/data1", f"{POOL}/data1"), "names volume vdisks/data1 twice"),
    ]:
        path = dc.tmp / "bad.xml"
        path.write_text(vm_xml("bad", *args))
        refused(dc, "vm", "define", str(path), "--target", "hv1", match=match)
    assert {v["name"] for v in dc.pvc_json("vm", "list")} == before
    # modify is checked the same way.
    path = dc.tmp / "d1-mod.xml"
    path.write_text(vm_xml("d1", f"{POOL}/root1", f"{POOL}/nope", uuid=dc.vm("d1")["uuid"]))
    refused(dc, "vm", "modify", "d1", str(path), match=f"volume {POOL}/nope: it does not exist")
    assert dc.vm("d1")["volumes"] == [f"{POOL}/root1"]
    # volume add: missing volume, missing pool, target in use, another VM's volume, one it has.
    xml_before = dc.pvc("vm", "dump", "d1").stdout
    define(dc, "d2", f"{POOL}/data2", node="hv2")
    for args, match in [
        ((f"{POOL}/nope",), f"volume {POOL}/nope: it does not exist"),
        (("gonepool/x",), "volume gonepool/x: its pool is gone"),
        ((f"{POOL}/data1", "--target", "vda"), "target dev vda is already used"),
        ((f"{POOL}/data2",), f"volume {POOL}/data2 is already used by VM d2"),
        ((f"{POOL}/root1",), f"already has volume {POOL}/root1"),
        (("novolume",), "expected POOL/VOLUME"),
    ]:
        refused(dc, "vm", "volume", "add", "d1", *args, match=match)
    refused(dc, "vm", "volume", "remove", "d1", f"{POOL}/data1", match=f"has no volume {POOL}/data1")
    refused(dc, "vm", "volume", "add", "nosuchvm", f"{POOL}/data1", match="unknown VM 'nosuchvm'")
    assert dc.pvc("vm", "dump", "d1").stdout == xml_before
    assert dc.vm("d1")["volumes"] == [f"{POOL}/root1"]
    dc.pvc("vm", "undefine", "d2", "--yes")


def test_shareable_volume(dc):
    define(dc, "s1", f"{POOL}/shared", shareable=True)
    proc = define(dc, "s2", f"{POOL}/shared", check=False)  # not shareable on s2's side
    assert proc.returncode == 1 and "already used by VM s1" in proc.stderr
    define(dc, "s2", f"{POOL}/shared", shareable=True)
    assert dc.vm("s2")["volumes"] == [f"{POOL}/shared"]
    dc.pvc("vm", "undefine", "s1", "--yes")
    dc.pvc("vm", "undefine", "s2", "--yes")


def test_volume_add_and_remove_on_a_stopped_vm(dc):
    out = dc.pvc("vm", "volume", "add", "d1", f"{POOL}/data1").stdout
    assert "as vdb" in out and "applies at its next start" in out
    assert dc.vm("d1")["volumes"] == [f"{POOL}/root1", f"{POOL}/data1"]
    assert "name='vdisks/data1'" in dc.pvc("vm", "dump", "d1").stdout.replace('"', "'")
    assert dc.pvc_json("storage", "volume", "info", POOL, "data1")["used_by"] == "d1"
    dc.pvc("vm", "start", "d1", "--wait")
    assert set(running_disks(dc, dc.vm("d1")["node"], "d1")) == {f"{POOL}/root1", f"{POOL}/data1"}
    dc.pvc("vm", "stop", "d1", "--wait")
    out = dc.pvc("vm", "volume", "remove", "d1", f"{POOL}/data1").stdout
    assert "Removed volume vdisks/data1 from VM d1" in out
    assert dc.vm("d1")["volumes"] == [f"{POOL}/root1"]
    assert dc.pvc_json("storage", "volume", "info", POOL, "data1")["used_by"] is None


def test_volume_add_on_a_running_vm_reaches_its_node(dc):
    """The node compares the running domain with the stored XML and attaches the difference; the
    test driver cannot attach live, which the node reports (the definition keeps the disk)."""
    dc.pvc("vm", "start", "d1", "--wait")
    proc = dc.pvc("vm", "volume", "add", "d1", f"{POOL}/data1", check=False)
    assert proc.returncode == 1 and "disk change not applied live on" in proc.stderr, proc.stderr
    assert "attaching vdisks/data1" in proc.stderr and "applies at the next start" in proc.stderr
    vm = dc.vm("d1")
    assert vm["disk_changes"] == 0 and vm["volumes"] == [f"{POOL}/root1", f"{POOL}/data1"]
    assert "disk change not applied live" in vm["note"]
    dc.pvc("vm", "restart", "d1", "--wait")  # a restart applies the definition
    assert set(running_disks(dc, dc.vm("d1")["node"], "d1")) == {f"{POOL}/root1", f"{POOL}/data1"}
    dc.pvc("vm", "stop", "d1", "--wait")


def test_undefine_with_its_volumes(dc):
    define(dc, "u2", f"{POOL}/spare", node="hv2")
    define(dc, "u3", f"{POOL}/shared", node="hv2", shareable=True)
    dc.pvc("vm", "volume", "add", "u2", f"{POOL}/shared", "--shareable")
    assert dc.vm("u2")["volumes"] == [f"{POOL}/spare", f"{POOL}/shared"]
    # Another VM uses one of its volumes: nothing is changed.
    refused(dc, "vm", "undefine", "u2", "--delete-volumes", "--yes", match=f"volume {POOL}/shared is also used by VM u3")
    assert dc.vm("u2")["name"] == "u2"
    names = {v["name"] for v in dc.pvc_json("storage", "volume", "list", POOL)}
    assert {"spare", "shared"} <= names
    dc.pvc("vm", "undefine", "u3", "--yes")  # without --delete-volumes: the volume stays
    out = dc.pvc("vm", "undefine", "u2", "--delete-volumes", "--yes").stdout
    assert "removed volumes vdisks/spare, vdisks/shared" in out
    names = {v["name"] for v in dc.pvc_json("storage", "volume", "list", POOL)}
    assert not {"spare", "shared"} & names
    assert "u2" not in {v["name"] for v in dc.pvc_json("vm", "list")}
    dc.pvc("vm", "undefine", "d1", "--delete-volumes", "--yes")
    names = {v["name"] for v in dc.pvc_json("storage", "volume", "list", POOL)}
    assert not {"root1", "data1"} & names


def rbd(dc: Cluster, *args: str, check: bool = True) -> str:
    ceph = dc.dev.ceph()
    proc = subprocess.run(["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), *args],
                          capture_output=True, text=True, timeout=60)
    assert not check or proc.returncode == 0, proc.stderr
    return proc.stdout


def blocklist(dc: Cluster) -> list[str]:
    ceph = dc.dev.ceph()
    out = subprocess.run(["ceph", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), "osd", "blocklist", "ls",
                          "--format", "json"], capture_output=True, text=True, timeout=60, check=True).stdout
    # Ceph 16 prints two JSON lists here: the addresses, then the address ranges.
    return [e["addr"] for e in json.JSONDecoder().raw_decode(out.strip() or "[]")[0]]


def test_fencing_blocklists_the_dead_nodes_ceph_client_until_it_is_back_and_ready(dc):
    """A node dies while "its QEMU" (a real librbd client writing to the VM's volume: `rbd bench`,
    as the test driver opens no disk) keeps writing: before the VM starts elsewhere, that client is
    blocklisted (its writes are refused: it exits) and its exclusive lock released; the entry is
    removed once the node is back and ready."""
    victim = next(n["name"] for n in dc.pvc_json("node", "list") if n["coordinator_state"] != "primary")
    dc.pvc("storage", "volume", "add", POOL, "fenced1", "64M")
    define(dc, "f1", f"{POOL}/fenced1", node=victim)
    dc.pvc("vm", "start", "f1", "--wait")
    ceph = dc.dev.ceph()
    writer = subprocess.Popen(["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), "bench",
                               "--io-type", "write", "--io-size", "4096", "--io-total", "100G", f"{POOL}/fenced1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: json.loads(rbd(dc, "status", f"{POOL}/fenced1", "--format", "json"))["watchers"],
                   timeout=30, interval=0.3)
        addr = json.loads(rbd(dc, "status", f"{POOL}/fenced1", "--format", "json"))["watchers"][0]["address"]
        dc.dev.stop_node(victim, signal.SIGKILL)
        wait_until(lambda: dc.vm("f1")["node"] != victim and dc.vm("f1")["libvirt_state"] == "running",
                   timeout=60, interval=0.3)
        assert addr in blocklist(dc)
        info = dc.pvc_json("node", "info", victim)
        assert info["fence"]["blocklisted"] == [addr], info["fence"]
        assert writer.wait(timeout=60) != 0  # its writes are refused: librbd gives up
        assert json.loads(rbd(dc, "lock", "ls", f"{POOL}/fenced1", "--format", "json") or "[]") == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # Back: powered on, its daemon started (flushed), then ready: the blocklist entry goes.
    from pvc.devcluster.bmc import PASSWORD, USERNAME

    port = dc.dev.node(victim).ipmi_port
    subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port), "-U", USERNAME,
                    "-P", PASSWORD, "chassis", "power", "on"], capture_output=True, timeout=15, check=True)
    wait_until(lambda: dc.dev.libvirtd(dc.dev.node(victim)).pid, timeout=20)
    dc.dev.start_node(victim)
    assert addr in blocklist(dc)  # flushed: not yet
    dc.pvc("node", "ready", victim, "--wait", timeout=120)
    wait_until(lambda: addr not in blocklist(dc), timeout=30, interval=0.5)
    wait_until(lambda: dc.pvc_json("node", "info", victim)["fence"]["blocklisted"] == [], timeout=30)
    dc.pvc("vm", "stop", "f1", "--wait")
    dc.pvc("vm", "undefine", "f1", "--delete-volumes", "--yes")
