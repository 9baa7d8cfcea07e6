"""System tier: real QEMU guests (software emulation) under one libvirtd per node.

Each test module shares one qemu-mode dev cluster (3 nodes) and boots its tests' tiny guests
(pvc.devcluster.guest) side by side; their init prints ``pvc-guest tick N`` once a second. That
numbered console is the evidence that a guest kept running: a live migration must leave one boot
with consecutive ticks, a restart adds a boot.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pvc.devcluster import guest
from pvc.devcluster.cluster import DevCluster
from tests.conftest import Cluster, wait_until

BOOT = "Linux version "  # the kernel's banner, first on the console at every boot
POWER_OFF = "pvc-guest: ACPI power button pressed"
_TICK = re.compile(re.escape(guest.TICK) + r"(\d+)")


class QemuCluster(Cluster):
    def define_guest(self, name: str, node: str) -> dict:
        path = self.tmp / f"{name}.xml"
        path.write_text(guest.domain_xml(name, self.dev.node(node).console_log_directory))
        self.pvc("vm", "define", str(path), "--target", node)
        return self.vm(name)

    def boot(self, **placement: str) -> None:
        """Define and start guests (name=node), then wait until each one's init runs (only then
        does it heed ACPI). They boot side by side: a boot takes seconds of emulated CPU."""
        for name, node in placement.items():
            self.define_guest(name, node)
            self.pvc("vm", "start", name, "--wait")  # returns once QEMU runs, long before init
        for name in placement:
            self.wait_ticks(name, 1)

    def console(self, name: str) -> str:
        try:
            return Path(self.dev.node(self.nodes[0]).console_log_directory, f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def boots(self, name: str) -> int:
        return self.console(name).count(BOOT)

    def ticks(self, name: str) -> list[int]:
        """The tick numbers of the guest's latest boot, in the order it printed them."""
        return [int(n) for n in _TICK.findall(self.console(name).rpartition(BOOT)[2])]

    def wait_boots(self, name: str, boots: int, timeout: float = 60) -> None:
        wait_until(lambda: self.boots(name) >= boots, timeout=timeout, interval=0.2)

    def wait_ticks(self, name: str, above: int, timeout: float = 90) -> list[int]:
        """Wait until the latest boot printed a tick greater than ``above`` (booting takes ~6 s)."""
        wait_until(lambda: any(t > above for t in self.ticks(name)), timeout=timeout, interval=0.2)
        return self.ticks(name)

    def assert_one_continuous_boot(self, name: str) -> None:
        """Booted once and never stopped: ticks 1, 2, 3... with no gap, repeat or restart."""
        ticks = self.ticks(name)
        assert self.boots(name) == 1, f"{name} booted {self.boots(name)} times"
        assert ticks == list(range(1, len(ticks) + 1)), f"{name}'s console ticks are not continuous: {ticks}"

    def domstate(self, node: str, name: str) -> str:
        proc = self.virsh(node, "domstate", name, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "absent"

    def assert_matches_libvirt(self, name: str) -> dict:
        """pvc's record agrees with libvirt on every node: where the VM runs and in what state."""
        vm = self.vm(name)
        running = self.where_running(name)
        if vm["libvirt_state"] == "running":
            assert vm["state"] == "start", vm
            assert running == [vm["node"]], f"pvc says {name} runs on {vm['node']}, libvirt on {running}"
            assert self.domstate(vm["node"], name) == "running"
        else:
            assert vm["libvirt_state"] == "shutoff" and vm["state"] in ("stop", "disable"), vm
            assert running == [], f"pvc says {name} is off, libvirt runs it on {running}"
        return vm


@pytest.fixture(scope="module")
def qemu_cluster(tmp_path_factory) -> QemuCluster:
    reason = guest.qemu_missing()
    if reason is None and subprocess.run([guest.QEMU, "-version"], capture_output=True).returncode != 0:
        reason = f"{guest.QEMU} -version fails"
    if reason:
        pytest.skip(f"QEMU cannot run on this machine: {reason}")
    guest.ensure_guest()  # built once per machine (downloads a Debian kernel package)
    workdir = tmp_path_factory.mktemp("qemu")
    dev = DevCluster(workdir)
    dev.up(nodes=3, hypervisor="qemu")
    try:
        yield QemuCluster(dev, workdir)
    finally:
        dev.down()
