"""Bad input: one clear line on stderr, a non-zero exit, and nothing written."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import domain_xml


@pytest.fixture(scope="module")
def baseline(cluster):
    cluster.define("existing", node="hv1")
    return cluster


def snapshot(cluster) -> list:
    return cluster.pvc_json("vm", "list")


def assert_refused(cluster, *args, contains: str) -> None:
    before = snapshot(cluster)
    proc = cluster.pvc(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert contains.lower() in lines[0].lower(), lines[0]
    assert snapshot(cluster) == before


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<domain><name>x</name", "malformed domain XML"),
        ("not xml at all", "malformed domain XML"),
        ("<network><name>n</name></network>", "not a libvirt domain"),
        (f"<domain><uuid>{'1' * 8}-1111-1111-1111-{'1' * 12}</uuid><memory>1</memory></domain>", "no <name>"),
        ("<domain><name>nouuid</name><memory>1024</memory></domain>", "no <uuid>"),
        ("<domain><name>baduuid</name><uuid>xyz</uuid><memory>1024</memory></domain>", "invalid <uuid>"),
    ],
)
def test_define_bad_xml(baseline, xml, message):
    path = baseline.tmp / "bad.xml"
    path.write_text(xml)
    assert_refused(baseline, "vm", "define", str(path), contains=message)


def test_define_duplicate_name_and_uuid(baseline):
    path = baseline.tmp / "dup.xml"
    path.write_text(domain_xml("existing"))
    assert_refused(baseline, "vm", "define", str(path), contains="already defined")
    path.write_text(domain_xml("other-name", uuid=baseline.vm("existing")["uuid"]))
    assert_refused(baseline, "vm", "define", str(path), contains="already defined")


def test_define_unknown_target_and_selector(baseline):
    path = baseline.tmp / "fresh.xml"
    path.write_text(domain_xml("fresh"))
    assert_refused(baseline, "vm", "define", str(path), "--target", "nosuchnode", contains="unknown node")
    assert_refused(baseline, "vm", "define", str(path), "--selector", "random", contains="unknown selector")
    assert_refused(baseline, "vm", "define", str(baseline.tmp / "missing.xml"), contains="cannot read")


def test_unknown_vm_and_node(baseline):
    for verb in ("start", "stop", "shutdown", "restart", "disable", "info", "dump", "undefine"):
        assert_refused(baseline, "vm", verb, "ghost", contains="unknown VM")
    assert_refused(baseline, "node", "info", "ghost", contains="unknown node")
    assert_refused(baseline, "vm", "list", "--node", "ghost", contains="unknown node")
    assert_refused(baseline, "vm", "list", "--state", "bogus", contains="unknown VM state")


def test_invalid_transitions(baseline):
    assert_refused(baseline, "vm", "stop", "existing", contains="already in state stop")
    assert_refused(baseline, "vm", "shutdown", "existing", contains="cannot shutdown from state stop")
    assert_refused(baseline, "vm", "restart", "existing", contains="cannot restart")
    baseline.pvc("vm", "start", "existing", "--wait")
    assert_refused(baseline, "vm", "start", "existing", contains="already in state start")
    assert_refused(baseline, "vm", "undefine", "existing", contains="stop it before")
    baseline.pvc("vm", "stop", "existing", "--wait")


def test_modify_with_other_uuid_refused(baseline):
    path = baseline.tmp / "other.xml"
    path.write_text(domain_xml("existing"))
    assert_refused(baseline, "vm", "modify", "existing", str(path), contains="has UUID")
    path.write_text("<domain>")
    assert_refused(baseline, "vm", "modify", "existing", str(path), contains="malformed")


def test_zookeeper_unreachable_fails_fast(baseline):
    from pvc.devcluster.proc import free_port

    start = time.monotonic()
    proc = subprocess.run(["pvc", "--zookeeper", f"127.0.0.1:{free_port()}", "vm", "list"],
                          capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: ZooKeeper at 127.0.0.1:")
    assert "unreachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert elapsed < 15  # an error, not a hang


def test_uninitialised_cluster_is_reported(tmp_path):
    from pvc.devcluster.zookeeper_server import ZookeeperServer

    zk = ZookeeperServer(tmp_path / "zk")
    zk.start()
    try:
        proc = subprocess.run(["pvc", "--zookeeper", zk.address, "vm", "list"], capture_output=True, text=True)
        assert proc.returncode != 0 and "pvc init" in proc.stderr
        assert subprocess.run(["pvc", "--zookeeper", zk.address, "init"], capture_output=True).returncode == 0
        again = subprocess.run(["pvc", "--zookeeper", zk.address, "init"], capture_output=True, text=True)
        assert again.returncode == 0 and "already" in again.stdout
        listed = subprocess.run(["pvc", "--zookeeper", zk.address, "vm", "list", "-o", "json"],
                                capture_output=True, text=True)
        assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    finally:
        zk.stop()


def test_pvcd_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "pvcd.yaml"
    cfg.write_text("node: {name: hv9}\nzookeeper: {hostz: x}\n")
    proc = subprocess.run(["pvcd", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "hostz" in proc.stderr and "zookeeper" in proc.stderr
    missing = subprocess.run(["pvcd", "--config", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "No such file" in missing.stderr
