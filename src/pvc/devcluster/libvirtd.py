"""One libvirtd per simulated node, each in its own mount namespace, for dev clusters and tests.

Several libvirtd on one machine clash on /run/libvirt, /etc/libvirt and friends, so each one runs
under ``unshare -m`` with those directories bind-mounted from its own folder. The daemon is
detached (own session) and outlives the Python that started it.

It serves either libvirt's ``test`` driver or real ``qemu`` guests (software emulation). In qemu
mode each instance listens on its own TCP port for peers (its ``tcp_uri`` is the node's migration
URI) and takes incoming migration streams on its own port range.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from pvc.devcluster.proc import free_port, free_port_range, is_running, log_tail, terminate

# Directories that libvirtd shares machine-wide; each instance gets private copies.
_PRIVATE_DIRS = ("etc/libvirt", "run/libvirt", "var/lib/libvirt", "var/log/libvirt", "var/cache/libvirt")

# Runs inside the new mount namespace; exec keeps the pid, so Popen.pid is libvirtd's pid.
_SCRIPT = """\
set -e
for d in {dirs}; do
  mkdir -p "/$d"
  mount --bind "$PVC_BASE/$d" "/$d"
done
exec libvirtd -l -p "$PVC_BASE/libvirtd.pid" -f /etc/libvirt/libvirtd.conf
"""

# Probed QEMU capabilities, shared by the instances of this machine (see _warm_qemu_capabilities).
_CAPS_SEED = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pvc" / "qemu-capabilities"

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


class Libvirtd:
    """A detached libvirtd serving the ``test`` driver (default) or real ``qemu``."""

    def __init__(self, basedir: Path, hypervisor: str = "test", tcp_port: int | None = None,
                 migration_ports: tuple[int, int] | None = None) -> None:
        if hypervisor not in ("test", "qemu"):
            raise ValueError(f"unknown hypervisor {hypervisor!r} (expected 'test' or 'qemu')")
        self.basedir = Path(basedir).absolute()
        self.hypervisor = hypervisor
        self.tcp_port = tcp_port or free_port()
        if migration_ports is None:
            lo = free_port_range(16)  # a small range is enough for tests
            migration_ports = (lo, lo + 15)
        self.migration_ports = migration_ports
        self._pid: int | None = None
        if len(str(self.socket_path)) > _SUN_PATH_MAX:
            raise ValueError(f"socket path too long for a unix socket: {self.socket_path}")

    @property
    def socket_path(self) -> Path:
        """The read-write socket, as seen from outside the namespace."""
        return self.basedir / "run/libvirt/libvirt-sock"

    @property
    def uri(self) -> str:
        if self.hypervisor == "test":
            return f"test+unix:///default?socket={self.socket_path}"
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def tcp_uri(self) -> str:
        path = "/default" if self.hypervisor == "test" else "/system"
        return f"{self.hypervisor}+tcp://127.0.0.1:{self.tcp_port}{path}"

    @property
    def pid_path(self) -> Path:
        return self.basedir / "libvirtd.pid"

    @property
    def keeper_pid_path(self) -> Path:
        return self.basedir / "keeper.pid"

    @property
    def log_path(self) -> Path:
        return self.basedir / "var/log/libvirt/libvirtd.log"

    @property
    def pid(self) -> int | None:
        """libvirtd's own pid, from its pidfile (None if it is not running)."""
        pid = _read_pid(self.pid_path) or self._pid
        # The comm check guards against a stale pidfile whose pid was reused.
        return pid if is_running(pid) and _comm(pid) == "libvirtd" else None

    def _prepare(self) -> None:
        for d in _PRIVATE_DIRS:
            (self.basedir / d).mkdir(parents=True, exist_ok=True)
        etc = self.basedir / "etc/libvirt"
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
        # One host UUID per instance folder, kept across restarts like a real host's.
        uuid_file = self.basedir / "host_uuid"
        if not uuid_file.exists():
            uuid_file.write_text(f"{uuid.uuid4()}\n")
        (etc / "libvirtd.conf").write_text(
            f'host_uuid = "{uuid_file.read_text().strip()}"\n'
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "127.0.0.1"\ntcp_port = "{self.tcp_port}"\n'
            'auth_tcp = "none"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        lo, hi = self.migration_ports
        # The qemu driver is loaded even when we only serve the test driver, so it always
        # needs a config that works as root without cgroups, SELinux/AppArmor or virtlogd.
        (etc / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
            "cgroup_controllers = [ ]\ndynamic_ownership = 0\n"
            'stdio_handler = "file"\n'
            f"migration_port_min = {lo}\nmigration_port_max = {hi}\n"
        )
        if self.hypervisor == "qemu" and _CAPS_SEED.is_dir():
            shutil.copytree(_CAPS_SEED, self.basedir / "var/cache/libvirt/qemu/capabilities", dirs_exist_ok=True)
        # The installed qemu driver resolves its compiled-in default user before reading
        # qemu.conf, so libvirtd dies without these accounts even when serving only "test".
        _ensure_qemu_accounts()

    def start(self, timeout: float = 20) -> None:
        if self.pid:
            return
        self._prepare()
        self.pid_path.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)
        script = _SCRIPT.format(dirs=" ".join(_PRIVATE_DIRS))
        with open(self.basedir / "libvirtd.out", "ab") as out:
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                env={**os.environ, "PVC_BASE": str(self.basedir)},
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, close_fds=True,
            )
        self._pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if self.socket_path.exists() and _virsh(self.uri, "list").returncode == 0:
                break
            time.sleep(0.1)
        else:
            self._fail(proc, f"did not answer within {timeout}s")
        if self.hypervisor == "test":
            self._start_keeper(deadline)
        else:
            self._warm_qemu_capabilities()

    def _warm_qemu_capabilities(self) -> None:
        # libvirtd probes QEMU's capabilities (about 4 s) at the first guest start, holding that
        # guest's lock, which stalls every caller asking about it. Probe now, and seed later
        # instances with the result: libvirt re-probes by itself if QEMU or libvirt changed.
        cache = self.basedir / "var/cache/libvirt/qemu/capabilities"
        proc = _virsh(self.uri, "domcapabilities", "--virttype", "qemu", timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"libvirtd in {self.basedir} cannot use QEMU: {proc.stderr.strip()}")
        _CAPS_SEED.mkdir(parents=True, exist_ok=True)
        for f in cache.glob("*.xml"):
            shutil.copy(f, _CAPS_SEED / f.name)

    def _start_keeper(self, deadline: float) -> None:
        # The test driver keeps its state (domains, ...) in one object shared by the daemon's
        # test:///default connections and frees it when the last one closes: the next client would
        # see a fresh driver, with every domain gone and the built-in domain "test" back. A keeper
        # holds one connection for as long as the daemon lives: `virsh event --loop` (a few MB, no
        # interpreter to start: what lets 64 nodes share one small machine); it exits with the daemon.
        out_path = self.basedir / "keeper.out"
        with open(out_path, "wb") as out:
            keeper = subprocess.Popen(
                # -k 0: no client keepalive, so a starved libvirtd never makes the keeper hang up
                ["virsh", "-q", "-k", "0", "-c", self.uri, "event", "--all", "--loop"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True,
                close_fds=True,
            )
        self.keeper_pid_path.write_text(f"{keeper.pid}\n")
        # Remove the built-in domain. Gone when a later connection looks proves that the keeper holds
        # the driver (removed while nobody held it, it would be back for the next client).
        while time.monotonic() < deadline and keeper.poll() is None:
            _virsh(self.uri, "destroy", "test")
            _virsh(self.uri, "undefine", "test")
            listed = _virsh(self.uri, "list", "--all", "--name")
            if listed.returncode == 0 and "test" not in listed.stdout.split():
                return
            time.sleep(0.05)
        self._fail(keeper, "test-driver keeper did not connect", out_path)

    def _fail(self, proc: subprocess.Popen, status: str, log: Path | None = None) -> None:
        if proc.poll() is not None:
            status += f" (exited with {proc.returncode})"
        self.stop(timeout=2)
        log = log or self.log_path
        raise RuntimeError(
            f"libvirtd in {self.basedir}: {status}; tail of {log}:\n{log_tail(log)}\n"
            f"stdout/stderr:\n{log_tail(self.basedir / 'libvirtd.out', 10)}"
        )

    def stop(self, timeout: float = 10) -> None:
        terminate(self.pid or self._pid, timeout)
        self._pid = None
        self.pid_path.unlink(missing_ok=True)
        # QEMU guests outlive their libvirtd (as on a real host, where libvirtd restarts without
        # touching guests), so a dev cluster going down must end them itself: libvirt leaves one
        # pidfile per running guest in the instance's private /run/libvirt/qemu.
        for pidfile in (self.basedir / "run/libvirt/qemu").glob("*.pid"):
            pid = _read_pid(pidfile)
            if pidfile.name != "driver.pid" and pid and _comm(pid).startswith("qemu-system"):
                terminate(pid, timeout)
            pidfile.unlink(missing_ok=True)
        terminate(_read_pid(self.keeper_pid_path), timeout)  # it exits on its own once libvirtd is gone
        self.keeper_pid_path.unlink(missing_ok=True)


    def kill_guests(self) -> None:
        """kill -9 every QEMU guest of this libvirtd, as a power cut does: no guest closes its disks
        (an RBD disk's watch and exclusive lock stay with the dead client until Ceph times them out)."""
        for pidfile in (self.basedir / "run/libvirt/qemu").glob("*.pid"):
            pid = _read_pid(pidfile)
            if pidfile.name != "driver.pid" and pid and _comm(pid).startswith("qemu-system"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """kill -9 libvirtd (a crash): its guests and their pidfiles stay, as on a real host; the
        test driver's domains are gone with it (they lived in libvirtd's memory)."""
        pid = self.pid
        if pid:
            os.kill(pid, signal.SIGKILL)
            terminate(pid)  # waits until it is gone
        self._pid = None
        self.pid_path.unlink(missing_ok=True)
        terminate(_read_pid(self.keeper_pid_path))  # it exits on its own once libvirtd is gone
        self.keeper_pid_path.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _virsh(uri: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)


def _ensure_qemu_accounts() -> None:
    """Debian's libvirtd refuses to start without the accounts its packaging normally creates."""
    for group in ("kvm", "libvirt-qemu"):
        try:
            grp.getgrnam(group)
        except KeyError:
            subprocess.run(["groupadd", "--system", group], check=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-g", "libvirt-qemu",
                        "-G", "kvm", "-s", "/usr/sbin/nologin", "libvirt-qemu"], check=True)
