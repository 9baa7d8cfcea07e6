"""`pvc storage ...`: the Ceph cluster's status, pools, RBD volumes (VM disks) and snapshots.

Only argument parsing and printing: the operations are ``storage.*`` in pvc.ops.storage (rules in
pvc.storage.ops). Ceph is reached with its own ceph.conf and a client keyring
(``--ceph-conf``/``PVC_CEPH_CONF``, ...), handed to the operations as ``ctx.extras["ceph"]``; they
run connected to the cluster state in ZooKeeper (which VMs use a volume; the audit log).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import typer

from pvc.cli.common import OUTPUT_OPTION, Column, Output, fail, plural, print_table, show_list, show_record

app = typer.Typer(help="Storage on Ceph: status, pools, volumes (VM disks) and snapshots.", no_args_is_help=True)
pool_app = typer.Typer(help="Ceph pools that hold volumes.", no_args_is_help=True)
volume_app = typer.Typer(help="RBD volumes: VM disks.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshots of volumes.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(volume_app, name="volume")
app.add_typer(snapshot_app, name="snapshot")


class CephSettings:
    conf: str = "/etc/ceph/ceph.conf"
    client: str = "client.admin"
    keyring: str = ""
    timeout: float = 30.0


@app.callback()
def ceph_options(
    conf: str = typer.Option(CephSettings.conf, "--ceph-conf", envvar="PVC_CEPH_CONF", help="The Ceph cluster's ceph.conf."),
    client: str = typer.Option(CephSettings.client, "--ceph-client", envvar="PVC_CEPH_CLIENT",
                               help="Ceph client name (client.NAME)."),
    keyring: str = typer.Option("", "--ceph-keyring", envvar="PVC_CEPH_KEYRING",
                                help="The client's keyring (default: the one ceph.conf names)."),
    timeout: float = typer.Option(30.0, "--ceph-timeout", help="Seconds any single Ceph call may take."),
):
    CephSettings.conf, CephSettings.client, CephSettings.keyring, CephSettings.timeout = conf, client, keyring, timeout


def _ceph():
    from pvc.storage.ceph import CephClient

    if not os.path.isfile(CephSettings.conf):
        fail(f"no Ceph config at {CephSettings.conf}: give --ceph-conf or set PVC_CEPH_CONF")
    if CephSettings.keyring and not os.path.isfile(CephSettings.keyring):
        fail(f"no keyring at {CephSettings.keyring}")
    if not CephSettings.client.startswith("client.") or len(CephSettings.client) <= 7:
        fail(f"bad Ceph client name {CephSettings.client!r}: expected client.NAME")
    if not CephSettings.timeout > 0:
        fail("--ceph-timeout must be greater than 0")
    return CephClient(CephSettings.conf, CephSettings.client, CephSettings.keyring, CephSettings.timeout)


def _call(name: str, params: Any) -> Any:
    """Run operation ``name`` with this command's Ceph client (through the API: the server's)."""
    from pvc.cli.common import Settings, run_ops

    extras = None if Settings.connection else {"ceph": _ceph()}
    return run_ops(lambda b: b.call(name, params), extras=extras)


def _run(work, *, zk: bool = False) -> Any:
    """Image transfers (files on this machine, so not operations): run ``work(ceph, zk)``; with
    ``zk`` also connected to the cluster state (else zk is None)."""
    ceph = _ceph()
    if zk:
        from pvc.cli.common import run

        return run(lambda z: work(ceph, z))
    import asyncio

    from pvc.errors import PvcError

    try:
        return asyncio.run(work(ceph, None))
    except PvcError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _names(**names: str) -> None:
    """Check names before anything is contacted: a bad one is refused at once."""
    from pvc.errors import InvalidInput
    from pvc.ops.storage import check_names

    try:
        check_names(**names)
    except InvalidInput as exc:
        fail(str(exc))


def _done(output: Output, record: Any, message: str) -> None:
    if output in (Output.json, Output.yaml):
        show_record(output, record, list)
    else:
        typer.echo(message)


def _fmt(size: int) -> str:
    from pvc.storage.model import format_size

    return format_size(size)


# -- status -----------------------------------------------------------------------------------------


@app.command()
def status(output: Output = OUTPUT_OPTION):
    """Health, capacity, usage and OSDs of the Ceph cluster."""
    from pvc.ops.common import NoParams

    st = _call("storage.status", NoParams())
    if output in (Output.json, Output.yaml):
        return show_record(output, st, list)
    pct = 100 * st.bytes_used / st.bytes_total if st.bytes_total else 0
    typer.echo(f"health: {st.health}")
    for check in st.checks:
        typer.echo(f"  {check}")
    typer.echo(f"capacity: {_fmt(st.bytes_total)}, used {_fmt(st.bytes_used)} ({pct:.1f}%), "
               f"available {_fmt(st.bytes_avail)}; {st.pools} pools")
    typer.echo(f"OSDs: {st.osds_up} up, {st.osds_in} in, {st.osds_total} in all")
    print_table(["OSD", "UP", "SIZE", "USED", "USE%", "PGS"],
                [[o.name, "up" if o.up else "down", _fmt(o.size_bytes), _fmt(o.used_bytes), f"{o.utilization:.1f}",
                  o.pgs] for o in st.osds],
                styles={1: lambda v: "green" if v == "up" else "red"})


# -- pools --------------------------------------------------------------------------------------------


POOL_COLUMNS = [
    Column("POOL", lambda p: p.name),
    Column("PGS", lambda p: p.pgs),
    Column("REPLICAS", lambda p: p.replicas),
    Column("STORED", lambda p: _fmt(p.stored_bytes)),
    Column("VOLUMES", lambda p: len(p.volumes)),
]


@pool_app.command("add")
def pool_add(
    name: str = typer.Argument(..., help="Pool name."),
    pgs: int = typer.Option(32, "--pgs", help="Placement groups (a power of two)."),
    replicas: int = typer.Option(3, "--replicas", help="Copies of each object (at most the number of OSDs)."),
    output: Output = OUTPUT_OPTION,
):
    """Create a pool for volumes (replicated, initialised for RBD)."""
    from pvc.ops.storage import PoolAdd

    pool = _call("storage.pool_add", PoolAdd(pool=name, pgs=pgs, replicas=replicas))
    _done(output, pool, f"Added pool {pool.name} ({pool.pgs} PGs, {pool.replicas} replicas)")


@pool_app.command("remove")
def pool_remove(
    name: str = typer.Argument(..., help="Pool name."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: the pool and its data are gone for good."),
    force: bool = typer.Option(False, "--force", help="Remove it even though it holds volumes (not ones VMs use)."),
    output: Output = OUTPUT_OPTION,
):
    """Remove a pool (refused while it holds volumes, unless --force)."""
    from pvc.ops.storage import PoolRemove

    _names(pool=name)
    if not yes:
        fail(f"removing pool {name} destroys its data: add --yes to confirm")
    pool = _call("storage.pool_remove", PoolRemove(pool=name, force=force))
    _done(output, pool, f"Removed pool {pool.name}" + (f" and its {plural(len(pool.volumes), 'volume')}" if pool.volumes else ""))


@pool_app.command("list")
def pool_list(output: Output = OUTPUT_OPTION):
    """List the pools."""
    from pvc.ops.common import NoParams

    pools = _call("storage.pool_list", NoParams())
    show_list(output, pools, POOL_COLUMNS)


@pool_app.command("info")
def pool_info(name: str = typer.Argument(..., help="Pool name."), output: Output = OUTPUT_OPTION):
    """Show one pool: placement groups, replicas, stored bytes, volumes."""
    from pvc.ops.storage import PoolRef

    pool = _call("storage.pool_info", PoolRef(pool=name))
    show_record(output, pool, lambda: [("pool", pool.name), ("pgs", pool.pgs), ("replicas", pool.replicas),
                                       ("stored", _fmt(pool.stored_bytes)), ("volumes", pool.volumes)])


# -- volumes ------------------------------------------------------------------------------------------


POOL = typer.Argument(..., help="Pool name.")
VOLUME = typer.Argument(..., help="Volume name.")


VOLUME_COLUMNS = [
    Column("POOL", lambda v: v.pool),
    Column("VOLUME", lambda v: v.name),
    Column("SIZE", lambda v: _fmt(v.size_bytes)),
    Column("USED BY", lambda v: v.used_by or "-"),
    Column("SNAPSHOTS", lambda v: len(v.snapshots)),
]


@volume_app.command("add")
def volume_add(pool: str = POOL, name: str = VOLUME,
               size: str = typer.Argument(..., help="Size, like 10G or 512M (binary units)."),
               output: Output = OUTPUT_OPTION):
    """Create a volume."""
    from pvc.ops.storage import VolumeAdd

    vol = _call("storage.volume_add", VolumeAdd(pool=pool, volume=name, size=size))
    _done(output, vol, f"Added volume {pool}/{name} ({_fmt(vol.size_bytes)})")


@volume_app.command("resize")
def volume_resize(pool: str = POOL, name: str = VOLUME,
                  size: str = typer.Argument(..., help="New size, like 20G."),
                  force: bool = typer.Option(False, "--force", help="Allow shrinking (data past the new end is lost)."),
                  output: Output = OUTPUT_OPTION):
    """Grow (or with --force shrink) a volume."""
    from pvc.ops.storage import VolumeResize

    vol = _call("storage.volume_resize", VolumeResize(pool=pool, volume=name, size=size, force=force))
    _done(output, vol, f"Resized volume {pool}/{name} to {_fmt(vol.size_bytes)}")


@volume_app.command("rename")
def volume_rename(pool: str = POOL, name: str = VOLUME, new: str = typer.Argument(..., help="New name."),
                  output: Output = OUTPUT_OPTION):
    """Rename a volume (refused while a VM uses it)."""
    from pvc.ops.storage import VolumeRename

    vol = _call("storage.volume_rename", VolumeRename(pool=pool, volume=name, new=new))
    _done(output, vol, f"Renamed volume {pool}/{name} to {pool}/{new}")


@volume_app.command("clone")
def volume_clone(pool: str = POOL, source: str = typer.Argument(..., help="Volume to copy."),
                 new: str = typer.Argument(..., help="Name of the new volume."), output: Output = OUTPUT_OPTION):
    """Make a new volume with another's current content (independent of it; no snapshots)."""
    from pvc.ops.storage import VolumeRename

    vol = _call("storage.volume_clone", VolumeRename(pool=pool, volume=source, new=new))
    _done(output, vol, f"Cloned volume {pool}/{source} to {pool}/{new} ({_fmt(vol.size_bytes)})")


@volume_app.command("remove")
def volume_remove(pool: str = POOL, name: str = VOLUME,
                  yes: bool = typer.Option(False, "--yes", help="Confirm: the volume and its snapshots are gone for good."),
                  output: Output = OUTPUT_OPTION):
    """Remove a volume and its snapshots (refused while a VM uses it)."""
    from pvc.ops.storage import VolumeRef

    _names(pool=pool, volume=name)
    if not yes:
        fail(f"removing volume {pool}/{name} destroys its data: add --yes to confirm")
    vol = _call("storage.volume_remove", VolumeRef(pool=pool, volume=name))
    _done(output, vol, f"Removed volume {pool}/{name}")


@volume_app.command("list")
def volume_list(pool: Optional[str] = typer.Argument(None, help="Only this pool."), output: Output = OUTPUT_OPTION):
    """List volumes (of every pool, or of one), with the VM using each."""
    from pvc.ops.storage import VolumeFilter

    vols = _call("storage.volume_list", VolumeFilter(pool=pool or ""))
    show_list(output, vols, VOLUME_COLUMNS, name=lambda v: f"{v.pool}/{v.name}")


@volume_app.command("info")
def volume_info(pool: str = POOL, name: str = VOLUME, output: Output = OUTPUT_OPTION):
    """Show one volume: size, the VM using it, snapshots."""
    from pvc.ops.storage import VolumeRef

    vol = _call("storage.volume_info", VolumeRef(pool=pool, volume=name))
    show_record(output, vol, lambda: [
        ("volume", f"{vol.pool}/{vol.name}"), ("size", f"{_fmt(vol.size_bytes)} ({vol.size_bytes} bytes)"),
        ("used by", vol.used_by), ("snapshots", vol.snapshots)], name=f"{vol.pool}/{vol.name}")


TIME_LIMIT = typer.Option(3600.0, "--time-limit", help="Seconds the whole transfer may take.")


@volume_app.command("upload")
def volume_upload(pool: str = POOL, name: str = VOLUME,
                  file: str = typer.Argument(..., help="Image file: raw or qcow2 (qemu-img converts it)."),
                  time_limit: float = TIME_LIMIT, output: Output = OUTPUT_OPTION):
    """Write an image file into a volume (created at the image's size, or an existing one at least that
    big that no VM uses). Progress goes to stderr."""
    from pvc.storage import ops

    _names(pool=pool, volume=name)
    vol = _run(lambda ceph, zk: ops.volume_upload(ceph, zk, pool, name, file, time_limit), zk=True)
    _done(output, vol, f"Uploaded {file} to volume {pool}/{name} ({_fmt(vol.size_bytes)})")


@volume_app.command("download")
def volume_download(pool: str = POOL, name: str = VOLUME,
                    file: str = typer.Argument(..., help="The image file to create."),
                    format: str = typer.Option("raw", "--format", "-f", help="raw or qcow2."),
                    time_limit: float = TIME_LIMIT, output: Output = OUTPUT_OPTION):
    """Copy a volume into a new image file. Progress goes to stderr."""
    from pvc.storage import ops

    _names(pool=pool, volume=name)
    if format not in ("raw", "qcow2"):
        fail(f"bad --format {format!r}: raw or qcow2")
    vol = _run(lambda ceph, _: ops.volume_download(ceph, pool, name, file, format, time_limit))
    _done(output, vol, f"Downloaded volume {pool}/{name} to {file} ({format})")


# -- snapshots -----------------------------------------------------------------------------------------


SNAP = typer.Argument(..., help="Snapshot name.")


@snapshot_app.command("add")
def snapshot_add(pool: str = POOL, volume: str = VOLUME, name: str = SNAP, output: Output = OUTPUT_OPTION):
    """Take a snapshot of a volume."""
    from pvc.ops.storage import SnapshotRef

    snap = _call("storage.snapshot_add", SnapshotRef(pool=pool, volume=volume, snapshot=name))
    _done(output, snap, f"Added snapshot {pool}/{volume}@{name}")


@snapshot_app.command("remove")
def snapshot_remove(pool: str = POOL, volume: str = VOLUME, name: str = SNAP, output: Output = OUTPUT_OPTION):
    """Remove a snapshot."""
    from pvc.ops.storage import SnapshotRef

    snap = _call("storage.snapshot_remove", SnapshotRef(pool=pool, volume=volume, snapshot=name))
    _done(output, snap, f"Removed snapshot {pool}/{volume}@{name}")


@snapshot_app.command("rollback")
def snapshot_rollback(pool: str = POOL, volume: str = VOLUME, name: str = SNAP, output: Output = OUTPUT_OPTION):
    """Roll a volume back to a snapshot (refused while a running VM uses it)."""
    from pvc.ops.storage import SnapshotRef

    snap = _call("storage.snapshot_rollback", SnapshotRef(pool=pool, volume=volume, snapshot=name))
    _done(output, snap, f"Rolled volume {pool}/{volume} back to snapshot {name}")


@snapshot_app.command("list")
def snapshot_list(pool: str = POOL, volume: str = VOLUME, output: Output = OUTPUT_OPTION):
    """List a volume's snapshots, oldest first."""
    from pvc.ops.storage import VolumeRef

    snaps = _call("storage.snapshot_list", VolumeRef(pool=pool, volume=volume))
    show_list(output, snaps, SNAPSHOT_COLUMNS)


SNAPSHOT_COLUMNS = [
    Column("SNAPSHOT", lambda s: s.name),
    Column("SIZE", lambda s: _fmt(s.size_bytes)),
    Column("PROTECTED", lambda s: "yes" if s.protected else "no"),
    Column("TAKEN", lambda s: s.timestamp or "-"),
]
