"""One VM's reconcile on this node: ask libvirt, let ``reconcile.decide`` pick the step, do it,
record the outcome (``vm_outcomes``) with a versioned write.

Runs under the hypervisor role's per-VM worker, so for one VM nothing here runs twice at once: a
hand-over is decided after every start this node made has finished, from libvirt's answer.
"""

from __future__ import annotations

import asyncio
import os
import time

from pvc import events, store, vm_outcomes
from pvc.daemon import libvirt_peers, vm_disks
from pvc.errors import PvcError, Unavailable
from pvc.libvirt_host import LibvirtError, LibvirtHost
from pvc.reconcile import Step, decide
from pvc.schema import Domain, NodeInfo, Paths
from pvc.zk import NoNode

# How long a VM that vanished is given for libvirt's stop event (which says why) to arrive.
STOP_EVENT_GRACE = 2.0


class VmReconciler:
    def __init__(self, role) -> None:
        self.role = role
        self.ctx = role.ctx
        self.zk = role.zk
        self.host: LibvirtHost = role.host
        self.me = role.me
        self.log = role.log
        self.update = role.update
        self.records = role.records
        # Seen running here at the previous look: a VM that is gone since then without pvc
        # stopping it was stopped outside pvc and is not started again behind the operator's back.
        self._seen_running: set[str] = set()
        self._duplicate_logged: set[str] = set()
        self._no_live_migration: set[str] = set()  # target URIs this libvirt cannot migrate to at all

    async def _event(self, kind: str, dom: Domain, message: str, severity: str = "warning", **details) -> None:
        await events.try_record(self.zk, self.log, kind, message, severity=severity, node=self.me, vm=dom.name,
                                args=details)

    def forget_seen(self) -> None:
        self._seen_running.clear()

    async def reconcile(self, uuid: str) -> None:
        role = self.role
        # Cut off from ZooKeeper, or back with a new session but not yet re-read: act on nothing
        # (VMs keep running as they are; what was asked meanwhile is carried out once back).
        await self.zk.connected.wait()
        await role.fresh.wait()
        if uuid in role.unexpected:
            said = role.unexpected[uuid]
            await self._record_unexpected_stop(uuid, *said)
            if role.unexpected.get(uuid) == said:  # kept until recorded: a retry must not lose it
                del role.unexpected[uuid]
        running = self.host.is_running(uuid)
        if running:
            role.note_running(uuid)  # a copy here is looked at whichever node it is assigned to
        if role.cache.pending(uuid):
            return  # its record is being read: that read kicks it again
        dom = self.records.get(uuid)
        seen = uuid in self._seen_running
        mine = dom is not None and dom.node == self.me
        if running and mine:
            self._seen_running.add(uuid)
        elif not (seen and mine and dom.state == "start"):
            self._seen_running.discard(uuid)  # (a vanished VM is forgotten once recorded as such)
        await role.residency(dom, uuid, running)
        if dom is None:
            return
        step = decide(dom, self.me, running, seen)
        if step is Step.NOTHING:
            return
        log = self.log.bind(vm=dom.name, step=step.value)
        if step is not Step.FOREIGN:
            log.info("vm_step", state=dom.state)
        await getattr(self, f"_do_{step.value}")(dom)

    # -- what libvirt says happened ------------------------------------------------------------

    async def _record_unexpected_stop(self, uuid: str, state: str, reason: str) -> None:
        """``state`` "migrated": libvirt said it left by migration; "" reason: libvirt said nothing."""
        self.log.warning("vm_stopped_unexpectedly", vm=uuid, reason=reason or "no libvirt event")
        if state == "migrated" or not reason:
            # `virsh migrate` behind pvc's back? Find where it runs now, or this node would start a
            # second copy to honour state "start".
            found = await self.find_elsewhere(uuid)
            if found:
                note = reason or "moved outside pvc"
                dom = await self.update(uuid, lambda d: vm_outcomes.followed(d, self.me, found, note)
                                        if not self.host.is_running(uuid) else None)
                if dom is not None:
                    await self._event("vm_moved_outside_pvc", dom, f"{dom.name} left {self.me} outside pvc; "
                                      f"it runs on {found} now and is followed there")
                return
            state, reason = "stop", ("migrated outside pvc to a node pvc does not know" if reason
                                     else "stopped outside pvc (libvirt gave no reason)")
        dom = await self.update(uuid, lambda d: vm_outcomes.stopped_outside(d, self.me, state, reason)
                                if not self.host.is_running(uuid) else None)
        if dom is not None:
            kind = "vm_crashed" if state == "fail" else "vm_stopped_outside_pvc"
            await self._event(kind, dom, f"{dom.name} stopped on {self.me}: {reason}", "error" if state == "fail"
                              else "warning")

    async def _do_record_lost(self, dom: Domain) -> None:
        """Gone since the last look and pvc did not stop it: wait for libvirt's event (it says
        why), then record it; never start it again on the strength of the record."""
        role = self.role
        if dom.uuid not in role.unexpected:
            waiter = role.stop_waiter(dom.uuid)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), STOP_EVENT_GRACE)
            except asyncio.TimeoutError:
                pass
            finally:
                role.drop_stop_waiter(dom.uuid, waiter)
        state, reason = role.unexpected.get(dom.uuid, ("stop", ""))
        await self._record_unexpected_stop(dom.uuid, state, reason)
        role.unexpected.pop(dom.uuid, None)
        self._seen_running.discard(dom.uuid)

    async def _do_foreign(self, dom: Domain) -> None:
        """Runs here, assigned elsewhere. If its own node's libvirt runs it too (or cannot be
        asked), two copies may run: loud, in the record, never killed here (which copy is right is
        the operator's call). If not, it was moved behind pvc's back: its node follows it."""
        there = True
        info = await self.target_info(dom.node)
        if info and info.migration_uri:
            try:
                there = await libvirt_peers.runs(info.migration_uri, dom.uuid)
            except LibvirtError:
                there = True
        if not there:
            self.log.info("vm_here_assigned_elsewhere", vm=dom.name, assigned=dom.node)
            return
        if dom.uuid not in self._duplicate_logged:
            self._duplicate_logged.add(dom.uuid)
            self.log.error("vm_running_on_two_nodes", vm=dom.name, assigned=dom.node, also_on=self.me)
            await self._event("vm_two_copies", dom, f"{dom.name} runs on {self.me} and on {dom.node}, its node: "
                              "two copies; stop the wrong one (pvc leaves both alone)", "error")
        await self.update(dom.uuid, lambda d: vm_outcomes.duplicate_seen(d, self.me)
                          if self.host.is_running(d.uuid) else None)

    async def _do_clear_duplicate(self, dom: Domain) -> None:
        self._duplicate_logged.discard(dom.uuid)
        self.log.warning("vm_duplicate_gone", vm=dom.name, node=self.me)
        await self._event("vm_two_copies_resolved", dom, f"the copy of {dom.name} on {self.me} is gone", "info")
        await self.update(dom.uuid, lambda d: vm_outcomes.duplicate_gone(d, self.me)
                          if d.node == self.me or not self.host.is_running(d.uuid) else None)

    # -- lifecycle steps -----------------------------------------------------------------------

    async def _do_start(self, dom: Domain) -> None:
        try:
            xml = await store.read_xml(self.zk, dom.uuid)
            xml = vm_disks.for_this_node(xml, self.ctx.config.storage.ceph, self.me)  # RBD: monitors, auth
            # QEMU takes seconds to start or kill a guest: off the loop, or ZooKeeper sessions expire.
            await asyncio.to_thread(self.host.start, xml)
        except (LibvirtError, PvcError, OSError) as exc:
            if isinstance(exc, Unavailable):
                raise
            reason = f"start failed on {self.me}: {exc}"
            self.log.error("vm_start_failed", vm=dom.name, error=str(exc))
            await self.update(dom.uuid, lambda d: vm_outcomes.start_failed(d, self.me, reason))
            return
        self._seen_running.add(dom.uuid)
        await self._do_record_running(dom)
        self.role.note_running(dom.uuid)
        await self._event("vm_started", dom, f"{dom.name} started on {self.me}", "info")
        if await self.role.current(dom.uuid) is None:
            # Undefined while it was starting (a stale read): nothing may run without a record.
            self.log.warning("vm_undefined_while_starting", vm=dom.name)
            self.role.expect_stop.add(dom.uuid)
            await asyncio.to_thread(self.host.destroy, dom.uuid)

    async def _do_follow_rename(self, dom: Domain) -> None:
        """Renamed while off (`pvc vm rename`): the console log file (when named after the VM) and any
        libvirt definition here take the new name, so pvc, libvirt and the log agree before a start."""
        from pvc.domain_xml import renamed_log_file

        new_log = dom.console_log_file
        old_log = renamed_log_file(new_log, dom.name, dom.renamed_from)
        try:
            if old_log != new_log and os.path.exists(old_log) and not os.path.exists(new_log):
                os.rename(old_log, new_log)  # the tailer's file mark (inode) stays valid: reading continues
            defined = await asyncio.to_thread(self.host.follow_rename, dom.uuid, dom.name)
        except (LibvirtError, OSError) as exc:
            self.log.error("vm_rename_not_followed", vm=dom.name, old=dom.renamed_from, error=str(exc))
            await self._event("vm_rename_not_followed", dom, f"{dom.renamed_from} renamed to {dom.name}: "
                              f"not followed on {self.me}: {exc}")
            defined = False  # the record is cleared all the same: a start uses the new name regardless
        self.log.info("vm_rename_followed", vm=dom.name, old=dom.renamed_from, libvirt_definition=defined)
        await self.update(dom.uuid, lambda d: vm_outcomes.rename_followed(d, self.me, dom.name))

    async def _do_update_disks(self, dom: Domain) -> None:
        await vm_disks.update_live(self, dom)  # `pvc vm volume add|remove` on a running VM

    async def _do_record_running(self, dom: Domain) -> None:
        await self.update(dom.uuid, lambda d: vm_outcomes.started(d, self.me, self.host.state(d.uuid)))

    async def _do_record_stopped(self, dom: Domain, note: str = "") -> None:
        stopped = await self.update(dom.uuid, lambda d: vm_outcomes.stopped(d, self.me, note)
                                    if not self.host.is_running(d.uuid) else None)
        if stopped is not None and dom.libvirt_state != "shutoff":  # not when it was recorded off already
            await self._event("vm_stopped", stopped, f"{dom.name} stopped on {self.me} ({stopped.state})"
                              + (f": {note}" if note else ""), "info")

    async def _do_destroy(self, dom: Domain) -> None:
        self.role.expect_stop.add(dom.uuid)
        await asyncio.to_thread(self.host.destroy, dom.uuid)
        await self._do_record_stopped(dom)

    async def _graceful_stop(self, dom: Domain, still_wanted) -> tuple[bool, str]:
        """Shut the guest down; apply the timeout policy. (off, note): off is False if it is left
        running; note says when it had to be forced off.

        Returns early (forcing it off) when the operator changes the request meanwhile to stop."""
        cfg = self.ctx.config.vm
        uuid = dom.uuid
        role = self.role
        stopped = role.stop_waiter(uuid)
        changed = role.change_event(uuid)
        role.expect_stop.add(uuid)
        deadline = time.monotonic() + cfg.shutdown_timeout
        try:
            self.host.shutdown(uuid)
            while self.host.is_running(uuid):
                changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait_changed = asyncio.ensure_future(changed.wait())
                await asyncio.wait([stopped, wait_changed], timeout=min(remaining, 1.0),
                                   return_when=asyncio.FIRST_COMPLETED)
                wait_changed.cancel()
                if not still_wanted(self.records.get(uuid)):
                    self.log.info("vm_shutdown_overridden", vm=dom.name)
                    await asyncio.to_thread(self.host.destroy, uuid)
            if not self.host.is_running(uuid):
                return True, ""
            if cfg.shutdown_timeout_policy == "stop":
                self.log.warning("vm_shutdown_timeout_forcing_off", vm=dom.name, timeout=cfg.shutdown_timeout)
                await asyncio.to_thread(self.host.destroy, uuid)
                note = f"the guest did not shut down within {cfg.shutdown_timeout:g} s: forced off (policy stop)"
                await self._event("vm_forced_off", dom, f"{dom.name} on {self.me}: {note}")
                return True, note
            role.expect_stop.discard(uuid)
            reason = f"shutdown timed out after {cfg.shutdown_timeout:g} s; left running (policy abort)"
            self.log.warning("vm_shutdown_timeout_left_running", vm=dom.name)
            await self.update(uuid, lambda d: vm_outcomes.shutdown_left_running(d, self.me, reason))
            return False, ""
        finally:
            role.drop_stop_waiter(uuid, stopped)

    async def _do_shutdown(self, dom: Domain) -> None:
        off, note = await self._graceful_stop(dom, lambda d: d is not None and d.state == "shutdown")
        if off:
            await self._do_record_stopped(dom, note)

    async def _do_disable(self, dom: Domain) -> None:
        off, note = await self._graceful_stop(dom, lambda d: d is not None and d.state == "disable")
        if off:
            await self._do_record_stopped(dom, note)

    async def _do_restart(self, dom: Domain) -> None:
        off, _ = await self._graceful_stop(dom, lambda d: d is not None and d.state == "restart")
        if off:
            current = self.records.get(dom.uuid)
            if current and current.state == "restart" and current.node == self.me:
                await self._do_start(current)

    # -- moving between nodes ------------------------------------------------------------------

    async def _do_hand_over(self, dom: Domain, seconds: float = 0.0, note: str = "") -> None:
        """Libvirt here says the VM is off: give it to its target (which starts it if wanted)."""
        await self.role.leaving(dom.uuid)
        await self.update(dom.uuid, lambda d: vm_outcomes.handed_over(d, self.me, time.time(), seconds, note)
                          if not self.host.is_running(d.uuid) else None)

    async def _do_migrate(self, dom: Domain) -> None:
        method = dom.migration_method or "any"
        target = await self.target_info(dom.target_node)
        if method == "shutdown":
            await self._migrate_by_shutdown(dom, time.monotonic(), "")
            return
        started = time.monotonic()
        why = await self._migrate_live(dom, target, started)
        if not why:
            return  # moved (or lost, recorded)
        if method == "live":
            # Its method says live only: it stays running here, and the request ends with the reason.
            reason = f"live migration to {dom.target_node} failed: {why}; still running on {self.me} (method live)"
            await self.update(dom.uuid, lambda d: vm_outcomes.migration_failed(d, self.me, reason)
                              if self.host.is_running(d.uuid) else None)
            await self._event("vm_migration_failed", dom, f"{dom.name}: {reason}")
            return
        note = f"live migration failed ({why}); shut down and restarted"
        await self._event("vm_migration_fallback", dom, f"{dom.name} to {dom.target_node}: {note}")
        await self._migrate_by_shutdown(dom, started, note)

    async def _migrate_live(self, dom: Domain, target: NodeInfo | None, started: float) -> str:
        """Try a live migration; whatever happens, ask libvirt where the domain runs before writing.
        Returns "" when the VM left this node, else why it did not."""
        if not target or not target.migration_uri:
            return f"node {dom.target_node} publishes no migration URI"
        if target.migration_uri in self._no_live_migration:
            return "this hypervisor cannot live-migrate"
        uuid = dom.uuid
        self.role.expect_stop.add(uuid)
        why = ""
        try:
            await self.host.migrate_live(uuid, target.migration_uri, target.migration_address)
        except LibvirtError as exc:
            why = str(exc)
            self.log.info("vm_live_migration_failed", vm=dom.name, target=target.name, error=why)
            if exc.unsupported:
                self._no_live_migration.add(target.migration_uri)
                why = "this hypervisor cannot live-migrate"
        if self.host.is_running(uuid):
            self.role.expect_stop.discard(uuid)
            return why or "still running here after the migration"
        # Gone from here: a live migration that reported failure may still have completed.
        # If the target cannot be asked, this raises and the VM is looked at again: a hand-over then
        # is safe, as the target checks its own libvirt before it starts anything.
        there = await libvirt_peers.runs(target.migration_uri, uuid)
        await self.role.leaving(uuid)
        self._seen_running.discard(uuid)
        now, seconds = time.time(), round(time.monotonic() - started, 3)
        if there:
            await self.update(uuid, lambda d: vm_outcomes.migrated_live(d, self.me, target.name, now, seconds))
            await self._event("vm_migrated", dom, f"{dom.name} migrated live from {self.me} to {target.name} "
                              f"in {seconds:g} s", "info", method="live", source=self.me, target=target.name)
        else:
            await self.update(uuid, lambda d: vm_outcomes.lost_in_migration(d, self.me, target.name))
        return ""

    async def _migrate_by_shutdown(self, dom: Domain, started: float, note: str) -> None:
        """Clean shutdown here, then hand over: the target's daemon starts it. Never runs twice:
        the record names the target only once libvirt here says the domain is off."""
        wanted = lambda d: d is not None and d.state == "migrate" and d.target_node == dom.target_node  # noqa: E731
        off, forced = await self._graceful_stop(dom, wanted)
        if off:
            note = "; ".join(n for n in (note, forced) if n)
            seconds = round(time.monotonic() - started, 3)
            await self._do_hand_over(dom, seconds, note)
            await self._event("vm_migrated", dom, f"{dom.name} shut down on {self.me} and handed to "
                              f"{dom.target_node}, which starts it" + (f" ({note})" if note else ""), "info",
                              method="shutdown", source=self.me, target=dom.target_node)

    async def find_elsewhere(self, uuid: str) -> str:
        """The peer whose libvirt runs the domain ("" if none does)."""
        return (await libvirt_peers.where_running(self.zk, {uuid}, exclude={self.me}, log=self.log)).get(uuid, "")

    async def target_info(self, node: str) -> NodeInfo | None:
        try:
            data, _ = await self.zk.get(Paths.node(node))
            return NodeInfo.decode(data)
        except NoNode:
            return None
