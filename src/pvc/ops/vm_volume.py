"""A VM's disks as RBD volumes (``vm.volume_add``, ``vm.volume_remove``; rules in pvc.storage.vm_volumes).

Registered with the ``vm`` group (pvc.ops.vm imports this module). Ceph: ``pvc.ops.common.ceph``.
"""

from __future__ import annotations

import asyncio

import msgspec

from pvc.errors import PvcError
from pvc.ops.registry import Context, operation
from pvc.schema import Domain

# How long a change waits for a running VM's node to attach or detach the disk.
LIVE_PATIENCE = 30.0


class VolumeAdd(msgspec.Struct, kw_only=True):
    vm: str
    volume: str  # POOL/VOLUME, an existing RBD volume
    target: str = ""  # the guest's device (default: the first free vdX)
    shareable: bool = False  # mark the disk <shareable/> (a volume used by several VMs)


class VolumeRef(msgspec.Struct, kw_only=True):
    vm: str
    volume: str  # POOL/VOLUME


class VolumeChange(msgspec.Struct, kw_only=True):
    vm: Domain
    device: str = ""  # the guest's device (added)
    applied: str  # how the change took effect: live on the node, or at the VM's next start


async def _follow(zk, dom: Domain, version: int, live: bool) -> str:
    """Wait (bounded) for the VM's node to apply the change; what to say about it."""
    from pvc.ops.waiting import wait_for_vm
    from pvc.storage.vm_volumes import disks_applied

    if not live:
        return "the VM is not running: it applies at its next start"
    try:
        done = await asyncio.wait_for(wait_for_vm(zk, dom.uuid, "", version, [dom.node],
                                                  outcome=lambda d: (disks_applied(d)[0], "")), LIVE_PATIENCE)
    except asyncio.TimeoutError:
        return f"node {dom.node} has not applied it to the running VM yet (it will; `pvc vm info` shows when)"
    except PvcError as exc:  # its daemon is not running: carried out when it is back
        return str(exc)
    if disks_applied(done)[1]:
        raise PvcError(disks_applied(done)[1])
    return f"applied live on node {done.node}" if done.libvirt_state == "running" else \
        "the VM stopped meanwhile: it applies at its next start"


@operation("vm.volume_add", "POST", "/vm/{vm}/volume")
async def volume_add(ctx: Context, params: VolumeAdd) -> VolumeChange:
    """Add an RBD volume to a VM as a disk; attached live if the VM runs, else at its next start."""
    from pvc.ops.common import ceph
    from pvc.storage import vm_volumes

    dom, version, dev, live = await vm_volumes.volume_add(ctx.zk, ceph(ctx), params.vm, params.volume,
                                                          params.target, params.shareable)
    return VolumeChange(vm=dom, device=dev, applied=await _follow(ctx.zk, dom, version, live))


@operation("vm.volume_remove", "DELETE", "/vm/{vm}/volume")
async def volume_remove(ctx: Context, params: VolumeRef) -> VolumeChange:
    """Take an RBD volume out of a VM (detached live if the VM runs); the volume itself is kept."""
    from pvc.storage import vm_volumes

    dom, version, live = await vm_volumes.volume_remove(ctx.zk, params.vm, params.volume)
    return VolumeChange(vm=dom, applied=await _follow(ctx.zk, dom, version, live))
