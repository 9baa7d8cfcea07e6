"""Bad input: one clear line on stderr, a non-zero exit, and nothing written."""

from __future__ import annotations

import subprocess

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
    for verb in ("start", "stop", "shutdown", "restart", "disable", "info", "dump"):
        assert_refused(baseline, "vm", verb, "ghost", contains="unknown VM")
    assert_refused(baseline, "vm", "undefine", "ghost", "--yes", contains="unknown VM")
    assert_refused(baseline, "node", "info", "ghost", contains="unknown node")
    assert_refused(baseline, "vm", "list", "--node", "ghost", contains="unknown node")
    assert_refused(baseline, "vm", "list", "--state", "bogus", contains="unknown VM state")


def test_invalid_transitions(baseline):
    assert_refused(baseline, "vm", "stop", "existing", contains="already in state stop")
    assert_refused(baseline, "vm", "shutdown", "existing", contains="cannot shutdown from state stop")
    assert_refused(baseline, "vm", "restart", "existing", contains="cannot restart")
    baseline.pvc("vm", "start", "existing", "--wait")
    assert_refused(baseline, "vm", "start", "existing", contains="already in state start")
    assert_refused(baseline, "vm", "undefine", "existing", "--yes", contains="stop it before")
    baseline.pvc("vm", "stop", "existing", "--wait")


def test_modify_with_other_uuid_refused(baseline):
    path = baseline.tmp / "other.xml"
    path.write_text(domain_xml("existing"))
    assert_refused(baseline, "vm", "modify", "existing", str(path), contains="has UUID")
    path.write_text("<domain>")
    assert_refused(baseline, "vm", "modify", "existing", str(path), contains="malformed")


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_zookeeper_refusing_fails_at_once():
    """Nothing listens on any server: the refusal is reported at once (no wait for the request
    timeout: --timeout 600 would otherwise show as a hang)."""
    from pvc.devcluster.proc import free_port

    one = subprocess.run(["pvc", "--timeout", "600", "--zookeeper", "127.0.0.1:1", "vm", "list"],
                         capture_output=True, text=True, timeout=60)
    assert one_error_line(one) == "error: cannot connect to ZooKeeper at 127.0.0.1:1: connection refused"
    ports = [free_port(), free_port()]
    both = subprocess.run(["pvc", "--timeout", "600", "--zookeeper", ",".join(f"127.0.0.1:{p}" for p in ports),
                           "vm", "list"], capture_output=True, text=True, timeout=60)
    line = one_error_line(both)
    assert all(f"127.0.0.1:{p}: connection refused" in line for p in ports)


@pytest.mark.parametrize("address, message", [
    ("foo:bar", "port 'bar' is not a number"),
    (":::", "invalid ZooKeeper address ':::'"),
    ("", "no ZooKeeper address given"),
    ("127.0.0.1:70000", "port '70000' is not a number from 1 to 65535"),
    ("127.0.0.1:2181/pvc", "invalid ZooKeeper address '127.0.0.1:2181/pvc'"),
])
def test_zookeeper_address_that_cannot_be_parsed(address, message):
    proc = subprocess.run(["pvc", "--timeout", "600", "--zookeeper", address, "vm", "list"],
                          capture_output=True, text=True, timeout=60)
    assert message in one_error_line(proc)


def test_pvcd_bad_zookeeper_address_is_one_line(tmp_path):
    cfg = tmp_path / "pvcd.yaml"
    cfg.write_text("node: {name: hv9}\nzookeeper: {hosts: 'foo:bar'}\n")
    proc = subprocess.run(["pvcd", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "zookeeper.hosts" in proc.stderr and "port 'bar'" in proc.stderr


def test_record_too_large_for_zookeeper_is_refused_at_once(baseline):
    """A 5 MB domain XML: ZooKeeper takes at most 1 MB per request; refused before anything is sent,
    not after the request timeout (--timeout 600 would show as a hang)."""
    path = baseline.tmp / "big.xml"
    path.write_text(domain_xml("big").replace("</domain>", f"<description>{'d' * 5 * 1024 * 1024}</description></domain>"))
    before = snapshot(baseline)
    proc = baseline.pvc("--timeout", "600", "vm", "define", str(path), check=False, timeout=60)
    line = one_error_line(proc)
    assert "is 5.0 MB; ZooKeeper holds at most 1 MB per record" in line, line
    assert snapshot(baseline) == before


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
