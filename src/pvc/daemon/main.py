"""pvcd: one daemon per hypervisor, one uvloop event loop, roles as task sets."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pvc.config import DaemonConfig, load_config
from pvc.daemon.context import DaemonContext
from pvc.daemon.log import configure
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
        zk = ZK(cfg.zookeeper.hosts, session_timeout=cfg.zookeeper.session_timeout,
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


async def serve(cfg: DaemonConfig) -> None:
    log = configure(cfg.logging.level, cfg.logging.format).bind(node=cfg.node_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    zk = await _connect_zookeeper(cfg, log)
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
    while True:
        try:
            host.open()
            break
        except Unavailable as exc:
            log.warning("libvirt_unavailable", error=str(exc))
            await asyncio.sleep(1)

    ctx = DaemonContext(config=cfg, zk=zk, host=host, log=log)
    presence = NodePresence(ctx)
    ctx.services["presence"] = presence
    await presence.register()
    roles.extend(roles_for(ctx))

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(role.run(), name=f"role:{role.name}") for role in roles]
        tasks.append(tg.create_task(presence.keepalive_loop(), name="keepalive"))
        tasks.append(tg.create_task(host.keep_connected(), name="libvirt"))
        tasks.append(tg.create_task(systemd.watchdog_loop(), name="watchdog"))
        await presence.set_state("run")
        systemd.notify("READY=1")
        await stop.wait()
        systemd.notify("STOPPING=1")
        await presence.set_state("shutdown")
        for task in tasks:
            task.cancel()
    # Running VMs are left alone: they keep running and are adopted at the next start.
    await presence.leave()
    await zk.close()
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
