"""A node's side of VM disks on RBD.

- :func:`for_this_node`: before libvirt starts a VM (``VmReconciler._do_start``), its stored XML
  gets the cluster's monitors (from this node's ceph.conf) and this node's Ceph auth (client name,
  libvirt secret UUID from ``storage.ceph``) on every RBD disk that lacks them. The stored XML
  stays as the operator wrote it. A live migration needs nothing here: libvirt sends the source's
  running XML, already filled, and monitors and secret UUID are the same on every node.
- :func:`update_live`: the ``update_disks`` step (``reconcile.decide``, when ``disk_changes`` is
  set on a VM running here): compare the running domain's RBD disks with the stored XML's and
  attach / detach the difference with libvirt, then record the outcome.
"""

from __future__ import annotations

import asyncio


from pvc import store, vm_outcomes
from pvc.errors import Conflict, InvalidInput
from pvc.storage import disks


def _ceph_facts(cfg) -> tuple[list[tuple[str, int]], str, str]:
    try:
        with open(cfg.conf) as f:
            text = f.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read this node's ceph.conf {cfg.conf}: {exc.strerror}") from None
    return disks.parse_mon_hosts(text), cfg.client.removeprefix("client."), cfg.secret_uuid


def for_this_node(xml: str, cfg, node: str = "") -> str:
    """``xml`` with its RBD disks filled in for this node (``cfg``: its ``storage.ceph``); the same
    string when there is nothing to fill. A node without Ceph refuses (one line)."""
    if not disks.needs_filling(xml):
        return xml
    if not cfg.conf:
        refs = ", ".join(d.ref for d in disks.rbd_disks(xml))
        raise Conflict(f"node {node or 'here'} has no storage.ceph configured: it cannot open RBD disk(s) {refs}")
    return disks.fill_rbd_disks(xml, *_ceph_facts(cfg))


def _running_xml(host, uuid: str) -> str:
    import libvirt

    from pvc.libvirt_host import LibvirtError

    try:
        return host.conn.lookupByUUIDString(uuid).XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise LibvirtError(exc.get_error_message()) from None  # looked at again (transient)


def _apply(host, uuid: str, changes: disks.DiskChanges, cfg) -> list[str]:
    """Detach, then attach, on the running domain (blocking: QEMU waits for the guest up to 5 s
    on a detach). Returns what did not work, one phrase each."""
    import libvirt

    from pvc.libvirt_host import LibvirtError

    try:
        dom = host.conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        raise LibvirtError(exc.get_error_message()) from None  # gone meanwhile: looked at again
    problems = []
    for ref, element in changes.detach:
        try:
            dom.detachDeviceFlags(element, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            problems.append(f"detaching {ref}: {exc.get_error_message()}")
    for ref, element in changes.attach:
        try:
            filled = disks.fill_disk_element(element, *_ceph_facts(cfg)) if cfg.conf else element
            dom.attachDeviceFlags(filled, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            problems.append(f"attaching {ref}: {exc.get_error_message()}")
        except InvalidInput as exc:
            problems.append(f"attaching {ref}: {exc}")
    if changes.detach:
        # QEMU removes a disk once the guest lets it go; libvirt may return before that.
        left = {d.ref for d in disks.rbd_disks(_running_xml(host, uuid))}
        problems += [f"detaching {ref}: the guest has not released it yet" for ref, _ in changes.detach
                     if ref in left and not any(p.startswith(f"detaching {ref}:") for p in problems)]
    return problems


async def update_live(reconciler, dom) -> None:
    """The ``update_disks`` step for a VM running on this node."""
    me, host, cfg = reconciler.me, reconciler.host, reconciler.ctx.config.storage.ceph
    seen = dom.disk_changes
    stored = await store.read_xml(reconciler.zk, dom.uuid)
    running = await asyncio.to_thread(_running_xml, host, dom.uuid)
    changes = disks.disk_changes(stored, running)
    problems = await asyncio.to_thread(_apply, host, dom.uuid, changes, cfg) if changes else []
    note = ""
    if problems:
        note = (f"{disks.LIVE_FAILED} on {me}: {'; '.join(problems)}; the stored definition applies at "
                "the next start")[:1000]
        reconciler.log.warning("vm_disks_not_applied_live", vm=dom.name, problems=problems)
    elif changes:
        reconciler.log.info("vm_disks_applied_live", vm=dom.name, attached=[r for r, _ in changes.attach],
                            detached=[r for r, _ in changes.detach])

    await reconciler.update(dom.uuid, lambda d: vm_outcomes.disks_updated(d, me, seen, note))
