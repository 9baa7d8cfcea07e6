"""VM operations (``vm.*``)."""

from __future__ import annotations

import msgspec

from pvc import store, vm_meta, vm_states
from pvc.errors import InvalidInput, NotFound
from pvc.ops.registry import Context, operation
from pvc.schema import Domain


class VmRef(msgspec.Struct, kw_only=True):
    vm: str  # name or UUID


class VmFilter(msgspec.Struct, kw_only=True):
    node: str = ""
    state: str = ""
    tag: list[str] = []  # only VMs carrying every one of these tags
    sort: str = "name"  # name | node | state | memory (largest first)


@operation("vm.list", "GET", "/vm")
async def list_vms(ctx: Context, params: VmFilter) -> list[Domain]:
    """List VMs (by name, or by ``sort``), filtered by node, state and tags."""
    vm_meta.check_filter(params.state, params.tag, params.sort)
    if params.node and params.node not in await store.node_names(ctx.zk):
        raise NotFound(f"unknown node {params.node!r}")
    return vm_meta.select(await store.list_domains(ctx.zk), node=params.node, state=params.state,
                          tags=params.tag, sort=params.sort)


@operation("vm.info", "GET", "/vm/{vm}")
async def info(ctx: Context, params: VmRef) -> Domain:
    """One VM's record."""
    dom, _ = await store.read_domain(ctx.zk, await store.resolve_domain(ctx.zk, params.vm))
    return dom


# -- define, modify, undefine, XML ----------------------------------------------------------------------


class DefineParams(msgspec.Struct, kw_only=True):
    xml: str  # libvirt domain XML
    target: str = ""  # node to place the VM on (default: chosen by the selector)
    selector: str = ""  # mem | memfree | load | vcpus | vms (default: the cluster's)
    node_limit: list[str] = []  # nodes the VM may run on
    autostart: bool = False  # start the VM when its node becomes ready again
    migration_method: str = ""  # any (default) | live | shutdown
    start: bool = False  # start the VM once defined


class Defined(msgspec.Struct, kw_only=True):
    vm: Domain
    warning: str = ""  # e.g. its serial console is not logged where pvc reads it


async def _check_volumes(ctx: Context, xml: str, uuid: str) -> None:
    """RBD disks: the volumes exist and no other VM uses them (pvc.storage.vm_volumes)."""
    if "rbd" not in xml:
        return
    from pvc.ops.common import ceph
    from pvc.storage.vm_volumes import check_definition

    await check_definition(ctx.zk, ceph(ctx, required=False), xml, uuid)


async def _console_log_warning(zk, dom: Domain) -> str:
    node = await store.get_node(zk, dom.node)
    directory = node.console_log_directory
    expected = f"{directory.rstrip('/')}/{dom.name}.log" if directory else ""
    if not dom.console_log_file:
        return (f"VM {dom.name} has no serial <log file=...>; `pvc vm log` will be empty "
                f"(add <log file='{expected or '/var/log/libvirt/' + dom.name + '.log'}' append='on'/> to its <serial>)")
    if expected and dom.console_log_file != expected:
        return f"VM {dom.name} logs its serial console to {dom.console_log_file}, but pvc reads {expected}"
    return ""


@operation("vm.define", "POST", "/vm")
async def define(ctx: Context, params: DefineParams) -> Defined:
    """Define a VM from its libvirt XML; it is placed on a node and left stopped (unless ``start``)."""
    from pvc.domain_xml import parse_domain_xml

    vm_meta.check_migration_method(params.migration_method)
    spec = parse_domain_xml(params.xml)
    await _check_volumes(ctx, params.xml, spec.uuid)
    dom = await store.define_domain(ctx.zk, spec, params.xml, target=params.target, selector=params.selector,
                                    node_limit=[n for n in params.node_limit if n], autostart=params.autostart,
                                    migration_method=params.migration_method)
    warning = await _console_log_warning(ctx.zk, dom)
    if params.start:
        dom, _ = await store.update_domain(ctx.zk, dom.uuid, lambda d: vm_states.request(d, "start"))
    return Defined(vm=dom, warning=warning)


class ModifyParams(msgspec.Struct, kw_only=True):
    vm: str
    xml: str  # the new libvirt XML (same UUID)


@operation("vm.modify", "PUT", "/vm/{vm}")
async def modify(ctx: Context, params: ModifyParams) -> Domain:
    """Replace a VM's XML (takes effect at its next start); a new <name> renames it (stopped VMs only)."""
    from pvc.domain_xml import parse_domain_xml

    spec = parse_domain_xml(params.xml)
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    await _check_volumes(ctx, params.xml, uuid)
    return await store.modify_domain(ctx.zk, uuid, spec, params.xml)


class UndefineParams(msgspec.Struct, kw_only=True):
    vm: str
    delete_volumes: bool = False  # also remove the VM's RBD volumes (and their snapshots)


class Undefined(msgspec.Struct, kw_only=True):
    vm: Domain
    removed_volumes: list[str] = []


@operation("vm.undefine", "DELETE", "/vm/{vm}")
async def undefine(ctx: Context, params: UndefineParams) -> Undefined:
    """Remove a stopped VM from the cluster (its RBD volumes stay unless ``delete_volumes``)."""
    if params.delete_volumes:
        from pvc.ops.common import ceph
        from pvc.storage.vm_volumes import undefine as undefine_with_volumes

        dom, removed = await undefine_with_volumes(ctx.zk, ceph(ctx, required=False), params.vm, True)
        return Undefined(vm=dom, removed_volumes=removed)
    return Undefined(vm=await store.undefine_domain(ctx.zk, await store.resolve_domain(ctx.zk, params.vm)))


# -- metadata: changed at any time, also while the VM runs ------------------------------------------------


class MetaParams(msgspec.Struct, kw_only=True):
    """Fields left out (null) stay as they are; "" or [] clears one."""

    vm: str
    autostart: bool | None = None
    node_limit: list[str] | None = None  # nodes the VM may run on ([]: any)
    selector: str | None = None  # mem | memfree | load | vcpus | vms ("": the cluster's)
    migration_method: str | None = None  # any | live | shutdown ("": any)
    description: str | None = None


class MetaChanged(msgspec.Struct, kw_only=True):
    vm: Domain
    warning: str = ""  # e.g. its current node is outside its new node limit (it is not moved)


@operation("vm.meta", "PATCH", "/vm/{vm}")
async def meta(ctx: Context, params: MetaParams) -> MetaChanged:
    """Change a VM's autostart, node limit, selector, migration method or description (also while it runs)."""
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    nodes = await store.node_names(ctx.zk) if params.node_limit else []
    fields = {k: v for k, v in msgspec.structs.asdict(params).items() if k != "vm"}
    dom, _ = await store.update_domain(ctx.zk, uuid, lambda d: vm_meta.change(d, nodes, **fields))
    warning = vm_meta.node_limit_warning(dom) if params.node_limit else ""
    return MetaChanged(vm=dom, warning=warning)


class TagParams(msgspec.Struct, kw_only=True):
    vm: str
    tags: list[str]


async def _retag(ctx: Context, params: TagParams, add: list[str], remove: list[str]) -> Domain:
    if not params.tags:
        raise InvalidInput("name at least one tag")
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    dom, _ = await store.update_domain(ctx.zk, uuid, lambda d: vm_meta.with_tags(d, add, remove))
    return dom


@operation("vm.tag_add", "POST", "/vm/{vm}/tags/add")
async def tag_add(ctx: Context, params: TagParams) -> Domain:
    """Add tags to a VM."""
    return await _retag(ctx, params, params.tags, [])


@operation("vm.tag_remove", "POST", "/vm/{vm}/tags/remove")
async def tag_remove(ctx: Context, params: TagParams) -> Domain:
    """Remove tags from a VM (a tag it does not carry is no error)."""
    return await _retag(ctx, params, [], params.tags)


class RenameParams(msgspec.Struct, kw_only=True):
    vm: str
    name: str  # the new name (pvc.names rule)


@operation("vm.rename", "POST", "/vm/{vm}/rename")
async def rename(ctx: Context, params: RenameParams) -> Domain:
    """Rename a stopped VM: its record, XML and console log file follow; its node's libvirt agrees."""
    return await store.rename_domain(ctx.zk, await store.resolve_domain(ctx.zk, params.vm), params.name)


class VmXml(msgspec.Struct, kw_only=True):
    xml: str


@operation("vm.xml", "GET", "/vm/{vm}/xml")
async def xml(ctx: Context, params: VmRef) -> VmXml:
    """A VM's libvirt XML."""
    return VmXml(xml=await store.read_xml(ctx.zk, await store.resolve_domain(ctx.zk, params.vm)))


# -- state changes, and waiting for them ------------------------------------------------------------------


class VmAction(msgspec.Struct, kw_only=True):
    vm: str
    wait: bool = False  # return once carried out (an error says why not), like `--wait`
    timeout: float = 0.0  # seconds the wait lasts at most (0: no limit)


class VmChange(msgspec.Struct, kw_only=True):
    """The record after the request (after carrying it out, when waited for); ``version``: the
    record's version that holds the request, for ``vm.wait``'s ``after_version``."""

    vm: Domain
    version: int


class WaitParams(msgspec.Struct, kw_only=True):
    vm: str
    # start | stop | shutdown | restart | disable; migrate | unmigrate | move (a running VM sent to
    # ``target``); hand_over (a VM that is not running, handed by its node to ``target``)
    action: str
    after_version: int = 0  # only records at least this new count (the request's version)
    target: str = ""  # migrations and hand-overs: the destination (default: the record's target_node)
    timeout: float = 0.0  # seconds at most (0: no limit)


MIGRATION_MODES = ("migrate", "unmigrate", "move")


@operation("vm.wait", "GET", "/vm/{vm}/wait")
async def wait(ctx: Context, params: WaitParams) -> Domain:
    """Wait until a VM request is carried out; an error says why it was not (it failed, a daemon
    that must act is not running, the timeout ran out)."""
    from pvc.ops.waiting import bounded, wait_for_vm

    uuid = await store.resolve_domain(ctx.zk, params.vm)
    dom, _ = await store.read_domain(ctx.zk, uuid)
    target = params.target or dom.target_node
    if params.action in MIGRATION_MODES and target:
        nodes, outcome = [dom.node, target], lambda d: vm_states.migration_outcome(d, target)
    elif params.action in MIGRATION_MODES:  # no destination known (any more): until it runs
        nodes, outcome = [dom.node], lambda d: vm_states.wait_outcome("migrate", d)
    elif params.action == "hand_over":
        if not target:
            return dom  # no hand-over pending: done, or superseded
        nodes, outcome = [dom.node], lambda d: vm_states.hand_over_outcome(d, target)
    elif params.action in vm_states.ALLOWED_FROM:
        nodes, outcome = [dom.node, dom.target_node], None
    else:
        raise InvalidInput(f"unknown VM action {params.action!r}; choose one of "
                           f"{', '.join([*vm_states.ALLOWED_FROM, *MIGRATION_MODES, 'hand_over'])}")
    follow = wait_for_vm(ctx.zk, uuid, params.action, params.after_version, nodes, outcome=outcome)
    return await bounded(follow, params.timeout, f"VM {dom.name} did not finish {params.action.replace('_', '-')}")


async def _state_change(ctx: Context, params: VmAction, action: str) -> VmChange:
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    dom, version = await store.update_domain(ctx.zk, uuid, lambda d: vm_states.request(d, action))
    if params.wait:
        dom = await wait(ctx, WaitParams(vm=uuid, action=action, after_version=version, timeout=params.timeout))
    return VmChange(vm=dom, version=version)


def _declare_state_change(action: str, summary: str) -> None:
    async def change(ctx: Context, params: VmAction) -> VmChange:
        return await _state_change(ctx, params, action)

    change.__doc__ = summary
    operation(f"vm.{action}", "POST", f"/vm/{{vm}}/{action}")(change)


_declare_state_change("start", "Start a VM on its node.")
_declare_state_change("stop", "Stop a VM at once (power off); also cuts short a hanging shutdown.")
_declare_state_change("shutdown", "Shut a VM down gracefully (ACPI), forced off after the configured timeout.")
_declare_state_change("restart", "Restart a VM: graceful shutdown, then start (picks up a modified XML).")
_declare_state_change("disable", "Shut a VM down and keep it where it is, out of autostart, flushes and ready.")


# -- migrations --------------------------------------------------------------------------------------------

# Without ``wait``, how long a move of a VM that is not running waits for its node's hand-over.
HAND_OVER_PATIENCE = 2.0


class MoveParams(msgspec.Struct, kw_only=True):
    vm: str
    target: str = ""  # destination node (default: chosen by the selector)
    selector: str = ""  # mem | memfree | load | vcpus | vms (default: the VM's, else the cluster's)
    wait: bool = False
    timeout: float = 0.0


class MigrateParams(MoveParams, kw_only=True):
    force: bool = False  # migrate a VM that already has a previous node (its previous_node is kept)


class Migrated(msgspec.Struct, kw_only=True):
    """``how``: ``migrate`` (a running VM is being, or with ``wait`` was, migrated), ``reassigned``
    (its node is fenced: nothing runs there), ``handed`` (not running: its node handed it over),
    ``pending`` (not running: the hand-over is recorded, its node carries it out once its libvirt
    confirms the VM off; follow with ``vm.wait`` action ``hand_over``)."""

    vm: Domain
    version: int
    source: str
    how: str


async def _migration(ctx: Context, mode: str, params: MoveParams, force: bool = False) -> Migrated:
    import asyncio

    from pvc.ops.waiting import bounded, wait_for_vm

    zk = ctx.zk
    uuid = await store.resolve_domain(zk, params.vm)
    dom, version, source = await store.request_migration(zk, uuid, mode, target=params.target,
                                                         selector=params.selector, force=force)
    destination = dom.target_node
    if dom.state == "migrate":
        if params.wait:
            dom = await wait(ctx, WaitParams(vm=uuid, action=mode, after_version=version, target=destination,
                                             timeout=params.timeout))
        return Migrated(vm=dom, version=version, source=source, how="migrate")
    if dom.node != source:
        return Migrated(vm=dom, version=version, source=source, how="reassigned")
    # Not running: its node hands it over once its libvirt confirms it off.
    follow = wait_for_vm(zk, uuid, mode, version, [source],
                         outcome=lambda d: vm_states.hand_over_outcome(d, destination))
    if params.wait:
        handed = await bounded(follow, params.timeout, f"VM {dom.name} was not handed over to {destination}")
        return Migrated(vm=handed, version=version, source=source, how="handed")
    try:
        handed = await asyncio.wait_for(follow, HAND_OVER_PATIENCE)
    except asyncio.TimeoutError:
        return Migrated(vm=dom, version=version, source=source, how="pending")
    return Migrated(vm=handed, version=version, source=source, how="handed")


@operation("vm.migrate", "POST", "/vm/{vm}/migrate")
async def migrate(ctx: Context, params: MigrateParams) -> Migrated:
    """Move a VM to another node by its migration method and record its node as previous_node."""
    return await _migration(ctx, "migrate", params, params.force)


@operation("vm.unmigrate", "POST", "/vm/{vm}/unmigrate")
async def unmigrate(ctx: Context, params: VmAction) -> Migrated:
    """Return a migrated VM to its previous node and clear previous_node."""
    return await _migration(ctx, "unmigrate", MoveParams(vm=params.vm, wait=params.wait, timeout=params.timeout))


@operation("vm.move", "POST", "/vm/{vm}/move")
async def move(ctx: Context, params: MoveParams) -> Migrated:
    """Migrate a VM permanently: like migrate, but previous_node is cleared."""
    return await _migration(ctx, "move", params)

