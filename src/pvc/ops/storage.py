"""Storage operations (``storage.*``): the Ceph cluster's status, pools, RBD volumes and snapshots.

The rules live in pvc.storage.ops (checks against Ceph and the cluster state); here each becomes a
registered operation with typed params. Names and sizes are checked before Ceph is contacted. The
Ceph handle: ``pvc.ops.common.ceph`` (``ctx.extras["ceph"]``, else the environment's). Image
upload and download move files on the caller's machine, so they are not operations (the CLI calls
pvc.storage.ops directly).
"""

from __future__ import annotations

import msgspec

from pvc.ops.common import NoParams, ceph
from pvc.ops.registry import Context, operation
from pvc.storage.model import PoolView, SnapshotView, StorageStatus, VolumeView


def check_names(**names: str) -> None:
    """Refuse a bad pool, volume or snapshot name at once (``new_volume`` reads "new volume")."""
    from pvc.storage.model import check_name

    for kind, name in names.items():
        check_name(kind.replace("_", " "), name)


def parse_size(text: str) -> int:
    from pvc.storage.model import parse_size as parse

    return parse(text)


@operation("storage.status", "GET", "/storage/status")
async def status(ctx: Context, params: NoParams) -> StorageStatus:
    """Health, capacity, usage and OSDs of the Ceph cluster."""
    from pvc.storage import ops

    return await ops.status(ceph(ctx))


# -- pools ----------------------------------------------------------------------------------------------


class PoolRef(msgspec.Struct, kw_only=True):
    pool: str


class PoolAdd(msgspec.Struct, kw_only=True):
    pool: str
    pgs: int = 32  # placement groups (a power of two)
    replicas: int = 3  # copies of each object (at most the number of OSDs)


class PoolRemove(msgspec.Struct, kw_only=True):
    pool: str
    force: bool = False  # also when it holds volumes (not ones VMs use)


@operation("storage.pool_list", "GET", "/storage/pool")
async def pool_list(ctx: Context, params: NoParams) -> list[PoolView]:
    """List the pools."""
    from pvc.storage import ops

    return await ops.pool_list(ceph(ctx))


@operation("storage.pool_info", "GET", "/storage/pool/{pool}")
async def pool_info(ctx: Context, params: PoolRef) -> PoolView:
    """One pool: placement groups, replicas, stored bytes, volumes."""
    from pvc.storage import ops

    check_names(pool=params.pool)
    return await ops.pool_info(ceph(ctx), params.pool)


@operation("storage.pool_add", "POST", "/storage/pool")
async def pool_add(ctx: Context, params: PoolAdd) -> PoolView:
    """Create a pool for volumes (replicated, initialised for RBD)."""
    from pvc.storage import model, ops

    check_names(pool=params.pool)
    model.check_pgs(params.pgs)
    model.check_replicas(params.replicas)
    return await ops.pool_add(ceph(ctx), params.pool, params.pgs, params.replicas)


@operation("storage.pool_remove", "DELETE", "/storage/pool/{pool}")
async def pool_remove(ctx: Context, params: PoolRemove) -> PoolView:
    """Remove a pool and its data (refused while it holds volumes, unless ``force``)."""
    from pvc.storage import ops

    check_names(pool=params.pool)
    return await ops.pool_remove(ceph(ctx), ctx.zk, params.pool, params.force)


# -- volumes --------------------------------------------------------------------------------------------


class VolumeFilter(msgspec.Struct, kw_only=True):
    pool: str = ""  # only this pool


class VolumeRef(msgspec.Struct, kw_only=True):
    pool: str
    volume: str


class VolumeAdd(VolumeRef, kw_only=True):
    size: str  # like 10G or 512M (binary units), or bytes


class VolumeResize(VolumeAdd, kw_only=True):
    force: bool = False  # allow shrinking (data past the new end is lost)


class VolumeRename(VolumeRef, kw_only=True):
    new: str


@operation("storage.volume_list", "GET", "/storage/volume")
async def volume_list(ctx: Context, params: VolumeFilter) -> list[VolumeView]:
    """List volumes (of every pool, or of one), with the VM using each."""
    from pvc.storage import ops

    if params.pool:
        check_names(pool=params.pool)
    return await ops.volume_list(ceph(ctx), ctx.zk, params.pool)


@operation("storage.volume_info", "GET", "/storage/volume/{pool}/{volume}")
async def volume_info(ctx: Context, params: VolumeRef) -> VolumeView:
    """One volume: size, the VM using it, snapshots."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume)
    return await ops.volume_info(ceph(ctx), ctx.zk, params.pool, params.volume)


@operation("storage.volume_add", "POST", "/storage/volume/{pool}")
async def volume_add(ctx: Context, params: VolumeAdd) -> VolumeView:
    """Create a volume."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume)
    return await ops.volume_add(ceph(ctx), params.pool, params.volume, parse_size(params.size))


@operation("storage.volume_resize", "POST", "/storage/volume/{pool}/{volume}/resize")
async def volume_resize(ctx: Context, params: VolumeResize) -> VolumeView:
    """Grow (or with ``force`` shrink) a volume."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume)
    size = parse_size(params.size)
    return await ops.volume_resize(ceph(ctx), ctx.zk, params.pool, params.volume, size, params.force)


@operation("storage.volume_rename", "POST", "/storage/volume/{pool}/{volume}/rename")
async def volume_rename(ctx: Context, params: VolumeRename) -> VolumeView:
    """Rename a volume (refused while a VM uses it)."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume, new_volume=params.new)
    return await ops.volume_rename(ceph(ctx), ctx.zk, params.pool, params.volume, params.new)


@operation("storage.volume_clone", "POST", "/storage/volume/{pool}/{volume}/clone")
async def volume_clone(ctx: Context, params: VolumeRename) -> VolumeView:
    """Make a new volume with another's current content (independent of it; no snapshots)."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume, new_volume=params.new)
    return await ops.volume_clone(ceph(ctx), params.pool, params.volume, params.new)


@operation("storage.volume_remove", "DELETE", "/storage/volume/{pool}/{volume}")
async def volume_remove(ctx: Context, params: VolumeRef) -> VolumeView:
    """Remove a volume and its snapshots (refused while a VM uses it)."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume)
    return await ops.volume_remove(ceph(ctx), ctx.zk, params.pool, params.volume)


# -- snapshots ------------------------------------------------------------------------------------------


class SnapshotRef(VolumeRef, kw_only=True):
    snapshot: str


@operation("storage.snapshot_list", "GET", "/storage/volume/{pool}/{volume}/snapshot")
async def snapshot_list(ctx: Context, params: VolumeRef) -> list[SnapshotView]:
    """A volume's snapshots, oldest first."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume)
    return await ops.snapshot_list(ceph(ctx), params.pool, params.volume)


@operation("storage.snapshot_add", "POST", "/storage/volume/{pool}/{volume}/snapshot")
async def snapshot_add(ctx: Context, params: SnapshotRef) -> SnapshotView:
    """Take a snapshot of a volume."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume, snapshot=params.snapshot)
    return await ops.snapshot_add(ceph(ctx), params.pool, params.volume, params.snapshot)


@operation("storage.snapshot_remove", "DELETE", "/storage/volume/{pool}/{volume}/snapshot/{snapshot}")
async def snapshot_remove(ctx: Context, params: SnapshotRef) -> SnapshotView:
    """Remove a snapshot."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume, snapshot=params.snapshot)
    return await ops.snapshot_remove(ceph(ctx), params.pool, params.volume, params.snapshot)


@operation("storage.snapshot_rollback", "POST", "/storage/volume/{pool}/{volume}/snapshot/{snapshot}/rollback")
async def snapshot_rollback(ctx: Context, params: SnapshotRef) -> SnapshotView:
    """Roll a volume back to a snapshot (refused while a running VM uses it)."""
    from pvc.storage import ops

    check_names(pool=params.pool, volume=params.volume, snapshot=params.snapshot)
    return await ops.snapshot_rollback(ceph(ctx), ctx.zk, params.pool, params.volume, params.snapshot)
