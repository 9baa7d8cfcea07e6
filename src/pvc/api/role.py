"""The API role of pvcd: coordinators with ``api.listen`` set serve the REST API (pvc.api.server).

Any coordinator can answer (all state is in ZooKeeper); in production clients use the primary's
floating address. aiohttp is imported only here, so daemons without the API never load it.
"""

from __future__ import annotations

from pvc.daemon.context import DaemonContext


class ApiRole:
    name = "api"

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.log = ctx.log.bind(role="api")

    @staticmethod
    def applies(ctx: DaemonContext) -> bool:
        return ctx.config.is_coordinator and bool(ctx.config.api.listen)

    async def run(self) -> None:
        from pvc.api.address import parse_listen
        from pvc.api.server import serve

        cfg = self.ctx.config
        extras = {}
        if cfg.storage.ceph.conf:  # storage operations reach Ceph as this daemon does
            from pvc.storage.ceph import CephClient

            ceph = cfg.storage.ceph
            extras["ceph"] = CephClient(ceph.conf, ceph.client, ceph.keyring, max(ceph.check_timeout, 30))
        host, port = parse_listen(cfg.api.listen)
        tls = (cfg.api.tls_cert, cfg.api.tls_key) if cfg.api.tls_cert else None
        await serve(self.ctx.zk, self.log, host, port, node=self.ctx.node, tls=tls, extras=extras)
