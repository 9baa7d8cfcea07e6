"""A real guest through pvc: sample-vm, start, shutdown (ACPI), stop (power off), restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pvc.devcluster.guest import domain_xml as guest_xml
from tests.conftest import wait_until
from tests.system.conftest import POWER_OFF

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def guests(qemu_cluster):
    """One guest per test, booted together at the start of the module."""
    qemu_cluster.boot(life1="hv1", life2="hv2", life3="hv3")
    return qemu_cluster


def test_qemu_nodes_publish_migration_uris_and_share_one_console_directory(qemu_cluster):
    nodes = [qemu_cluster.dev.node(n) for n in qemu_cluster.nodes]
    uris = [n.migration_uri for n in nodes]
    assert all(u.startswith("qemu+tcp://127.0.0.1:") for u in uris) and len(set(uris)) == len(uris)
    assert len({n.console_log_directory for n in nodes}) == 1
    for node in nodes:  # each libvirtd answers on its migration URI (what peers connect to)
        out = subprocess.run(["virsh", "-c", node.migration_uri, "uri"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr


def test_sample_vm_prints_a_qemu_guest_logging_to_the_console_directory(qemu_cluster):
    out = subprocess.run([sys.executable, "-m", "pvc.devcluster", "sample-vm", "sample", "--workdir",
                          str(qemu_cluster.dev.workdir)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(out.stdout)
    assert root.get("type") == "qemu" and root.findtext("name") == "sample"
    log = root.find("devices/serial/log")
    console_dir = qemu_cluster.dev.node("hv1").console_log_directory
    assert log.get("file") == f"{console_dir}/sample.log" and log.get("append") == "on"
    assert Path(root.findtext("os/kernel")).is_file() and Path(root.findtext("os/initrd")).is_file()


def test_start_then_shutdown_powers_the_guest_off_through_acpi(guests):
    c = guests
    vm = c.assert_matches_libvirt("life1")
    assert vm["node"] == "hv1" and vm["libvirt_state"] == "running"
    assert "Linux version" in c.console("life1")  # the real kernel booted on the serial console

    c.pvc("vm", "shutdown", "life1", "--wait")
    vm = c.assert_matches_libvirt("life1")
    assert vm["state"] == "stop" and vm["failed_reason"] == ""
    # The guest powered itself off (not the shutdown timeout policy forcing it).
    assert c.console("life1").count(POWER_OFF) == 1


def test_stop_powers_off_without_asking_the_guest(guests):
    c = guests
    c.pvc("vm", "stop", "life2", "--wait")
    vm = c.assert_matches_libvirt("life2")
    assert vm["state"] == "stop"
    assert POWER_OFF not in c.console("life2")

    c.pvc("vm", "start", "life2", "--wait")  # and it comes back: a second boot
    c.assert_matches_libvirt("life2")
    c.wait_boots("life2", 2)


def test_restart_reboots_the_guest_on_its_node(guests):
    c = guests
    c.pvc("vm", "restart", "life3", "--wait")
    vm = c.assert_matches_libvirt("life3")
    assert vm["node"] == "hv3" and vm["libvirt_state"] == "running"
    c.wait_boots("life3", 2)
    assert c.console("life3").count(POWER_OFF) == 1  # shut down through ACPI, then booted again

    c.pvc("vm", "stop", "life3", "--wait")
    c.assert_matches_libvirt("life3")


def test_virsh_destroy_is_recorded_and_the_guest_is_never_started_again(qemu_cluster):
    c = qemu_cluster
    c.boot(gone1="hv2")
    c.virsh("hv2", "destroy", "gone1")
    wait_until(lambda: c.vm("gone1")["state"] == "stop", timeout=30)
    vm = c.assert_matches_libvirt("gone1")
    assert vm["failed_reason"] == "destroyed outside pvc"
    time.sleep(3)  # the original defect restarted it within a second or two
    assert c.where_running("gone1") == [] and c.boots("gone1") == 1


def test_a_guest_deaf_to_acpi_is_forced_off_and_that_is_said(qemu_cluster):
    c = qemu_cluster
    path = c.tmp / "deaf1.xml"
    path.write_text(guest_xml("deaf1", c.dev.node("hv3").console_log_directory)
                    .replace("<cmdline>console=ttyS0</cmdline>", "<cmdline>console=ttyS0 acpi=off</cmdline>"))
    c.pvc("vm", "define", str(path), "--target", "hv3")
    c.pvc("vm", "start", "deaf1", "--wait")
    c.wait_ticks("deaf1", 1)
    out = c.pvc("vm", "shutdown", "deaf1", "--wait", timeout=120).stdout
    assert "forced off" in out
    vm = c.assert_matches_libvirt("deaf1")
    assert vm["state"] == "stop" and "forced off (policy stop)" in vm["note"]
    assert POWER_OFF not in c.console("deaf1")


def test_a_guest_whose_qemu_dies_is_recorded_as_crashed_and_never_started_again(qemu_cluster):
    c = qemu_cluster
    c.boot(crash1="hv1")
    qemu = subprocess.run(["pgrep", "-f", "guest=crash1,"], capture_output=True, text=True, timeout=10).stdout.split()
    assert len(qemu) == 1, qemu
    os.kill(int(qemu[0]), signal.SIGKILL)  # behind pvc's back: libvirt says the hypervisor failed
    wait_until(lambda: c.vm("crash1")["state"] == "fail", timeout=30)
    vm = c.vm("crash1")
    assert vm["libvirt_state"] == "shutoff" and vm["failed_reason"] == "failed (hypervisor error)", vm
    assert c.domstate("hv1", "crash1") in ("shut off", "absent")
    said = [e for e in c.pvc_json("cluster", "events", "--vm", "crash1") if e["kind"] == "vm_crashed"]
    assert len(said) == 1 and said[0]["severity"] == "error" and said[0]["node"] == "hv1", said
    time.sleep(3)
    assert c.where_running("crash1") == [] and c.boots("crash1") == 1
