"""Primary duty: fence dead nodes through IPMI and recover their VMs (decisions in ``pvc.fencing``).

Once a second the duty reads every node's presence (``alive``), ``daemon_state``, fence record
(``/nodes/<n>/fence``) and IPMI address, and the cluster's maintenance flag (one multiRead: bounded,
and it needs no watch re-arming after a session loss; ``dead_after`` is seconds, so a second's
resolution is enough). ``pvc.fencing.decide`` says what to do with each node: a node gone for
``fencing.dead_after`` seconds is marked ``dead`` and powered off through its BMC; only after
``chassis power status`` confirms "off" is it marked ``fenced`` (and ``flushed``) and its VMs are
started elsewhere. A failed fence moves nothing (the VMs may still run there); it is recorded in
the fence record (visible in `pvc node info` and `pvc cluster status`) and retried with backoff.
While the cluster is in maintenance, dead nodes are only reported.

Each state write is a transaction that also creates and deletes the node's ``alive`` key: it fails
if the node's daemon came back meanwhile, so a returning node is never marked dead or fenced, and
no VM of it is reassigned (each recovery write also checks that ``daemon_state`` is unchanged).
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from pvc import events, fence_store, fencing, store
from pvc.daemon import libvirt_peers
from pvc.daemon.context import DaemonContext
from pvc.daemon.duties.guard import TeardownGuard
from pvc.errors import NotFound, PvcError
from pvc.fencing import Action
from pvc.schema import WANTS_RUNNING, Domain, IpmiInfo, Paths
from pvc.storage.disks import unblock_due
from pvc.zk import BadVersion, NodeExists, NoNode

CHECK_INTERVAL = 1.0
# How long `chassis power status` may take to say "off" after the power-off command.
POWER_OFF_CONFIRM_POLLS, POWER_OFF_CONFIRM_INTERVAL = 10, 0.5


def _ipmi(data: bytes | None) -> IpmiInfo:
    try:
        return IpmiInfo.decode(data) if data else IpmiInfo()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return IpmiInfo()


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
        while True:
            try:
                await self._check(gone_since)
            except (PvcError, Exception) as exc:  # ZooKeeper trouble: look again shortly
                self.log.warning("fencing_check_failed", error=str(exc) or type(exc).__name__)
                # We lost sight of the cluster: absences are counted afresh once we see again, so
                # nodes whose sessions ended in the same ZooKeeper outage can re-register first.
                gone_since.clear()
            await asyncio.sleep(CHECK_INTERVAL)

    KEYS = ("alive", "daemon_state", "fence", "ipmi", "domain_state")

    async def _check(self, gone_since: dict[str, float]) -> None:
        names = [n for n in await store.node_names(self.zk) if n != self.ctx.node]
        values = await self.zk.get_many([Paths.maintenance,
                                         *(Paths.node_key(n, k) for n in names for k in self.KEYS)])
        maintenance = values[0] == b"true"
        now, mono = time.time(), time.monotonic()
        step = len(self.KEYS)
        for i, name in enumerate(names):
            alive, state, fence, ipmi, domain_state = values[1 + step * i: 1 + step * (i + 1)]
            alive, state, fence = alive is not None, (state or b"").decode(), fence_store.decode(fence)
            if alive:
                gone_since.pop(name, None)
            else:
                # Unknown since when (e.g. just after a takeover): count from the first time we saw it gone.
                gone_since.setdefault(name, mono)
            if name in self._jobs and not self._jobs[name].done():
                continue
            if unblock_due(alive, state, (domain_state or b"").decode(), fence.blocklisted):
                self._spawn(name, self._unblock(name, fence.blocklisted))
                continue
            decision = fencing.decide(
                name, alive=alive, daemon_state=state, fence=fence, now=now, maintenance=maintenance,
                gone_for=None if alive else mono - gone_since[name], dead_after=self.cfg.dead_after,
                policy=self.cfg.policy, has_ipmi=bool(_ipmi(ipmi).hostname))
            if decision.action is Action.FENCE:
                self._spawn(name, self._fence(name, state))
            elif decision.action is Action.RECOVER:
                self._spawn(name, self._recover(name))
            elif decision.action is Action.PAUSE:
                if state not in ("dead", "fenced") or fence.message != decision.reason:
                    self._spawn(name, self._pause(name, state, decision.reason))
            elif decision.action is Action.RETURNED:
                self._spawn(name, self._update_record(name, lambda f: fencing.returned(f, time.time(), self.ctx.node)))

    def _spawn(self, name: str, coro) -> None:
        async def job() -> None:
            try:
                await coro
            except Exception as exc:  # ZooKeeper trouble: the next check decides again
                self.log.warning("fence_job_failed", node=name, error=str(exc) or type(exc).__name__)

        self._jobs[name] = asyncio.create_task(job(), name=f"fence:{name}")

    # -- doing -------------------------------------------------------------------------------------

    async def _mark(self, name: str, expect: str, state: str, record, *extra: tuple) -> bool:
        """Write the node's daemon_state (from ``expect``) and its fence record (``record(old)``)
        in one transaction, unless its daemon is back or someone else wrote either meanwhile."""
        key = Paths.node_key(name, "daemon_state")
        data, version = await self.zk.get(key)
        if data.decode() != expect:  # changed since we looked (an operator's fence, the daemon): look again
            self.log.info("node_changed_meanwhile", node=name, instead_of=state, found=data.decode())
            return False
        fence, fence_version = await fence_store.read(self.zk, name)
        try:
            await self.zk.multi([*fence_store.not_back_ops(name), ("set", key, state.encode(), version),
                                 fence_store.put_op(name, record(fence), fence_version), *extra])
            return True
        except NodeExists:
            self.log.info("node_came_back", node=name, instead_of=state)
        except (BadVersion, NoNode):
            self.log.info("node_changed_meanwhile", node=name, instead_of=state)
        return False

    async def _update_record(self, name: str, change) -> None:
        fence, version = await fence_store.read(self.zk, name)
        try:
            await self.zk.multi([fence_store.put_op(name, change(fence), version)])
        except (BadVersion, NodeExists):
            pass  # written meanwhile: the next check decides again

    async def _event(self, kind: str, node: str, message: str, severity: str = "warning", vm: str = "") -> None:
        """What an operator must hear of also goes to the cluster's event log (`pvc event list`)."""
        await events.try_record(self.zk, self.log, kind, message, severity=severity, node=node, vm=vm)

    async def _pause(self, name: str, state: str, reason: str) -> None:
        """A dead node that is not fenced now: say so (daemon_state dead, the reason in its record)."""
        record = lambda f: fencing.declared_dead(f, time.time(), self.ctx.node, reason)  # noqa: E731
        if state in ("dead", "fenced"):
            await self._update_record(name, lambda f: msgspec.structs.replace(f, message=reason))
        elif await self._mark(name, state, "dead", record):
            self.log.warning("node_dead", node=name, dead_after=self.cfg.dead_after)
            await self._event("node_dead", name, f"node {name} is dead and is not fenced: {reason}", "error")
        self.log.warning("fence_paused", node=name, reason=reason)

    async def _fence(self, name: str, state: str) -> None:
        log = self.log.bind(node=name)
        if state != "dead":
            if not await self._mark(name, state, "dead", lambda f: fencing.declared_dead(f, time.time(), self.ctx.node)):
                return
            log.warning("node_dead", dead_after=self.cfg.dead_after)
            await self._event("node_dead", name, f"node {name} is dead (no presence for {self.cfg.dead_after:g} s); "
                              "powering it off through IPMI")
        ipmi = _ipmi(await self.zk.get_data(Paths.node_key(name, "ipmi")))
        # Our decision is up to a second old: a daemon that re-registered meanwhile (a restart,
        # a retry's moment) is up, not dead. (A power-off that still races with it is safe, only rude.)
        if await self.zk.exists(Paths.node_key(name, "alive")):
            log.info("node_came_back", instead_of="power off")
            return
        error = await self._power_off(ipmi)
        if error:
            fence, version = await fence_store.read(self.zk, name)
            failed = fencing.attempt_failed(fence, error, time.time(), self.cfg.retry_interval,
                                            self.cfg.retry_max_interval, self.ctx.node)
            log.error("fence_failed", reason=error, attempt=failed.attempts,
                      retry_in=round(failed.next_attempt - failed.last_attempt, 1))
            try:
                await self.zk.multi([fence_store.put_op(name, failed, version)])
            except (BadVersion, NodeExists):
                pass
            await self._event("fence_failed", name, f"fencing node {name}: {failed.message}; its VMs are not moved",
                              "error")
            return
        # Fenced; it comes back flushed so that it takes no VMs until an operator says `pvc node ready`.
        if not await self._mark(name, "dead", "fenced",
                                lambda f: fencing.confirmed_off(f, "ipmi", time.time(), self.ctx.node),
                                ("set", Paths.node_key(name, "domain_state"), b"flushed")):
            return
        log.warning("node_fenced", method="ipmi")
        await self._event("node_fenced", name, f"node {name} is fenced (IPMI power status says off); "
                          "recovering its VMs on other nodes")
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
            return f"power off failed: {out[-200:] or 'no output'}"
        for _ in range(POWER_OFF_CONFIRM_POLLS):  # a BMC may take a moment to report the new state
            ok, out = await self._ipmitool(ipmi, "chassis", "power", "status")
            if ok and fencing.power_is_off(out):
                return ""
            await asyncio.sleep(POWER_OFF_CONFIRM_INTERVAL)
        waited = POWER_OFF_CONFIRM_POLLS * POWER_OFF_CONFIRM_INTERVAL
        if ok:
            return f"power still on {waited:g} s after the power-off command ({out[-200:]})"
        return f"power status could not be read after the power-off command: {out[-200:] or 'no output'}"

    async def _recover(self, name: str) -> None:
        """Apply ``pvc.fencing.recovery_plan`` to the fenced node's VMs, each with a versioned write
        that also checks the node is still fenced and its daemon not back. Safe to repeat (a new
        primary re-runs an unfinished recovery): a VM already moved is no longer on the node."""
        log = self.log.bind(node=name)
        key = Paths.node_key(name, "daemon_state")
        data, state_version = await self.zk.get(key)
        if data != b"fenced":
            return
        mine = [d for d in await store.list_domains(self.zk) if d.node == name]
        nodes = await store.list_nodes(self.zk)
        wanted = {d.uuid for d in mine if d.state in WANTS_RUNNING}
        running = await libvirt_peers.where_running(self.zk, wanted, exclude={name}, log=self.log)
        plan = fencing.recovery_plan(name, mine, [n.candidate() for n in nodes if n.name != name],
                                     await store.default_selector(self.zk), running, daemon_state=data.decode(),
                                     needs_storage=await _rbd_vm_uuids(self.zk, wanted))
        # Before any VM starts elsewhere: cut the node's Ceph clients off its VMs' volumes (not those
        # of VMs found running elsewhere: their watchers are that live QEMU).
        await self._cut_off_disks(name, [d for d in mine if d.uuid not in running])
        by_uuid = {d.uuid: d for d in mine}
        count = 0
        for uuid, changes in plan.items():
            applied = await self._apply(name, by_uuid[uuid], changes, state_version)
            if applied is None:
                log.warning("vm_recovery_stopped", reason="the node's state changed (its daemon is back?)")
                return
            count += applied
        await self._update_record(name, lambda f: fencing.recovered(f, count, time.time(), self.ctx.node))
        log.warning("node_recovered", vms=count)

    def _ceph(self):
        from pvc.storage.ceph import CephClient

        cfg = self.ctx.config.storage.ceph
        return CephClient(cfg.conf, cfg.client, cfg.keyring, max(cfg.check_timeout, 10)) if cfg.conf else None

    async def _cut_off_disks(self, name: str, domains: list[Domain]) -> None:
        """Blocklist the fenced node's Ceph clients on its VMs' RBD volumes and release their
        exclusive locks (pvc.storage.vm_volumes); the addresses go into its fence record, to be
        removed when the node is back and ready. Without Ceph here, or if Ceph fails, recovery goes
        on (the node is confirmed off; librbd breaks a dead client's lock itself after ~30 s)."""
        from pvc.storage import vm_volumes

        refs = await vm_volumes.fenced_volumes(self.zk, domains)
        if not refs:
            return
        ceph = self._ceph()
        if ceph is None:
            self.log.warning("fence_blocklist_skipped", node=name, reason="no storage.ceph on this coordinator")
            return
        try:
            addrs = await vm_volumes.blocklist_clients(ceph, refs)
        except PvcError as exc:
            self.log.error("fence_blocklist_failed", node=name, error=str(exc))
            await self._event("fence_blocklist_failed", name, f"node {name}: blocklisting its Ceph clients failed "
                              f"({exc}); recovering its VMs anyway (the node is confirmed off)", "error")
            return
        if addrs:
            self.log.warning("fence_blocklisted", node=name, clients=addrs, volumes=refs)
            await self._event("fence_blocklisted", name, f"node {name}: Ceph client(s) {', '.join(addrs)} "
                              f"blocklisted and their locks released on {', '.join(refs)}")
            await self._update_record(name, lambda f: msgspec.structs.replace(
                f, blocklisted=sorted(set(f.blocklisted) | set(addrs))))

    async def _unblock(self, name: str, addrs: list[str]) -> None:
        """The node is back and ready: its blocklist entries go."""
        from pvc.storage import vm_volumes

        ceph = self._ceph()
        if ceph is not None:
            await vm_volumes.unblocklist(ceph, addrs)
        await self._update_record(name, lambda f: msgspec.structs.replace(
            f, blocklisted=[a for a in f.blocklisted if a not in addrs]))
        self.log.info("fence_unblocklisted", node=name, clients=addrs)

    async def _apply(self, name: str, before: Domain, changes: dict, state_version: int) -> int | None:
        """Write one VM's recovery: 1 if written, 0 if obsolete, None if the node is no longer fenced."""
        state_key = Paths.node_key(name, "daemon_state")
        for _ in range(20):
            try:
                current, version = await store.read_domain(self.zk, before.uuid)
            except NotFound:
                return 0  # undefined meanwhile
            new = fencing.recovery_change(current, before, changes, name)
            if new is None:
                return 0
            try:
                await self.zk.multi([("check", state_key, state_version), *fence_store.not_back_ops(name),
                                     *store.domain_write_ops(current, version, new)])
            except NodeExists:
                return None
            except BadVersion:
                if (await self.zk.get(state_key))[1] != state_version:
                    return None
                continue  # the VM's record changed: decide again on the new one
            self.log.warning("vm_recovered", node=name, vm=before.name, to=new.node, state=new.state,
                             reason=new.failed_reason)
            if new.node != name or new.state == "fail":
                await self._event("vm_recovered", name, f"VM {before.name}: {new.failed_reason}" +
                                  (f" (now on {new.node})" if new.node != name else ""),
                                  "error" if new.state == "fail" else "warning", vm=before.name)
            return 1
        self.log.warning("vm_recovery_write_failed", node=name, vm=before.name, error="kept changing")
        return 0


async def _rbd_vm_uuids(zk, uuids) -> frozenset[str]:
    """VMs with RBD disks: recovery places them only on nodes that reach Ceph (pvc.storage)."""
    from pvc.storage.ops import rbd_vm_uuids

    return await rbd_vm_uuids(zk, uuids)
