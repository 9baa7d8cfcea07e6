"""VM operations (``vm.*``)."""

from __future__ import annotations

import msgspec

from pvc import store
from pvc.errors import InvalidInput, NotFound
from pvc.ops.registry import Context, operation
from pvc.schema import VM_STATES, Domain


class VmRef(msgspec.Struct, kw_only=True):
    vm: str  # name or UUID


class VmFilter(msgspec.Struct, kw_only=True):
    node: str = ""
    state: str = ""


@operation("vm.list", "GET", "/vm")
async def list_vms(ctx: Context, params: VmFilter) -> list[Domain]:
    """List VMs, by name."""
    if params.state and params.state not in VM_STATES:
        raise InvalidInput(f"unknown VM state {params.state!r}; choose one of {', '.join(VM_STATES)}")
    if params.node and params.node not in await store.node_names(ctx.zk):
        raise NotFound(f"unknown node {params.node!r}")
    doms = await store.list_domains(ctx.zk)
    return sorted((d for d in doms if (not params.node or d.node == params.node)
                   and (not params.state or d.state == params.state)), key=lambda d: d.name)


@operation("vm.info", "GET", "/vm/{vm}")
async def info(ctx: Context, params: VmRef) -> Domain:
    """One VM's record."""
    dom, _ = await store.read_domain(ctx.zk, await store.resolve_domain(ctx.zk, params.vm))
    return dom
