"""VM disks on RBD, the operations: check the volumes a VM's XML names before it is written
(define, modify), attach and detach a volume (`pvc vm volume add|remove`), undefine a VM with its
volumes. Each checks first and writes nothing on a refusal (one line); the CLI is a thin caller.

The intent goes to ZooKeeper only: the stored XML (what `pvc vm dump` shows: no monitors, no auth)
and, for a VM that runs or is asked to run, ``disk_changes`` in its record, from which the VM's node
attaches or detaches the disk on the running domain (``pvc.daemon.vm_disks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from pvc.errors import Conflict, NotFound
from pvc.storage import disks as vmdisks
from pvc.storage.model import rbd_volumes_in_xml, split_volume_ref

if TYPE_CHECKING:
    from pvc.schema import Domain
    from pvc.storage.ceph import CephClient
    from pvc.zk import ZK


async def _check_volume(ceph: CephClient, ref: str) -> None:
    """The volume exists (and so does its pool): NotFound says which is missing."""
    from pvc.storage import ops

    pool, volume = split_volume_ref(ref)
    try:
        await ops._image_info(ceph, pool, volume)
    except NotFound as exc:
        gone = "its pool is gone" if "no pool" in str(exc) else "it does not exist"
        raise NotFound(f"volume {ref}: {gone} ({exc})") from None


async def _check_not_shared(zk: ZK, disk: vmdisks.RbdDisk, uuid: str, index: dict | None = None) -> dict:
    """Refuse a volume another VM uses, unless both disks are marked ``<shareable/>``."""
    from pvc import store
    from pvc.storage.ops import volume_index

    index = index if index is not None else await volume_index(zk)
    for other in index.get(disk.ref, []):
        if other.uuid == uuid:
            continue
        theirs = next((d for d in vmdisks.rbd_disks(await store.read_xml(zk, other.uuid)) if d.ref == disk.ref), None)
        if not (disk.shareable and theirs is not None and theirs.shareable):
            raise Conflict(f"volume {disk.ref} is already used by VM {other.name}; a volume is shared only "
                           "when every VM's disk for it is marked <shareable/>")
    return index


async def check_definition(zk: ZK, ceph: CephClient | None, xml: str, uuid: str) -> list[str]:
    """Before a define or modify writes ``xml`` for VM ``uuid``: every RBD disk names an existing
    volume (in an existing pool), no other VM uses it (unless shareable on both sides), no target
    dev twice. Returns the volumes (POOL/VOLUME). ``ceph`` None: refused if there are RBD disks."""
    found = vmdisks.check_disks(xml)
    if not found:
        return []
    if ceph is None:
        raise NotFound(f"the VM has RBD disks ({', '.join(d.ref for d in found)}): give the CLI a Ceph "
                       "config (PVC_CEPH_CONF, PVC_CEPH_KEYRING) so that they can be checked")
    index = None
    for disk in found:
        await _check_volume(ceph, disk.ref)
        index = await _check_not_shared(zk, disk, uuid, index)
    return [d.ref for d in found]


def _live(dom: Domain) -> bool:
    """Does a disk change have to reach a running domain (it runs, or is asked to)?"""
    from pvc.schema import WANTS_RUNNING

    return dom.state in WANTS_RUNNING or dom.libvirt_state == "running"


async def _write(zk: ZK, dom: Domain, version: int, xml: str, xml_version: int) -> tuple[Domain, int]:
    from pvc import store
    from pvc.schema import Paths
    from pvc.zk import BadVersion

    store._check_xml_size(dom.name, xml)
    live = _live(dom)
    new = msgspec.structs.replace(dom, volumes=rbd_volumes_in_xml(xml), note="",
                                  disk_changes=dom.disk_changes + 1 if live else dom.disk_changes)
    try:
        await zk.multi([*store.domain_write_ops(dom, version, new),
                        ("set", Paths.domain_xml(dom.uuid), xml.encode(), xml_version)])
    except BadVersion:
        raise Conflict(f"VM {dom.name} changed meanwhile; try again") from None
    _, new_version = await store.read_domain(zk, dom.uuid)
    return new, new_version


async def _read(zk: ZK, vm: str) -> tuple[Domain, int, str, int]:
    from pvc import store, vm_states
    from pvc.schema import Paths
    from pvc.zk import NoNode

    uuid = await store.resolve_domain(zk, vm)
    dom, version = await store.read_domain(zk, uuid)
    if dom.state in vm_states.TRANSIENT:
        raise Conflict(f"VM {dom.name} is busy ({dom.state} in progress); try again when it finishes")
    try:
        data, xml_version = await zk.get(Paths.domain_xml(uuid))
    except NoNode:
        raise NotFound(f"unknown VM {vm!r}") from None
    return dom, version, data.decode(), xml_version


async def volume_add(zk: ZK, ceph: CephClient, vm: str, ref: str, target: str = "",
                     shareable: bool = False) -> tuple[Domain, int, str, bool]:
    """Add volume ``ref`` to VM ``vm`` as disk ``target`` (default: the first free vdX).
    Returns (record, version, target, live): live when the VM's node has to attach it now."""
    split_volume_ref(ref)
    dom, version, xml, xml_version = await _read(zk, vm)
    new_xml, target = vmdisks.add_disk(xml, ref, target, shareable)
    await _check_volume(ceph, ref)
    await _check_not_shared(zk, vmdisks.RbdDisk(ref=ref, target=target, shareable=shareable), dom.uuid)
    new, new_version = await _write(zk, dom, version, new_xml, xml_version)
    return new, new_version, target, _live(dom)


async def volume_remove(zk: ZK, vm: str, ref: str) -> tuple[Domain, int, bool]:
    """Take volume ``ref`` out of VM ``vm`` (the volume itself stays). Returns (record, version, live)."""
    split_volume_ref(ref)
    dom, version, xml, xml_version = await _read(zk, vm)
    new_xml = vmdisks.remove_disk(xml, ref)
    new, new_version = await _write(zk, dom, version, new_xml, xml_version)
    return new, new_version, _live(dom)


def disks_applied(dom: Domain | None) -> tuple[bool, str]:
    """For the CLI waiting on a live attach/detach: (finished, error)."""
    from pvc.schema import WANTS_RUNNING

    if dom is None:
        return True, "the VM was undefined meanwhile"
    if dom.disk_changes == 0:
        return True, dom.note if dom.note.startswith(vmdisks.LIVE_FAILED) else ""
    if dom.state not in WANTS_RUNNING and dom.libvirt_state != "running":
        return True, ""  # stopped meanwhile: the definition applies at its next start
    return False, ""


async def undefine(zk: ZK, ceph: CephClient | None, vm: str, delete_volumes: bool = False) -> tuple[Domain, list[str]]:
    """Undefine a stopped VM; with ``delete_volumes`` also remove its RBD volumes (with their
    snapshots). Refused, with nothing changed, if another VM uses one of them or a client still has
    one open. A volume already gone is skipped. Returns (record, the volumes removed)."""
    from pvc import store
    from pvc.storage import ops

    uuid = await store.resolve_domain(zk, vm)
    refs = rbd_volumes_in_xml(await store.read_xml(zk, uuid)) if delete_volumes else []
    present: list[str] = []
    if refs:
        if ceph is None:
            raise NotFound("--delete-volumes needs a Ceph config (PVC_CEPH_CONF, PVC_CEPH_KEYRING)")
        dom, _ = await store.read_domain(zk, uuid)
        if dom.state not in ("stop", "disable", "fail") or dom.libvirt_state == "running":
            raise Conflict(f"VM {dom.name} is {dom.state}; stop it before undefining it")
        index = await ops.volume_index(zk)
        for ref in refs:
            others = [d.name for d in index.get(ref, []) if d.uuid != uuid]
            if others:
                raise Conflict(f"volume {ref} is also used by VM {others[0]}; nothing was changed "
                               "(undefine without --delete-volumes keeps the volumes)")
            pool, volume = split_volume_ref(ref)
            try:
                status = await ops._rbd_image(ceph, pool, volume, "status", ref)
            except NotFound:
                continue  # gone already
            if (status or {}).get("watchers"):
                raise Conflict(f"volume {ref} is still open by a client (a running guest?); nothing was changed")
            present.append(ref)
    dom = await store.undefine_domain(zk, uuid)
    removed = []
    for ref in present:
        pool, volume = split_volume_ref(ref)
        try:
            await ops.volume_remove(ceph, zk, pool, volume)
        except NotFound:
            continue
        removed.append(ref)
    return dom, removed


# -- fencing ----------------------------------------------------------------------------------------------


async def fenced_volumes(zk: ZK, domains: list[Domain]) -> list[str]:
    """The volumes of a fenced node's VMs whose Ceph clients must be cut off: every RBD disk of
    these VMs except shareable ones (whose watchers may be other, live VMs)."""
    from pvc.schema import Paths

    xmls = await zk.get_many(Paths.domain_xml(d.uuid) for d in domains)
    refs: list[str] = []
    for xml in xmls:
        for disk in vmdisks.rbd_disks((xml or b"").decode(errors="replace")):
            if not disk.shareable and disk.ref not in refs:
                refs.append(disk.ref)
    return refs


async def blocklist_clients(ceph: CephClient, refs: list[str]) -> list[str]:
    """Blocklist every Ceph client that watches or locks these volumes (``ceph osd blocklist add``),
    then remove their exclusive locks, so that a node confirmed off can never write to them again
    and a new QEMU takes them at once. Returns the addresses blocklisted."""
    import asyncio

    from pvc.storage import ops

    async def facts(ref: str):
        pool, volume = split_volume_ref(ref)
        try:
            return (await ops._rbd_image(ceph, pool, volume, "status", ref),
                    await ops._rbd_image(ceph, pool, volume, "lock", "ls", ref))
        except NotFound:
            return None, None  # gone: nothing to cut off

    found = await asyncio.gather(*(facts(r) for r in refs))
    addrs, locks = vmdisks.fence_plan({r: f[0] for r, f in zip(refs, found)}, {r: f[1] for r, f in zip(refs, found)})
    for addr in addrs:
        await ceph.ceph("osd", "blocklist", "add", addr)
    for ref, lock_id, locker in locks:
        await ceph.rbd("lock", "rm", ref, lock_id, locker, json_out=False)
    return addrs


async def unblocklist(ceph: CephClient, addrs: list[str]) -> None:
    """Remove blocklist entries (an entry already gone or expired is fine)."""
    for addr in addrs:
        await ceph.ceph("osd", "blocklist", "rm", addr)
