"""`python -m pvc.devcluster up --storage ceph --hypervisor qemu`: every node's libvirtd has the Ceph
secret, so real QEMU opens an RBD volume (made with `pvc storage volume add`) on each node, and the
node's keepalive says it reaches Ceph. Real Ceph, real libvirt, real QEMU; nothing mocked.

(pvc filling in monitors and the secret in a VM's own XML is the VM-disk work; here the disk element
carries them, as libvirt needs.)"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from pvc.devcluster import guest
from pvc.devcluster.cluster import DevCluster
from tests.conftest import Cluster, wait_until

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def qc(tmp_path_factory):
    if reason := guest.qemu_missing():
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("qstorage")
    dev = DevCluster(workdir)
    dev.up(nodes=2, hypervisor="qemu", storage="ceph", timeout=180)
    try:
        cluster = Cluster(dev, workdir)
        info = dev.info()[0]
        cluster.env.update(PVC_CEPH_CONF=info["ceph_conf"], PVC_CEPH_KEYRING=info["ceph_keyring"])
        cluster.pvc("storage", "pool", "add", "vms", "--pgs", "8", "--replicas", "1", timeout=180)
        yield cluster
    finally:
        dev.down()


def rbd_disk_xml(name: str, ref: str, monitor: str, secret_uuid: str, console: str) -> str:
    disk = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{ref}'><host name='127.0.0.1' port='{monitor.rpartition(':')[2]}'/>"
            f"</source><auth username='admin'><secret type='ceph' uuid='{secret_uuid}'/></auth>"
            f"<target dev='vda' bus='virtio'/></disk>")
    return guest.domain_xml(name, console).replace("<devices>", "<devices>" + disk, 1)


def test_qemu_opens_an_rbd_volume_on_every_node(qc):
    ceph = qc.dev.ceph()
    qc.pvc("storage", "volume", "add", "vms", "shared", "64M")
    wait_until(lambda: all(n["storage"] == "ok" for n in qc.pvc_json("node", "list")), timeout=60)
    for node in qc.dev.state.nodes:
        secret = yaml.safe_load(open(node.config))["storage"]["ceph"]["secret_uuid"]
        assert secret == ceph.secret_uuid
        xml = qc.tmp / f"rbd-{node.name}.xml"
        xml.write_text(rbd_disk_xml(f"rbd-{node.name}", "vms/shared", ceph.monitor, secret,
                                    node.console_log_directory))
        qc.virsh(node.name, "define", str(xml))
        try:
            qc.virsh(node.name, "start", f"rbd-{node.name}")  # fails unless librbd authenticates with the secret
            assert "vms/shared" in qc.virsh(node.name, "domblklist", f"rbd-{node.name}").stdout
            status = subprocess.run(["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), "status",
                                     "vms/shared", "--format", "json"], capture_output=True, text=True, check=True,
                                    timeout=30)
            assert json.loads(status.stdout)["watchers"], status.stdout  # QEMU holds the image open
        finally:
            qc.virsh(node.name, "destroy", f"rbd-{node.name}", check=False)
            qc.virsh(node.name, "undefine", f"rbd-{node.name}", check=False)
