"""A simulated BMC per dev-cluster node: OpenIPMI's ``ipmi_sim`` on 127.0.0.1 with a UDP port of its own.

It is a real IPMI-over-LAN endpoint (``ipmitool -I lanplus`` talks to it). Its chassis power is
the life of a "power holder" process (lan.conf ``startcmd``): ``chassis power on`` starts the
holder, which brings the node's libvirtd up; ``chassis power off`` sends it SIGTERM, and the holder
then does what a power cut does to a hypervisor: SIGKILLs the node's pvcd and stops its libvirtd
(which ends its VMs; the test driver starts empty again). pvcd is not restarted on power-on, just
as a real host would need its daemon started after boot.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pvc.devcluster.proc import is_running, log_tail, terminate

USERNAME = "admin"
PASSWORD = "pvc-dev-ipmi"

_LAN_CONF = """\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  # Power control needs a system interface; nothing connects to it (so power-off is an immediate SIGTERM).
  serial 15 127.0.0.1 {serial_port} codec VM
  startcmd "{holder}"
  startnow true
  poweroff_wait 1
  kill_wait 5
user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


class Bmc:
    def __init__(self, basedir: Path, workdir: Path, node: str, port: int, serial_port: int) -> None:
        self.basedir = Path(basedir).absolute()
        self.workdir, self.node, self.port, self.serial_port = Path(workdir).absolute(), node, port, serial_port

    @property
    def pid_path(self) -> Path:
        return self.basedir / "ipmi_sim.pid"

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if is_running(pid) else None

    def start(self, timeout: float = 10) -> None:
        if self.pid:
            return
        (self.basedir / "state").mkdir(parents=True, exist_ok=True)
        holder = self.basedir / "power-holder.sh"
        holder.write_text(f"#!/bin/sh\nexec {sys.executable} -m pvc.devcluster.bmc power "
                          f"'{self.workdir}' '{self.node}' >> '{self.basedir}/power.log' 2>&1\n")
        holder.chmod(0o755)
        guid = f"{abs(hash((str(self.workdir), self.node))):032x}"[-32:]
        (self.basedir / "lan.conf").write_text(_LAN_CONF.format(
            name=f"pvc-{self.node}", port=self.port, serial_port=self.serial_port, holder=holder, guid=guid,
            user=USERNAME, password=PASSWORD))
        (self.basedir / "sim.emu").write_text(_EMU)
        with open(self.basedir / "ipmi_sim.out", "ab") as out:
            # -n: no console on stdin (it asserts on a /dev/null stdin otherwise).
            proc = subprocess.Popen(
                ["ipmi_sim", "-n", "-c", str(self.basedir / "lan.conf"), "-f", str(self.basedir / "sim.emu"),
                 "-s", str(self.basedir / "state")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True)
        self.pid_path.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while not _udp_port_taken(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ipmi_sim for {self.node} did not start:\n"
                                   f"{log_tail(self.basedir / 'ipmi_sim.out')}")
            time.sleep(0.05)

    def stop(self) -> None:
        # ipmi_sim does not always end its power holder when it exits: end both (the holder's
        # SIGTERM "powers off" what is left of the node, so the cluster stops BMCs last).
        terminate(self.pid)
        self.pid_path.unlink(missing_ok=True)
        holder = self.basedir / "holder.pid"
        try:
            pid = int(holder.read_text())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid and is_running(pid) and "pvc.devcluster.bmc" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            terminate(pid)
        holder.unlink(missing_ok=True)


def power(workdir: str, node: str) -> None:
    """The power holder: runs while the simulated chassis is on."""
    from pvc.devcluster.cluster import DevCluster

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    print(f"{time.strftime('%H:%M:%S')} power on {node}", flush=True)
    dev = DevCluster(workdir)
    (dev.workdir / node / "bmc" / "holder.pid").write_text(str(os.getpid()))
    libvirtd = dev.libvirtd(dev.node(node))
    if dev.is_up() and not libvirtd.pid:
        libvirtd.start()  # power on after a power-off: the hypervisor's libvirtd boots again (empty)
    signal.sigwait({signal.SIGTERM})
    print(f"{time.strftime('%H:%M:%S')} power off {node}", flush=True)
    dev = DevCluster(workdir)  # read again: pvcd may have been restarted since power-on
    pid = dev.node(node).pvcd_pid
    if pid and is_running(pid):
        os.kill(pid, signal.SIGKILL)
    libvirtd.kill_guests()  # a power cut: the guests do not shut down (nor close their disks)
    libvirtd.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "power":
        power(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m pvc.devcluster.bmc power WORKDIR NODE")
