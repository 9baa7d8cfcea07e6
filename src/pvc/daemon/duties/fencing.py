"""Primary duty: fence dead nodes through IPMI and recover their VMs (decisions in ``pvc.fencing``).

Once a second the duty reads every node's presence (``alive``) and ``daemon_state`` (two pipelined
reads per node: bounded, and it needs no watch re-arming after a session loss; ``dead_after`` is
seconds, so a second's resolution is enough). A node gone for ``fencing.dead_after`` seconds is
marked ``dead`` and powered off through its BMC; only after ``chassis power status`` confirms "off"
is it marked ``fenced`` (and ``flushed``) and its VMs are started elsewhere. A failed fence moves
nothing (the VMs may still run there) and is retried every ``fencing.retry_interval`` seconds.

Each state write is a transaction that also creates and deletes the node's ``alive`` key: it fails
if the node's daemon came back meanwhile, so a returning node is never marked dead or fenced.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from pvc import fencing, store
from pvc.daemon.context import DaemonContext
from pvc.daemon.duties.guard import TeardownGuard
from pvc.errors import PvcError
from pvc.schema import IpmiInfo, Paths
from pvc.zk import NodeExists

CHECK_INTERVAL = 1.0
POWER_OFF_ATTEMPTS = 3


class FencingDuty:
    name = "fencing"
    needs_guard = False  # it changes nothing on this host that could outlive the daemon

    def __init__(self, ctx: DaemonContext, guard: TeardownGuard) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.cfg = ctx.config.fencing
        self.log = ctx.log.bind(role="primary", duty=self.name)
        self._task: asyncio.Task | None = None
        self._jobs: dict[str, asyncio.Task] = {}  # node -> its fence (and recovery) in progress

    async def cleanup(self) -> None:
        pass  # nothing of ours outlives the daemon on this host

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fencing")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._jobs.values()) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task, self._jobs = None, {}

    # -- watching ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        gone_since: dict[str, float] = {}
        last_try: dict[str, float] = {}
        recovered: set[str] = set()  # fenced nodes whose VMs this primary has (re)checked
        while True:
            try:
                await self._check(gone_since, last_try, recovered)
            except (PvcError, Exception) as exc:  # ZooKeeper trouble: look again shortly
                self.log.warning("fencing_check_failed", error=str(exc) or type(exc).__name__)
                # We lost sight of the cluster: absences are counted afresh once we see again, so
                # nodes whose sessions ended in the same ZooKeeper outage can re-register first.
                gone_since.clear()
            await asyncio.sleep(CHECK_INTERVAL)

    async def _check(self, gone_since: dict[str, float], last_try: dict[str, float], recovered: set[str]) -> None:
        names = [n for n in await store.node_names(self.zk) if n != self.ctx.node]
        values = await self.zk.get_many(Paths.node_key(n, k) for n in names for k in ("alive", "daemon_state"))
        now = time.monotonic()
        for i, name in enumerate(names):
            alive, state = values[2 * i] is not None, (values[2 * i + 1] or b"").decode()
            if alive:
                gone_since.pop(name, None)
                recovered.discard(name)
                continue
            # Unknown since when (e.g. just after a takeover): count from the first time we saw it gone.
            since = gone_since.setdefault(name, now)
            if name in self._jobs and not self._jobs[name].done():
                continue
            if state == "fenced" and name not in recovered:
                # A previous primary may have died half-way through the recovery: finish it.
                recovered.add(name)
                self._spawn(name, self._recover(name))
            elif fencing.fence_due(state, False, since, now, self.cfg.dead_after):
                if now - last_try.get(name, -1e9) >= self.cfg.retry_interval:
                    last_try[name] = now
                    recovered.add(name)
                    self._spawn(name, self._fence(name, state))

    def _spawn(self, name: str, coro) -> None:
        self._jobs[name] = asyncio.create_task(coro, name=f"fence:{name}")

    # -- doing -------------------------------------------------------------------------------------

    async def _mark(self, name: str, state: str, *extra: tuple) -> bool:
        """Write the node's daemon_state unless its daemon is back (see the module docstring)."""
        alive = Paths.node_key(name, "alive")
        try:
            await self.zk.multi([("create", alive, b""), ("delete", alive),
                                 ("set", Paths.node_key(name, "daemon_state"), state.encode()), *extra])
            return True
        except NodeExists:
            self.log.info("node_came_back", node=name, instead_of=state)
            return False

    async def _fence(self, name: str, state: str) -> None:
        log = self.log.bind(node=name)
        if state != "dead":
            if not await self._mark(name, "dead"):
                return
            log.warning("node_dead", dead_after=self.cfg.dead_after)
        if self.cfg.policy == "none":
            log.warning("fence_skipped", reason="fencing.policy is none; its VMs stay assigned to it")
            return
        try:
            data = await self.zk.get_data(Paths.node_key(name, "ipmi"))
            ipmi = IpmiInfo.decode(data) if data else IpmiInfo()
        except (msgspec.DecodeError, msgspec.ValidationError):
            ipmi = IpmiInfo()
        if not ipmi.hostname:
            log.error("fence_failed", reason="no IPMI configured (fencing.ipmi on that node); its VMs are not moved")
            return
        reason = ""
        for attempt in range(1, POWER_OFF_ATTEMPTS + 1):
            reason = await self._power_off(ipmi)
            if not reason:
                break
            log.warning("fence_attempt_failed", attempt=attempt, reason=reason)
            await asyncio.sleep(1)
        if reason:
            log.error("fence_failed", reason=reason, retry_in=self.cfg.retry_interval)
            return
        # Fenced; it comes back flushed so that it takes no VMs until an operator says `pvc node ready`.
        if not await self._mark(name, "fenced", ("set", Paths.node_key(name, "domain_state"), b"flushed")):
            return
        log.warning("node_fenced")
        await self._recover(name)

    async def _ipmitool(self, ipmi: IpmiInfo, *command: str) -> tuple[bool, str]:
        argv = fencing.ipmitool_argv(ipmi.hostname, ipmi.port, ipmi.username, *command,
                                     cipher_suite=ipmi.cipher_suite)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env={**os.environ, "IPMI_PASSWORD": ipmi.password})
        except OSError as exc:
            return False, f"cannot run ipmitool: {exc}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.cfg.ipmi_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"ipmitool {' '.join(command)} timed out after {self.cfg.ipmi_timeout:g} s"
        text = out.decode(errors="replace").strip()
        return proc.returncode == 0, text

    async def _power_off(self, ipmi: IpmiInfo) -> str:
        """Power the node off and confirm it; "" on success, else why not."""
        ok, out = await self._ipmitool(ipmi, "chassis", "power", "off")
        if not ok:
            return f"power off failed: {out[-200:]}"
        for _ in range(10):  # a BMC may take a moment to report the new state
            ok, out = await self._ipmitool(ipmi, "chassis", "power", "status")
            if ok and fencing.power_is_off(out):
                return ""
            await asyncio.sleep(0.5)
        return f"power status does not say off: {out[-200:]}"

    async def _recover(self, name: str) -> None:
        log = self.log.bind(node=name)
        mine = [d for d in await store.list_domains(self.zk) if d.node == name]
        if not mine:
            return
        nodes = await store.list_nodes(self.zk)
        wanted = {d.uuid for d in mine if d.state in fencing.RECOVER_STATES}
        running = await self._running_elsewhere([n for n in nodes if n.name != name], wanted)
        plan = fencing.recovery_plan(name, mine, [n.candidate() for n in nodes if n.name != name],
                                     await store.default_selector(self.zk), running)
        by_uuid = {d.uuid: d for d in mine}
        for uuid, changes in plan.items():
            before = by_uuid[uuid]

            def change(d, changes=changes, before=before):
                # Only if nobody changed the VM meanwhile; otherwise the next takeover looks again.
                if d.node != name or d.state != before.state:
                    return None
                return msgspec.structs.replace(d, **changes)

            try:
                await store.update_domain(self.zk, uuid, change)
            except PvcError as exc:
                log.warning("vm_recovery_write_failed", vm=before.name, error=str(exc))
                continue
            log.warning("vm_recovered", vm=before.name, to=changes.get("node", name),
                        state=changes.get("state", before.state), reason=changes.get("failed_reason", ""))

    async def _running_elsewhere(self, nodes: list[store.NodeView], uuids: set[str]) -> dict[str, str]:
        """uuid -> node, for VMs of the fenced node that another node's libvirt already runs (asked
        directly: the truth comes from libvirt, never from a record)."""
        if not uuids:
            return {}
        found: dict[str, str] = {}
        for node in nodes:
            if not node.migration_uri:
                continue
            try:
                active = await asyncio.wait_for(asyncio.to_thread(_active_uuids, node.migration_uri), 10)
            except Exception as exc:  # unreachable peer: it cannot be a placement target either
                self.log.warning("fencing_peer_unreachable", peer=node.name, error=str(exc) or type(exc).__name__)
                continue
            for uuid in active & uuids:
                found.setdefault(uuid, node.name)
        return found


def _active_uuids(uri: str) -> set[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
    finally:
        conn.close()
