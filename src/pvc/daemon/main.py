"""pvcd: one daemon per hypervisor, one uvloop event loop, roles as task sets."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pvc.config import DaemonConfig, load_config
from pvc.daemon.context import DaemonContext
from pvc.daemon.log import ZooKeeperSink, configure
from pvc.daemon.metrics import MetricsServer
from pvc.daemon.node import NodePresence
from pvc.daemon.roles import roles_for
from pvc.daemon import systemd
from pvc.errors import PvcError, Unavailable
from pvc.libvirt_host import LibvirtHost
from pvc.schema import Paths
from pvc.zk import ZK


async def _connect_zookeeper(cfg: DaemonConfig, log) -> ZK:
    """Wait for ZooKeeper and an initialised cluster: a daemon started before them should not die."""
    delay = 0.5
    while True:
        zk = ZK(cfg.zookeeper.hosts, auth=cfg.zookeeper.auth, session_timeout=cfg.zookeeper.session_timeout,
                request_timeout=cfg.zookeeper.request_timeout, log=log.info)
        try:
            await zk.start()
            if await zk.exists(Paths.schema_version):
                return zk
            log.error("cluster_not_initialised", hint="run `pvc init`")
            await zk.close()
        except Unavailable as exc:
            log.warning("zookeeper_unavailable", error=str(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5)


# After SIGTERM/SIGINT pvcd exits within 2 s whatever ZooKeeper or libvirt do (`systemctl stop` must
# never hang): the clean-up writes get STOP_GRACE seconds in all; after STOP_LIMIT SIGALRM's default
# action ends the process even if the event loop itself is stuck.
STOP_GRACE = 1.2
STOP_LIMIT = 1.9
_STOPPED = object()


class _Stop:
    def __init__(self, log) -> None:
        self.event = asyncio.Event()
        self.deadline = 0.0
        self.log = log

    def __call__(self) -> None:  # the signal handler
        if not self.event.is_set():
            self.deadline = asyncio.get_running_loop().time() + STOP_GRACE
            signal.setitimer(signal.ITIMER_REAL, STOP_LIMIT)
            self.log.info("stopping")
        self.event.set()

    async def first(self, aw):
        """``aw``'s result, or _STOPPED (``aw`` cancelled) if a stop signal comes first: start-up and
        outages may wait on ZooKeeper or libvirt for ever."""
        work = asyncio.ensure_future(aw)
        stopped = asyncio.ensure_future(self.event.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.wait({work})
        return _STOPPED

    async def within_grace(self, aw, what: str, limit: float = STOP_GRACE, zk: ZK | None = None) -> None:
        """Best-effort clean-up: whatever does not finish within the grace (or ``limit`` seconds) is
        left undone (the session's end removes this node's ephemeral presence anyway). A step that
        needs ``zk`` is skipped at once while it is disconnected: no use waiting for an outage."""
        loop = asyncio.get_running_loop()
        if zk is not None and not zk.connected.is_set():
            aw.close()
            self.log.warning("stop_step_skipped", step=what, error="ZooKeeper unreachable")
            return
        try:
            async with asyncio.timeout_at(min(self.deadline, loop.time() + limit)):
                await aw
        except Exception as exc:  # TimeoutError, Unavailable, anything: the stop goes on
            self.log.warning("stop_step_skipped", step=what, error=str(exc) or type(exc).__name__)

    @staticmethod
    async def cancel(tasks: list[asyncio.Task]) -> None:
        """Cancel the tasks, and again whatever still runs: a clean-up awaiting ZooKeeper (up to its
        request timeout) must not hold the stop."""
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)


async def serve(cfg: DaemonConfig) -> None:
    sink = ZooKeeperSink()  # a copy of the log in ZooKeeper for `pvc node log` (pvc.node_log)
    log = configure(cfg.logging.level, cfg.logging.format, sink).bind(node=cfg.node_name)
    stop = _Stop(log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    zk = await stop.first(_connect_zookeeper(cfg, log))
    if zk is _STOPPED:
        log.info("stopped")
        return
    roles: list = []

    def on_event(uuid: str, event: int, detail: int) -> None:
        for role in roles:
            handler = getattr(role, "on_libvirt_event", None)
            if handler:
                handler(uuid, event, detail)

    def on_reconnect() -> None:
        for role in roles:
            handler = getattr(role, "on_libvirt_reconnected", None)
            if handler:
                handler()

    host = LibvirtHost(cfg.libvirt.uri, on_event, log=log.info, on_reconnect=on_reconnect)
    while not stop.event.is_set():
        try:
            host.open()
            break
        except Unavailable as exc:
            log.warning("libvirt_unavailable", error=str(exc))
            await stop.first(asyncio.sleep(1))

    ctx = DaemonContext(config=cfg, zk=zk, host=host, log=log)
    presence = NodePresence(ctx)
    ctx.services.presence = presence
    metrics = MetricsServer(ctx)  # from here on: a daemon stuck registering is worth watching too
    await metrics.start()
    if stop.event.is_set() or await stop.first(presence.register()) is _STOPPED:
        await stop.within_grace(metrics.stop(), "metrics_stop")
        await stop.within_grace(zk.close(), "zookeeper_close")
        log.info("stopped")
        return
    roles.extend(roles_for(ctx))

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(role.run(), name=f"role:{role.name}") for role in roles]
        tasks.append(tg.create_task(presence.keepalive_loop(), name="keepalive"))
        tasks.append(tg.create_task(host.keep_connected(), name="libvirt"))
        tasks.append(tg.create_task(systemd.watchdog_loop(), name="watchdog"))
        tasks.append(tg.create_task(sink.run(zk, Paths.node_log(cfg.node_name)), name="node-log"))
        if await stop.first(presence.set_state("run")) is not _STOPPED:
            systemd.notify("READY=1")
            await stop.event.wait()
        systemd.notify("STOPPING=1")
        # A third of the grace at most: ZooKeeper may be away, and the rest must still be tried.
        await stop.within_grace(presence.set_state("shutdown"), "daemon_state_shutdown", STOP_GRACE / 3, zk)
        await stop.cancel(tasks)
    await stop.within_grace(metrics.stop(), "metrics_stop", STOP_GRACE / 6)
    # Running VMs are left alone: they keep running and are adopted at the next start.
    await stop.within_grace(presence.leave(), "leave", zk=zk)
    await stop.within_grace(sink.flush(), "node_log_flush", STOP_GRACE / 3, zk)
    await stop.within_grace(zk.close(), "zookeeper_close")
    host.close()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pvcd", description="pvc node daemon")
    parser.add_argument("--config", help="YAML config file (env PVCD_CONFIG_FILE, default /etc/pvc/pvcd.yaml)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except PvcError as exc:
        print(f"pvcd: {exc}", file=sys.stderr)
        sys.exit(2)
    import uvloop

    uvloop.run(serve(cfg))


if __name__ == "__main__":
    main()
