"""The tiny real guest for qemu-mode dev clusters, tests and benchmarks.

``scripts/build-guest.sh`` builds it from Debian packages (a Debian kernel, an initramfs of static
busybox whose init prints ``pvc-guest tick N`` every second and powers off on an ACPI shutdown;
with a virtio disk it writes a numbered block to it every second and checks it: ``DISK_LINE``);
this module builds it once into a cache shared by every cluster and writes its domain XML.

Shutdown: libvirt's default shutdown is an ACPI power-button press. Busybox's acpid powers the
guest off, but only once init has loaded the button driver (the ``pvc-guest: up`` line, about 5 s
after start); a press before that is lost, as on a real guest still booting, and pvc's shutdown
timeout policy (``vm.shutdown_timeout``, then stop or abort) decides.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-guest.sh"
QEMU = "/usr/bin/qemu-system-x86_64"
TICK = "pvc-guest tick "  # each console line the guest prints once a second ends with its number
# With a disk (/dev/vda), after each tick: "pvc-guest disk N md5 SUM ok" (block N written with
# conv=fsync, read back and the block before it still intact) or "... BAD: why"; at boot, over what
# an earlier boot wrote: "pvc-guest disk verified blocks A-B of an earlier boot: ok" (or BAD).
DISK_LINE = "pvc-guest disk "
DISK_RING = 1024  # block n lives in sector 1 + (n - 1) % DISK_RING; sector 0 says the last n


def disk_block(n: int) -> bytes:
    """What the guest writes as block ``n`` (so a test can check the volume from outside)."""
    return f"pvc-guest disk block {n}\n".encode().ljust(512, b"\0")


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path


def guest_dir() -> Path:
    """Where the built guest lives: kept across clusters, since building it downloads a kernel."""
    if os.environ.get("PVC_GUEST_DIR"):
        return Path(os.environ["PVC_GUEST_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pvc" / "guest"


def qemu_missing() -> str | None:
    """Why real guests cannot run here, or None if they can."""
    if not os.access(QEMU, os.X_OK):
        return f"{QEMU} is not installed (apt-get install qemu-system-x86; scripts/install.sh does it)"
    if not shutil.which("libvirtd"):
        return "libvirtd is not installed"
    if not list(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so")):
        return "libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)"
    return None


def ensure_guest(directory: Path | None = None) -> Guest:
    """The guest's kernel and initrd, building them first if absent or built by an older script."""
    directory = directory or guest_dir()
    guest = Guest(directory / "vmlinuz", directory / "initrd.gz")
    if not BUILD_SCRIPT.exists():
        raise RuntimeError(f"{BUILD_SCRIPT} is missing (sample guests are built from a source checkout)")
    # A changed build script means a different guest: rebuild rather than boot a stale one.
    stamp = directory / "build-script.sha256"
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()
    if guest.kernel.exists() and guest.initrd.exists() and stamp.exists() and stamp.read_text() == digest:
        return guest
    proc = subprocess.run([str(BUILD_SCRIPT), str(directory)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the guest failed ({proc.returncode}):\n{proc.stderr.strip()}")
    stamp.write_text(digest)
    return guest


def domain_xml(name: str, console_log_directory: str | Path, uuid: str | None = None,
               memory_mib: int = 128, guest: Guest | None = None, volume: str = "") -> str:
    """A libvirt domain booting the guest under QEMU software emulation (KVM guests hang here).
    ``volume`` (POOL/VOLUME): an RBD disk as vda, written as pvc wants it (no monitors, no auth:
    the node that starts it fills them in), which the guest writes to every second."""
    guest = guest or ensure_guest()
    disk = ""
    if volume:
        from pvc.storage.disks import disk_element

        disk = "\n    " + disk_element(volume, "vda")
    uuid = uuid or str(uuidlib.uuid4())
    log = Path(console_log_directory).absolute() / f"{name}.log"
    # append='on': an incoming migration reopens the log, and 'off' would truncate it there.
    return f"""\
<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel>
    <initrd>{guest.initrd}</initrd>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{QEMU}</emulator>{disk}
    <serial type='pty'>
      <target port='0'/>
      <log file={quoteattr(str(log))} append='on'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""
