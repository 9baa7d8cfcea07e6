"""A real Ceph cluster (Debian's Ceph 16 packages) on 127.0.0.1 for dev clusters and tests: one
monitor, one manager and one OSD on a sparse file (bluestore), cephx on, as plain processes.

Follows the verified recipe in the project's notes (ceph.md): HEALTH_OK in about 11 s, about
390 MiB of memory. Everything lives under one directory (config, keyrings, data, logs, pids);
``stop`` kills the three daemons (SIGKILL: the data is throwaway) and removes the directory.

The same libvirt secret (one UUID, the client.admin key) goes to every node's libvirtd, so a
VM's RBD disk opens on whichever node runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from pvc.devcluster.proc import free_port, is_running, log_tail, terminate

CEPH_PACKAGES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-common", "qemu-block-extra")
DAEMONS = ("mon", "mgr", "osd")
CLIENT = "client.admin"

# $cluster, $id and $name are Ceph's own metavariables and stay literal.
_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
ms bind msgr1 = false
osd objectstore = bluestore
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mgr initial modules =
bluestore block size = {block_size}
osd memory target = 939524096
[mon]
mon data = {dir}/mon/$cluster-$id
run dir = {run}
log file = {dir}/log/$name.log
[mgr]
mgr data = {dir}/mgr/$cluster-$id
run dir = {run}
log file = {dir}/log/$name.log
[osd]
osd data = {dir}/osd/$cluster-$id
run dir = {run}
log file = {dir}/log/$name.log
[client]
keyring = {dir}/ceph.client.admin.keyring
"""

_SECRET_XML = ("<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
               "<usage type='ceph'><name>{client} secret</name></usage></secret>")


def ceph_missing() -> str:
    """Why a Ceph cluster cannot be started here ("" when it can)."""
    missing = [b for b in ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool")
               if not shutil.which(b)]
    if missing:
        return (f"missing {', '.join(missing)}: install the Debian packages {' '.join(CEPH_PACKAGES)} "
                "(scripts/install.sh does)")
    return ""


class CephCluster:
    """One mon, one mgr, one OSD under ``directory``. The port and secret UUID are fixed at first
    construction and kept in ``<directory>/ceph.json`` with the daemons' pids."""

    def __init__(self, directory: Path, port: int | None = None, secret_uuid: str | None = None,
                 block_size: int = 4 << 30) -> None:
        self.dir = Path(directory).absolute()
        saved = self._load()
        self.port = saved.get("port") or port or free_port()
        self.secret_uuid = saved.get("secret_uuid") or secret_uuid or str(uuid.uuid4())
        self.fsid = saved.get("fsid") or str(uuid.uuid4())
        self.pids: dict[str, int | None] = saved.get("pids") or {d: None for d in DAEMONS}
        self.block_size = block_size

    # -- what clients need ------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    @property
    def keyring(self) -> Path:
        return self.dir / "ceph.client.admin.keyring"

    @property
    def run_dir(self) -> Path:
        # Admin sockets are unix sockets (path <= 107 bytes): keep them short when the dir is deep.
        if len(str(self.dir / "run" / "ceph-mon.a.asok")) < 100:
            return self.dir / "run"
        return Path(tempfile.gettempdir()) / f"pvc-ceph-{self.fsid[:8]}"

    @property
    def monitor(self) -> str:
        return f"127.0.0.1:{self.port}"

    def storage_config(self) -> dict:
        """The ``storage.ceph`` section of a pvcd config for this cluster."""
        return {"conf": str(self.conf), "client": CLIENT, "keyring": str(self.keyring),
                "secret_uuid": self.secret_uuid}

    def env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    # -- lifecycle ----------------------------------------------------------------------------------

    def _load(self) -> dict:
        try:
            return json.loads((self.dir / "ceph.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        (self.dir / "ceph.json").write_text(json.dumps(
            {"port": self.port, "secret_uuid": self.secret_uuid, "fsid": self.fsid, "pids": self.pids}, indent=2))

    def _run(self, *args: str, input: str | None = None, timeout: float = 30) -> str:
        proc = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.env(), cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"ceph bootstrap: `{' '.join(args[:4])}...` failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def _spawn(self, daemon: str, *args: str) -> None:
        with open(self.dir / "log" / f"{daemon}.out", "ab") as out:
            proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env(),
                                    cwd=self.dir, start_new_session=True, close_fds=True)
        self.pids[daemon] = proc.pid
        self._save()

    def running(self) -> bool:
        return any(is_running(p) for p in self.pids.values())

    def start(self, timeout: float = 90) -> None:
        """Bootstrap the cluster and wait until it is HEALTH_OK with an initialised ``rbd`` pool."""
        if reason := ceph_missing():
            raise RuntimeError(f"--storage ceph: {reason}")
        deadline = time.monotonic() + timeout
        try:
            self._bootstrap(deadline)
        except BaseException:
            self.stop()
            raise

    def _bootstrap(self, deadline: float) -> None:
        d = self.dir
        for sub in ("log", "mon/ceph-a", "mgr/ceph-x", "osd/ceph-0"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_CONF.format(fsid=self.fsid, port=self.port, dir=d, run=self.run_dir,
                                          block_size=self.block_size))
        self._save()
        self._run("ceph-authtool", "--create-keyring", str(d / "mon.keyring"), "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")
        self._run("ceph-authtool", "--create-keyring", str(self.keyring), "--gen-key", "-n", CLIENT,
                  "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *",
                  "--cap", "mds", "allow *")
        self._run("ceph-authtool", str(d / "mon.keyring"), "--import-keyring", str(self.keyring))
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv", "a", f"[v2:127.0.0.1:{self.port}]",
                  str(d / "monmap"))
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(d / "monmap"), "--keyring", str(d / "mon.keyring"))
        self._spawn("mon", "ceph-mon", "-i", "a", "-f")
        self._ceph_wait(deadline, "-s")  # returns once the mon has quorum
        self._run("ceph", "auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *",
                  "mds", "allow *", "-o", str(d / "mgr/ceph-x/keyring"))
        self._spawn("mgr", "ceph-mgr", "-i", "x", "-f")
        osd_uuid = str(uuid.uuid4())
        osd_key = self._run("ceph-authtool", "--gen-print-key").strip()
        osd_id = self._run("ceph", "osd", "new", osd_uuid, "-i", "-",
                           input=json.dumps({"cephx_secret": osd_key})).strip()
        self._run("ceph-authtool", "--create-keyring", str(d / f"osd/ceph-{osd_id}/keyring"),
                  "--name", f"osd.{osd_id}", "--add-key", osd_key)
        self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid, timeout=120)
        self._spawn("osd", "ceph-osd", "-i", osd_id, "-f")
        self._until(deadline, lambda: '"num_up_osds":1' in self._run("ceph", "osd", "stat", "--format", "json")
                    .replace(" ", ""), "the OSD to come up")
        self._until(deadline, lambda: "HEALTH_OK" in self._run("ceph", "health"), "HEALTH_OK")

    def _ceph_wait(self, deadline: float, *args: str) -> None:
        def ok() -> bool:
            try:
                self._run("ceph", "--connect-timeout", "5", *args, timeout=10)
                return True
            except (RuntimeError, subprocess.TimeoutExpired):
                return False
        self._until(deadline, ok, "the monitor to answer")

    def _until(self, deadline: float, predicate, what: str) -> None:
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if pid and not is_running(pid):
                    raise RuntimeError(f"ceph-{name} exited while waiting for {what}; tail of its log:\n"
                                       f"{log_tail(self.dir / 'log' / f'{name}.out', 10)}\n"
                                       f"{log_tail(next(iter((self.dir / 'log').glob(f'ceph-{name}*.log')), self.dir), 20)}")
            if predicate():
                return
            time.sleep(0.3)
        raise RuntimeError(f"Ceph in {self.dir}: no {what} in time; tail of the monitor's log:\n"
                           f"{log_tail(self.dir / 'log' / 'mon.a.log', 20)}")

    def stop(self) -> None:
        """SIGKILL every daemon (throwaway data: no clean shutdown needed) and remove the directory."""
        for daemon in ("osd", "mgr", "mon"):  # OSD first: it would wait for a gone mon
            pid = self.pids.get(daemon)
            if is_running(pid) and _comm(pid).startswith("ceph-"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                terminate(pid, 5)
            self.pids[daemon] = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- libvirt --------------------------------------------------------------------------------------

    def client_key(self) -> str:
        return self._run("ceph-authtool", "-p", "-n", CLIENT, str(self.keyring)).strip()

    def define_libvirt_secret(self, libvirt_uri: str) -> None:
        """Give one libvirtd the client's key as secret ``secret_uuid`` (idempotent).

        libvirt's test driver has no secrets API; its libvirtd's own secret driver (the one QEMU
        guests use) answers on the same socket as ``secret+unix:///system``."""
        if libvirt_uri.startswith("test+unix:///"):
            libvirt_uri = "secret+unix:///system?" + libvirt_uri.partition("?")[2]
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "secret.xml"
            xml.write_text(_SECRET_XML.format(uuid=self.secret_uuid, client=CLIENT))
            key = Path(tmp) / "key.b64"
            key.write_text(self.client_key())
            for args in (("secret-define", str(xml)), ("secret-set-value", self.secret_uuid, "--file", str(key))):
                proc = subprocess.run(["virsh", "-q", "-c", libvirt_uri, *args], capture_output=True, text=True,
                                      timeout=30)
                if proc.returncode != 0:
                    raise RuntimeError(f"virsh {args[0]} on {libvirt_uri}: {proc.stderr.strip()}")

    def info(self) -> dict:
        return {"conf": str(self.conf), "keyring": str(self.keyring), "client": CLIENT, "monitor": self.monitor,
                "secret_uuid": self.secret_uuid, "pids": {d: p if is_running(p) else None for d, p in self.pids.items()}}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
