"""Coordinators keep FRR's configuration rendered from the cluster state (``pvc.frr_config``) and
reload FRR when it changes.

It follows the networks (their prefixes are announced upstream) and the nodes' cluster addresses
(``/nodes/<name>/network``, the BGP peers). Bursts of changes are coalesced; a rendered
configuration that FRR's own checker (``vtysh --dryrun``) rejects is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from pvc import network_store
from pvc.daemon.context import DaemonContext
from pvc.frr_config import FrrInputs, render
from pvc.schema import NodeInfo, Paths

DEBOUNCE = 0.5
COMMAND_TIMEOUT = 60.0


async def check_config(path: str) -> str:
    """FRR's verdict on a configuration file: "" if valid, else its complaint ("" too without vtysh)."""
    vtysh = shutil.which("vtysh")
    if not vtysh:
        return ""
    proc = await asyncio.create_subprocess_exec(vtysh, "--dryrun", "-f", path, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    return "" if proc.returncode == 0 else (out.decode(errors="replace").strip() or f"exit status {proc.returncode}")


class FrrRenderer:
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.cfg = ctx.config.networking.frr
        self.log = ctx.log.bind(role="coordinator", task="frr")
        self._changed = asyncio.Event()
        self._watches: dict[str, asyncio.Task] = {}

    def _poke(self, *_args) -> None:
        self._changed.set()

    def _follow(self, key: str, task_factory) -> None:
        if key not in self._watches:
            self._watches[key] = task_factory()

    def _on_networks(self, children: list[str] | None) -> None:
        for vni in children or ():
            self._follow(f"net:{vni}", lambda v=vni: self.zk.watch_data(Paths.network(v), self._poke))
        self._poke()

    def _on_nodes(self, children: list[str] | None) -> None:
        for name in children or ():
            self._follow(f"node:{name}", lambda n=name: self.zk.watch_data(Paths.node_key(n, "network"), self._poke))
        self._poke()

    async def run(self) -> None:
        self._watches["networks"] = self.zk.watch_children(Paths.networks, self._on_networks)
        self._watches["nodes"] = self.zk.watch_children(Paths.nodes, self._on_nodes)
        try:
            while True:
                await self._changed.wait()
                await asyncio.sleep(DEBOUNCE)
                self._changed.clear()
                try:
                    await self.apply()
                except Exception as exc:  # retried on the next change, and after a pause
                    self.log.warning("frr_render_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(2)
                    self._changed.set()
        finally:
            for w in self._watches.values():
                w.cancel()

    async def inputs(self) -> FrrInputs:
        me = self.ctx.node
        names = sorted(await self.zk.children(Paths.nodes))
        facts = await network_store.node_networks(self.zk, names)
        infos = await self.zk.get_many(Paths.node(n) for n in names)
        coordinators, hypervisors = {}, {}
        for name, info in zip(names, infos):
            address = facts[name].cluster_address if name in facts else ""
            mode = NodeInfo.decode(info).daemon_mode if info else "hypervisor"
            (coordinators if mode == "coordinator" or name in self.ctx.config.node.coordinators
             else hypervisors)[name] = address
        router_id = self.cfg.router_id or (facts[me].cluster_address if me in facts else "")
        return FrrInputs(node=me, router_id=router_id, asn=self.cfg.asn, coordinators=coordinators,
                         hypervisors=hypervisors, networks=await network_store.list_networks(self.zk),
                         upstream_peers=list(self.cfg.upstream_peers), upstream_asn=self.cfg.upstream_asn)

    async def apply(self) -> bool:
        """Render; install and reload when it changed. True if FRR was given a new configuration."""
        text = render(await self.inputs())
        path = Path(self.cfg.config_file)
        try:
            if path.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".pvc-new")
        tmp.write_text(text)
        complaint = await check_config(str(tmp))
        if complaint:
            tmp.unlink(missing_ok=True)
            self.log.error("frr_config_rejected", error=complaint)
            return False
        os.replace(tmp, path)
        self.log.info("frr_config_written", path=str(path))
        if self.cfg.reload_command:
            proc = await asyncio.create_subprocess_exec(*self.cfg.reload_command, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
            if proc.returncode != 0:
                self.log.error("frr_reload_failed", status=proc.returncode, output=out.decode(errors="replace")[-2000:])
            else:
                self.log.info("frr_reloaded")
        return True
