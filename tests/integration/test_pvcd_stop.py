"""pvcd stops on SIGTERM (or SIGINT) at any moment: at start-up with ZooKeeper or libvirtd away, and
during an outage of either (`systemctl stop` must never hang). The 2 s bound is measured in
bench/bench_zookeeper_failover.py; here "stopped" means it exited by itself within 10 s."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pvc.devcluster.proc import free_port, is_running
from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 1)


def log_after(path: str, offset: int) -> str:
    return Path(path).read_text()[offset:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_while_waiting_for_zookeeper_at_start(tmp_path, sig):
    cfg = tmp_path / "pvcd.yaml"
    cfg.write_text(f"node: {{name: lonely}}\nzookeeper: {{hosts: '127.0.0.1:{free_port()}'}}\n")
    log = tmp_path / "pvcd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pvc.daemon.start", "--config", str(cfg)],
                                stdout=out, stderr=out)
    try:
        wait_until(lambda: "zookeeper_unavailable" in log.read_text(), timeout=30)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        proc.kill()
        proc.wait()


def test_stops_during_a_zookeeper_outage(one_node):
    dev = one_node.dev
    node = dev.node("hv1")
    offset = len(Path(node.pvcd_log).read_text())
    dev.stop_zookeeper()  # the whole ensemble (one server here)
    try:
        wait_until(lambda: "zookeeper_suspended" in log_after(node.pvcd_log, offset), timeout=15)
        assert dev.stop_node("hv1"), "pvcd needed SIGKILL"
        # Started during the outage, it waits for ZooKeeper and stops as readily.
        offset = len(Path(node.pvcd_log).read_text())
        dev.start_node("hv1", wait=False)
        wait_until(lambda: "zookeeper_unavailable" in log_after(node.pvcd_log, offset), timeout=30)
        assert dev.stop_node("hv1"), "pvcd needed SIGKILL"
    finally:
        dev.start_zookeeper()
    dev.start_node("hv1")


def test_stops_with_its_libvirtd_gone(one_node):
    dev = one_node.dev
    node = dev.node("hv1")
    dev.kill_libvirtd("hv1")
    try:
        assert dev.stop_node("hv1"), "pvcd needed SIGKILL"
        offset = len(Path(node.pvcd_log).read_text())
        dev.start_node("hv1", wait=False)
        wait_until(lambda: "libvirt_unavailable" in log_after(node.pvcd_log, offset), timeout=30)
        pid = dev.node("hv1").pvcd_pid
        assert dev.stop_node("hv1"), "pvcd needed SIGKILL"
        assert not is_running(pid)
    finally:
        dev.start_libvirtd("hv1")
    dev.start_node("hv1")  # and it comes back as usual
    wait_until(lambda: one_node.pvc_json("node", "info", "hv1")["daemon_state"] == "run", timeout=30)
