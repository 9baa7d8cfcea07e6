"""One supervised dnsmasq process for a managed network (on the primary coordinator).

It writes the files the pure ``pvc.dnsmasq_config`` renders, starts dnsmasq in the foreground
inside the node's network namespace, restarts it when it exits unexpectedly (with back-off),
restarts it when its configuration changes, and sends SIGHUP when only the reservations changed
(dnsmasq re-reads its hosts file). Its standard error goes to ``dnsmasq-<vni>.log`` in the run
directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from pvc.daemon.netcmd import NetCommands
from pvc.dnsmasq_config import DnsmasqFiles

STOP_TIMEOUT = 5.0
START_SETTLE = 0.1  # dnsmasq exits at once on a bad config or a taken port: wait that long for it
MAX_BACKOFF = 10.0


def _write(path: str, text: str, mode: int = 0o644) -> bool:
    """Write when different; True if it changed."""
    p = Path(path)
    try:
        if p.read_text() == text:
            if mode & 0o111:
                p.chmod(mode)
            return False
    except FileNotFoundError:
        pass
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, p)
    return True


def stale_pids(run_directory: str) -> list[int]:
    """dnsmasq processes an earlier daemon started (by their pid files) that still run."""
    pids = []
    for pidfile in Path(run_directory).glob("dnsmasq-*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            continue
        if b"dnsmasq" in cmdline and str(pidfile.with_suffix(".conf")).encode() in cmdline:
            pids.append(pid)
        else:
            pidfile.unlink(missing_ok=True)
    return pids


class Dnsmasq:
    def __init__(self, vni: int, files: DnsmasqFiles, net: NetCommands, log, on_pid=None) -> None:
        self.vni = vni
        self.files = files
        self.net = net
        self.log = log.bind(vni=vni)
        self.on_pid = on_pid or (lambda pid: None)  # tell the teardown guard which pid to kill
        self.proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self._wanted = False
        self._restart = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    async def apply(self, conf: str, hosts: str, hook: str) -> None:
        """Run with this configuration (start, restart on a change, SIGHUP on new reservations)."""
        Path(self.files.conf).parent.mkdir(parents=True, exist_ok=True)
        _write(self.files.hook, hook, 0o700)  # it holds the ZooKeeper credential
        conf_changed = _write(self.files.conf, conf)
        hosts_changed = _write(self.files.hosts, hosts)
        if not self._wanted:
            self._wanted = True
            await self._spawn()
            self._supervisor = asyncio.create_task(self._supervise(), name=f"dnsmasq:{self.vni}")
        elif conf_changed:
            self.log.info("dnsmasq_reconfigured")
            self._restart.set()  # before the exit, so the supervisor restarts at once
            await self._terminate()
        elif hosts_changed and self.pid:
            os.kill(self.pid, signal.SIGHUP)
            self.log.info("dnsmasq_reservations_reloaded")

    async def _spawn(self) -> None:
        argv = self.net.exec_argv(["dnsmasq", "--keep-in-foreground", f"--conf-file={self.files.conf}"])
        with open(self.files.conf.removesuffix(".conf") + ".log", "ab") as logfile:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True
            )
        self.on_pid(self.proc.pid)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), START_SETTLE)
            self.log.error("dnsmasq_exited_at_start", status=self.proc.returncode,
                           log=self.files.conf.removesuffix(".conf") + ".log")
        except asyncio.TimeoutError:
            self.log.info("dnsmasq_started", pid=self.proc.pid)

    async def _supervise(self) -> None:
        backoff = 0.5
        while self._wanted:
            started = time.monotonic()
            if self.proc is not None:
                await self.proc.wait()
            if not self._wanted:
                return
            if self._restart.is_set():
                self._restart.clear()
                backoff = 0.5
            else:
                self.log.warning("dnsmasq_exited", status=self.proc.returncode if self.proc else None)
                if time.monotonic() - started > 30:
                    backoff = 0.5
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            if self._wanted:
                await self._spawn()

    async def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.terminate()
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._wanted = False
        if self._supervisor:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        await self._terminate()
        self.on_pid(None)
        Path(self.files.pid).unlink(missing_ok=True)
        self.log.info("dnsmasq_stopped")
