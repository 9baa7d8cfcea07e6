"""`pvc storage ...` against a real Ceph cluster (one mon, mgr and OSD from Debian's packages, started
once for this module by `python -m pvc.devcluster up --storage ceph`'s code) and a real 2-node pvc
cluster: every command, each refusal (one `error:` line, non-zero exit, nothing changed), the
keepalive's storage reachability and placement that respects it. Nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid as uuidlib

import pytest
import yaml

from pvc.devcluster.cluster import DevCluster
from tests.conftest import Cluster, wait_until

POOL = "vms"


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
    """A 2-node cluster (test hypervisor) with Ceph, and a pool ``vms`` on it."""
    workdir = tmp_path_factory.mktemp("storage")
    dev = DevCluster(workdir)
    dev.up(nodes=2, storage="ceph", timeout=120)
    try:
        cluster = Cluster(dev, workdir)
        info = dev.info()[0]
        cluster.env.update(PVC_CEPH_CONF=info["ceph_conf"], PVC_CEPH_KEYRING=info["ceph_keyring"])
        cluster.pvc("storage", "pool", "add", POOL, "--pgs", "8", "--replicas", "1", timeout=180)
        yield cluster
    finally:
        dev.down()


def refused(sc: Cluster, *args: str, match: str, code: int = 1) -> str:
    proc = sc.pvc(*args, check=False, timeout=120)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and match in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def volumes(sc: Cluster, pool: str = POOL) -> dict[str, dict]:
    return {v["name"]: v for v in sc.pvc_json("storage", "volume", "list", pool)}


def rbd_vm_xml(name: str, *refs: str) -> str:
    disks = "".join(f"<disk type='network' device='disk'><source protocol='rbd' name='{ref}'/>"
                    f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, ref in enumerate(refs))
    return (f"<domain type='test'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>{disks}</devices></domain>")


def define_rbd_vm(sc: Cluster, name: str, *refs: str, target: str = "") -> dict:
    path = sc.tmp / f"{name}.xml"
    path.write_text(rbd_vm_xml(name, *refs))
    sc.pvc("vm", "define", str(path), *(["--target", target] if target else []))
    return sc.vm(name)


def pattern_file(path, size: int, seed: int) -> bytes:
    import random

    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


# -- the local cluster -------------------------------------------------------------------------------


def test_devcluster_gives_ceph_to_every_node(sc):
    info = json.loads(subprocess.run(
        ["python", "-m", "pvc.devcluster", "info", "--workdir", str(sc.dev.workdir), "-o", "json"],
        capture_output=True, text=True, check=True, timeout=60).stdout)
    conf, keyring = info[0]["ceph_conf"], info[0]["ceph_keyring"]
    assert os.path.isfile(conf) and os.path.isfile(keyring)
    assert all(n["ceph_conf"] == conf and n["ceph_keyring"] == keyring for n in info)
    uuids = set()
    for node in sc.dev.state.nodes:
        ceph = yaml.safe_load(open(node.config))["storage"]["ceph"]
        assert ceph["conf"] == conf and ceph["keyring"] == keyring and ceph["client"] == "client.admin"
        uuids.add(ceph["secret_uuid"])
        socket = node.libvirt_uri.partition("?")[2]
        listing = subprocess.run(["virsh", "-c", f"secret+unix:///system?{socket}", "secret-list"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout
        assert ceph["secret_uuid"] in listing and "ceph client.admin secret" in listing
    assert len(uuids) == 1  # one secret UUID on every node


def test_keepalive_carries_storage_reachability(sc):
    wait_until(lambda: all(n["storage"] == "ok" for n in sc.pvc_json("node", "list")), timeout=30)
    assert [sc.pvc_json("node", "info", n)["storage"] for n in sc.nodes] == ["ok"] * len(sc.nodes)


# -- status ---------------------------------------------------------------------------------------------


def test_status(sc):
    st = sc.pvc_json("storage", "status")
    assert st["health"] in ("HEALTH_OK", "HEALTH_WARN")
    assert st["osds_total"] == 1 and st["osds_up"] == 1 and st["osds_in"] == 1
    assert st["bytes_total"] > 0 and 0 < st["bytes_used"] < st["bytes_total"] and st["bytes_avail"] > 0
    assert [o["name"] for o in st["osds"]] == ["osd.0"] and st["osds"][0]["up"]
    table = sc.pvc("storage", "status").stdout
    assert "health: HEALTH_" in table and "osd.0" in table and "capacity:" in table


def test_without_ceph_config_or_with_a_dead_monitor(sc, tmp_path):
    proc = subprocess.run(["pvc", "storage", "status"], env={**sc.env, "PVC_CEPH_CONF": str(tmp_path / "nope.conf")},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no Ceph config at"), proc.stderr
    # A ceph.conf whose monitor does not answer: bounded by --ceph-timeout, one line, exit 3.
    dead = tmp_path / "dead.conf"
    dead.write_text(open(sc.env["PVC_CEPH_CONF"]).read().replace(
        f"mon host = v2:127.0.0.1:{sc.dev.ceph().port}", "mon host = v2:127.0.0.1:9"))
    for args in (["storage", "status"], ["storage", "volume", "add", POOL, "x", "1G"]):
        start = time.monotonic()
        proc = subprocess.run(["pvc", "storage", "--ceph-timeout", "3", *args[1:]],
                              env={**sc.env, "PVC_CEPH_CONF": str(dead)}, capture_output=True, text=True, timeout=60)
        assert time.monotonic() - start < 30
        assert proc.returncode != 0 and proc.stderr.startswith("error: "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- pools ------------------------------------------------------------------------------------------------


def test_pool_add_list_info_remove(sc):
    out = sc.pvc("storage", "pool", "add", "p2", "--pgs", "16", "--replicas", "1", timeout=180).stdout
    assert "Added pool p2" in out
    info = sc.pvc_json("storage", "pool", "info", "p2")
    assert info == {"name": "p2", "pgs": 16, "replicas": 1, "stored_bytes": info["stored_bytes"], "volumes": []}
    names = [p["name"] for p in sc.pvc_json("storage", "pool", "list")]
    assert "p2" in names and POOL in names and "device_health_metrics" not in names
    assert "p2" in sc.pvc("storage", "pool", "list").stdout
    sc.pvc("storage", "volume", "add", "p2", "v1", "64M")
    assert sc.pvc_json("storage", "pool", "info", "p2")["volumes"] == ["v1"]
    refused(sc, "storage", "pool", "remove", "p2", match="add --yes")
    refused(sc, "storage", "pool", "remove", "p2", "--yes", match="holds 1 volume(s) (v1); --force")
    assert "v1" in volumes(sc, "p2")
    out = sc.pvc("storage", "pool", "remove", "p2", "--yes", "--force").stdout
    assert "Removed pool p2 and its 1 volume" in out
    assert "p2" not in [p["name"] for p in sc.pvc_json("storage", "pool", "list")]
    refused(sc, "storage", "pool", "info", "p2", match="no pool 'p2'")


@pytest.mark.parametrize("args, match", [
    (["add", POOL], "pool 'vms' exists already"),
    (["add", "p3", "--pgs", "12"], "power of two"),
    (["add", "p3", "--replicas", "0"], "from 1 to 10"),
    (["add", "p3", "--replicas", "2"], "needs at least 2 OSDs up"),
    (["add", "bad/name"], "bad pool name"),
    (["add", "-x"], "No such option"),  # typer's own usage error
    (["remove", "nopool", "--yes"], "no pool 'nopool'"),
    (["info", "nopool"], "no pool 'nopool'"),
    (["info", "bad@name"], "bad pool name"),
])
def test_pool_refusals_change_nothing(sc, args, match):
    before = sc.pvc_json("storage", "pool", "list")
    if match == "No such option":
        proc = sc.pvc("storage", "pool", *args, check=False)
        assert proc.returncode == 2
    else:
        refused(sc, "storage", "pool", *args, match=match)
    assert [p["name"] for p in sc.pvc_json("storage", "pool", "list")] == [p["name"] for p in before]


# -- volumes -------------------------------------------------------------------------------------------------


def test_volume_add_resize_rename_clone_remove(sc):
    out = sc.pvc("storage", "volume", "add", POOL, "vol1", "10G").stdout
    assert "Added volume vms/vol1 (10G)" in out
    info = sc.pvc_json("storage", "volume", "info", POOL, "vol1")
    assert info == {"pool": POOL, "name": "vol1", "size_bytes": 10 << 30, "used_by": None, "snapshots": []}
    assert sc.pvc_json("storage", "volume", "resize", POOL, "vol1", "12G")["size_bytes"] == 12 << 30
    refused(sc, "storage", "volume", "resize", POOL, "vol1", "512M", match="--force")
    assert volumes(sc)["vol1"]["size_bytes"] == 12 << 30
    sc.pvc("storage", "volume", "resize", POOL, "vol1", "512M", "--force")
    assert volumes(sc)["vol1"]["size_bytes"] == 512 << 20
    sc.pvc("storage", "volume", "add", POOL, "vol2", "1G")
    refused(sc, "storage", "volume", "rename", POOL, "vol1", "vol2", match="volume 'vol2' exists already")
    assert "Renamed volume vms/vol1 to vms/vol1b" in sc.pvc("storage", "volume", "rename", POOL, "vol1", "vol1b").stdout
    vols = volumes(sc)
    assert "vol1" not in vols and vols["vol1b"]["size_bytes"] == 512 << 20
    sc.pvc("storage", "snapshot", "add", POOL, "vol1b", "s1")
    clone = sc.pvc_json("storage", "volume", "clone", POOL, "vol1b", "vol1c")
    assert clone == {"pool": POOL, "name": "vol1c", "size_bytes": 512 << 20, "used_by": None, "snapshots": []}
    refused(sc, "storage", "volume", "clone", POOL, "vol1b", "vol2", match="exists already")
    refused(sc, "storage", "volume", "remove", POOL, "vol1c", match="add --yes")
    for name in ("vol1b", "vol1c", "vol2"):  # vol1b with its snapshot
        assert f"Removed volume vms/{name}" in sc.pvc("storage", "volume", "remove", POOL, name, "--yes").stdout
    assert not {"vol1b", "vol1c", "vol2"} & set(volumes(sc))
    table = sc.pvc("storage", "volume", "list").stdout
    assert "POOL" in table and "vol1b" not in table


@pytest.mark.parametrize("args, match", [
    (["add", POOL, "v", "10X"], "bad size '10X'"),
    (["add", POOL, "v", "0"], "greater than 0"),
    (["add", POOL, "v", "1000"], "multiple of 512"),
    (["add", "nopool", "v", "1G"], "no pool 'nopool'"),
    (["add", POOL, "a/b", "1G"], "bad volume name 'a/b'"),
    (["add", POOL, "a b", "1G"], "bad volume name"),
    (["add", "bad@pool", "v", "1G"], "bad pool name"),
    (["add", POOL, "keep", "1G"], "volume 'keep' exists already in pool 'vms'"),
    (["resize", POOL, "nothere", "1G"], "no volume 'nothere' in pool 'vms'"),
    (["resize", "nopool", "keep", "1G"], "no pool 'nopool'"),
    (["resize", POOL, "keep", "1Q"], "bad size"),
    (["rename", POOL, "nothere", "x"], "no volume 'nothere'"),
    (["rename", POOL, "keep", "x@y"], "bad new volume name"),
    (["clone", POOL, "nothere", "x"], "no volume 'nothere'"),
    (["clone", POOL, "keep", "bad/x"], "bad new volume name"),
    (["remove", POOL, "nothere", "--yes"], "no volume 'nothere'"),
    (["remove", "nopool", "x", "--yes"], "no pool 'nopool'"),
    (["info", POOL, "nothere"], "no volume 'nothere'"),
    (["list", "nopool"], "no pool 'nopool'"),
    (["download", POOL, "nothere", "/tmp/pvc-never-written.img"], "no volume 'nothere'"),
    (["upload", POOL, "x", "/nonexistent/file.img"], "no file"),
])
def test_volume_refusals_change_nothing(sc, args, match):
    if "keep" not in volumes(sc):
        sc.pvc("storage", "volume", "add", POOL, "keep", "1G")
    before = volumes(sc)
    refused(sc, "storage", "volume", *args, match=match)
    assert volumes(sc) == before
    assert not os.path.exists("/tmp/pvc-never-written.img")


def test_volume_used_by_a_vm(sc):
    sc.pvc("storage", "volume", "add", POOL, "root1", "1G")
    sc.pvc("storage", "volume", "add", POOL, "data1", "1G")
    define_rbd_vm(sc, "rbdvm1", f"{POOL}/root1", f"{POOL}/data1", target="hv1")
    assert sc.pvc_json("storage", "volume", "info", POOL, "root1")["used_by"] == "rbdvm1"
    assert volumes(sc)["data1"]["used_by"] == "rbdvm1"
    # Growing a volume a VM uses is allowed (the VM sees it once its disk is resized live: VM-disk work).
    assert sc.pvc_json("storage", "volume", "resize", POOL, "data1", "2G")["used_by"] == "rbdvm1"
    assert "rbdvm1" in sc.pvc("storage", "volume", "info", POOL, "data1").stdout
    refused(sc, "storage", "volume", "remove", POOL, "root1", "--yes", match="used by VM rbdvm1")
    refused(sc, "storage", "volume", "rename", POOL, "data1", "data2", match="used by VM rbdvm1")
    refused(sc, "storage", "pool", "remove", POOL, "--yes", "--force", match="VMs use: data1 (VM rbdvm1)")
    img = sc.tmp / "small.raw"
    pattern_file(img, 1 << 20, 1)
    refused(sc, "storage", "volume", "upload", POOL, "root1", str(img), match="used by VM rbdvm1")
    # Snapshots: rollback is refused while the VM runs (or is asked to), allowed once it is stopped.
    sc.pvc("storage", "snapshot", "add", POOL, "root1", "before")
    sc.pvc("vm", "start", "rbdvm1", "--wait")
    refused(sc, "storage", "snapshot", "rollback", POOL, "root1", "before", match="used by running VM rbdvm1")
    sc.pvc("vm", "stop", "rbdvm1", "--wait")
    assert "Rolled volume vms/root1 back to snapshot before" in sc.pvc(
        "storage", "snapshot", "rollback", POOL, "root1", "before").stdout
    sc.pvc("vm", "undefine", "rbdvm1", "--yes")
    assert sc.pvc_json("storage", "volume", "info", POOL, "root1")["used_by"] is None
    for name in ("root1", "data1"):
        sc.pvc("storage", "volume", "remove", POOL, name, "--yes")


# -- snapshots -------------------------------------------------------------------------------------------------


def test_snapshots(sc, tmp_path):
    data = pattern_file(tmp_path / "a.raw", 4 << 20, 2)
    sc.pvc("storage", "volume", "upload", POOL, "snapvol", str(tmp_path / "a.raw"))
    assert "Added snapshot vms/snapvol@s1" in sc.pvc("storage", "snapshot", "add", POOL, "snapvol", "s1").stdout
    sc.pvc_json("storage", "snapshot", "add", POOL, "snapvol", "s2")
    snaps = sc.pvc_json("storage", "snapshot", "list", POOL, "snapvol")
    assert [s["name"] for s in snaps] == ["s1", "s2"] and snaps[0]["size_bytes"] == 4 << 20
    assert set(snaps[0]) == {"name", "size_bytes", "protected", "timestamp"}
    assert sc.pvc_json("storage", "volume", "info", POOL, "snapvol")["snapshots"] == ["s1", "s2"]
    refused(sc, "storage", "snapshot", "add", POOL, "snapvol", "s1", match="has a snapshot 's1' already")
    refused(sc, "storage", "snapshot", "add", POOL, "snapvol", "a@b", match="bad snapshot name")
    refused(sc, "storage", "snapshot", "add", POOL, "novol", "s", match="no volume 'novol'")
    refused(sc, "storage", "snapshot", "remove", POOL, "snapvol", "s9", match="has no snapshot 's9'")
    refused(sc, "storage", "snapshot", "rollback", POOL, "snapvol", "s9", match="has no snapshot 's9'")
    refused(sc, "storage", "snapshot", "list", "nopool", "snapvol", match="no pool 'nopool'")
    # Overwrite, roll back to s1: the first content is back.
    pattern_file(tmp_path / "b.raw", 4 << 20, 3)
    sc.pvc("storage", "volume", "upload", POOL, "snapvol", str(tmp_path / "b.raw"))
    sc.pvc("storage", "volume", "download", POOL, "snapvol", str(tmp_path / "b-out.raw"))
    assert (tmp_path / "b-out.raw").read_bytes() != data
    sc.pvc("storage", "snapshot", "rollback", POOL, "snapvol", "s1")
    sc.pvc("storage", "volume", "download", POOL, "snapvol", str(tmp_path / "a-out.raw"))
    assert (tmp_path / "a-out.raw").read_bytes() == data
    assert "Removed snapshot vms/snapvol@s2" in sc.pvc("storage", "snapshot", "remove", POOL, "snapvol", "s2").stdout
    assert [s["name"] for s in sc.pvc_json("storage", "snapshot", "list", POOL, "snapvol")] == ["s1"]
    assert "s1" in sc.pvc("storage", "snapshot", "list", POOL, "snapvol").stdout
    sc.pvc("storage", "volume", "remove", POOL, "snapvol", "--yes")


# -- images --------------------------------------------------------------------------------------------------------


def test_upload_download_raw_and_qcow2(sc, tmp_path):
    raw = tmp_path / "disk.raw"
    data = pattern_file(raw, 3 << 20, 4)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True, timeout=60)
    # qcow2 into a new volume: created at the image's virtual size.
    up = sc.pvc("storage", "volume", "upload", POOL, "img1", str(qcow2), "-o", "json")
    assert json.loads(up.stdout)["size_bytes"] == 3 << 20 and "100" in up.stderr  # qemu-img's progress
    sc.pvc("storage", "volume", "download", POOL, "img1", str(tmp_path / "out.raw"))
    assert (tmp_path / "out.raw").read_bytes() == data
    sc.pvc("storage", "volume", "download", POOL, "img1", str(tmp_path / "out.qcow2"), "--format", "qcow2")
    fmt = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(tmp_path / "out.qcow2")],
                                    capture_output=True, check=True, timeout=60).stdout)["format"]
    assert fmt == "qcow2"
    # raw into an existing, bigger volume: filled; its size stays.
    sc.pvc("storage", "volume", "add", POOL, "img2", "8M")
    assert sc.pvc_json("storage", "volume", "upload", POOL, "img2", str(raw))["size_bytes"] == 8 << 20
    sc.pvc("storage", "volume", "download", POOL, "img2", str(tmp_path / "out2.raw"))
    assert (tmp_path / "out2.raw").read_bytes()[: 3 << 20] == data
    # Refusals.
    sc.pvc("storage", "volume", "add", POOL, "tiny", "1M")
    refused(sc, "storage", "volume", "upload", POOL, "tiny", str(raw), match="the image needs 3M")
    refused(sc, "storage", "volume", "download", POOL, "img1", str(tmp_path / "out.raw"), match="exists already")
    refused(sc, "storage", "volume", "download", POOL, "img1", str(tmp_path / "x.img"), "--format", "vmdk",
            match="bad --format")
    refused(sc, "storage", "volume", "upload", "nopool", "x", str(raw), match="no pool 'nopool'")
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)], check=True, timeout=60)
    refused(sc, "storage", "volume", "upload", POOL, "x", str(vmdk), match="'vmdk' is not supported")
    assert "x" not in volumes(sc)
    for name in ("img1", "img2", "tiny"):
        sc.pvc("storage", "volume", "remove", POOL, name, "--yes")


# -- placement -----------------------------------------------------------------------------------------------------


def test_node_that_cannot_reach_ceph_takes_no_rbd_vm(sc):
    """hv2's pvcd gets a keyring Ceph refuses: its keepalive says so, and VMs with RBD disks stay off it."""
    node = sc.dev.node("hv2")
    config = yaml.safe_load(open(node.config))
    original = yaml.safe_dump(config, sort_keys=False)
    bogus = sc.tmp / "bogus.keyring"
    bogus.write_text("[client.admin]\n\tkey = AQBqAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n")
    config["storage"]["ceph"].update(keyring=str(bogus), check_interval=1, check_timeout=3)
    sc.dev.stop_node("hv2")
    open(node.config, "w").write(yaml.safe_dump(config, sort_keys=False))
    sc.dev.start_node("hv2")
    try:
        wait_until(lambda: sc.pvc_json("node", "info", "hv2")["storage"].startswith("unreachable"), timeout=60)
        for i in range(3):  # whatever the selector prefers, an RBD VM lands on hv1
            sc.pvc("storage", "volume", "add", POOL, f"placed{i}", "64M")
            assert define_rbd_vm(sc, f"rbdplace{i}", f"{POOL}/placed{i}")["node"] == "hv1"
        refused(sc, "vm", "migrate", "rbdplace0", "--target", "hv2", match="node hv2 cannot reach Ceph storage")
        # A flush of hv1 has nowhere to put them (hv2 is the only other node): they stay, with the reason.
        flush = sc.pvc("node", "flush", "hv1", "--wait", check=False, timeout=120)
        assert "reaching Ceph storage" in flush.stdout + flush.stderr, (flush.stdout, flush.stderr)
        assert {sc.vm(f"rbdplace{i}")["node"] for i in range(3)} == {"hv1"}
        sc.pvc("node", "ready", "hv1", "--wait", timeout=120)
        # A VM without RBD disks still may go there.
        sc.tmp.joinpath("plain.xml").write_text(rbd_vm_xml("plainvm"))
        sc.pvc("vm", "define", str(sc.tmp / "plain.xml"), "--target", "hv1")
        sc.pvc("vm", "migrate", "plainvm", "--target", "hv2")
        wait_until(lambda: sc.vm("plainvm")["node"] == "hv2", timeout=30)
    finally:
        sc.dev.stop_node("hv2")
        open(node.config, "w").write(original)
        sc.dev.start_node("hv2")
    wait_until(lambda: sc.pvc_json("node", "info", "hv2")["storage"] == "ok", timeout=60)
    for i in range(3):
        sc.pvc("vm", "undefine", f"rbdplace{i}", "--yes")
        sc.pvc("storage", "volume", "remove", POOL, f"placed{i}", "--yes")
    sc.pvc("vm", "undefine", "plainvm", "--yes")


def test_down_stops_ceph(sc):
    """Last in this module: `down` kills the Ceph daemons and removes their directory."""
    ceph = sc.dev.ceph()
    pids = [p for p in ceph.pids.values() if p]
    assert len(pids) == 3 and ceph.dir.is_dir()
    proc = subprocess.run(["python", "-m", "pvc.devcluster", "down", "--workdir", str(sc.dev.workdir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from pvc.devcluster.proc import is_running

    assert not any(is_running(p) for p in pids) and not ceph.dir.exists()
