"""The storage role (nodes with ``storage.ceph`` configured): checks, every
``storage.ceph.check_interval`` seconds, that this node reaches Ceph with its own client and
keyring, and lets the keepalive carry the answer: placement sends VMs with RBD disks only to
nodes whose keepalive says ``storage: ok``.

The check is ``rados lspools`` (the cheapest round trip to the monitors, about 0.05 s) as an
asyncio subprocess killed at ``check_timeout``: it never blocks the event loop, and a hung
monitor costs one bounded wait, not a stuck daemon.
"""

from __future__ import annotations

import asyncio

from pvc.daemon.context import DaemonContext

OK = "ok"


class StorageRole:
    name = "storage"

    def __init__(self, ctx: DaemonContext) -> None:
        from pvc.storage.ceph import CephClient

        self.ctx = ctx
        cfg = ctx.config.storage.ceph
        self.cfg = cfg
        self.ceph = CephClient(cfg.conf, cfg.client, cfg.keyring, cfg.check_timeout)
        self.log = ctx.log.bind(role="storage")
        # What the keepalive reports: "ok", or why this node cannot reach Ceph ("" before the first check).
        self.state = ""
        self.checked = asyncio.Event()  # set once the first check is done and published
        ctx.services.storage = self

    async def check(self) -> str:
        why = await self.ceph.reachable(self.cfg.check_timeout)
        return OK if not why else f"unreachable: {why}"[:300]

    async def run(self) -> None:
        while True:
            state = await self.check()
            if state != self.state:
                (self.log.info if state == OK else self.log.warning)("storage_state", state=state)
                self.state = state
                if self.ctx.services.presence:  # placement reads it: tell the cluster now
                    await self.ctx.services.presence.publish()
            self.checked.set()
            await asyncio.sleep(self.cfg.check_interval)
