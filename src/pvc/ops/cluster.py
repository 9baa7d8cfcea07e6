"""Cluster operations (``cluster.*``): status, the cluster-wide settings, init."""

from __future__ import annotations

from collections import Counter

import msgspec

from pvc import fence_store, fencing, store
from pvc.ops.common import NoParams
from pvc.ops.registry import Context, operation
from pvc.schema import FenceState

Settings = dict[str, str | bool]


def typed_settings(raw: dict[str, str]) -> Settings:
    """The settings as JSON shows them: maintenance is a boolean, not the stored string."""
    return {k: (v == "true") if k == "maintenance" else v for k, v in raw.items()}


class Fencing(FenceState, kw_only=True):
    node: str


class RunningTwice(msgspec.Struct, kw_only=True):
    vm: str
    node: str
    also_on: list[str]


class ClusterStatus(msgspec.Struct, kw_only=True):
    primary_node: str
    maintenance: bool
    settings: Settings
    nodes: int
    nodes_by_daemon_state: dict[str, int]
    nodes_by_domain_state: dict[str, int]
    fencing: list[Fencing]  # nodes declared dead whose fence is not finished (dead, failed, fenced awaiting recovery)
    vms: int
    vms_by_state: dict[str, int]
    vms_failed: list[str]
    vms_running_twice: list[RunningTwice]  # VMs libvirt runs on more than one node: must stay empty


@operation("cluster.status", "GET", "/cluster/status")
async def status(ctx: Context, params: NoParams) -> ClusterStatus:
    """Nodes and VMs by state, the primary coordinator, maintenance, fencing, the settings."""
    zk = ctx.zk
    nodes = await store.list_nodes(zk)
    doms = await store.list_domains(zk)
    fences = await fence_store.read_many(zk, [n.name for n in nodes])
    settings = typed_settings(await store.settings(zk))
    return ClusterStatus(
        primary_node=await store.get_setting(zk, "primary_node"),
        maintenance=bool(settings["maintenance"]),
        settings=settings,
        nodes=len(nodes),
        nodes_by_daemon_state=dict(Counter(n.daemon_state for n in nodes)),
        nodes_by_domain_state=dict(Counter(n.domain_state for n in nodes)),
        fencing=[Fencing(node=name, **msgspec.structs.asdict(f)) for name, f in sorted(fences.items())
                 if f.status in fencing.OPEN_STATUSES],
        vms=len(doms),
        vms_by_state=dict(Counter(d.state for d in doms)),
        vms_failed=sorted(d.name for d in doms if d.state == "fail"),
        vms_running_twice=[RunningTwice(vm=d.name, node=d.node, also_on=d.duplicate_on)
                           for d in sorted(doms, key=lambda d: d.name) if d.duplicate_on],
    )


@operation("cluster.settings", "GET", "/cluster/settings")
async def settings(ctx: Context, params: NoParams) -> Settings:
    """The cluster-wide settings."""
    return typed_settings(await store.settings(ctx.zk))


class SetParams(msgspec.Struct, kw_only=True):
    key: str  # migration_selector | maintenance
    value: str  # maintenance: true | false


@operation("cluster.set", "PUT", "/cluster/settings/{key}")
async def set_setting(ctx: Context, params: SetParams) -> Settings:
    """Change one cluster-wide setting; returns them all."""
    await store.set_setting(ctx.zk, params.key, params.value)
    return typed_settings(await store.settings(ctx.zk))


class Initialised(msgspec.Struct, kw_only=True):
    created: bool  # false: it was already initialised


@operation("cluster.init", "POST", "/cluster/init")
async def init(ctx: Context, params: NoParams) -> Initialised:
    """Create the cluster layout in ZooKeeper (safe to repeat)."""
    return Initialised(created=await store.init_cluster(ctx.zk))
