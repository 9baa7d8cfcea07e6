"""A real QEMU guest on an RBD disk through real moves (issue 10, item 7).

One guest boots once from a qemu-mode dev cluster with Ceph (`up --storage ceph`). Its XML names
its disk as pvc wants it (`<source protocol='rbd' name='POOL/VOLUME'/>`, no monitors, no auth): the
node fills those in. The guest writes a numbered block to the disk every second (conv=fsync), reads
it back and checks the block before it (``pvc-guest disk N md5 ... ok``). While it writes: a volume
is attached live, the guest is live-migrated (with both disks), the extra volume detached live on the
new node, the guest unmigrated, its node flushed and readied. It must stay one continuous boot
(ticks 1, 2, 3... without a gap) with every disk check ok, and the volume read from outside holds
every block it wrote. Then (issue 10, item 8) the node running it dies (kill -9, fenced through its
simulated BMC): before the guest starts on the other node, the dead QEMU's Ceph client is blocklisted
and its lock released; the new boot verifies every block the dead one wrote. Real Ceph, libvirt and
QEMU; nothing mocked.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from pvc.devcluster import guest
from pvc.devcluster.cluster import DevCluster
from tests.conftest import wait_until
from tests.system.conftest import BOOT, QemuCluster

pytestmark = pytest.mark.system

POOL = "vms"
# Simulated BMCs (ipmi_sim) for the fencing test, where ipmi_sim and ipmitool are installed.
_DISK = re.compile(re.escape(guest.DISK_LINE) + r"(\d+) md5 (\w+) (.*)")


@pytest.fixture(scope="module")
def qc(tmp_path_factory):
    if reason := guest.qemu_missing():
        pytest.skip(f"QEMU cannot run on this machine: {reason}")
    guest.ensure_guest()
    workdir = tmp_path_factory.mktemp("qdisks")
    dev = DevCluster(workdir)
    dev.up(nodes=2, hypervisor="qemu", storage="ceph", fencing=True, timeout=180)
    try:
        cluster = QemuCluster(dev, workdir)
        info = dev.info()[0]
        cluster.env.update(PVC_CEPH_CONF=info["ceph_conf"], PVC_CEPH_KEYRING=info["ceph_keyring"])
        cluster.pvc("storage", "pool", "add", POOL, "--pgs", "8", "--replicas", "1", timeout=180)
        wait_until(lambda: all(n["storage"] == "ok" for n in cluster.pvc_json("node", "list")), timeout=60)
        yield cluster
    finally:
        dev.down()


def disk_lines(c: QemuCluster, name: str) -> list[tuple[int, str]]:
    """(block number, verdict) for each disk line of the guest's latest boot."""
    return [(int(n), verdict) for n, _sum, verdict in _DISK.findall(c.console(name).rpartition(BOOT)[2])]


def wait_disk(c: QemuCluster, name: str, above: int, timeout: float = 90) -> int:
    wait_until(lambda: any(n > above for n, _ in disk_lines(c, name)), timeout=timeout, interval=0.3)
    return disk_lines(c, name)[-1][0]


def assert_disk_intact(c: QemuCluster, name: str) -> None:
    lines = disk_lines(c, name)
    assert lines, f"{name} wrote nothing to its disk"
    bad = [(n, v) for n, v in lines if v != "ok"]
    assert not bad, f"{name}'s own disk checks failed: {bad[:5]}"
    numbers = [n for n, _ in lines]
    assert numbers == list(range(1, len(numbers) + 1)), f"{name}'s disk blocks are not continuous: {numbers}"


def blklist(c: QemuCluster, node: str, name: str) -> str:
    return c.virsh(node, "domblklist", name).stdout


def test_guest_on_rbd_keeps_writing_through_attach_migrate_detach_unmigrate_flush_ready(qc):
    c = qc
    c.pvc("storage", "volume", "add", POOL, "g1", "64M")
    c.pvc("storage", "volume", "add", POOL, "g1extra", "16M")
    xml = c.tmp / "g1.xml"
    xml.write_text(guest.domain_xml("g1", c.dev.node("hv1").console_log_directory, volume=f"{POOL}/g1"))
    c.pvc("vm", "define", str(xml), "--target", "hv1")
    assert "<host" not in c.pvc("vm", "dump", "g1").stdout
    c.pvc("vm", "start", "g1", "--wait")
    last = wait_disk(c, "g1", 2, timeout=120)
    assert c.vm("g1")["volumes"] == [f"{POOL}/g1"]

    # Attach a second volume live; the running domain gets it on hv1.
    out = c.pvc("vm", "volume", "add", "g1", f"{POOL}/g1extra", timeout=90).stdout
    assert "as vdb; applied live on node hv1" in out, out
    assert f"{POOL}/g1extra" in blklist(c, "hv1", "g1")

    # Live migration: libvirt sends the running XML (both disks, filled in); the guest keeps writing.
    c.pvc("vm", "migrate", "g1", "--target", "hv2", "--wait", timeout=120)
    vm = c.assert_matches_libvirt("g1")
    assert (vm["node"], vm["last_migration"]["method"]) == ("hv2", "live")
    assert f"{POOL}/g1extra" in blklist(c, "hv2", "g1") and f"{POOL}/g1" in blklist(c, "hv2", "g1")
    last = wait_disk(c, "g1", last + 2)

    # Detach live on its new node (the guest lets the PCI device go).
    out = c.pvc("vm", "volume", "remove", "g1", f"{POOL}/g1extra", timeout=90).stdout
    assert "applied live on node hv2" in out, out
    assert f"{POOL}/g1extra" not in blklist(c, "hv2", "g1")
    assert c.vm("g1")["volumes"] == [f"{POOL}/g1"]

    c.pvc("vm", "unmigrate", "g1", "--wait", timeout=120)
    assert c.assert_matches_libvirt("g1")["node"] == "hv1"
    last = wait_disk(c, "g1", last + 2)

    c.pvc("node", "flush", "hv1", "--wait", timeout=180)
    assert c.assert_matches_libvirt("g1")["node"] == "hv2"
    last = wait_disk(c, "g1", last + 2)
    c.pvc("node", "ready", "hv1", "--wait", timeout=180)
    assert c.assert_matches_libvirt("g1")["node"] == "hv1"
    last = wait_disk(c, "g1", last + 2)

    c.assert_one_continuous_boot("g1")
    assert_disk_intact(c, "g1")

    # From outside: every block the guest said it wrote is on the volume.
    c.pvc("vm", "stop", "g1", "--wait")
    ceph = c.dev.ceph()
    image = c.tmp / "g1.raw"
    subprocess.run(["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), "export", f"{POOL}/g1",
                    str(image), "--no-progress"], check=True, capture_output=True, timeout=120)
    data = image.read_bytes()
    count = int(re.match(rb"pvc-guest disk count (\d+)\n", data[:512]).group(1))
    written = disk_lines(c, "g1")[-1][0]
    assert count >= written
    for n in range(max(1, count - guest.DISK_RING + 1), count + 1):
        sector = 1 + (n - 1) % guest.DISK_RING
        assert data[sector * 512:(sector + 1) * 512] == guest.disk_block(n), f"block {n} differs on the volume"


_VERIFIED = re.compile(re.escape(guest.DISK_LINE) + r"verified blocks (\d+)-(\d+) of an earlier boot: (.*)")


def ceph_cmd(c: QemuCluster, tool: str, *args: str) -> str:
    ceph = c.dev.ceph()
    return subprocess.run([tool, "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), *args],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def blocklist(c: QemuCluster) -> list[str]:
    out = ceph_cmd(c, "ceph", "osd", "blocklist", "ls", "--format", "json").strip() or "[]"
    return [e["addr"] for e in json.JSONDecoder().raw_decode(out)[0]]  # (then a second list: ranges)


@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_guest_of_a_fenced_node_restarts_elsewhere_with_its_disk_intact(qc, how):
    """The node's daemon is killed, or frozen (a half-dead node: its guest still writes until the power
    cut): fenced, its Ceph client blocklisted, the guest restarts elsewhere with every block intact."""
    c = qc
    victim = next(n["name"] for n in c.pvc_json("node", "list") if n["coordinator_state"] != "primary")
    if c.vm("g1")["node"] != victim:
        c.pvc("vm", "move", "g1", "--target", victim, "--wait", timeout=60)
    if c.vm("g1")["state"] != "start":
        c.pvc("vm", "start", "g1", "--wait")
    boots = c.boots("g1")
    wait_disk(c, "g1", 2, timeout=120)
    watchers = json.loads(ceph_cmd(c, "rbd", "status", f"{POOL}/g1", "--format", "json"))["watchers"]
    assert len(watchers) == 1
    old = watchers[0]["address"]

    if how == "kill":
        c.dev.stop_node(victim, signal.SIGKILL)
    else:
        c.dev.freeze_node(victim)  # the power cut SIGKILLs the frozen daemon too
    wait_until(lambda: c.vm("g1")["node"] != victim and c.vm("g1")["libvirt_state"] == "running",
               timeout=90, interval=0.5)
    assert old in blocklist(c)
    assert c.pvc_json("node", "info", victim)["fence"]["blocklisted"] == [old]
    c.wait_boots("g1", boots + 1, timeout=60)
    wait_disk(c, "g1", 0, timeout=120)
    latest = c.console("g1").rpartition(BOOT)[2]
    verified = _VERIFIED.search(latest)
    assert verified and verified.group(3) == "ok", latest[:2000]
    last = wait_disk(c, "g1", int(verified.group(2)) + 1)
    assert disk_lines(c, "g1")[0][0] == int(verified.group(2)) + 1  # it carries on after the last block
    assert all(v == "ok" for _, v in disk_lines(c, "g1")), disk_lines(c, "g1")
    assert last > int(verified.group(2))
    new = json.loads(ceph_cmd(c, "rbd", "status", f"{POOL}/g1", "--format", "json"))["watchers"]
    assert [w["address"] for w in new] != [old]

    # The node is powered on, its daemon started (flushed), then readied: its blocklist entry goes.
    from pvc.devcluster.bmc import PASSWORD, USERNAME

    subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(c.dev.node(victim).ipmi_port),
                    "-U", USERNAME, "-P", PASSWORD, "chassis", "power", "on"], capture_output=True, timeout=15,
                   check=True)
    wait_until(lambda: c.dev.libvirtd(c.dev.node(victim)).pid, timeout=20)
    c.dev.start_node(victim)
    c.pvc("node", "ready", victim, "--wait", timeout=180)
    wait_until(lambda: old not in blocklist(c), timeout=30, interval=0.5)
